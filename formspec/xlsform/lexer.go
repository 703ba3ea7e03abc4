package xlsform

import (
	"regexp"
	"strings"
	"sync"
)

// pyxform decides some things about a cell (is this default an expression
// to evaluate, or a value?) by cutting it into tokens with a regular
// expression lexer, the first rule that matches at each position winning.
// exprRules are those rules in pyxform 4.5's order. Go's regexp picks among
// alternatives as a backtracking engine would, as Python's re does, so each
// rule gives the token pyxform's would; \d and \s are widened to Python's
// Unicode classes. The name-start class leaves out U+00C0-U+00D6 as
// pyxform's does (a bracket is missing there), so "Àb(" is no function call.
// They are compiled on first use: at start they would cost every process,
// the CLI's one conversion included, a millisecond.
var exprRules = sync.OnceValue(func() []exprRule {
	const (
		digit     = `\p{Nd}`
		space     = `[\t\n\x{0b}\f\r \x{1c}-\x{1f}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]`
		nameStart = `(?:\x{c0}-\x{d6}\]|[A-Z_a-z\x{d8}-\x{f6}\x{f8}-\x{2ff}\x{370}-\x{37d}\x{37f}-\x{1fff}\x{200c}-\x{200d}\x{2070}-\x{218f}\x{2c00}-\x{2fef}\x{3001}-\x{d7ff}\x{f900}-\x{fdcf}\x{fdf0}-\x{fffd}\x{10000}-\x{effff}])`
		nameChar  = `(?:` + nameStart + `|[-.0-9\x{b7}\x{300}-\x{36f}\x{203f}-\x{2040}])`
		ncname    = nameStart + nameChar + `*`
		nsName    = ncname + `(?::` + ncname + `)?`
		date      = `-?` + digit + `{4}-` + digit + `{2}-` + digit + `{2}`
		clock     = digit + `{2}:` + digit + `{2}:` + digit + `{2}(?:\.` + space + `+)?(?:(?:[+-]` + digit + `{2}:` + digit + `{2})|Z)?`
	)
	rules := []struct{ kind, re string }{
		{"DATETIME", date + "T" + clock},
		{"DATE", date},
		{"TIME", clock},
		{"NUMBER", `-?` + digit + `+\.` + digit + `*|-?\.` + digit + `+|-?` + digit + `+`},
		{"OPS_MATH", `[*+-]| mod | div `},
		{"OPS_COMP", `=|!=|<|>|<=|>=`},
		{"OPS_BOOL", ` and | or `},
		{"OPS_UNION", `\|`},
		{"OPEN_PAREN", `\(`},
		{"CLOSE_PAREN", `\)`},
		{"BRACKET", `\[\]\{\}`},
		{"PARENT_REF", `\.\.`},
		{"SELF_REF", `\.`},
		{"PATH_SEP", `/`},
		{"SYSTEM_LITERAL", `"[^"]*"|'[^']*'`},
		{"COMMA", `,`},
		{"WHITESPACE", space + `+`},
		{"PYXFORM_REF", `\$\{(?:last-saved#)?` + ncname + `\}`},
		{"FUNC_CALL", nsName + `\(`},
		{"XPATH_PRED_START", nsName + `\[`},
		{"XPATH_PRED_END", `\]`},
		{"URI_SCHEME", ncname + `://`},
		{"NAME", ncname},
		{"PYXFORM_REF_START", `\$\{`},
		{"PYXFORM_REF_END", `\}`},
		{"OTHER", `(?s:.)`},
	}
	out := make([]exprRule, len(rules))
	for i, r := range rules {
		out[i] = exprRule{r.kind, regexp.MustCompile(`^(?:` + r.re + `)`)}
	}
	return out
})

type exprRule struct {
	kind string
	re   *regexp.Regexp
}

type exprToken struct{ kind, text string }

// exprTokens cuts s into tokens as pyxform's lexer does.
func exprTokens(s string) []exprToken {
	var out []exprToken
	for s != "" {
		for _, r := range exprRules() {
			if m := r.re.FindString(s); m != "" {
				out = append(out, exprToken{r.kind, m})
				s = s[len(m):]
				break
			}
		}
	}
	return out
}

// dynamicDefault reports whether a question's default is an expression to
// evaluate when the form opens (a setvalue) rather than a value written into
// the instance, as pyxform decides: the first token that is arithmetic, a
// union, a ${reference} or a function call makes it dynamic. For dates and
// geo types a minus read before any of those makes it a value ("-2022-03-14",
// "1 -2"), even if an expression follows; brackets alone never count.
func dynamicDefault(d, typ string) bool {
	if d == "" {
		return false
	}
	minusIsText := false
	switch typ {
	case "date", "dateTime", "geopoint", "geotrace", "geoshape":
		minusIsText = true
	}
	for _, t := range exprTokens(d) {
		switch t.kind {
		case "OPS_MATH":
			if minusIsText && t.text == "-" {
				return false
			}
			return true
		case "OPS_UNION", "PYXFORM_REF", "FUNC_CALL":
			return true
		}
	}
	return false
}

// instanceSpans finds the instance('list')/path[predicate]/path expressions
// in label text, as pyxform 4.5 finds them: a path ends at whitespace (or at
// any token that cannot continue it) outside a predicate, and anything goes
// inside one. Each span becomes a single <output>, so that a ${reference} in
// its predicate is part of the expression rather than an output of its own.
func instanceSpans(s string) [][2]int {
	if len(s) <= len("instance(") || !strings.Contains(s, "instance(") {
		return nil
	}
	var bounds []int
	var last exprToken
	lastEnd := -1
	inInstance, inPath, inPred := false, false, false
	pos := 0
	for _, t := range exprTokens(s) {
		start := pos
		pos += len(t.text)
		emit := false
		switch {
		case !inInstance && t.kind == "FUNC_CALL" && t.text == "instance(":
			inInstance, emit = true, true
			bounds = append(bounds, start)
		case !inInstance:
		case t.kind == "SYSTEM_LITERAL" && last.kind == "FUNC_CALL" && last.text == "instance(":
			emit = true
		case last.kind == "SYSTEM_LITERAL" && t.kind == "CLOSE_PAREN":
			emit = true
		case t.kind == "PATH_SEP" && (last.kind == "CLOSE_PAREN" || last.kind == "XPATH_PRED_END"):
			emit, inPath = true, true
		case inPath:
			switch t.kind {
			case "WHITESPACE":
				inPath = false
			case "XPATH_PRED_START":
				emit, inPath, inPred = true, false, true
			default:
				emit = true
			}
		case inPred:
			emit = true
			inPred = t.kind != "XPATH_PRED_END"
		}
		if emit {
			last, lastEnd = t, pos
		} else if inInstance {
			inInstance = false
			bounds = append(bounds, lastEnd)
		}
	}
	if lastEnd >= 0 {
		bounds = append(bounds, lastEnd)
	}
	var out [][2]int
	for i := 0; i+1 < len(bounds); i += 2 {
		out = append(out, [2]int{bounds[i], bounds[i+1]})
	}
	return out
}
