package xlsform

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// xmlScanner walks the XML of one workbook part token by token without
// allocating: a spreadsheet part is a long run of small elements, and
// encoding/xml's reflection and per-token allocation made reading the
// workbook cost more than converting it. It checks what a reader must
// (tags nest and close, no DOCTYPE, names and attributes well formed) and
// leaves schema questions to its callers.
type xmlScanner struct {
	b     []byte
	i     int
	open  [][]byte // names of the open elements, for nesting checks
	err   error
	tok   xmlToken
	ended bool
	roots int
}

type tokenKind uint8

const (
	tokStart tokenKind = iota + 1 // <name ...>
	tokEnd                        // </name>, also sent after a self-closing <name/>
	tokText                       // character data, still escaped unless cdata
)

type xmlToken struct {
	kind  tokenKind
	name  []byte // local name, without any namespace prefix
	attrs []byte // the raw attribute text of a start tag
	text  []byte
	cdata bool
}

const maxXMLDepth = 64

func newXMLScanner(b []byte) (*xmlScanner, error) {
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	if len(b) >= 2 && (b[0] == 0xfe && b[1] == 0xff || b[0] == 0xff && b[1] == 0xfe) {
		return nil, errors.New("it is encoded in UTF-16; save the workbook again as Excel Workbook (.xlsx)")
	}
	if !utf8.Valid(b) {
		return nil, errors.New("it is not valid UTF-8")
	}
	return &xmlScanner{b: b}, nil
}

// next advances to the next token; it returns false at the end of the part
// or on an error (see err).
func (s *xmlScanner) next() bool {
	if s.err != nil {
		return false
	}
	if s.ended { // the end of a self-closing element
		s.ended = false
		s.tok = xmlToken{kind: tokEnd, name: s.tok.name}
		return true
	}
	for s.i < len(s.b) {
		rest := s.b[s.i:]
		if rest[0] != '<' {
			j := bytes.IndexByte(rest, '<')
			if j < 0 {
				j = len(rest)
			}
			s.i += j
			if len(s.open) == 0 {
				if len(bytes.TrimSpace(rest[:j])) > 0 {
					return s.fail("text outside the root element")
				}
				continue
			}
			s.tok = xmlToken{kind: tokText, text: rest[:j]}
			return true
		}
		switch {
		case bytes.HasPrefix(rest, []byte("<?")):
			if !s.skipPast("?>") {
				return false
			}
		case bytes.HasPrefix(rest, []byte("<!--")):
			if !s.skipPast("-->") {
				return false
			}
		case bytes.HasPrefix(rest, []byte("<![CDATA[")):
			j := bytes.Index(rest, []byte("]]>"))
			if j < 0 {
				return s.fail("unterminated CDATA section")
			}
			if len(s.open) == 0 {
				return s.fail("CDATA outside the root element")
			}
			s.tok = xmlToken{kind: tokText, text: rest[9:j], cdata: true}
			s.i += j + 3
			return true
		case bytes.HasPrefix(rest, []byte("<!")):
			return s.fail("a DOCTYPE or declaration, which workbooks never contain")
		case len(rest) > 1 && rest[1] == '/':
			j := bytes.IndexByte(rest, '>')
			if j < 0 {
				return s.fail("unterminated end tag")
			}
			name := bytes.TrimRight(rest[2:j], " \t\r\n")
			if len(s.open) == 0 || !bytes.Equal(s.open[len(s.open)-1], name) {
				return s.fail(fmt.Sprintf("end tag </%s> does not match the open element", clip(name)))
			}
			s.open = s.open[:len(s.open)-1]
			s.i += j + 1
			s.tok = xmlToken{kind: tokEnd, name: localName(name)}
			return true
		default:
			return s.startTag(rest)
		}
	}
	if len(s.open) > 0 {
		return s.fail(fmt.Sprintf("element <%s> is never closed", clip(s.open[len(s.open)-1])))
	}
	return false
}

func (s *xmlScanner) startTag(rest []byte) bool {
	n := 1
	for n < len(rest) && isNameByte(rest[n]) {
		n++
	}
	if n == 1 {
		return s.fail("a '<' that does not start a tag")
	}
	name := rest[1:n]
	// Find the tag's end, stepping over quoted attribute values.
	var quote byte
	j := n
	for ; j < len(rest); j++ {
		c := rest[j]
		if quote != 0 {
			if c == quote {
				quote = 0
			} else if c == '<' {
				return s.fail("'<' inside an attribute value")
			}
			continue
		}
		if c == '"' || c == '\'' {
			quote = c
		} else if c == '>' || c == '<' {
			break
		}
	}
	if j >= len(rest) || rest[j] != '>' {
		return s.fail(fmt.Sprintf("unterminated tag <%s", clip(name)))
	}
	attrs, selfClosing := rest[n:j], false
	if len(attrs) > 0 && attrs[len(attrs)-1] == '/' {
		attrs, selfClosing = attrs[:len(attrs)-1], true
	}
	if len(attrs) > 0 && !isSpace(attrs[0]) {
		return s.fail(fmt.Sprintf("malformed tag <%s", clip(name)))
	}
	if len(s.open) == 0 {
		if s.roots > 0 {
			return s.fail("a second root element")
		}
		s.roots++
	}
	s.i += j + 1
	if !selfClosing {
		if len(s.open) >= maxXMLDepth {
			return s.fail("elements nested too deeply")
		}
		s.open = append(s.open, name)
	}
	s.ended = selfClosing
	s.tok = xmlToken{kind: tokStart, name: localName(name), attrs: attrs}
	return true
}

