package formspec

import (
	"bytes"
	"regexp"
	"strconv"
	"unicode/utf8"
)

// fastTree builds the element tree of the plain XML devices send (elements,
// attributes, text, the five predefined entities and character references,
// an optional UTF-8 declaration) several times faster than encoding/xml. On
// anything else, comments, CDATA, processing instructions, DOCTYPE, carriage
// returns, non-ASCII names, mismatched tags, a limit reached or any error,
// it answers ok=false and the caller parses with encoding/xml, which gives
// the precise error. So it never accepts what encoding/xml refuses, and
// where it accepts, it builds the same tree (FuzzFastTree checks both).
func fastTree(data []byte, lim Limits) (root *Element, ok bool) {
	if bytes.IndexByte(data, '\r') >= 0 || bytes.Contains(data, []byte("]]>")) {
		return nil, false
	}
	p := fastParser{b: data}
	if bytes.HasPrefix(data, []byte("<?xml")) {
		m := xmlDecl.FindIndex(data)
		if m == nil {
			return nil, false
		}
		p.i = m[1]
	}
	var stack []*Element
	// The character data directly inside each open element is buf[starts[i]:]
	// once its children have closed (their text is cut off as they end).
	var buf []byte
	var starts []int
	var names [][]byte // each open element's qualified name
	count := 0
	for p.i < len(p.b) {
		if p.b[p.i] != '<' {
			if len(stack) == 0 {
				// Outside the root only XML whitespace is taken here.
				if !p.space() {
					return nil, false
				}
				continue
			}
			for p.i < len(p.b) && p.b[p.i] != '<' {
				run := p.i
				for p.i < len(p.b) {
					if c := p.b[p.i]; c >= ' ' && c < utf8.RuneSelf && c != '&' && c != '<' || c == '\t' || c == '\n' {
						p.i++
						continue
					}
					break
				}
				buf = append(buf, p.b[run:p.i]...)
				if p.i < len(p.b) && p.b[p.i] != '<' && !p.char(&buf) {
					return nil, false
				}
			}
			continue
		}
		p.i++ // '<'
		if p.i >= len(p.b) {
			return nil, false
		}
		switch p.b[p.i] {
		case '!', '?':
			return nil, false
		case '/':
			p.i++
			name, ok := p.name()
			if !ok || len(stack) == 0 || !bytes.Equal(name, names[len(names)-1]) {
				return nil, false
			}
			p.space()
			if p.i >= len(p.b) || p.b[p.i] != '>' {
				return nil, false
			}
			p.i++
			e, start := stack[len(stack)-1], starts[len(starts)-1]
			if t := bytes.TrimSpace(buf[start:]); len(t) > 0 {
				e.Text = string(t)
			}
			buf = buf[:start]
			stack, starts, names = stack[:len(stack)-1], starts[:len(starts)-1], names[:len(names)-1]
			continue
		}
		if root != nil && len(stack) == 0 {
			return nil, false // a second root
		}
		name, ok := p.name()
		if !ok {
			return nil, false
		}
		count++
		if lim.MaxElements > 0 && count > lim.MaxElements || lim.MaxDepth > 0 && len(stack) >= lim.MaxDepth {
			return nil, false
		}
		_, loc := split(name)
		e := &Element{Name: string(loc)}
		if len(stack) > 0 {
			parent := stack[len(stack)-1]
			parent.Children = append(parent.Children, e)
		} else {
			root = e
		}
		closed := false
		for {
			sp := p.space()
			if p.i >= len(p.b) {
				return nil, false
			}
			if p.b[p.i] == '>' {
				p.i++
				break
			}
			if p.b[p.i] == '/' {
				if p.i+1 >= len(p.b) || p.b[p.i+1] != '>' {
					return nil, false
				}
				p.i += 2
				closed = true
				break
			}
			if !sp {
				return nil, false
			}
			an, ok := p.name()
			if !ok {
				return nil, false
			}
			p.space()
			if p.i >= len(p.b) || p.b[p.i] != '=' {
				return nil, false
			}
			p.i++
			p.space()
			v, ok := p.attrValue()
			if !ok {
				return nil, false
			}
			if prefix, loc := split(an); string(prefix) != "xmlns" && string(loc) != "xmlns" {
				if e.Attrs == nil {
					e.Attrs = make(map[string]string, 2)
				}
				e.Attrs[string(loc)] = v
			}
		}
		if !closed {
			stack, starts, names = append(stack, e), append(starts, len(buf)), append(names, name)
		}
	}
	if root == nil || len(stack) > 0 {
		return nil, false
	}
	return root, true
}

