package xlsform

import (
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/formspec"
)

// Options override what the workbook says (or does not say).
type Options struct {
	FormID   string // used when the settings sheet names no form_id (default "data")
	RootName string // the primary instance's root element (default "data")
}

// Diagnostic is an error or a warning, placed in the workbook.
type Diagnostic struct {
	Sheet   string `json:"sheet,omitempty"`
	Row     int    `json:"row,omitempty"`
	Column  string `json:"column,omitempty"`
	Message string `json:"message"`
}

func (d Diagnostic) String() string {
	var where []string
	if d.Sheet != "" {
		where = append(where, "sheet "+d.Sheet)
	}
	if d.Row > 0 {
		where = append(where, fmt.Sprintf("row %d", d.Row))
	}
	if d.Column != "" {
		where = append(where, "column "+d.Column)
	}
	if len(where) == 0 {
		return d.Message
	}
	return "[" + strings.Join(where, ", ") + "] " + d.Message
}

// Result is what a conversion produced. XForm is nil when Errors is not empty.
type Result struct {
	XForm    []byte       `json:"xform,omitempty"`
	Warnings []Diagnostic `json:"warnings"`
	Errors   []Diagnostic `json:"errors"`
	// Rows maps each question's path to its row on the survey sheet, so
	// that later checks of the XForm can point the designer at the row.
	Rows map[string]int `json:"-"`
	// Itemsets is itemsets.csv, made from the external_choices sheet as
	// pyxform makes it, when a select_one_external question reads it.
	Itemsets []byte `json:"-"`
}

// ConvertWorkbook converts an .xlsx or .xls workbook.
func ConvertWorkbook(b []byte, opt Options) *Result {
	wb, err := ReadWorkbook(b)
	if err != nil {
		return &Result{Errors: []Diagnostic{{Message: err.Error()}}}
	}
	return Convert(wb, opt)
}

// ConvertMarkdown converts a workbook written in pyxform's markdown notation.
func ConvertMarkdown(s string, opt Options) *Result {
	wb, err := ReadMarkdown(s)
	if err != nil {
		return &Result{Errors: []Diagnostic{{Message: err.Error()}}}
	}
	return Convert(wb, opt)
}

type node struct {
	kind     string // "question", "group", "repeat", "root"
	typ      string // the XLSForm type's first word (select_one for "select_one list")
	list     string // the choice list of a select
	name     string
	row      Row
	path     string
	parent   *node
	children []*node
	external string // the external_choices list of a select_one_external
	// fromAnswers names the question in a repeat whose answers, one per
	// item, are the choices of "select_one ${question}".
	fromAnswers string
	osm         string // the osm sheet's list of tags of an osm question
}

type converter struct {
	wb             *Workbook
	opt            Options
	res            *Result
	root           *node
	byName         map[string]*node
	langs          []string // languages of translated columns, in order of appearance
	choices        map[string][]Row
	listOrder      []string
	settings       map[string]string
	triggers       map[string][]*el // setvalues to place in the controls of triggering questions
	usesHaven      bool             // a haven: attribute was written: declare the namespace
	entities       []*entity        // the entities sheet's declarations, placed
	placed         []*entity        // entities whose meta is written, in document order
	dupNames       map[string]bool  // names used more than once: ${name} cannot tell which
	repeatPaths    map[string]bool
	lastSaved      bool // ${last-saved#name} is used: declare the last-saved instance
	warnedItemsets bool
	searchLists    map[string]*node    // choice lists written inline by a search() select
	texts          *[]*itextEntry      // itext entries being written, for binds' messages
	choiceColumns  []string            // the choices sheet's other columns, written into each item
	formOrders     map[string][]string // sheet -> order of text forms (see formOrder)
	namespaces     [][2]string         // the namespaces setting: prefix, URI, in order
}

// checkAliases refuses headers pyxform refuses: one written twice in a
// workbook, and an alias after another name of its column (name, then
// value). The column's own name after an alias is accepted, and the later
// cell holding a value wins, as in pyxform.
func (c *converter) checkAliases() {
	for _, name := range []string{"survey", "choices", "settings", "entities"} {
		sh := c.wb.sheet(name)
		if sh == nil {
			continue
		}
		first := map[string]string{}
		seen := map[string]bool{}
		for i, raw := range sh.Raw {
			if raw == "" || i >= len(sh.Headers) || sh.Headers[i] == "" {
				continue
			}
			h := sh.Headers[i]
			if seen[raw] && c.wb.spreadsheet {
				c.errorf(name, 1, h, "The header %q is there twice: keep one of the two columns.", raw)
				continue
			}
			seen[raw] = true
			if prev, ok := first[h]; ok && prev != raw && raw != h {
				c.errorf(name, 1, h, "The headers %q and %q are two names for the same column: keep one of them.", prev, raw)
				continue
			}
			if _, ok := first[h]; !ok {
				first[h] = raw
			}
		}
	}
}

// expandLoops writes each loop out: under the loop, one group per choice of
// its list, named and labelled by the choice, holding a copy of the loop's
// questions whose labels' %(label)s become the choice's label (pyxform's
// loop; questions in groups inside the loop keep their labels as written).
func (c *converter) expandLoops(n *node) {
	for _, ch := range n.children {
		c.expandLoops(ch)
	}
	if n.typ != "loop" {
		return
	}
	body := n.children
	// Every copy has the same names: ${name} cannot tell which one, and a
	// repeat would have the same name twice in the form.
	var mark func(x *node)
	mark = func(x *node) {
		for _, ch := range x.children {
			if ch.kind == "repeat" {
				c.errorf("survey", ch.row.Num, "type", "The repeat %q is inside the loop %q, which would copy it once per choice: repeat names must be unique in the form. Move the repeat out of the loop.", ch.name, n.name)
			}
			if len(c.choices[n.list]) > 1 {
				c.dupNames[ch.name] = true
			}
			mark(ch)
		}
	}
	mark(n)
	n.children = nil
	for _, choice := range c.choices[n.list] {
		if !xmlName.MatchString(choice.Get("name")) {
			c.errorf("choices", choice.Num, "name", "The loop %q makes a group named after each choice of %q, and %q cannot be a name: %s.", n.name, n.list, choice.Get("name"), nameRule)
			continue
		}
		cells := map[string]string{}
		for h, v := range choice.Cells {
			if h == "label" || strings.HasPrefix(h, "label::") {
				cells[h] = v
			}
		}
		g := &node{kind: "group", typ: "group", name: choice.Get("name"), row: Row{Num: n.row.Num, Cells: cells}, parent: n, path: n.path + "/" + choice.Get("name")}
		for _, q := range body {
			g.children = append(g.children, copyNode(q, g, func(r Row) Row {
				out := Row{Num: r.Num, Cells: map[string]string{}}
				for h, v := range r.Cells {
					if h == "label" || strings.HasPrefix(h, "label::") {
						lbl := cells[h]
						if lbl == "" {
							lbl = choice.Get("label")
						}
						v = strings.ReplaceAll(v, "%(label)s", lbl)
					}
					out.Cells[h] = v
				}
				return out
			}))
		}
		n.children = append(n.children, g)
	}
}

