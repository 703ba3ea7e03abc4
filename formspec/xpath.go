package formspec

import (
	"fmt"
	"strings"

	"github.com/beevik/etree"
)

// XPath syntax, as the form engines on devices read it (XPath 1.0, the
// grammar of the W3C recommendation with its lexical rules): a form whose
// expressions do not parse cannot be opened on any device, so publishing
// refuses it, naming the expression. Only syntax and references to the
// form's own nodes are checked here, not what the functions do.

type xkind int

const (
	xEOF xkind = iota
	xName
	xLiteral
	xNumber
	xOp // one of / // | + - = != < <= > >= * ( ) [ ] . .. @ , :: $
)

type xtok struct {
	kind xkind
	text string
	pos  int
	op   bool // an operator: and, or, div, mod, * as multiplication, / // | + - = != < <= > >=
}

// lexStrict splits an expression into tokens, refusing what XPath has no
// token for (an unclosed literal, a stray character).
func lexStrict(s string) ([]xtok, error) {
	var out []xtok
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '\'' || c == '"':
			j := strings.IndexByte(s[i+1:], c)
			if j < 0 {
				return nil, fmt.Errorf("the text starting at %d (%s) is never closed with %c", i+1, clip(s[i:]), c)
			}
			out = append(out, xtok{kind: xLiteral, text: s[i+1 : i+1+j], pos: i})
			i += j + 2
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
			j := i
			for j < len(s) && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			if j < len(s) && s[j] == '.' {
				j++
				for j < len(s) && s[j] >= '0' && s[j] <= '9' {
					j++
				}
			}
			out = append(out, xtok{kind: xNumber, text: s[i:j], pos: i})
			i = j
		case isNameStart(c):
			j := i
			for j < len(s) && (isNameStart(s[j]) || s[j] >= '0' && s[j] <= '9' || s[j] == '-' || s[j] == '.' ||
				s[j] == ':' && j+1 < len(s) && (isNameStart(s[j+1]) || s[j+1] == '*') && (j+1 >= len(s) || s[j+1] != ':')) {
				if s[j] == ':' && s[j+1] == '*' { // prefix:*
					j += 2
					break
				}
				j++
			}
			out = append(out, xtok{kind: xName, text: s[i:j], pos: i})
			i = j
		default:
			two := ""
			if i+1 < len(s) {
				two = s[i : i+2]
			}
			switch two {
			case "//", "!=", "<=", ">=", "..", "::":
				out = append(out, xtok{kind: xOp, text: two, pos: i})
				i += 2
				continue
			}
			if strings.IndexByte("/|+-=<>*()[].@,$", c) < 0 {
				return nil, fmt.Errorf("%q at %d is not part of any XPath expression", string(c), i+1)
			}
			out = append(out, xtok{kind: xOp, text: string(c), pos: i})
			i++
		}
	}
	// XPath's lexical rule: after a token that is not @, ::, (, [, , or
	// an operator, a * multiplies and a name is an operator name.
	for i := range out {
		t := &out[i]
		switch {
		case t.kind == xOp && strings.Contains("/ // | + - = != < <= > >=", t.text) && t.text != "." && t.text != "..":
			t.op = true
		case i > 0 && (t.kind == xName || t.kind == xOp && t.text == "*"):
			prev := out[i-1]
			if !(prev.op || prev.kind == xOp && (prev.text == "@" || prev.text == "::" || prev.text == "(" || prev.text == "[" || prev.text == "," || prev.text == "$")) {
				if t.kind == xName && !isOperatorWord(t.text) {
					return nil, fmt.Errorf("%q at %d follows a value where an operator (and, or, =, +...) should be", t.text, t.pos+1)
				}
				t.op = true
			}
		}
	}
	return append(out, xtok{kind: xEOF, pos: len(s)}), nil
}

func clip(s string) string {
	if len(s) > 20 {
		return s[:20] + "..."
	}
	return s
}

// xparser is a recursive-descent parser of XPath 1.0 that collects the
// absolute paths it meets.
type xparser struct {
	toks  []xtok
	i     int
	paths []string
	depth int
}

func (p *xparser) peek() xtok { return p.toks[p.i] }

func (p *xparser) next() xtok {
	t := p.toks[p.i]
	if t.kind != xEOF {
		p.i++
	}
	return t
}

func (p *xparser) is(kind xkind, text string) bool {
	t := p.peek()
	return t.kind == kind && t.text == text
}

func (p *xparser) fail(format string, args ...any) error {
	t := p.peek()
	where := "at the end"
	if t.kind != xEOF {
		where = fmt.Sprintf("at %q (character %d)", t.text, t.pos+1)
	}
	return fmt.Errorf("%s %s", fmt.Sprintf(format, args...), where)
}