// xmlDecl is the declaration the fast path takes: version 1.0, UTF-8 or no
// encoding, an optional standalone.
var xmlDecl = regexp.MustCompile(`^<\?xml[ \t\n]+version[ \t\n]*=[ \t\n]*("1\.0"|'1\.0')([ \t\n]+encoding[ \t\n]*=[ \t\n]*("(?i:utf-8)"|'(?i:utf-8)'))?([ \t\n]+standalone[ \t\n]*=[ \t\n]*("(yes|no)"|'(yes|no)'))?[ \t\n]*\?>`)

type fastParser struct {
	b []byte
	i int
}

// space skips XML whitespace and reports whether there was any.
func (p *fastParser) space() bool {
	start := p.i
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n':
			p.i++
			continue
		}
		break
	}
	return p.i > start
}

func nameByte(c byte, first bool) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		return true
	case first:
		return false
	}
	return c >= '0' && c <= '9' || c == '-' || c == '.' || c == ':'
}

// name reads an ASCII name with at most one colon, not at either end.
func (p *fastParser) name() ([]byte, bool) {
	start := p.i
	colons := 0
	for p.i < len(p.b) && nameByte(p.b[p.i], p.i == start) {
		if p.b[p.i] == ':' {
			colons++
		}
		p.i++
	}
	if p.i == start || p.i < len(p.b) && p.b[p.i] >= utf8.RuneSelf {
		return nil, false
	}
	n := p.b[start:p.i]
	if colons > 1 || n[len(n)-1] == ':' {
		return nil, false
	}
	return n, true
}

func split(name []byte) (prefix, loc []byte) {
	if i := bytes.IndexByte(name, ':'); i >= 0 {
		return name[:i], name[i+1:]
	}
	return nil, name
}

// attrValue reads a quoted value without tabs, newlines or '<'.
func (p *fastParser) attrValue() (string, bool) {
	if p.i >= len(p.b) || p.b[p.i] != '"' && p.b[p.i] != '\'' {
		return "", false
	}
	q := p.b[p.i]
	p.i++
	start := p.i
	plain := true
	for p.i < len(p.b) && p.b[p.i] != q {
		c := p.b[p.i]
		if c == '<' || c < ' ' {
			return "", false
		}
		if c == '&' || c >= utf8.RuneSelf {
			plain = false
		}
		p.i++
	}
	if p.i >= len(p.b) {
		return "", false
	}
	raw := p.b[start:p.i]
	p.i++
	if plain {
		return string(raw), true
	}
	sub := fastParser{b: raw}
	var out []byte
	for sub.i < len(sub.b) {
		if !sub.char(&out) {
			return "", false
		}
	}
	return string(out), true
}

// char reads one character or reference of text into out.
func (p *fastParser) char(out *[]byte) bool {
	c := p.b[p.i]
	switch {
	case c == '&':
		end := bytes.IndexByte(p.b[p.i:], ';')
		if end < 0 || end > 12 {
			return false
		}
		ref := string(p.b[p.i+1 : p.i+end])
		p.i += end + 1
		var r rune
		switch ref {
		case "amp":
			r = '&'
		case "lt":
			r = '<'
		case "gt":
			r = '>'
		case "quot":
			r = '"'
		case "apos":
			r = '\''
		default:
			if len(ref) < 2 || ref[0] != '#' {
				return false
			}
			var n uint64
			var err error
			if ref[1] == 'x' {
				n, err = strconv.ParseUint(ref[2:], 16, 32)
			} else {
				n, err = strconv.ParseUint(ref[1:], 10, 32)
			}
			if err != nil || !xmlChar(rune(n)) || n == '\r' {
				return false
			}
			r = rune(n)
		}
		*out = utf8.AppendRune(*out, r)
		return true
	case c >= utf8.RuneSelf:
		r, size := utf8.DecodeRune(p.b[p.i:])
		if r == utf8.RuneError || !xmlChar(r) {
			return false
		}
		*out = append(*out, p.b[p.i:p.i+size]...)
		p.i += size
		return true
	case c < ' ' && c != '\t' && c != '\n':
		return false
	}
	*out = append(*out, c)
	p.i++
	return true
}

// xmlChar reports whether r may appear in an XML document.
func xmlChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D || r >= 0x20 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF
}