// expandTableLists rewrites each group with the table-list appearance as
// pyxform does: the group becomes a field-list; its label and hint move to
// a generated note first in it; before its first select, a select of the
// same list with the label appearance shows the choices once as column
// heads; every select in it shows no labels (list-nolabel). Its selects
// must share one list and have no choice filter.
func (c *converter) expandTableLists(n *node) {
	for _, g := range n.children {
		if g.kind == "question" {
			continue
		}
		c.expandTableLists(g)
		if g.kind != "group" {
			continue
		}
		mods := strings.Fields(g.row.Get("appearance"))
		if !slices.Contains(mods, "table-list") {
			continue
		}
		appearance := "field-list"
		for _, m := range mods {
			if m != "table-list" {
				appearance += " " + m
			}
		}
		groupCells := maps.Clone(g.row.Cells)
		groupCells["appearance"] = appearance
		noteCells := map[string]string{}
		for h, v := range g.row.Cells {
			if strings.TrimSpace(v) != "" && (h == "label" || h == "hint" || strings.HasPrefix(h, "label::") || strings.HasPrefix(h, "hint::")) {
				noteCells[h] = v
				delete(groupCells, h)
			}
		}
		g.row = Row{Num: g.row.Num, Cells: groupCells}
		var kids []*node
		if len(noteCells) > 0 {
			name := "generated_table_list_label_" + strconv.Itoa(g.row.Num)
			noteCells["type"], noteCells["name"] = "note", name
			kids = append(kids, &node{kind: "question", typ: "note", name: name, row: Row{Num: g.row.Num, Cells: noteCells}, parent: g, path: g.path + "/" + name})
		}
		list := ""
		for _, q := range g.children {
			if q.kind == "question" && (q.typ == "select_one" || q.typ == "select_multiple") && q.list != "" {
				if list == "" {
					list = q.list
					if q.row.Get("choice_filter") != "" {
						c.errorf("survey", q.row.Num, "choice_filter", "Choice filter not supported for table-list appearance: the column heads show the whole list. Remove the choice filter, or the table-list appearance.")
					}
					name := "reserved_name_for_field_list_labels_" + strconv.Itoa(q.row.Num)
					cells := map[string]string{"type": q.typ + " " + q.list, "name": name, "appearance": "label"}
					for _, col := range []string{"purpose", "sensitivity"} {
						if v := q.row.Get(col); v != "" {
							cells[col] = v // it holds no answer, but says what the list is for
						}
					}
					kids = append(kids, &node{kind: "question", typ: q.typ, list: q.list, name: name, row: Row{Num: q.row.Num, Cells: cells}, parent: g, path: g.path + "/" + name})
				} else if q.list != list {
					c.errorf("survey", q.row.Num, "type", "Badly formatted table list, list names don't match: %s vs. %s. The selects of a table-list share one choice list.", list, q.list)
				}
				cells := maps.Clone(q.row.Cells)
				cells["appearance"] = "list-nolabel"
				q.row = Row{Num: q.row.Num, Cells: cells}
			}
			kids = append(kids, q)
		}
		g.children = kids
	}
}

// copyNode copies a subtree under a new parent; relabel rewrites the rows
// of the top node only.
func copyNode(n, parent *node, relabel func(Row) Row) *node {
	cp := *n
	cp.parent, cp.path = parent, parent.path+"/"+n.name
	if relabel != nil && n.kind == "question" {
		cp.row = relabel(n.row)
	}
	cp.children = nil
	for _, ch := range n.children {
		cp.children = append(cp.children, copyNode(ch, &cp, nil))
	}
	return &cp
}

// addOther makes "select_one LIST or_other" as pyxform does: an "other"
// choice at the end of the list and, after the select, a text question
// NAME_other shown when other is chosen. The text question declares the
// select's purpose and sensitivity: it holds the same kind of answer.
func (c *converter) addOther(n *node) {
	has := false
	for _, r := range c.choices[n.list] {
		has = has || r.Get("name") == "other"
	}
	if !has {
		cells := map[string]string{"list_name": n.list, "name": "other", "label": "Other"}
		for _, l := range c.langs {
			cells["label::"+l] = "Other"
		}
		c.choices[n.list] = append(c.choices[n.list], Row{Num: n.row.Num, Cells: cells})
	}
	cells := map[string]string{"type": "text", "name": n.name + "_other", "label": "Specify other.",
		"relevant": "selected(../" + n.name + ", 'other')"}
	for _, col := range []string{"purpose", "sensitivity"} {
		if v := n.row.Get(col); v != "" {
			cells[col] = v
		}
	}
	other := &node{kind: "question", typ: "text", name: n.name + "_other", row: Row{Num: n.row.Num, Cells: cells}, parent: n.parent, path: n.parent.path + "/" + n.name + "_other"}
	n.parent.children = append(n.parent.children, other)
	if _, dup := c.byName[other.name]; !dup {
		c.byName[other.name] = other
	} else {
		c.dupNames[other.name] = true
	}
}

// osmTags returns the osm sheet's rows of a list.
func (c *converter) osmTags(list string) []Row {
	sh := c.wb.sheet("osm")
	if sh == nil || list == "" {
		return nil
	}
	var out []Row
	for _, r := range sh.Rows {
		if r.Get("list_name") == list && r.Get("name") != "" {
			out = append(out, r)
		}
	}
	return out
}

// externalList reports whether the external_choices sheet has the list.
// itemsetsCSV writes the external_choices sheet as itemsets.csv, as pyxform
// does: the headers as written, then every row, each cell quoted, CRLF.
func itemsetsCSV(sh *Sheet) []byte {
	var b strings.Builder
	line := func(cells []string) {
		for i, v := range cells {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`"` + strings.ReplaceAll(v, `"`, `""`) + `"`)
		}
		b.WriteString("\r\n")
	}
	line(sh.Raw)
	for _, r := range sh.Rows {
		cells := make([]string, len(sh.Headers))
		for i, h := range sh.Headers {
			cells[i] = r.Cells[h]
		}
		line(cells)
	}
	return []byte(b.String())
}