func isOperatorWord(s string) bool { return s == "and" || s == "or" || s == "div" || s == "mod" }

func (p *xparser) expr() error {
	if p.depth++; p.depth > 200 {
		return fmt.Errorf("the expression nests too deep")
	}
	defer func() { p.depth-- }()
	return p.binary(0)
}

// levels are XPath's binary operators, loosest first.
var levels = [][]string{{"or"}, {"and"}, {"=", "!="}, {"<", "<=", ">", ">="}, {"+", "-"}, {"*", "div", "mod"}}

func (p *xparser) binary(level int) error {
	if level == len(levels) {
		return p.unary()
	}
	if err := p.binary(level + 1); err != nil {
		return err
	}
	for {
		t := p.peek()
		matched := false
		for _, op := range levels[level] {
			matched = matched || t.op && t.text == op
		}
		if !matched {
			return nil
		}
		p.next()
		if err := p.binary(level + 1); err != nil {
			return err
		}
	}
}

func (p *xparser) unary() error {
	for p.peek().op && p.peek().text == "-" {
		p.next()
	}
	if err := p.path(); err != nil {
		return err
	}
	for p.peek().op && p.peek().text == "|" {
		p.next()
		if err := p.path(); err != nil {
			return err
		}
	}
	return nil
}

var nodeTypes = map[string]bool{"comment": true, "text": true, "processing-instruction": true, "node": true}

// path reads a PathExpr: a location path, or a filter expression with
// steps after it.
func (p *xparser) path() error {
	t := p.peek()
	startsFilter := t.kind == xLiteral || t.kind == xNumber || (t.kind == xOp && (t.text == "(" || t.text == "$")) ||
		(t.kind == xName && p.toks[p.i+1].kind == xOp && p.toks[p.i+1].text == "(" && !nodeTypes[t.text])
	if !startsFilter {
		return p.locationPath()
	}
	if err := p.primary(); err != nil {
		return err
	}
	for p.is(xOp, "[") {
		if err := p.predicate(); err != nil {
			return err
		}
	}
	for p.is(xOp, "/") || p.is(xOp, "//") {
		p.next()
		if _, _, err := p.step(); err != nil {
			return err
		}
	}
	return nil
}

func (p *xparser) primary() error {
	t := p.next()
	switch {
	case t.kind == xLiteral, t.kind == xNumber:
		return nil
	case t.kind == xOp && t.text == "$":
		if p.peek().kind != xName {
			return p.fail("a variable needs a name after $")
		}
		p.next()
		return nil
	case t.kind == xOp && t.text == "(":
		if err := p.expr(); err != nil {
			return err
		}
		if !p.is(xOp, ")") {
			return p.fail("a parenthesis opened at character %d is not closed", t.pos+1)
		}
		p.next()
		return nil
	case t.kind == xName:
		p.next() // (
		if p.is(xOp, ")") {
			p.next()
			return nil
		}
		for {
			if err := p.expr(); err != nil {
				return err
			}
			if p.is(xOp, ",") {
				p.next()
				continue
			}
			if !p.is(xOp, ")") {
				return p.fail("the call of %s() opened at character %d is not closed", t.text, t.pos+1)
			}
			p.next()
			return nil
		}
	}
	return p.fail("expected a value")
}

func (p *xparser) predicate() error {
	open := p.next()
	if err := p.expr(); err != nil {
		return err
	}
	if !p.is(xOp, "]") {
		return p.fail("a [ opened at character %d is not closed", open.pos+1)
	}
	p.next()
	return nil
}

func (p *xparser) locationPath() error {
	var names []string
	plain, absolute := true, false
	switch {
	case p.is(xOp, "/"):
		absolute = true
		p.next()
		if !p.startsStep() {
			return nil // "/" alone: the root
		}
	case p.is(xOp, "//"):
		p.next()
	}
	for {
		name, ok, err := p.step()
		if err != nil {
			return err
		}
		plain = plain && ok
		names = append(names, name)
		if !p.is(xOp, "/") && !p.is(xOp, "//") {
			break
		}
		if p.next().text == "//" {
			plain = false // a path with // can reach anything
		}
	}
	if absolute && plain {
		p.paths = append(p.paths, "/"+strings.Join(names, "/"))
	}
	return nil
}

func (p *xparser) startsStep() bool {
	t := p.peek()
	return (t.kind == xName && !t.op) || (t.kind == xOp && (t.text == "." || t.text == ".." || t.text == "@" || t.text == "*" && !t.op))
}

