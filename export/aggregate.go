package export

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/formspec"
)

// Aggregates count submissions (or sum or average a number) by up to three
// declared dimensions, with the small-cell rule applied to every cell,
// margins included:
//  1. a count under k (the project's, default 5, never below 3) is shown as
//     "<k"; zero stays 0 unless the form's default tier is level_3;
//  2. a line (one dimension varying, the others fixed, with its margin)
//     with exactly one hidden cell also hides its smallest other cell,
//     until no line has exactly one;
//  3. sums and means are hidden with their counts (a mean also when fewer
//     than k values went into it); a query whose base is under 2k is refused;
//  4. dimensions are select_one questions or date buckets (week, month),
//     never free text or exact times.
// Margins are decided before the cells inside them, from the margins
// inward, so a margin reads the same in every query that shows it: asking
// for district alone and for district by sex cannot be played against each other.

// AggregateOptions is an aggregate query.
type AggregateOptions struct {
	By      []string // dimensions: field names or paths, date fields with :week or :month, submissionDate:week|month
	Measure string   // count (default), sum:field or mean:field
	// Labels adds the choices' labels (in Language, the form's default
	// language when empty) beside their values; tables show the labels.
	Labels   bool
	Language string
}

// Aggregate is an answer: every cell, margins included.
type Aggregate struct {
	Dimensions []string        `json:"dimensions"`
	Measure    string          `json:"measure"`
	K          int             `json:"k"`
	Cells      []AggregateCell `json:"cells"`
}

// AggregateCell is one cell. A dimension's value is "" in a margin
// (every category); Count is a number or "<k".
type AggregateCell struct {
	Keys []string `json:"keys"`
	// Labels are the keys' choice labels, when asked for ("" in a margin).
	Labels []string `json:"labels,omitempty"`
	Count  string   `json:"count"`
	Value  *string  `json:"value,omitempty"` // the sum or mean; absent when hidden
}

// MarshalJSON writes a cell with its count and measure as numbers, as a
// script sums them; a suppressed cell has a null count, says so, and
// carries what the tables show ("<5").
func (c AggregateCell) MarshalJSON() ([]byte, error) {
	out := struct {
		Keys       []string `json:"keys"`
		Labels     []string `json:"labels,omitempty"`
		Count      *int64   `json:"count"`
		Suppressed bool     `json:"suppressed"`
		Shown      string   `json:"shown,omitempty"`
		Value      *float64 `json:"value,omitempty"`
	}{Keys: c.Keys, Labels: c.Labels}
	if n, err := strconv.ParseInt(c.Count, 10, 64); err == nil {
		out.Count = &n
	} else {
		out.Suppressed, out.Shown = true, c.Count
	}
	if c.Value != nil {
		if v, err := strconv.ParseFloat(*c.Value, 64); err == nil {
			out.Value = &v
		}
	}
	return json.Marshal(out)
}

// Table is the aggregate as rows: a header, then one row per cell. A
// margin's dimension reads "(all)"; a count-only aggregate has no value column.
func (a *Aggregate) Table() [][]string {
	header := append(append([]string{}, a.Dimensions...), "count")
	if a.Measure != "count" {
		header = append(header, a.Measure)
	}
	rows := [][]string{header}
	for _, cell := range a.Cells {
		row := make([]string, 0, len(cell.Keys)+2)
		keys := cell.Keys
		if cell.Labels != nil {
			keys = cell.Labels
		}
		for _, k := range keys {
			if k == "" {
				k = "(all)"
			}
			row = append(row, k)
		}
		row = append(row, cell.Count)
		if a.Measure != "count" {
			v := ""
			if cell.Value != nil {
				v = *cell.Value
			}
			row = append(row, v)
		}
		rows = append(rows, row)
	}
	return rows
}

// WriteCSV writes the aggregate's table as CSV.
func (a *Aggregate) WriteCSV(w io.Writer) error { return writeCSV(w, a.Table()) }

// WriteXLSX writes the aggregate's table as a one-sheet workbook.
// Counts and measures are numbers; a suppressed cell stays the text "<k".
func (a *Aggregate) WriteXLSX(w io.Writer) error {
	n := len(a.Dimensions)
	return WriteTable(w, "aggregate", a.Table(), n, n+1)
}

