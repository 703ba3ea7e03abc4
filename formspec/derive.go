package formspec

import (
	"strings"

	"github.com/beevik/etree"
	"github.com/haven-org/haven"
)

// Derived tiers. A value the form computes from answers (a calculate, a
// dynamic default, a trigger's setvalue, meta/instanceName, an entity's
// label) tells what the answers it reads tell: its tier is the highest tier
// among the fields its expressions reference, and never lower than what the
// designer declared. A reference to a group or repeat reads everything in
// it; a reference Haven cannot place within the primary instance reads its
// nearest known ancestor. Over-approximating is the safe direction: a value
// is at worst shown to fewer readers than it could be.

// readSetvalues records, on the nodes they fill, the value expressions of
// every setvalue action in the document (model or body): dynamic defaults
// (odk-instance-first-load, odk-new-repeat) and triggers (xforms-value-changed).
func (f *Form) readSetvalues(e *etree.Element, binds map[string]string) {
	if e.Tag == "setvalue" {
		ref := e.SelectAttrValue("ref", "")
		if ref == "" {
			ref = binds[e.SelectAttrValue("bind", "")]
		}
		if n := f.Node(stripPredicates(ref)); n != nil {
			if v := e.SelectAttrValue("value", ""); strings.TrimSpace(v) != "" {
				n.exprs = append(n.exprs, v)
			}
		}
	}
	for _, c := range e.ChildElements() {
		f.readSetvalues(c, binds)
	}
}

// deriveTiers sets every computed node's derived tier from base, the
// effective tier of each field as declared (or mapped), until no derived
// tier rises any more (calculates may read calculates).
func (f *Form) deriveTiers(base map[string]haven.Sensitivity) {
	var computed []*Node
	for _, n := range f.Fields() {
		if len(n.exprs) > 0 {
			computed = append(computed, n)
		}
	}
	if len(computed) == 0 {
		return
	}
	refs := make([][]string, len(computed))
	for i, n := range computed {
		for _, e := range n.exprs {
			refs[i] = append(refs[i], exprRefs(e, n.Path)...)
		}
	}
	tier := func(path string) haven.Sensitivity {
		t, ok := base[path]
		if !ok {
			return haven.Public
		}
		if n := f.Node(path); n != nil {
			return haven.MaxSensitivity(t, n.derived)
		}
		return t
	}
	// Each round can only raise a tier, and there are four: it ends.
	for changed := true; changed; {
		changed = false
		for i, n := range computed {
			d := n.derived
			if d == "" {
				d = haven.Public
			}
			for _, r := range refs[i] {
				d = haven.MaxSensitivity(d, f.refTier(r, tier))
			}
			if d != n.derived {
				n.derived, changed = d, true
			}
		}
	}
}

// refTier is the tier of what a reference reads: a field's own, the
// highest within a group or repeat, or within the nearest ancestor the form
// defines when the path goes past what it knows.
func (f *Form) refTier(path string, tier func(string) haven.Sensitivity) haven.Sensitivity {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if len(parts) == 0 || parts[0] != f.Root.Name {
		return haven.Public // another instance's data (a choice list, a CSV): part of the form
	}
	n := f.Root
	for _, p := range parts[1:] {
		c := n.Child(p)
		if c == nil {
			break
		}
		n = c
	}
	if !n.IsGroup() {
		return tier(n.Path)
	}
	highest := haven.Public
	var walk func(n *Node)
	walk = func(n *Node) {
		for _, c := range n.Children {
			if c.IsGroup() {
				walk(c)
			} else {
				highest = haven.MaxSensitivity(highest, tier(c.Path))
			}
		}
	}
	walk(n)
	return highest
}

// exprRefs returns the paths of the primary instance an XPath expression
// reads: absolute paths, paths relative to ctx (., .., current()), and
// absolute paths inside predicates and function arguments. Paths inside
// secondary instances (instance('x')/...) come back under that instance's
// own root and place nothing in the primary one.
func exprRefs(expr, ctx string) []string {
	toks := lexXPath(expr)
	var out []string
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch {
		case t.kind == tokName && t.text == "current" && i+2 < len(toks) && toks[i+1].text == "(" && toks[i+2].text == ")":
			j := i + 3
			var steps []string
			if j < len(toks) && toks[j].text == "/" {
				steps, j = pathSteps(toks, j+1)
			} else if j < len(toks) && toks[j].text == "//" {
				j++ // everything below the context node: the node itself stands for it
			}
			out = append(out, resolveSteps(ctx, steps))
			i = j - 1
		case t.kind == tokName && t.text == "instance" && i+1 < len(toks) && toks[i+1].text == "(":
			// A secondary instance: skip its name and its path; predicates
			// inside the path are still read (below) for absolute paths.
			depth := 0
			j := i + 1
			for ; j < len(toks); j++ {
				if toks[j].text == "(" {
					depth++
				} else if toks[j].text == ")" {
					if depth--; depth == 0 {
						break
					}
				}
			}
			i = j
		case (t.text == "/" || t.text == "//") && !continuesPath(toks, i):
			steps, next := pathSteps(toks, i)
			out = append(out, resolveSteps("", steps))
			i = max(next, i+1) - 1
		case (t.text == "." || t.text == "..") && !continuesPath(toks, i):
			steps, next := pathSteps(toks, i)
			out = append(out, resolveSteps(ctx, steps))
			i = max(next, i+1) - 1
		}
	}
	return out
}

