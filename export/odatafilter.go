package export

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/haven-org/haven"
)

// $filter and $orderby on a submission's metadata, as ODK Central allows
// them: __id and __system/submissionDate, updatedAt, submitterId,
// reviewState and deletedAt (from a repeat's table, through
// $root/Submissions/...); eq, ne, lt, le, gt, ge, and, or, not,
// parentheses, the functions year, month, day, hour, minute, second and
// now. Comparisons follow SQL, as Central's do in PostgreSQL: null only
// equals null, and a comparison with null is neither true nor false.
// Filters see no answer, so they run before anything is decrypted.

// ODataMeta is what a filter or an order reads of a submission.
type ODataMeta struct {
	InstanceID     string
	SubmissionDate time.Time
	UpdatedAt      *time.Time
	SubmitterID    int64
	ReviewState    *string
}

// filterable maps each property a filter may name to what it reads.
var filterable = map[string]string{
	"__id":                    "instanceId",
	"__system/submissionDate": "createdAt",
	"__system/updatedAt":      "updatedAt",
	"__system/submitterId":    "submitterId",
	"__system/reviewState":    "reviewState",
	"__system/deletedAt":      "deletedAt",
}

// property resolves a member name for the table read: a repeat's table
// reaches the submission only through $root/Submissions/.
func property(name string, subtable bool) (string, error) {
	if rest, ok := strings.CutPrefix(name, "$root/Submissions/"); ok {
		if p, ok := filterable[rest]; ok {
			return p, nil
		}
	} else if p, ok := filterable[name]; ok && !subtable {
		return p, nil
	}
	names := []string{"__id", "__system/submissionDate", "__system/updatedAt", "__system/submitterId", "__system/reviewState", "__system/deletedAt"}
	if subtable {
		for i := range names {
			names[i] = "$root/Submissions/" + names[i]
		}
	}
	return "", haven.Errorf(haven.ENOTIMPLEMENTED, "%q cannot be used to filter or order here; these can: %s.", name, strings.Join(names, ", "))
}

// value is a filter's value: null, text, a number, a time or a truth.
type value struct {
	kind byte // 0 null, 's' text, 'n' number, 't' time, 'b' truth
	s    string
	n    float64
	t    time.Time
	b    bool
}

// node is a parsed filter expression.
type node struct {
	op   string // or and not eq ne lt le gt ge, "lit", "prop", "call"
	l, r *node
	lit  value
	name string // the property, or the function
	args []*node
}

// ODataFilter is a parsed $filter.
type ODataFilter struct{ root *node }

// ParseODataFilter parses a $filter; subtable says it filters a repeat's
// table. A malformed filter is EINVALID, an unsupported one ENOTIMPLEMENTED.
func ParseODataFilter(expr string, subtable bool) (*ODataFilter, error) {
	return parseFilter(expr, &parser{subtable: subtable})
}

// parseFilter parses expr with p (which says what the filter may name).
func parseFilter(expr string, p *parser) (*ODataFilter, error) {
	toks, err := lex(expr)
	if err != nil {
		return nil, err
	}
	p.toks = toks
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.i < len(p.toks) {
		return nil, badFilter("unexpected %q", p.toks[p.i].text)
	}
	return &ODataFilter{root: n}, nil
}

// entityFilterable maps what a filter on an entity list may name (as
// Central does: an entity's metadata, never its values) to the ODataMeta
// member it reads.
var entityFilterable = map[string]string{
	"__id":               "instanceId",
	"__system/createdAt": "createdAt",
	"__system/updatedAt": "updatedAt",
	"__system/creatorId": "submitterId",
	"__system/conflict":  "reviewState",
	"__system/deletedAt": "deletedAt",
}

// ParseEntityFilter parses a $filter on an entity list's Entities. It is
// matched against ODataMeta{InstanceID: the uuid, SubmissionDate: when
// the entity was made, UpdatedAt, SubmitterID: its creator, ReviewState:
// its conflict}.
func ParseEntityFilter(expr string) (*ODataFilter, error) {
	return parseFilter(expr, &parser{entities: true})
}

func badFilter(format string, args ...any) error {
	return haven.Errorf(haven.EINVALID, "The $filter could not be read: %s. Write it like __system/submissionDate gt 2026-01-01 and __system/reviewState ne 'rejected'.", fmt.Sprintf(format, args...))
}