// step reads a Step and returns its name when it is a plain child step
// (a name without axis, wildcard or predicate).
func (p *xparser) step() (name string, plain bool, err error) {
	plain = true
	t := p.peek()
	switch {
	case t.kind == xOp && (t.text == "." || t.text == ".."):
		p.next()
		return "", false, nil
	case t.kind == xOp && t.text == "@":
		p.next()
		plain = false
	case t.kind == xName && p.toks[p.i+1].kind == xOp && p.toks[p.i+1].text == "::":
		p.next()
		p.next()
		plain = false
	}
	t = p.next()
	switch {
	case t.kind == xOp && t.text == "*" && !t.op:
		plain = false
	case t.kind == xName && nodeTypes[t.text] && p.is(xOp, "("):
		p.next()
		if t.text == "processing-instruction" && p.peek().kind == xLiteral {
			p.next()
		}
		if !p.is(xOp, ")") {
			return "", false, p.fail("%s( is not closed", t.text)
		}
		p.next()
		plain = false
	case t.kind == xName && !t.op:
		name = t.text
		if i := strings.LastIndexByte(name, ':'); i >= 0 {
			name = name[i+1:]
		}
	default:
		p.i--
		return "", false, p.fail("expected a step of a path (a name, ., .. or *)")
	}
	for p.is(xOp, "[") {
		plain = false
		if err := p.predicate(); err != nil {
			return "", false, err
		}
	}
	return name, plain, nil
}

// ParseXPath checks that an expression is XPath 1.0 and returns the
// absolute paths it names with plain child steps (/data/group/q), for
// checking against the form.
func ParseXPath(expr string) ([]string, error) {
	toks, err := lexStrict(expr)
	if err != nil {
		return nil, err
	}
	if toks[0].kind == xEOF {
		return nil, fmt.Errorf("the expression is empty")
	}
	p := &xparser{toks: toks}
	if err := p.expr(); err != nil {
		return nil, err
	}
	if p.peek().kind != xEOF {
		return nil, p.fail("unexpected")
	}
	return p.paths, nil
}

// exprSite is an XPath expression of the form and where it is.
type exprSite struct {
	path string // the node it belongs to, by its absolute path
	attr string // what it is: relevant, constraint, calculate, ...
	expr string
}

// collectExpressions finds the form's expressions: the binds' relevant,
// constraint, calculate, required and readonly, setvalue values, itemset
// nodesets and repeat counts.
func collectExpressions(e *etree.Element, out *[]exprSite) {
	switch e.Tag {
	case "bind":
		for _, a := range []string{"relevant", "constraint", "calculate", "required", "readonly"} {
			if v := e.SelectAttrValue(a, ""); strings.TrimSpace(v) != "" {
				*out = append(*out, exprSite{stripPredicates(e.SelectAttrValue("nodeset", "")), a, v})
			}
		}
	case "setvalue", "setgeopoint":
		if v := e.SelectAttrValue("value", ""); strings.TrimSpace(v) != "" {
			*out = append(*out, exprSite{stripPredicates(e.SelectAttrValue("ref", "")), "value", v})
		}
	case "itemset":
		if v := e.SelectAttrValue("nodeset", ""); strings.TrimSpace(v) != "" {
			ref := ""
			if p := e.Parent(); p != nil {
				ref = stripPredicates(p.SelectAttrValue("ref", ""))
			}
			*out = append(*out, exprSite{ref, "choices (itemset)", v})
		}
	case "repeat":
		for _, a := range e.Attr {
			if a.Key == "count" && strings.TrimSpace(a.Value) != "" {
				*out = append(*out, exprSite{stripPredicates(e.SelectAttrValue("nodeset", "")), "repeat count", a.Value})
			}
		}
	}
	for _, c := range e.ChildElements() {
		collectExpressions(c, out)
	}
}

// CheckExpressions lists the expressions no form engine can read (not
// XPath), and those naming a node of the form that does not exist: a
// device cannot open such a form, so it is not published.
func (f *Form) CheckExpressions() []Problem {
	var out []Problem
	root := "/" + f.RootName
	for _, s := range f.exprSites {
		paths, err := ParseXPath(s.expr)
		if err != nil {
			out = append(out, Problem{Path: s.path, Message: fmt.Sprintf("its %s %q is not an expression a device can read: %v", s.attr, s.expr, err)})
			continue
		}
		for _, p := range paths {
			if (p == root || strings.HasPrefix(p, root+"/")) && f.Node(p) == nil {
				out = append(out, Problem{Path: s.path, Message: fmt.Sprintf("its %s %q refers to %s, which the form does not have", s.attr, s.expr, p)})
			}
		}
	}
	return out
}