// writeCSV writes rows as CSV, cells a spreadsheet would run as a formula
// neutralised (see SafeCell).
func writeCSV(w io.Writer, rows [][]string) error {
	cw := csv.NewWriter(w)
	for _, r := range rows {
		for i := range r {
			r[i] = SafeCell(r[i])
		}
		if err := cw.Write(r); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

type dim struct {
	name   string
	node   *formspec.Node // nil for submissionDate
	bucket string         // week or month; "" for a select
	cats   []string
	index  map[string]int
}

func (d *dim) value(sub *haven.Submission, inst *formspec.Instance) string {
	var v string
	if d.node == nil {
		v = sub.CreatedAt.UTC().Format(time.RFC3339)
	} else {
		v, _ = inst.Value(d.node.Path)
		v = strings.TrimSpace(v)
	}
	if d.bucket == "" || v == "" {
		return v
	}
	t, err := time.Parse("2006-01-02", v[:min(len(v), 10)])
	if err != nil {
		return ""
	}
	if d.bucket == "month" {
		return t.Format("2006-01")
	}
	y, w := t.ISOWeek()
	return fmt.Sprintf("%d-W%02d", y, w)
}

// Query is an aggregate query resolved against a form: its dimensions
// and its measure.
type Query struct {
	opts    AggregateOptions
	dims    []*dim
	measure string         // count, sum or mean
	mfield  *formspec.Node // the summed or averaged field; nil for count
	lang    string         // of the labels
}

// Plan resolves an aggregate query against the schema of a form's current
// version: one to three dimensions (select_one questions or date buckets,
// never free text), and a measure.
func Plan(schema *formspec.Form, formID string, opts AggregateOptions) (*Query, error) {
	if len(opts.By) == 0 || len(opts.By) > 3 {
		return nil, haven.Errorf(haven.EINVALID, "Give one to three dimensions in by= (select_one questions, or date fields with :week or :month).")
	}
	field := func(ref string) (*formspec.Node, error) {
		var n *formspec.Node
		if strings.HasPrefix(ref, "/") {
			n = schema.Node(ref)
		} else {
			for _, c := range schema.Fields() {
				if c.Name == ref {
					n = c
					break
				}
			}
		}
		switch {
		case n == nil || n.IsGroup():
			return nil, haven.Errorf(haven.EINVALID, "%q is not a field of form %q.", ref, formID)
		case schema.InRepeat(n):
			return nil, haven.Errorf(haven.EINVALID, "%q is inside a repeat; aggregates count submissions, so use fields outside repeats.", ref)
		}
		return n, nil
	}
	q := &Query{opts: opts, measure: "count", lang: opts.Language}
	if q.lang == "" {
		q.lang = schema.DefaultLanguage
	}
	for _, b := range opts.By {
		name, bucket, _ := strings.Cut(strings.TrimSpace(b), ":")
		d := &dim{name: strings.TrimSpace(b), bucket: bucket, index: map[string]int{}}
		if bucket != "" && bucket != "week" && bucket != "month" {
			return nil, haven.Errorf(haven.EINVALID, "%q: a date bucket is :week or :month.", b)
		}
		if name == "submissionDate" {
			if bucket == "" {
				return nil, haven.Errorf(haven.EINVALID, "submissionDate groups by :week or :month, never by exact time.")
			}
		} else {
			n, err := field(name)
			if err != nil {
				return nil, err
			}
			switch {
			case bucket != "" && n.Type != "date" && n.Type != "dateTime":
				return nil, haven.Errorf(haven.EINVALID, "%q is not a date, so it cannot be bucketed by %s.", name, bucket)
			case bucket == "" && n.Control != "select1":
				return nil, haven.Errorf(haven.EINVALID, "%q is not a select_one question; group only by select_one questions or date buckets (field:week, field:month), never by free text.", name)
			}
			d.node = n
			for c := range n.Choices {
				d.cats = append(d.cats, c)
			}
			sort.Strings(d.cats)
		}
		q.dims = append(q.dims, d)
	}
	if opts.Measure != "" && opts.Measure != "count" {
		kind, ref, _ := strings.Cut(opts.Measure, ":")
		if (kind != "sum" && kind != "mean") || ref == "" {
			return nil, haven.Errorf(haven.EINVALID, "measure is count, sum:field or mean:field, not %q.", opts.Measure)
		}
		n, err := field(ref)
		if err != nil {
			return nil, err
		}
		if n.Type != "int" && n.Type != "decimal" {
			return nil, haven.Errorf(haven.EINVALID, "%q is not a number (integer or decimal), so it cannot be summed or averaged.", ref)
		}
		q.measure, q.mfield = kind, n
	}
	return q, nil
}

// Fields lists the fields the query reads (its dimensions and measure),
// for the caller to check against the reader's clearance.
func (q *Query) Fields() []*formspec.Node {
	var out []*formspec.Node
	for _, d := range q.dims {
		if d.node != nil {
			out = append(out, d.node)
		}
	}
	if q.mfield != nil {
		out = append(out, q.mfield)
	}
	return out
}

// Run counts the rows in one pass and applies the small-cell rule with k;
// with hideZero, zero counts are hidden too (a form whose data is all
// level_3). A query whose base is under 2k is refused. A query runs once.
func (q *Query) Run(ctx context.Context, rows func(ctx context.Context, fn func(Row) error) error, k int, hideZero bool) (*Aggregate, error) {
	raw, err := q.count(ctx, rows)
	if err != nil {
		return nil, err
	}
	if k < 3 {
		k = 5
	}
	cube, sums := q.fill(raw, q.order())
	total := cube.count[[3]int{-1, -1, -1}]
	if total < 2*k {
		return nil, haven.Errorf(haven.EFORBIDDEN, "This form has %d submissions, fewer than %d (twice the smallest count shown, %d): too few to aggregate without singling people out.", total, 2*k, k)
	}
	return q.answer(cube, sums, cube.suppress(k, hideZero), k), nil
}

// acc counts the submissions of a cell, and the values of the measure.
type acc struct {
	n, vals int
	sum     float64
}

// count makes one pass over the rows, counting every combination of the
// dimensions' values seen (indexed in the order they were met).
func (q *Query) count(ctx context.Context, rows func(ctx context.Context, fn func(Row) error) error) (map[[3]int]*acc, error) {
	raw := map[[3]int]*acc{}
	err := rows(ctx, func(r Row) error {
		key := [3]int{-1, -1, -1}
		for i, d := range q.dims {
			v := d.value(r.Sub, r.Inst)
			j, ok := d.index[v]
			if !ok {
				j = len(d.index)
				d.index[v] = j
			}
			key[i] = j
		}
		a := raw[key]
		if a == nil {
			a = &acc{}
			raw[key] = a
		}
		a.n++
		if q.mfield != nil {
			if v, _ := r.Inst.Value(q.mfield.Path); strings.TrimSpace(v) != "" {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && !math.IsInf(f, 0) {
					a.vals++
					a.sum += f
				}
			}
		}
		return nil
	})
	return raw, err
}

// order puts each dimension's categories in a stable order (declared
// choices, then what else was answered; a blank answer is the category
// "(none)") and returns, per dimension, where each value met moves.
func (q *Query) order() [][]int {
	remap := make([][]int, len(q.dims))
	for i, d := range q.dims {
		seen := map[string]bool{}
		for _, c := range d.cats {
			seen[c] = true
		}
		var extra []string
		for v := range d.index {
			if !seen[v] {
				extra = append(extra, v)
			}
		}
		sort.Strings(extra)
		d.cats = append(d.cats, extra...)
		pos := map[string]int{}
		for j, c := range d.cats {
			pos[c] = j
		}
		remap[i] = make([]int, len(d.index))
		for v, j := range d.index {
			remap[i][j] = pos[v]
		}
	}
	return remap
}

// fill puts the counts into a cube, margins included, and sums the measure
// for every cell and margin.
func (q *Query) fill(raw map[[3]int]*acc, remap [][]int) (*cube, map[[3]int]*acc) {
	sizes := make([]int, len(q.dims))
	for i, d := range q.dims {
		sizes[i] = len(d.cats)
	}
	cube := newCube(sizes)
	sums := map[[3]int]*acc{}
	for key, a := range raw {
		for i := range q.dims {
			key[i] = remap[i][key[i]]
		}
		cube.add(key, a.n)
		for _, m := range cube.margins(key) {
			s := sums[m]
			if s == nil {
				s = &acc{}
				sums[m] = s
			}
			s.vals += a.vals
			s.sum += a.sum
		}
	}
	return cube, sums
}

// answer writes every cell: its keys, its count or "<k" when hidden, and
// its sum or mean, hidden with the count (a mean also when fewer than k
// values went into it).
func (q *Query) answer(cube *cube, sums map[[3]int]*acc, hidden map[[3]int]bool, k int) *Aggregate {
	out := &Aggregate{Measure: q.opts.Measure, K: k, Cells: []AggregateCell{}}
	if out.Measure == "" {
		out.Measure = "count"
	}
	for _, d := range q.dims {
		out.Dimensions = append(out.Dimensions, d.name)
	}
	for _, key := range cube.cells() {
		c := AggregateCell{}
		for i, d := range q.dims {
			switch {
			case key[i] < 0:
				c.Keys = append(c.Keys, "")
			case d.cats[key[i]] == "":
				c.Keys = append(c.Keys, "(none)")
			default:
				c.Keys = append(c.Keys, d.cats[key[i]])
			}
			if q.opts.Labels {
				label := c.Keys[i]
				if d.node != nil && key[i] >= 0 {
					if l := d.node.ChoiceLabel(c.Keys[i], q.lang); l != "" {
						label = l
					}
				}
				c.Labels = append(c.Labels, label)
			}
		}
		n := cube.count[key]
		if hidden[key] {
			c.Count = "<" + strconv.Itoa(k)
		} else {
			c.Count = strconv.Itoa(n)
			if a := sums[key]; a != nil && q.mfield != nil {
				switch {
				case q.measure == "sum":
					v := strconv.FormatFloat(a.sum, 'f', -1, 64)
					c.Value = &v
				case a.vals >= k:
					v := strconv.FormatFloat(a.sum/float64(a.vals), 'f', 4, 64)
					c.Value = &v
				}
			} else if q.mfield != nil && q.measure == "sum" {
				v := "0"
				c.Value = &v
			}
		}
		out.Cells = append(out.Cells, c)
	}
	return out
}

// cube holds the counts of every cell of up to three dimensions, margins
// included; -1 in a key means every category (a margin).
type cube struct {
	sizes []int
	count map[[3]int]int
}

func newCube(sizes []int) *cube { return &cube{sizes: sizes, count: map[[3]int]int{}} }

// margins returns the keys a full cell counts in: itself and every margin.
func (c *cube) margins(key [3]int) [][3]int {
	out := [][3]int{}
	for mask := 0; mask < 1<<len(c.sizes); mask++ {
		m := key
		for i := range c.sizes {
			if mask&(1<<i) != 0 {
				m[i] = -1
			}
		}
		out = append(out, m)
	}
	return out
}

func (c *cube) add(key [3]int, n int) {
	for _, m := range c.margins(key) {
		c.count[m] += n
	}
}

// cells lists every cell, margins first (fewest fixed dimensions), each
// level in key order.
func (c *cube) cells() [][3]int {
	var out [][3]int
	var gen func(i int, key [3]int)
	gen = func(i int, key [3]int) {
		if i == len(c.sizes) {
			out = append(out, key)
			return
		}
		for j := -1; j < c.sizes[i]; j++ {
			key[i] = j
			gen(i+1, key)
		}
	}
	gen(0, [3]int{-1, -1, -1})
	level := func(k [3]int) int {
		n := 0
		for i := range c.sizes {
			if k[i] >= 0 {
				n++
			}
		}
		return n
	}
	sort.SliceStable(out, func(a, b int) bool { return level(out[a]) < level(out[b]) })
	return out
}

// suppress applies the small-cell rule and returns the hidden cells. Levels
// are decided from the grand total inward: a level's complementary cells are
// chosen among its own cells only, never among the margins already decided.
func (c *cube) suppress(k int, hideZero bool) map[[3]int]bool {
	hidden := map[[3]int]bool{}
	all := c.cells()
	byLevel := map[int][][3]int{}
	for _, key := range all {
		l := 0
		for i := range c.sizes {
			if key[i] >= 0 {
				l++
			}
		}
		byLevel[l] = append(byLevel[l], key)
	}
	for l := 0; l <= len(c.sizes); l++ {
		for _, key := range byLevel[l] {
			if n := c.count[key]; (n > 0 && n < k) || (n == 0 && hideZero) {
				hidden[key] = true
			}
		}
		for changed := true; changed; {
			changed = false
			for _, key := range byLevel[l] {
				for d := range c.sizes {
					if key[d] < 0 {
						continue
					}
					// The line through key along d, and its margin.
					margin := key
					margin[d] = -1
					count := 0
					if hidden[margin] {
						count++
					}
					var best [3]int
					found := false
					for j := 0; j < c.sizes[d]; j++ {
						cell := key
						cell[d] = j
						if hidden[cell] {
							count++
							continue
						}
						if !found || less(c.count[cell], c.count[best]) {
							best, found = cell, true
						}
					}
					if count == 1 && found {
						hidden[best] = true
						changed = true
					}
				}
			}
		}
	}
	return hidden
}

// less orders candidates for complementary suppression: the smallest
// non-zero count first (hiding a zero protects nothing), zeros last.
func less(a, b int) bool {
	if (a == 0) != (b == 0) {
		return a != 0
	}
	return a < b
}