// continuesPath reports whether the token at i follows a step or a call,
// so it belongs to a path being read (a/b, f()/x) rather than starting one.
func continuesPath(toks []xtoken, i int) bool {
	if i == 0 {
		return false
	}
	p := toks[i-1]
	if p.kind == tokName {
		switch p.text {
		case "and", "or", "div", "mod":
			return false // an operator: what follows is an operand
		}
		return true
	}
	return p.text == ")" || p.text == "]" || p.text == "." || p.text == ".."
}

// pathSteps reads a location path from toks[i]: its separators and steps,
// stopping at the first token that is neither. Predicates are skipped
// whole (exprRefs still reads their absolute paths); a "//" or a wildcard
// ends the path at the node reached, which then stands for its whole subtree.
func pathSteps(toks []xtoken, i int) ([]string, int) {
	var steps []string
	expectStep := true
	if i < len(toks) && (toks[i].text == "/" || toks[i].text == "//") {
		steps = append(steps, "/")
		if toks[i].text == "//" {
			return steps, i + 1
		}
		i++
	}
	for i < len(toks) {
		t := toks[i]
		switch {
		case expectStep && (t.kind == tokName || t.text == "." || t.text == ".."):
			if t.kind == tokName && i+1 < len(toks) && toks[i+1].text == "(" {
				return steps, i // a function call, not a step
			}
			steps = append(steps, t.text)
			expectStep = false
			i++
		case expectStep && (t.text == "*" || t.text == "@"):
			return steps, i
		case !expectStep && t.text == "[":
			depth := 0
			for ; i < len(toks); i++ {
				if toks[i].text == "[" {
					depth++
				} else if toks[i].text == "]" {
					if depth--; depth == 0 {
						i++
						break
					}
				}
			}
		case !expectStep && t.text == "/":
			expectStep = true
			i++
		case !expectStep && t.text == "//":
			return steps, i + 1
		default:
			return steps, i
		}
	}
	return steps, i
}

// resolveSteps turns steps into an absolute path: from the root when they
// start with "/", else from ctx. Prefixes (orx:instanceID) are dropped, as
// node paths use local names.
func resolveSteps(ctx string, steps []string) string {
	var parts []string
	if len(steps) > 0 && steps[0] == "/" {
		steps = steps[1:]
	} else {
		parts = strings.Split(strings.Trim(ctx, "/"), "/")
	}
	for _, s := range steps {
		switch s {
		case ".":
		case "..":
			if len(parts) > 0 {
				parts = parts[:len(parts)-1]
			}
		default:
			if i := strings.LastIndexByte(s, ':'); i >= 0 {
				s = s[i+1:]
			}
			parts = append(parts, s)
		}
	}
	return "/" + strings.Join(parts, "/")
}

type tokKind int

const (
	tokOther tokKind = iota
	tokName
	tokString
	tokNumber
)

type xtoken struct {
	kind tokKind
	text string
}

// lexXPath splits an XPath expression into names (with their prefixes),
// string literals, numbers and punctuation. It is lenient: anything it does
// not know becomes a token of its own, so a malformed expression still has
// its paths read.
func lexXPath(s string) []xtoken {
	var out []xtoken
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '\'' || c == '"':
			j := strings.IndexByte(s[i+1:], c)
			if j < 0 {
				j = len(s) - i - 1
			}
			out = append(out, xtoken{tokString, s[i+1 : i+1+j]})
			i += j + 2
		case c == '/':
			if i+1 < len(s) && s[i+1] == '/' {
				out = append(out, xtoken{tokOther, "//"})
				i += 2
			} else {
				out = append(out, xtoken{tokOther, "/"})
				i++
			}
		case c == '.':
			switch {
			case i+1 < len(s) && s[i+1] == '.':
				out = append(out, xtoken{tokOther, ".."})
				i += 2
			case i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
				j := i + 1
				for j < len(s) && s[j] >= '0' && s[j] <= '9' {
					j++
				}
				out = append(out, xtoken{tokNumber, s[i:j]})
				i = j
			default:
				out = append(out, xtoken{tokOther, "."})
				i++
			}
		case c >= '0' && c <= '9':
			j := i
			for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == '.') {
				j++
			}
			out = append(out, xtoken{tokNumber, s[i:j]})
			i = j
		case isNameStart(c):
			j := i
			for j < len(s) && (isNameStart(s[j]) || s[j] >= '0' && s[j] <= '9' || s[j] == '-' || s[j] == '.' ||
				s[j] == ':' && j+1 < len(s) && isNameStart(s[j+1])) {
				j++
			}
			out = append(out, xtoken{tokName, s[i:j]})
			i = j
		default:
			out = append(out, xtoken{tokOther, string(c)})
			i++
		}
	}
	return out
}

// isNameStart reports whether c can start an XML name (any byte of a
// non-ASCII letter counts: names are read, not validated).
func isNameStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}