func (s *xmlScanner) skipPast(end string) bool {
	j := bytes.Index(s.b[s.i:], []byte(end))
	if j < 0 {
		return s.fail("unterminated " + end[:1] + " construct")
	}
	s.i += j + len(end)
	return true
}

func (s *xmlScanner) fail(msg string) bool {
	line := 1 + bytes.Count(s.b[:min(s.i, len(s.b))], []byte("\n"))
	s.err = fmt.Errorf("malformed XML at line %d: %s", line, msg)
	return false
}

func clip(b []byte) string {
	if len(b) > 40 {
		b = b[:40]
	}
	return string(b)
}

func localName(name []byte) []byte {
	if k := bytes.LastIndexByte(name, ':'); k >= 0 {
		return name[k+1:]
	}
	return name
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func isNameStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == ':' || c >= 0x80
}

func isNameByte(c byte) bool {
	return isNameStart(c) || c >= '0' && c <= '9' || c == '-' || c == '.'
}

// eachAttr calls fn with each attribute's local name and raw (escaped)
// value, until fn returns false; malformed attribute text ends the walk.
func eachAttr(attrs []byte, fn func(name, raw []byte) bool) {
	i := 0
	for {
		for i < len(attrs) && isSpace(attrs[i]) {
			i++
		}
		eq := bytes.IndexByte(attrs[i:], '=')
		if eq < 0 {
			return
		}
		name := bytes.TrimRight(attrs[i:i+eq], " \t\r\n")
		i += eq + 1
		for i < len(attrs) && isSpace(attrs[i]) {
			i++
		}
		if i >= len(attrs) || attrs[i] != '"' && attrs[i] != '\'' {
			return
		}
		end := bytes.IndexByte(attrs[i+1:], attrs[i])
		if end < 0 {
			return
		}
		if !fn(localName(name), attrs[i+1:i+1+end]) {
			return
		}
		i += end + 2
	}
}

// attr returns the unescaped value of the attribute with this local name.
func attr(attrs []byte, local string) (v string, ok bool) {
	eachAttr(attrs, func(name, raw []byte) bool {
		if string(name) != local {
			return true
		}
		s, err := unescapeXML(raw, false)
		v, ok = s, err == nil
		return false
	})
	return v, ok
}

// unescapeXML decodes entity and character references and normalises line
// ends, as an XML parser hands text to its application.
func unescapeXML(b []byte, cdata bool) (string, error) {
	if bytes.IndexByte(b, '\r') < 0 && (cdata || bytes.IndexByte(b, '&') < 0) {
		return string(b), nil
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case c == '\r':
			out = append(out, '\n')
			if i+1 < len(b) && b[i+1] == '\n' {
				i++
			}
		case c == '&' && !cdata:
			semi := bytes.IndexByte(b[i:], ';')
			if semi < 0 || semi > 12 {
				return "", errors.New("an '&' that is not a reference; write &amp;")
			}
			ref := string(b[i+1 : i+semi])
			switch ref {
			case "amp":
				out = append(out, '&')
			case "lt":
				out = append(out, '<')
			case "gt":
				out = append(out, '>')
			case "quot":
				out = append(out, '"')
			case "apos":
				out = append(out, '\'')
			default:
				r, ok := charRef(ref)
				if !ok {
					return "", fmt.Errorf("unknown reference &%s;", ref)
				}
				out = utf8.AppendRune(out, r)
			}
			i += semi
		default:
			out = append(out, c)
		}
	}
	return string(out), nil
}

func charRef(ref string) (rune, bool) {
	if len(ref) < 2 || ref[0] != '#' {
		return 0, false
	}
	var n uint64
	var err error
	if ref[1] == 'x' {
		n, err = strconv.ParseUint(ref[2:], 16, 32)
	} else {
		n, err = strconv.ParseUint(ref[1:], 10, 32)
	}
	r := rune(n)
	if err != nil || n > utf8.MaxRune || !utf8.ValidRune(r) || r == 0 {
		return 0, false
	}
	return r, true
}