func (c *converter) externalList(list string) bool {
	sh := c.wb.sheet("external_choices")
	if sh == nil || list == "" {
		return false
	}
	for _, r := range sh.Rows {
		if r.Get("list_name") == list {
			return true
		}
	}
	return false
}

func (c *converter) warnf(sheet string, row int, col, format string, args ...any) {
	c.res.Warnings = append(c.res.Warnings, Diagnostic{Sheet: sheet, Row: row, Column: col, Message: fmt.Sprintf(format, args...)})
}

func (c *converter) errorf(sheet string, row int, col, format string, args ...any) {
	c.res.Errors = append(c.res.Errors, Diagnostic{Sheet: sheet, Row: row, Column: col, Message: fmt.Sprintf(format, args...)})
}

// Convert converts a workbook into an XForm, or explains why it cannot.
func Convert(wb *Workbook, opt Options) *Result {
	c := &converter{wb: wb, opt: opt, res: &Result{Warnings: []Diagnostic{}, Errors: []Diagnostic{}}, byName: map[string]*node{}, dupNames: map[string]bool{}, repeatPaths: map[string]bool{}, choices: map[string][]Row{}, settings: map[string]string{}}
	if opt.RootName == "" {
		c.opt.RootName = "data"
	}
	survey := wb.sheet("survey")
	if survey == nil && wb != nil && len(wb.Sheets) == 1 {
		// A workbook of one sheet whose name is no XLSForm sheet's is the
		// survey, whatever it is called ("Sheet1"), as pyxform reads it.
		for name, sh := range wb.Sheets {
			switch strings.ToLower(name) {
			case "choices", "settings", "external_choices", "entities", "osm":
			default:
				survey = sh
				wb = &Workbook{Sheets: map[string]*Sheet{"survey": sh}}
				c.wb = wb
			}
		}
	}
	if survey == nil {
		c.errorf("", 0, "", "The workbook has no sheet named survey. Every XLSForm needs one: add it, with at least the columns type, name and label.")
		return c.res
	}
	c.checkAliases()
	c.readSettings()
	c.readNamespaces()
	if !no(c.settings["clean_text_values"]) {
		c.wb = collapseSpaces(wb)
		survey = c.wb.sheet("survey")
	}
	if name := c.settings["name"]; name != "" {
		c.opt.RootName = name // the settings sheet names the instance's root
		if !xmlName.MatchString(name) {
			c.errorf("settings", 2, "name", "The name %q cannot be the form's root element: %s. Change it, or leave the cell empty to use \"data\".", name, nameRule)
		}
	} else if !xmlName.MatchString(c.opt.RootName) {
		c.errorf("", 0, "", "The root name %q cannot be an XML element name: %s. Choose another.", c.opt.RootName, nameRule)
	}
	if id := c.settings["form_id"]; id != "" {
		if err := formspec.CheckFormID(id); err != nil {
			// pyxform and Collect take it, so the conversion does; Haven
			// refuses to publish it (it goes into URLs and file names).
			c.warnf("settings", 2, "form_id", "%s Haven will refuse to publish the form until you change it.", haven.ErrorMessage(err))
		}
	}
	c.readChoices()
	c.readSurvey(survey)
	if len(c.res.Errors) > 0 {
		return c.res
	}
	x := c.emit()
	if len(c.res.Errors) == 0 { // writing resolves references, which can fail too
		c.res.XForm = x
		c.res.Rows = map[string]int{}
		var walk func(n *node)
		walk = func(n *node) {
			for _, ch := range n.children {
				c.res.Rows[ch.path] = ch.row.Num
				walk(ch)
			}
		}
		walk(c.root)
	}
	return c.res
}

func (c *converter) readSettings() {
	sh := c.wb.sheet("settings")
	if sh == nil || len(sh.Rows) == 0 {
		return
	}
	for k := range sh.Rows[0].Cells {
		c.settings[k] = sh.Rows[0].Get(k)
	}
	if c.settings["form_title"] == "" && c.settings["title"] != "" {
		c.settings["form_title"] = c.settings["title"] // another name for it, on this sheet only
	}
}

const entitiesNamespace = "http://www.opendatakit.org/xforms/entities"

// standardPrefixes are the namespace prefixes every XForm declares.
var standardPrefixes = map[string]bool{"h": true, "ev": true, "xsd": true, "jr": true, "orx": true, "odk": true}

// readNamespaces reads the namespaces setting, prefix="URI" pairs separated
// by spaces, declared on the form's root element for attribute:: settings
// and bind::/instance:: columns that use them. As in pyxform, a standard
// prefix keeps its standard URI, a prefix given twice takes the later URI,
// and an entry that is not a declaration is skipped (with a warning here:
// pyxform skips it silently). Haven's own prefix may not point elsewhere.
func (c *converter) readNamespaces() {
	at := map[string]int{}
	for _, pair := range strings.Fields(c.settings["namespaces"]) {
		prefix, uri, ok := strings.Cut(pair, "=")
		uri = strings.NewReplacer(`"`, "", "'", "").Replace(uri)
		switch {
		case prefix == "haven" && uri != formspec.Namespace:
			c.errorf("settings", 2, "namespaces", "The prefix \"haven\" is Haven's own, for %s: choose another prefix for %s.", formspec.Namespace, uri)
			continue
		case !ok || strings.Contains(uri, "=") || uri == "" || !xmlName.MatchString(prefix) || strings.HasPrefix(strings.ToLower(prefix), "xml"):
			c.warnf("settings", 2, "namespaces", "%q is not a namespace declaration, so it is left out: write each as prefix=\"URI\" (for example esri=\"http://esri.com/xforms\"), separated by spaces, with a prefix that is an XML name not starting with xml.", pair)
			continue
		case prefix == "entities" && uri != entitiesNamespace:
			c.warnf("settings", 2, "namespaces", "The prefix \"entities\" is for %s, so %s is left out: choose another prefix for it.", entitiesNamespace, uri)
			continue
		case standardPrefixes[prefix]:
			continue
		}
		if i, ok := at[prefix]; ok {
			c.namespaces[i][1] = uri
			continue
		}
		at[prefix] = len(c.namespaces)
		c.namespaces = append(c.namespaces, [2]string{prefix, uri})
	}
}