type token struct {
	kind byte // 'i' word or member, 's' string, 'n' number, 'd' date or time, '(' ')' ','
	text string
}

var (
	dateTimeRe = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?`)
	numberRe   = regexp.MustCompile(`^-?\d+(\.\d+)?([eE][+-]?\d+)?`)
	wordRe     = regexp.MustCompile(`^[$A-Za-z_][A-Za-z0-9_$/]*`)
)

func lex(s string) ([]token, error) {
	var out []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(' || c == ')' || c == ',':
			out = append(out, token{kind: c, text: string(c)})
			i++
		case c == '\'':
			var b strings.Builder
			j := i + 1
			for {
				if j >= len(s) {
					return nil, badFilter("a text in quotes is not closed")
				}
				if s[j] == '\'' {
					if j+1 < len(s) && s[j+1] == '\'' {
						b.WriteByte('\'')
						j += 2
						continue
					}
					break
				}
				b.WriteByte(s[j])
				j++
			}
			out = append(out, token{kind: 's', text: b.String()})
			i = j + 1
		default:
			if m := dateTimeRe.FindString(s[i:]); m != "" {
				out = append(out, token{kind: 'd', text: m})
				i += len(m)
			} else if m := numberRe.FindString(s[i:]); m != "" {
				out = append(out, token{kind: 'n', text: m})
				i += len(m)
			} else if m := wordRe.FindString(s[i:]); m != "" {
				out = append(out, token{kind: 'i', text: m})
				i += len(m)
			} else {
				return nil, badFilter("unexpected %q", s[i:i+1])
			}
		}
	}
	return out, nil
}

type parser struct {
	toks     []token
	i        int
	subtable bool
	depth    int
	// entities: the filter is on an entity list's Entities (Central's
	// names for an entity's metadata), not on submissions.
	entities bool
}

func (p *parser) peekWord(w string) bool {
	return p.i < len(p.toks) && p.toks[p.i].kind == 'i' && p.toks[p.i].text == w
}

func (p *parser) or() (*node, error) {
	if p.depth++; p.depth > 100 {
		return nil, badFilter("it nests too deep")
	}
	defer func() { p.depth-- }()
	l, err := p.and()
	for err == nil && p.peekWord("or") {
		p.i++
		var r *node
		if r, err = p.and(); err == nil {
			l = &node{op: "or", l: l, r: r}
		}
	}
	return l, err
}

func (p *parser) and() (*node, error) {
	l, err := p.not()
	for err == nil && p.peekWord("and") {
		p.i++
		var r *node
		if r, err = p.not(); err == nil {
			l = &node{op: "and", l: l, r: r}
		}
	}
	return l, err
}

func (p *parser) not() (*node, error) {
	if p.peekWord("not") {
		p.i++
		if p.depth++; p.depth > 100 {
			return nil, badFilter("it nests too deep")
		}
		defer func() { p.depth-- }()
		n, err := p.not()
		return &node{op: "not", l: n}, err
	}
	return p.compare()
}

var comparisons = map[string]bool{"eq": true, "ne": true, "lt": true, "le": true, "gt": true, "ge": true}

func (p *parser) compare() (*node, error) {
	l, err := p.operand()
	if err != nil {
		return nil, err
	}
	if p.i < len(p.toks) && p.toks[p.i].kind == 'i' && comparisons[p.toks[p.i].text] {
		op := p.toks[p.i].text
		p.i++
		r, err := p.operand()
		if err != nil {
			return nil, err
		}
		return &node{op: op, l: l, r: r}, nil
	}
	for _, w := range []string{"add", "sub", "mul", "div", "mod", "has", "in"} {
		if p.peekWord(w) {
			return nil, haven.Errorf(haven.ENOTIMPLEMENTED, "The $filter operator %q is not supported (nor by ODK Central): use eq, ne, lt, le, gt, ge, and, or, not.", w)
		}
	}
	return l, nil
}

var functions = map[string]int{"year": 1, "month": 1, "day": 1, "hour": 1, "minute": 1, "second": 1, "now": 0}

func (p *parser) operand() (*node, error) {
	if p.i >= len(p.toks) {
		return nil, badFilter("it ends too soon")
	}
	t := p.toks[p.i]
	p.i++
	switch t.kind {
	case '(':
		n, err := p.or()
		if err != nil {
			return nil, err
		}
		if p.i >= len(p.toks) || p.toks[p.i].kind != ')' {
			return nil, badFilter("a parenthesis is not closed")
		}
		p.i++
		return n, nil
	case 's':
		return &node{op: "lit", lit: value{kind: 's', s: t.text}}, nil
	case 'n':
		f, err := strconv.ParseFloat(t.text, 64)
		if err != nil {
			return nil, badFilter("%q is not a number", t.text)
		}
		return &node{op: "lit", lit: value{kind: 'n', n: f}}, nil
	case 'd':
		tm, ok := parseTime(t.text)
		if !ok {
			return nil, badFilter("%q is not a date or time", t.text)
		}
		return &node{op: "lit", lit: value{kind: 't', t: tm}}, nil
	case 'i':
		switch t.text {
		case "null":
			return &node{op: "lit"}, nil
		case "true", "false":
			return &node{op: "lit", lit: value{kind: 'b', b: t.text == "true"}}, nil
		}
		if p.i < len(p.toks) && p.toks[p.i].kind == '(' {
			arity, ok := functions[t.text]
			if !ok {
				return nil, haven.Errorf(haven.ENOTIMPLEMENTED, "The $filter function %q is not supported (nor by ODK Central): use year, month, day, hour, minute, second or now.", t.text)
			}
			p.i++
			n := &node{op: "call", name: t.text}
			for p.i < len(p.toks) && p.toks[p.i].kind != ')' {
				if len(n.args) > 0 {
					if p.toks[p.i].kind != ',' {
						return nil, badFilter("the arguments of %s() need commas", t.text)
					}
					p.i++
				}
				a, err := p.or()
				if err != nil {
					return nil, err
				}
				n.args = append(n.args, a)
			}
			if p.i >= len(p.toks) {
				return nil, badFilter("a parenthesis is not closed")
			}
			p.i++
			if len(n.args) != arity {
				return nil, badFilter("%s() takes %d argument(s)", t.text, arity)
			}
			return n, nil
		}
		if p.entities {
			prop, ok := entityFilterable[t.text]
			if !ok {
				return nil, haven.Errorf(haven.ENOTIMPLEMENTED, "%q cannot be used to filter entities; these can: __id, __system/createdAt, __system/updatedAt, __system/creatorId, __system/conflict, __system/deletedAt.", t.text)
			}
			return &node{op: "prop", name: prop}, nil
		}
		prop, err := property(t.text, p.subtable)
		if err != nil {
			return nil, err
		}
		return &node{op: "prop", name: prop}, nil
	}
	return nil, badFilter("unexpected %q", t.text)
}

// parseTime reads a date (midnight UTC) or a time with or without its offset (UTC).
func parseTime(s string) (time.Time, bool) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02T15:04Z07:00", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// tri is SQL's three-valued truth.
type tri byte

const (
	unknown tri = iota
	yes
	no
)

func truth(b bool) tri {
	if b {
		return yes
	}
	return no
}

// Match reports whether a submission passes the filter (a nil filter
// passes everything).
func (f *ODataFilter) Match(m ODataMeta, now time.Time) bool {
	if f == nil {
		return true
	}
	return f.root.truth(m, now) == yes
}

func (n *node) truth(m ODataMeta, now time.Time) tri {
	switch n.op {
	case "or":
		l, r := n.l.truth(m, now), n.r.truth(m, now)
		switch {
		case l == yes || r == yes:
			return yes
		case l == no && r == no:
			return no
		}
		return unknown
	case "and":
		l, r := n.l.truth(m, now), n.r.truth(m, now)
		switch {
		case l == no || r == no:
			return no
		case l == yes && r == yes:
			return yes
		}
		return unknown
	case "not":
		switch n.l.truth(m, now) {
		case yes:
			return no
		case no:
			return yes
		}
		return unknown
	case "eq", "ne", "lt", "le", "gt", "ge":
		return compare(n.op, n.l.eval(m, now), n.r.eval(m, now))
	}
	v := n.eval(m, now)
	if v.kind == 'b' {
		return truth(v.b)
	}
	return unknown
}

func (n *node) eval(m ODataMeta, now time.Time) value {
	switch n.op {
	case "lit":
		return n.lit
	case "prop":
		switch n.name {
		case "instanceId":
			return value{kind: 's', s: m.InstanceID}
		case "createdAt":
			return value{kind: 't', t: m.SubmissionDate}
		case "updatedAt":
			if m.UpdatedAt == nil {
				return value{}
			}
			return value{kind: 't', t: *m.UpdatedAt}
		case "submitterId":
			return value{kind: 'n', n: float64(m.SubmitterID)}
		case "reviewState":
			if m.ReviewState == nil {
				return value{}
			}
			return value{kind: 's', s: *m.ReviewState}
		}
		return value{} // deletedAt: Haven erases for good, so nothing is ever deleted-but-kept
	case "call":
		if n.name == "now" {
			return value{kind: 't', t: now}
		}
		a := n.args[0].eval(m, now)
		if a.kind == 's' {
			if t, ok := parseTime(a.s); ok {
				a = value{kind: 't', t: t}
			}
		}
		if a.kind != 't' {
			return value{}
		}
		t := a.t.UTC()
		var x float64
		switch n.name {
		case "year":
			x = float64(t.Year())
		case "month":
			x = float64(t.Month())
		case "day":
			x = float64(t.Day())
		case "hour":
			x = float64(t.Hour())
		case "minute":
			x = float64(t.Minute())
		case "second":
			x = float64(t.Second()) + float64(t.Nanosecond())/1e9
		}
		return value{kind: 'n', n: x}
	}
	return value{kind: 'b', b: n.truth(m, now) == yes}
}

// compare compares as PostgreSQL would: null is equal only to null (eq and
// ne are IS NOT DISTINCT FROM) and otherwise unknown; a text beside a time
// or a number is read as one.
func compare(op string, l, r value) tri {
	if l.kind == 0 || r.kind == 0 {
		switch op {
		case "eq":
			return truth(l.kind == r.kind)
		case "ne":
			return truth(l.kind != r.kind)
		}
		return unknown
	}
	l, r = coerce(l, r), coerce(r, l)
	if l.kind != r.kind {
		return unknown
	}
	var c int
	switch l.kind {
	case 's':
		c = strings.Compare(l.s, r.s)
	case 'n':
		c = cmpFloat(l.n, r.n)
	case 't':
		c = l.t.Compare(r.t)
	case 'b':
		c = cmpFloat(b2f(l.b), b2f(r.b))
	}
	switch op {
	case "eq":
		return truth(c == 0)
	case "ne":
		return truth(c != 0)
	case "lt":
		return truth(c < 0)
	case "le":
		return truth(c <= 0)
	case "gt":
		return truth(c > 0)
	}
	return truth(c >= 0)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// coerce reads v as the kind of other where v is text.
func coerce(v, other value) value {
	if v.kind != 's' || other.kind == 's' {
		return v
	}
	switch other.kind {
	case 't':
		if t, ok := parseTime(strings.TrimSpace(v.s)); ok {
			return value{kind: 't', t: t}
		}
	case 'n':
		if f, err := strconv.ParseFloat(strings.TrimSpace(v.s), 64); err == nil && !math.IsNaN(f) {
			return value{kind: 'n', n: f}
		}
	}
	return v
}

// OrderKey is one key of an $orderby: instanceId, createdAt, updatedAt,
// submitterId or reviewState, ascending or descending.
type OrderKey struct {
	Field string
	Desc  bool
}

// ParseODataOrderBy parses an $orderby on the submissions' metadata.
func ParseODataOrderBy(expr string) ([]OrderKey, error) {
	var out []OrderKey
	for _, part := range strings.Split(expr, ",") {
		f := strings.Fields(part)
		if len(f) == 0 || len(f) > 2 {
			return nil, haven.Errorf(haven.EINVALID, "The $orderby %q could not be read: write it like __system/submissionDate desc.", expr)
		}
		p, err := property(f[0], false)
		if err != nil {
			return nil, err
		}
		k := OrderKey{Field: p}
		if len(f) == 2 {
			switch strings.ToLower(f[1]) {
			case "asc":
			case "desc":
				k.Desc = true
			default:
				return nil, haven.Errorf(haven.EINVALID, "The $orderby direction %q is neither asc nor desc.", f[1])
			}
		}
		out = append(out, k)
	}
	return out, nil
}