// declaredName reports whether name is an XML name whose prefix, if it has
// one, is declared on the form.
func (c *converter) declaredName(name string) bool {
	prefix, local, ok := strings.Cut(name, ":")
	if !ok {
		return xmlName.MatchString(name)
	}
	return xmlName.MatchString(prefix) && xmlName.MatchString(local) && (standardPrefixes[prefix] || c.declares(prefix))
}

// declares reports whether the namespaces setting declares prefix.
func (c *converter) declares(prefix string) bool {
	return slices.ContainsFunc(c.namespaces, func(ns [2]string) bool { return ns[0] == prefix })
}

func (c *converter) readChoices() {
	sh := c.wb.sheet("choices")
	if sh == nil {
		return
	}
	for _, h := range sh.Headers {
		switch {
		case h == "" || h == "list_name" || h == "name" || h == "label" || strings.Contains(h, "::") || h == "image" || h == "audio" || h == "video":
		case !xmlName.MatchString(h) || slices.Contains(c.choiceColumns, h):
		default:
			c.choiceColumns = append(c.choiceColumns, h)
		}
	}
	dupOK := yes(c.settings["allow_choice_duplicates"])
	seen := map[string]map[string]bool{}
	for _, r := range sh.Rows {
		list := r.Get("list_name")
		if list == "" {
			continue
		}
		name := r.Get("name")
		if name == "" {
			c.errorf("choices", r.Num, "name", "Choice list %q has a choice without a name. Give every choice a name (the value stored).", list)
			continue
		}
		if _, ok := c.choices[list]; !ok {
			c.listOrder = append(c.listOrder, list)
			seen[list] = map[string]bool{}
		}
		if seen[list][name] && !dupOK {
			c.errorf("choices", r.Num, "name", "Choice list %q has the name %q twice. Give each choice of a list its own name, or set allow_choice_duplicates to yes in the settings sheet.", list, name)
			continue
		}
		seen[list][name] = true
		c.choices[list] = append(c.choices[list], r)
		c.noteLanguages(sh.Headers)
	}
}

func no(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "no", "false", "0", "false()":
		return true
	}
	return false
}

// collapseSpaces makes each run of spaces on the survey sheet one space, as
// pyxform does unless clean_text_values is no (the choices sheet is read
// as written). wb is left as it is: sheets that change are copied.
func collapseSpaces(wb *Workbook) *Workbook {
	out := wb
	for _, name := range []string{"survey"} {
		sh := wb.sheet(name)
		if sh == nil {
			continue
		}
		var rows []Row
		for i, r := range sh.Rows {
			var cells map[string]string
			for k, v := range r.Cells {
				if strings.Contains(v, "  ") {
					if cells == nil {
						cells = maps.Clone(r.Cells)
					}
					cells[k] = multiSpace.ReplaceAllString(v, " ")
				}
			}
			if cells == nil {
				continue
			}
			if rows == nil {
				rows = slices.Clone(sh.Rows)
			}
			rows[i].Cells = cells
		}
		if rows == nil {
			continue
		}
		if out == wb {
			out = &Workbook{Sheets: maps.Clone(wb.Sheets)}
		}
		copied := *sh
		copied.Rows = rows
		out.Sheets[name] = &copied
	}
	return out
}

var multiSpace = regexp.MustCompile(` {2,}`)

func yes(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "yes", "true", "1", "true()":
		return true
	}
	return false
}

// translated columns: label, hint and media, with ::Language.
var translatable = []string{"label", "hint", "guidance_hint", "media::image", "media::audio", "media::video", "media::big-image", "constraint_message", "required_message", "noAppErrorString"}

func (c *converter) noteLanguages(headers []string) {
	for _, h := range headers {
		for _, t := range translatable {
			if lang, ok := strings.CutPrefix(h, t+"::"); ok && !strings.Contains(lang, "::") {
				c.addLang(lang)
			}
		}
	}
}

// rowItext reports whether a row's texts go through itext although the form
// is not translated: they carry media, a guidance hint, or (choices) a reference.
func rowItext(r Row, choice bool) bool {
	for h, v := range r.Cells {
		if strings.TrimSpace(v) == "" {
			continue
		}
		if strings.HasPrefix(h, "media::") || strings.HasPrefix(h, "guidance_hint") {
			return true
		}
		if base, _, ok := strings.Cut(h, "::"); ok && slices.Contains(translatable, base) {
			return true // translated: the row's texts go to itext
		}
		if choice && strings.HasPrefix(h, "label") && refPattern.MatchString(v) {
			return true
		}
	}
	return false
}

func (c *converter) listItext(list string) bool {
	for _, r := range c.choices[list] {
		if rowItext(r, true) {
			return true
		}
	}
	return false
}

func (c *converter) addLang(l string) {
	for _, x := range c.langs {
		if x == l {
			return
		}
	}
	c.langs = append(c.langs, l)
}

var xmlName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.\-]*$`)

// nameRule says in words what xmlName accepts.
const nameRule = "names start with a letter or _ and hold only letters, digits, _, - and '.'"

func (c *converter) readSurvey(sh *Sheet) {
	c.noteLanguages(sh.Headers)
	hasType := false
	for _, h := range sh.Headers {
		hasType = hasType || h == "type"
	}
	if !hasType {
		c.errorf("survey", 1, "", "The survey sheet has no type column. Its first row must hold the column names: type, name, label, ...")
		return
	}
	repeats := map[string]int{}
	c.root = &node{kind: "root", name: c.opt.RootName, path: "/" + c.opt.RootName}
	stack := []*node{c.root}
	for _, r := range sh.Rows {
		typ := normalType(r.Get("type"))
		if typ == "" {
			if r.Get("name") != "" || r.Get("label") != "" {
				c.errorf("survey", r.Num, "type", "This row has no type. Give it a question type (text, integer, select_one LIST, ...), or delete the row.")
			}
			continue
		}
		low := strings.ToLower(typ)
		parent := stack[len(stack)-1]
		switch low {
		case "end group", "end_group", "end repeat", "end_repeat", "end loop", "end_loop":
			if !c.endBlock(r, typ, low, parent) {
				return
			}
			stack = stack[:len(stack)-1]
			continue
		}
		n, orOther, ok := c.rowNode(r, typ, low)
		if !ok {
			continue
		}
		name, ok := c.rowName(r, n, typ, parent, repeats)
		if !ok {
			continue
		}
		n.name, n.row, n.parent = name, r, parent
		if n.kind == "question" {
			params, ok := c.parseParams(n)
			if !ok {
				continue
			}
			for _, k := range []string{"reference-geometry", "tick_labelset"} {
				if l := params[k]; c.choices[l] != nil {
					n.list = l // its instance and translations are written like a select's
				}
			}
		}
		n.path = parent.path + "/" + name
		if n.kind == "repeat" {
			c.repeatPaths[n.path] = true
		}
		parent.children = append(parent.children, n)
		if orOther {
			c.addOther(n)
		}
		if _, dup := c.byName[name]; !dup {
			c.byName[name] = n
		} else {
			c.dupNames[name] = true
		}
		if n.kind != "question" {
			stack = append(stack, n)
		}
	}
	c.expandLoops(c.root)
	c.expandTableLists(c.root)
	if len(stack) > 1 {
		open := stack[len(stack)-1]
		c.errorf("survey", open.row.Num, "type", "The %s %q is never ended: add an end %s row after its last question.", open.kind, open.name, open.kind)
	}
}

// selectCommands are the ways a select's type may be written, as pyxform
// reads them (its select aliases), longest first: a command, the list's
// name, then optionally "or specify other", "or_other" or "or other".
var selectCommands = []struct{ spelled, as string }{
	{"add select one prompt using ", "select_one"},
	{"add select multiple prompt using ", "select_multiple"},
	{"select one from file ", "select_one_from_file"},
	{"select multiple from file ", "select_multiple_from_file"},
	{"select all that apply from ", "select_multiple"},
	{"select one from ", "select_one"},
	{"select all that apply ", "select_multiple"},
	{"select one ", "select_one"},
	{"select1 ", "select_one"},
}

// normalType is a type cell with its spacing folded and the older select
// spellings written as today: "select one from LIST or specify other" is
// "select_one LIST or_other".
func normalType(cell string) string {
	typ := strings.Join(strings.Fields(cell), " ")
	for _, c := range selectCommands {
		if len(typ) > len(c.spelled) && strings.EqualFold(typ[:len(c.spelled)], c.spelled) {
			typ = c.as + " " + typ[len(c.spelled):]
			break
		}
	}
	if base, rest, ok := strings.Cut(typ, " "); ok && (strings.HasPrefix(strings.ToLower(base), "select_") || strings.EqualFold(base, "rank")) {
		for _, other := range []string{" or specify other", " or other"} {
			if strings.HasSuffix(strings.ToLower(rest), other) && len(rest) > len(other) {
				typ = base + " " + rest[:len(rest)-len(other)] + " or_other"
				break
			}
		}
	}
	return typ
}

// endBlock checks an end group, end repeat or end loop row against the
// block it closes; false means the survey cannot be read on.
func (c *converter) endBlock(r Row, typ, low string, parent *node) bool {
	kind := "group" // the kind of block this row ends
	if strings.Contains(low, "repeat") {
		kind = "repeat"
	} else if strings.Contains(low, "loop") {
		kind = "loop"
	}
	open := parent.kind
	if parent.typ == "loop" {
		open = "loop"
	}
	if open != kind {
		c.errorf("survey", r.Num, "type", "Unmatched %q: there is no open %s to end here. Check that every begin %s has its end %s, in the right order.", typ, kind, kind, kind)
		return false
	}
	if r.Get("save_to") != "" {
		c.errorf("survey", r.Num, "save_to", "Groups and repeats cannot be saved as entity properties: remove the save_to value from this row, or move it to a question.")
	}
	return true
}

// rowNode reads what a row begins: a loop, a group or repeat, or a
// question of a known type with its choice list; orOther is set for a
// select "or_other". ok is false when the row was refused.
func (c *converter) rowNode(r Row, typ, low string) (n *node, orOther, ok bool) {
	loopList, isLoop := strings.CutPrefix(low, "begin_loop over ")
	if !isLoop {
		loopList, isLoop = strings.CutPrefix(low, "begin loop over ")
	}
	switch {
	case isLoop:
		// A group repeated once per choice of a list, written out in full.
		loopList = strings.TrimSpace(typ[len(typ)-len(loopList):])
		if c.choices[loopList] == nil {
			c.errorf("survey", r.Num, "type", "The loop's choice list %q is not on the choices sheet. Add it there, or fix the name.", loopList)
			return nil, false, false
		}
		n = &node{kind: "group", typ: "loop", list: loopList}
	case low == "begin group" || low == "begin_group", low == "begin repeat" || low == "begin_repeat":
		n = &node{kind: "group", typ: "group"}
		if strings.Contains(low, "repeat") {
			n = &node{kind: "repeat", typ: "repeat"}
		}
		if r.Get("save_to") != "" {
			c.errorf("survey", r.Num, "save_to", "Groups and repeats cannot be saved as entity properties: remove the save_to value from this row, or move it to a question.")
		}
	default:
		if alias, ok := phraseTypes[strings.ToLower(typ)]; ok {
			typ = alias.as
			for col, v := range alias.defaults {
				if !hasColumn(r, col) {
					r.Cells[col] = v // the type's own constraint and hint, as pyxform gives them
				}
			}
		}
		base, list, _ := strings.Cut(typ, " ")
		base = strings.ToLower(base)
		if base == "select_one_from_file" || base == "select_multiple_from_file" {
			// As pyxform: the file's name has exactly one extension, one a device reads.
			file := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(list), "or_other"))
			ext := path.Ext(file)
			if strings.Count(path.Base(file), ".") != 1 || (ext != ".csv" && ext != ".xml" && ext != ".geojson") {
				c.errorf("survey", r.Num, "type", "The file name %q of %s must end with .csv, .xml or .geojson (one extension): name the attached file so.", file, base)
				return nil, false, false
			}
		}
		if alias, ok := typeAliases[base]; ok {
			base = alias
		}
		if base == "select_one_external" {
			// Choices in the external_choices sheet, which the server
			// turns into itemsets.csv; the question searches them.
			list = strings.TrimSpace(list)
			if !c.externalList(list) {
				c.errorf("survey", r.Num, "type", "The list %q is not on the external_choices sheet. Add its choices there (list_name %s), or fix the name.", list, list)
				return nil, false, false
			}
			if !c.warnedItemsets {
				c.warnedItemsets = true
				c.res.Itemsets = itemsetsCSV(c.wb.sheet("external_choices"))
			}
		}
		if _, ok := questionTypes[base]; !ok {
			c.errorf("survey", r.Num, "type", "Unknown question type %q. Use one of the XLSForm types (text, integer, decimal, date, select_one LIST, select_multiple LIST, geopoint, image, note, calculate, ...).", typ)
			return nil, false, false
		}
		n = &node{kind: "question", typ: base}
		if base == "select_one_external" {
			n.external = list
		}
		if base == "osm" && strings.TrimSpace(list) != "" {
			n.osm = strings.TrimSpace(list)
			if len(c.osmTags(n.osm)) == 0 {
				c.errorf("survey", r.Num, "type", "The list %q is not on the osm sheet. Add its tags there (list_name %s), or fix the name.", n.osm, n.osm)
				return nil, false, false
			}
		}
		if isSelect(base) {
			orOther = strings.HasSuffix(strings.TrimSpace(list), "or_other")
			list = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(list), "or_other"))
			if list == "" {
				c.errorf("survey", r.Num, "type", "%s needs the name of a choice list: write %s LISTNAME.", base, base)
				return nil, false, false
			}
			if m := refPattern.FindStringSubmatch(list); m != nil && m[0] == list && base != "rank" {
				n.fromAnswers = strings.TrimSpace(m[1]) // choices from a repeat's answers
				list = ""
			} else if strings.HasSuffix(list, ".csv") || strings.HasSuffix(list, ".xml") || strings.HasSuffix(list, ".geojson") {
				n.list = list
			} else if _, ok := c.choices[list]; !ok {
				c.errorf("survey", r.Num, "type", "The choice list %q is not on the choices sheet. Add its choices there (list_name %s), or fix the name.", list, list)
				return nil, false, false
			}
			n.list = list
		}
	}
	return n, orOther, true
}

// rowName checks a row's name: present, not reserved, unique where it must
// be, an XML name, and fit for the row's type.
func (c *converter) rowName(r Row, n *node, typ string, parent *node, repeats map[string]int) (string, bool) {
	name := r.Get("name")
	if name == "" && n.typ == "audit" {
		name = "audit" // the only name an audit may have
	}
	if name == "" && r.Get("type") == "note" {
		name = fmt.Sprintf("generated_note_name_%d", r.Num) // as pyxform names them
	}
	if name == "" {
		c.errorf("survey", r.Num, "name", "This %s has no name. Give it a name: letters, digits and _, starting with a letter.", typ)
		return "", false
	}
	if name == "meta" {
		c.errorf("survey", r.Num, "name", "The name 'meta' is reserved for form metadata: choose another name.")
		return "", false
	}
	if n.kind == "repeat" && name == c.opt.RootName {
		c.errorf("survey", r.Num, "name", "The name %q is invalid: a repeat's name must not be the same as the survey's root (%q, the settings' name or \"data\"). Choose another.", name, c.opt.RootName)
		return "", false
	}
	if n.kind == "repeat" {
		if prev, ok := repeats[name]; ok {
			c.errorf("survey", r.Num, "name", "There is already a repeat named %q (row %d). Repeat names must be unique in the whole form, at every level.", name, prev)
			return "", false
		}
		repeats[name] = r.Num
	}
	if n.kind == "question" && n.typ == "calculate" && r.Get("calculation") == "" && !dynamicDefault(r.Get("default"), n.typ) {
		c.errorf("survey", r.Num, "calculation", "The calculate %q has no calculation: write the expression it computes (a default alone will do only when it is an expression).", name)
		return "", false
	}
	if n.kind == "question" && questionTypes[n.typ].control != "" && !hasText(r) && r.Get("calculation") == "" && r.Get("trigger") == "" {
		c.errorf("survey", r.Num, "label", "The question %q has no label or hint: write what the enumerator sees.", name)
		return "", false
	}
	if bigImageAlone(r) {
		c.errorf("survey", r.Num, "media::big-image", "To use big-image, you must also specify an image for the survey element named %s (column media::image): the big image opens from it.", name)
		return "", false
	}
	if n.typ == "background-geopoint" {
		if r.Get("calculation") != "" {
			c.errorf("survey", r.Num, "calculation", "A background-geopoint records a location when its trigger changes: leave its calculation empty.")
			return "", false
		}
		if r.Get("trigger") == "" {
			c.errorf("survey", r.Num, "trigger", "A background-geopoint needs a trigger: the ${question} whose change records the location.")
			return "", false
		}
	}
	if n.typ == "audit" && name != "audit" {
		c.errorf("survey", r.Num, "name", "The audit question must be named audit, not %q.", name)
		return "", false
	}
	if !xmlName.MatchString(name) {
		c.errorf("survey", r.Num, "name", "The name %q cannot be used: %s.", name, nameRule)
		return "", false
	}
	for _, sib := range parent.children {
		switch {
		case sib.name == name:
			c.errorf("survey", r.Num, "name", "There is already a question or group named %q here (row %d). Names must differ within a group.", name, sib.row.Num)
		case strings.EqualFold(sib.name, name):
			c.warnf("survey", r.Num, "name", "The name %q differs from %q (row %d) only in case. Some analysis tools ignore case and would mix them up: consider another name.", name, sib.name, sib.row.Num)
		}
	}
	return name, true
}

// hasText reports whether a row has a label, a hint or media, in any
// language (a guidance hint alone is not shown to the enumerator by default).
func hasText(r Row) bool {
	for h, v := range r.Cells {
		if strings.TrimSpace(v) == "" {
			continue
		}
		// A bare "media" column counts, though its content is ignored
		// (pyxform gives such a question an empty label).
		if h == "media" {
			return true
		}
		for _, p := range []string{"label", "hint", "media::"} {
			if h == p || strings.HasPrefix(h, p+"::") || (p == "media::" && strings.HasPrefix(h, p)) {
				return true
			}
		}
	}
	return false
}

// bigImageAlone reports whether a row has a big image (in some language)
// but no image in any: devices open the big image from the image.
func bigImageAlone(r Row) bool {
	big, image := false, false
	for h, v := range r.Cells {
		if strings.TrimSpace(v) == "" {
			continue
		}
		switch {
		case h == "media::big-image" || strings.HasPrefix(h, "media::big-image::"):
			big = true
		case h == "media::image" || strings.HasPrefix(h, "media::image::"):
			image = true
		}
	}
	return big && !image
}

func isSelect(t string) bool { return t == "select_one" || t == "select_multiple" || t == "rank" }

// phraseTypes are the older whole-cell spellings of question types that
// pyxform's question type dictionary still reads, with the constraint and
// hint some of them bring.
var phraseTypes = func() map[string]struct {
	as       string
	defaults map[string]string
} {
	type alias = struct {
		as       string
		defaults map[string]string
	}
	m := map[string]alias{}
	for as, spellings := range map[string][]string{
		"image":        {"q picture", "q image", "add image prompt"},
		"audio":        {"q audio", "add audio prompt"},
		"video":        {"q video", "add video prompt"},
		"file":         {"add file prompt"},
		"dateTime":     {"add date time prompt", "q date time", "date time", "q datetime", "add datetime prompt"},
		"date":         {"q date", "add date prompt"},
		"start":        {"get start time", "start time"},
		"end":          {"get end time", "end time"},
		"today":        {"get today"},
		"note":         {"add note prompt", "q note"},
		"acknowledge":  {"q acknowledge", "add acknowledge prompt"},
		"geopoint":     {"q geopoint", "q location", "add location prompt"},
		"geoshape":     {"q geoshape"},
		"geotrace":     {"q geotrace"},
		"text":         {"q string", "add text prompt"},
		"integer":      {"q int", "add integer prompt"},
		"decimal":      {"q decimal", "add decimal prompt"},
		"barcode":      {"q barcode", "add barcode prompt"},
		"calculate":    {"q calculate", "add calculate prompt"},
		"deviceid":     {"device id", "get device id"},
		"subscriberid": {"subscriber id", "get subscriber id"},
		"simserial":    {"sim id", "get sim id"},
		"phonenumber":  {"get phone number"},
	} {
		for _, sp := range spellings {
			m[sp] = alias{as: as}
		}
	}
	days := func(n int) alias {
		return alias{as: "integer", defaults: map[string]string{"constraint": fmt.Sprintf("0 <= . and . <= %d", n), "hint": fmt.Sprintf("Enter a number 0-%d.", n)}}
	}
	m["number of days in last month"] = days(31)
	m["number of days in last six months"] = days(183)
	m["number of days in last year"] = days(365)
	m["percentage"] = alias{as: "integer", defaults: map[string]string{"constraint": "0 <= . and . <= 100"}}
	m["phone number"] = alias{as: "text", defaults: map[string]string{"constraint": `regex(., '^\d*$')`, "hint": "Enter numbers only."}}
	return m
}()

var typeAliases = map[string]string{
	"string": "text", "int": "integer", "select1": "select_one", "select_one_from_file": "select_one", "select_multiple_from_file": "select_multiple",
	"add select one prompt using": "select_one", "photo": "image", "datetime": "dateTime", "geo-point": "geopoint", "location": "geopoint",
	"q_note": "note", "imei": "deviceid", "gps": "geopoint",
}

// questionTypes: bind type, body control, and extra bind/control attributes.
type qtype struct {
	bind, control, mediatype, preload, preloadParams string
}

var questionTypes = map[string]qtype{
	"text": {bind: "string", control: "input"}, "integer": {bind: "int", control: "input"}, "decimal": {bind: "decimal", control: "input"},
	"date": {bind: "date", control: "input"}, "time": {bind: "time", control: "input"}, "dateTime": {bind: "dateTime", control: "input"},
	"geopoint": {bind: "geopoint", control: "input"}, "geotrace": {bind: "geotrace", control: "input"}, "geoshape": {bind: "geoshape", control: "input"},
	"note": {bind: "string", control: "input"}, "barcode": {bind: "barcode", control: "input"}, "acknowledge": {bind: "string", control: "trigger"},
	"trigger":   {control: "trigger"}, // no bind, as pyxform: nothing is stored
	"calculate": {bind: "string"}, "hidden": {bind: "string"},
	"image": {bind: "binary", control: "upload", mediatype: "image/*"}, "audio": {bind: "binary", control: "upload", mediatype: "audio/*"},
	"video": {bind: "binary", control: "upload", mediatype: "video/*"}, "file": {bind: "binary", control: "upload", mediatype: "application/*"},
	"range":      {bind: "int", control: "range"},
	"select_one": {bind: "string", control: "select1"}, "select_multiple": {bind: "string", control: "select"}, "rank": {bind: "odk:rank", control: "odk:rank"},
	"start":        {bind: "dateTime", preload: "timestamp", preloadParams: "start"},
	"end":          {bind: "dateTime", preload: "timestamp", preloadParams: "end"},
	"today":        {bind: "date", preload: "date", preloadParams: "today"},
	"deviceid":     {bind: "string", preload: "property", preloadParams: "deviceid"},
	"username":     {bind: "string", preload: "property", preloadParams: "username"},
	"phonenumber":  {bind: "string", preload: "property", preloadParams: "phonenumber"},
	"simserial":    {bind: "string", preload: "property", preloadParams: "simserial"},
	"subscriberid": {bind: "string", preload: "property", preloadParams: "subscriberid"},
	"email":        {bind: "string", preload: "property", preloadParams: "email"},
	// The same device properties under their URI names.
	"uri:deviceid":     {bind: "string", preload: "property", preloadParams: "uri:deviceid"},
	"uri:username":     {bind: "string", preload: "property", preloadParams: "uri:username"},
	"uri:phonenumber":  {bind: "string", preload: "property", preloadParams: "uri:phonenumber"},
	"uri:simserial":    {bind: "string", preload: "property", preloadParams: "uri:simserial"},
	"uri:subscriberid": {bind: "string", preload: "property", preloadParams: "uri:subscriberid"},
	"uri:email":        {bind: "string", preload: "property", preloadParams: "uri:email"},
	// Not questions: an external instance (a CSV or XML file beside the form).
	"csv-external": {}, "xml-external": {},
	// A log of how the form was filled in, kept under meta.
	"audit": {bind: "binary"},
	// A location taken when the form is first opened.
	"start-geopoint": {bind: "geopoint"},
	// A select whose choices are in the external_choices sheet.
	"select_one_external": {bind: "string", control: "input"},
	// A location taken when the question named in trigger changes.
	"background-geopoint": {bind: "geopoint"},
	// Audio recorded while the form is filled in.
	"background-audio": {bind: "binary"},
	// OpenMapKit: an OSM feature, with the tags of a list on the osm sheet.
	"osm": {bind: "binary", control: "upload", mediatype: "osm/*"},
}

var refPattern = regexp.MustCompile(`\$\{([^}]*)\}`)

// expr turns ${name} references into paths, as pyxform writes them:
// absolute, except between questions that share a repeat, where the path is
// relative to the node at (../q), so it stays within the same repeat
// instance. References inside indexed-repeat() stay absolute.
func (c *converter) expr(s string, at *node, col string) string {
	return c.exprFrom(s, at.path, at.row.Num, col, false)
}

// exprFrom is expr from a context path; in a choice filter, relative paths
// start from current().
func (c *converter) exprFrom(s, context string, row int, col string, filter bool) string {
	absolute := indexedRepeatSpans(s)
	predicates := instancePredicates(s)
	matches := refPattern.FindAllStringSubmatchIndex(s, -1)
	if matches == nil {
		return s
	}
	var b strings.Builder
	last := 0
	for _, m := range matches {
		b.WriteString(s[last:m[0]])
		last = m[1]
		ref := s[m[0]:m[1]]
		name := strings.TrimSpace(s[m[2]:m[3]])
		if saved, ok := strings.CutPrefix(name, "last-saved#"); ok {
			// The answer in the form last saved on this device.
			if target := c.byName[strings.TrimSpace(saved)]; target != nil && !c.dupNames[strings.TrimSpace(saved)] {
				c.lastSaved = true
				b.WriteString(" instance('__last-saved')" + target.path + " ")
				continue
			}
			name = strings.TrimSpace(saved)
		}
		target := c.byName[name]
		if target == nil && name == "instanceID" && !yes(c.settings["omit_instanceID"]) {
			b.WriteString(" " + c.root.path + "/meta/instanceID ") // the submission's id
			continue
		}
		if target == nil {
			c.errorf("survey", row, col, "There is no question named %q for ${%s} to refer to. Fix the name, or add the question.", name, name)
			b.WriteString(ref)
			continue
		}
		if c.dupNames[name] {
			c.errorf("survey", row, col, "${%s} could mean more than one question or group: the name %q is used more than once in the survey. Give them different names.", name, name)
			b.WriteString(ref)
			continue
		}
		path := target.path
		inside := false
		for _, sp := range absolute {
			inside = inside || (m[0] >= sp[0] && m[0] < sp[1])
		}
		if rel, ok := c.relative(context, target.path); ok && !inside {
			path = rel
			if filter || within(predicates, m[0], m[1]) {
				path = "current()/" + rel
			}
		}
		b.WriteString(" " + path + " ")
	}
	b.WriteString(s[last:])
	return b.String()
}

// instancePredicates returns where the bracketed predicates of s are when
// s reads a secondary instance, as in instance('list')/root/item[name = ${q}]:
// there the context is the item, so a relative path must start from
// current(), as pyxform writes it.
func instancePredicates(s string) [][2]int {
	if !instanceCall.MatchString(s) {
		return nil
	}
	var out [][2]int
	for _, b := range bracketed.FindAllStringIndex(s, -1) {
		out = append(out, [2]int{b[0], b[1]})
	}
	return out
}

// within reports whether s[start:end] lies inside one of spans.
func within(spans [][2]int, start, end int) bool {
	for _, sp := range spans {
		if start >= sp[0] && end <= sp[1] {
			return true
		}
	}
	return false
}

var (
	instanceCall = regexp.MustCompile(`instance\([^)]+.+`)
	bracketed    = regexp.MustCompile(`\[[^\]]+\]`)
)

// indexedRepeatSpans returns where the arguments of the indexed-repeat()
// calls of s are that must refer absolutely: the value and the repeats.
func indexedRepeatSpans(s string) [][2]int {
	var spans [][2]int
	for i := 0; ; {
		j := strings.Index(s[i:], "indexed-repeat(")
		if j < 0 {
			return spans
		}
		start := i + j
		depth, k := 0, start+len("indexed-repeat")
		for ; k < len(s); k++ {
			if s[k] == '(' {
				depth++
			} else if s[k] == ')' {
				if depth--; depth == 0 {
					break
				}
			}
		}
		// The value and the repeats stay absolute; the index arguments
		// (third, fifth...) follow the usual rules, as pyxform has it.
		argStart, arg, d := start+len("indexed-repeat("), 0, 0
		for p := argStart; p <= k && p < len(s); p++ {
			switch s[p] {
			case '(':
				d++
			case ')':
				d--
			}
			if p == k || s[p] == ',' && d == 0 {
				if arg == 0 || arg%2 == 1 {
					spans = append(spans, [2]int{argStart, p})
				}
				arg, argStart = arg+1, p+1
			}
		}
		i = k
		if i >= len(s) {
			return spans
		}
	}
}

// repeatAbove returns the nearest repeat strictly above path, or "".
func (c *converter) repeatAbove(path string) string {
	for p := parent(path); p != ""; p = parent(p) {
		if c.repeatPaths[p] {
			return p
		}
	}
	return ""
}

func parent(path string) string {
	if i := strings.LastIndexByte(path, '/'); i > 0 {
		return path[:i]
	}
	return ""
}

// relative gives target's path relative to context when both are in the
// same repeat instance, following pyxform (share_same_repeat_parent).
func (c *converter) relative(context, target string) (string, bool) {
	cp, tp := c.repeatAbove(context), c.repeatAbove(target)
	if cp == "" || tp == "" || context == target {
		return "", false
	}
	steps := 1
	var tail string
	if strings.Contains(cp, tp) {
		// A context in a repeat nested in the target's repeat counts from
		// the target's repeat, as pyxform does.
		if outer := c.repeatAbove(cp); outer != "" && outer == tp {
			cp = outer
		}
		contextParts := strings.Split(context[len(tp)+1:], "/")
		remainder := target[len(tp):]
		var targetParts []string
		for _, p := range strings.Split(remainder, "/") {
			if p != "" {
				targetParts = append(targetParts, p)
			}
		}
		var below []string
		if len(cp)+1 <= len(target) {
			below = strings.Split(target[len(cp)+1:], "/")
		} else {
			below = []string{""}
		}
		var parts []string
		for i, item := range contextParts[:len(contextParts)-1] {
			if i >= len(below) {
				steps = len(contextParts[i-1:])
				parts = targetParts[min(i-1, len(targetParts)):]
				break
			}
			if below[i] != item {
				steps = len(contextParts[i:])
				parts = targetParts[min(i, len(targetParts)):]
				break
			}
			all := strings.Split(remainder, "/")
			parts = all[min(i+2, len(all)):]
		}
		tail = remainder
		if len(parts) > 0 {
			tail = "/" + strings.Join(parts, "/")
		}
	} else {
		// Different repeats: relative only below a repeat both are in.
		cs, ts := strings.Split(context, "/"), strings.Split(target, "/")
		n := 0
		for n < len(cs) && n < len(ts) && cs[n] == ts[n] {
			n++
		}
		common := strings.Join(cs[:n], "/")
		if !c.repeatPaths[common] && c.repeatAbove(common) == "" {
			return "", false
		}
		steps = len(cs) - n
		tail = "/" + strings.Join(ts[n:], "/")
	}
	return strings.TrimSuffix(strings.Repeat("../", steps), "/") + tail, true
}

// sortedKeys returns a map's keys in order, for deterministic output.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
