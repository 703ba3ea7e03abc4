// Package formspec is Haven's form model: it parses XForms into a schema
// (every field with its path and type, groups, repeats, choices, expected
// media) and validates submission instances against that schema. It does no
// I/O: bytes in, model and diagnostics out.
package formspec

import (
	"bytes"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/beevik/etree"
	"github.com/haven-org/haven"
)

// MaxFormSize is the largest XForm Haven accepts.
const MaxFormSize = 16 << 20

// Form is a parsed XForm: identity, schema and expected media.
type Form struct {
	ID       string // xmlFormId: the id attribute of the primary instance's root
	Version  string
	Title    string
	RootName string
	Root     *Node
	Media    []Media
	// Encrypted is true for ODK encrypted forms (a public key in <submission>).
	Encrypted bool
	Protection

	exprSites []exprSite // the form's XPath expressions (CheckExpressions)

	entities      []EntityBlock       // the entity blocks of the primary instance
	fileInstances map[string]string   // CSV file name -> the id of the instance that reads it
	itemsetRefs   map[string][]string // instance id -> value and label refs of itemsets over it
}

// Node is a node of the primary instance: a field (leaf) or a group/repeat.
type Node struct {
	Name     string // local name
	Path     string // absolute path, local names: /data/group/field
	Type     string // bind type, prefix removed (int, select1, binary...); "" for groups and repeats
	Repeat   bool
	Children []*Node
	// Choices lists the allowed values of a select whose choices the form
	// carries; nil when they come from outside it (an external file).
	Choices map[string]bool
	// ChoiceLabels holds each choice's label by language, where the form gives them.
	ChoiceLabels map[string]map[string]string

	// What the form declares about the field (haven: bind attributes).
	Purpose     string
	Sensitivity haven.Sensitivity // as declared; "" when the bind does not say
	// How the form fills the field.
	Preload    string // jr:preload and its parameter, "timestamp start"; "" for none
	Readonly   bool
	Calculated bool
	Control    string            // the body control: input, select1, trigger, upload...; "" for none
	Label      map[string]string // the control's label by language ("" when the form has one)

	consentMark, subjectMark bool // haven:consent="true", haven:subject="true"

	// SaveTo is the entity property the field's value is saved to
	// (entities:saveto); "" for none.
	SaveTo string

	// exprs are the expressions that compute the field's value (calculate,
	// setvalue actions); derived is the highest tier they read (derive.go).
	exprs   []string
	derived haven.Sensitivity

	byName map[string]*Node
}

// IsGroup reports whether n holds other nodes (a group, a repeat or the root).
func (n *Node) IsGroup() bool { return n.byName != nil }

// Child returns the child named name, or nil.
func (n *Node) Child(name string) *Node { return n.byName[name] }

// Media is a file a form expects beside it (an image, audio, a CSV).
type Media struct {
	Name string
	Type string // image, audio, video or file
}

// Fields returns every leaf node, in document order.
func (f *Form) Fields() []*Node {
	var out []*Node
	var walk func(n *Node)
	walk = func(n *Node) {
		for _, c := range n.Children {
			if c.IsGroup() {
				walk(c)
			} else {
				out = append(out, c)
			}
		}
	}
	walk(f.Root)
	return out
}

// Node returns the node at an absolute path (repeat indexes removed), or nil.
func (f *Form) Node(p string) *Node {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	if len(parts) == 0 || parts[0] != f.Root.Name {
		return nil
	}
	n := f.Root
	for _, part := range parts[1:] {
		if n = n.Child(part); n == nil {
			return nil
		}
	}
	return n
}

func invalid(format string, args ...any) error {
	return haven.Errorf(haven.EINVALID, format, args...)
}

// Parse parses an XForm. Its errors are *haven.Error with code EINVALID and
// say what is wrong and what to change.
func Parse(xml []byte) (*Form, error) {
	if len(xml) > MaxFormSize {
		return nil, haven.Errorf(haven.ETOOLARGE, "The form is %d bytes; Haven accepts forms up to %d bytes.", len(xml), MaxFormSize)
	}
	if err := checkNoDoctype(xml); err != nil {
		return nil, err
	}
	doc := etree.NewDocument()
	doc.ReadSettings.Permissive = false
	if err := doc.ReadFromBytes(xml); err != nil {
		return nil, invalid("The form is not well-formed XML: %v. Fix the XML (or convert the XLSForm again) and upload it again.", err)
	}
	html := doc.Root()
	if html == nil || html.Tag != "html" {
		return nil, invalid("The file is not an XForm: its root element must be h:html.")
	}
	head := child(html, "head")
	if head == nil {
		return nil, invalid("The XForm has no h:head element.")
	}
	model := child(head, "model")
	if model == nil {
		return nil, invalid("The XForm has no model in its h:head.")
	}
	var primary *etree.Element
	instances := map[string]*etree.Element{}
	for _, inst := range children(model, "instance") {
		if id := inst.SelectAttrValue("id", ""); id != "" {
			instances[id] = inst
		} else if primary == nil {
			primary = inst
		}
	}
	if primary == nil || len(primary.ChildElements()) != 1 {
		return nil, invalid("The XForm's model must have a primary instance (an <instance> without id) with exactly one root element.")
	}
	rootEl := primary.ChildElements()[0]
	f := &Form{
		ID:       strings.TrimSpace(rootEl.SelectAttrValue("id", "")),
		Version:  rootEl.SelectAttrValue("version", ""),
		RootName: rootEl.Tag,
	}
	if f.ID == "" {
		return nil, invalid("The form has no id: add an id attribute to the root element of its primary instance (<%s id=\"my_form\">), or set form_id in the XLSForm settings.", rootEl.Tag)
	}
	if err := CheckFormID(f.ID); err != nil {
		return nil, err
	}
	if t := child(head, "title"); t != nil {
		f.Title = strings.TrimSpace(t.Text())
	}
	if f.Title == "" {
		f.Title = f.ID
	}
	if sub := child(model, "submission"); sub != nil && sub.SelectAttrValue("base64RsaPublicKey", "") != "" {
		f.Encrypted = true
	}

	f.Root = buildNode(rootEl, "")
	f.entities = readEntityBlocks(rootEl, "")
	f.readModelProtection(model)
	itext := readItext(model)
	if it := child(model, "itext"); it != nil {
		for _, tr := range children(it, "translation") {
			if d := tr.SelectAttrValue("default", ""); d != "" && d != "false()" {
				f.DefaultLanguage = tr.SelectAttrValue("lang", "")
			}
		}
	}

	bindRefs := map[string]string{}
	for _, bind := range children(model, "bind") {
		n := f.Node(stripPredicates(bind.SelectAttrValue("nodeset", "")))
		if id := bind.SelectAttrValue("id", ""); id != "" {
			bindRefs[id] = bind.SelectAttrValue("nodeset", "")
		}
		if n == nil || n.IsGroup() {
			continue
		}
		if t := bind.SelectAttrValue("type", ""); t != "" {
			if i := strings.IndexByte(t, ':'); i >= 0 {
				t = t[i+1:]
			}
			n.Type = t
		}
		readBind(n, bind)
	}
	if body := child(html, "body"); body != nil {
		if err := f.readBody(body, "/"+f.RootName, instances, itext); err != nil {
			return nil, err
		}
	}
	f.readSetvalues(html, bindRefs)
	collectExpressions(html, &f.exprSites)
	f.resolveConsent()
	f.Media = expectedMedia(doc)
	f.fileInstances = map[string]string{}
	for id, inst := range instances {
		if src := inst.SelectAttrValue("src", ""); strings.HasPrefix(src, "jr://file-csv/") {
			f.fileInstances[strings.TrimPrefix(src, "jr://file-csv/")] = id
		}
	}
	f.linkEntityProperties()
	f.itemsetRefs = map[string][]string{}
	for _, is := range html.FindElements("//itemset") {
		m := instanceCall.FindStringSubmatch(is.SelectAttrValue("nodeset", ""))
		if m == nil {
			continue
		}
		for _, tag := range []string{"value", "label"} {
			if r := child(is, tag); r != nil {
				if ref := strings.TrimSpace(r.SelectAttrValue("ref", "")); validXMLName(ref) {
					f.itemsetRefs[m[1]] = append(f.itemsetRefs[m[1]], ref)
				}
			}
		}
	}
	return f, nil
}

// MaxFormIDLength is the longest form id Haven takes, in characters.
const MaxFormIDLength = 255

// CheckFormID says what is wrong with a form id Haven cannot serve, if
// anything. A form id is an attribute value, not an XML name: as ODK
// Central and pyxform do, Haven takes any text (uuid:..., letters of any
// script, spaces, punctuation, the Excel date some workbooks carry), and
// escapes it wherever it goes (URLs, file names). Only what no URL, file
// name or log line can carry safely is refused.
func CheckFormID(id string) error {
	switch {
	case strings.TrimSpace(id) == "":
		return invalid("The form id is empty: give the form an id (the id attribute of its primary instance's root, or form_id in the XLSForm settings).")
	case !utf8.ValidString(id):
		return invalid("The form id is not valid UTF-8 text. Write it again in the form's settings.")
	case utf8.RuneCountInString(id) > MaxFormIDLength:
		return invalid("The form id is %d characters long; Haven takes up to %d. Choose a shorter one.", utf8.RuneCountInString(id), MaxFormIDLength)
	}
	for _, r := range id {
		if unicode.IsControl(r) {
			return invalid("The form id %q holds a control character (a line break or tab): remove it.", id)
		}
	}
	return nil
}

// checkNoDoctype refuses DOCTYPE and ENTITY declarations anywhere before the
// root: Haven never expands entities (no XML bombs, no external entities).
func checkNoDoctype(b []byte) error {
	if bytes.Contains(b, []byte("<!DOCTYPE")) || bytes.Contains(b, []byte("<!ENTITY")) {
		return invalid("The XML has a DOCTYPE or ENTITY declaration. Haven does not accept them: remove the declaration.")
	}
	return nil
}

func child(e *etree.Element, tag string) *etree.Element {
	for _, c := range e.ChildElements() {
		if c.Tag == tag {
			return c
		}
	}
	return nil
}

func children(e *etree.Element, tag string) []*etree.Element {
	var out []*etree.Element
	for _, c := range e.ChildElements() {
		if c.Tag == tag {
			out = append(out, c)
		}
	}
	return out
}

func buildNode(e *etree.Element, parent string) *Node {
	n := &Node{Name: e.Tag, Path: parent + "/" + e.Tag}
	if e.SelectAttr("jr:template") != nil || e.SelectAttr("template") != nil {
		n.Repeat = true
	}
	kids := e.ChildElements()
	if len(kids) == 0 {
		n.Type = "string"
		return n
	}
	n.byName = map[string]*Node{}
	for _, k := range kids {
		c := buildNode(k, n.Path)
		if prev := n.byName[c.Name]; prev != nil {
			// A repeat's template and its first instance: one node.
			prev.Repeat = prev.Repeat || c.Repeat
			continue
		}
		n.byName[c.Name] = c
		n.Children = append(n.Children, c)
	}
	return n
}

// instanceCall finds instance('id') at the start of an itemset's nodeset.
var instanceCall = regexp.MustCompile(`^\s*instance\(\s*['"]([^'"]+)['"]\s*\)`)

var predicate = regexp.MustCompile(`\[[^\]]*\]`)

func stripPredicates(p string) string { return predicate.ReplaceAllString(strings.TrimSpace(p), "") }

func resolveRef(ref, context string) string {
	ref = stripPredicates(ref)
	if ref == "" {
		return context
	}
	if strings.HasPrefix(ref, "/") {
		return path.Clean(ref)
	}
	return path.Clean(context + "/" + ref)
}

// readBody marks repeats and reads the choices of select controls.
func (f *Form) readBody(e *etree.Element, context string, instances map[string]*etree.Element, itext map[string]map[string]string) error {
	for _, c := range e.ChildElements() {
		switch c.Tag {
		case "group":
			ctx := context
			if ref := c.SelectAttrValue("ref", ""); ref != "" {
				ctx = resolveRef(ref, context)
			}
			if err := f.readBody(c, ctx, instances, itext); err != nil {
				return err
			}
		case "repeat":
			ctx := resolveRef(c.SelectAttrValue("nodeset", ""), context)
			if n := f.Node(ctx); n != nil {
				n.Repeat = true
			}
			if err := f.readBody(c, ctx, instances, itext); err != nil {
				return err
			}
		default:
			ref := c.SelectAttrValue("ref", "")
			if ref == "" {
				continue
			}
			n := f.Node(resolveRef(ref, context))
			if n == nil || n.IsGroup() {
				continue
			}
			n.Control = c.Tag
			n.Label = readLabel(c, itext)
			switch c.Tag {
			case "select1", "select", "rank":
				if n.Type == "string" || n.Type == "" {
					n.Type = c.Tag
				}
				n.Choices, n.ChoiceLabels = readChoices(c, instances, itext)
			}
		}
	}
	return nil
}

// readChoices returns the values a select may take, or nil when the form
// does not carry them all (external instances, computed itemsets), and the
// labels of those it can read.
func readChoices(sel *etree.Element, instances map[string]*etree.Element, itext map[string]map[string]string) (map[string]bool, map[string]map[string]string) {
	choices, labels := map[string]bool{}, map[string]map[string]string{}
	if itemset := child(sel, "itemset"); itemset != nil {
		m := instanceRef.FindStringSubmatch(itemset.SelectAttrValue("nodeset", ""))
		valueEl := child(itemset, "value")
		if m == nil || valueEl == nil {
			return nil, nil
		}
		inst := instances[m[1]]
		if inst == nil || inst.SelectAttrValue("src", "") != "" || len(inst.ChildElements()) != 1 {
			return nil, nil
		}
		valueName := valueEl.SelectAttrValue("ref", "")
		if strings.ContainsAny(valueName, "/[(@") {
			return nil, nil
		}
		// The label is a child of each item: its text, or an itext id (jr:itext(itextId)).
		labelName, byItext := "", false
		if l := child(itemset, "label"); l != nil {
			ref := l.SelectAttrValue("ref", "")
			if m := itemsetItext.FindStringSubmatch(ref); m != nil {
				labelName, byItext = m[1], true
			} else if !strings.ContainsAny(ref, "/[(@") {
				labelName = ref
			}
		}
		for _, item := range inst.ChildElements()[0].ChildElements() {
			v := child(item, valueName)
			if v == nil {
				continue
			}
			value := strings.TrimSpace(v.Text())
			choices[value] = true
			if l := child(item, labelName); labelName != "" && l != nil {
				if byItext {
					labels[value] = itext[strings.TrimSpace(l.Text())]
				} else {
					labels[value] = map[string]string{"": innerText(l)}
				}
			}
		}
		return choices, labels
	}
	for _, item := range children(sel, "item") {
		if v := child(item, "value"); v != nil {
			value := strings.TrimSpace(v.Text())
			choices[value] = true
			if l := readLabel(item, itext); l != nil {
				labels[value] = l
			}
		}
	}
	return choices, labels
}

var itemsetItext = regexp.MustCompile(`^\s*jr:itext\(\s*([A-Za-z_][\w.-]*)\s*\)\s*$`)

// ChoiceLabel returns a choice's label in lang, in the form's only
// language, or "" when the form gives none.
func (n *Node) ChoiceLabel(value, lang string) string {
	l := n.ChoiceLabels[value]
	if t, ok := l[lang]; ok {
		return t
	}
	return l[""]
}

var instanceRef = regexp.MustCompile(`^\s*instance\(\s*['"]([^'"]+)['"]\s*\)`)

var (
	jrMedia  = regexp.MustCompile(`jr://(images|audio|video|file|file-csv|file-geojson)/([^\s"'<>)]+)`)
	pulldata = regexp.MustCompile(`pulldata\(\s*['"]([^'"]+)['"]`)
)

// expectedMedia finds every file the form refers to: jr:// media in labels,
// external instances, pulldata() CSVs and the itemsets.csv of external
// selects, as ODK Central does.
func expectedMedia(doc *etree.Document) []Media {
	found := map[string]string{}
	add := func(name, typ string) {
		if SafeFileName(name) != nil {
			return
		}
		if _, ok := found[name]; !ok {
			found[name] = typ
		}
	}
	scan := func(s string) {
		for _, m := range jrMedia.FindAllStringSubmatch(s, -1) {
			typ := map[string]string{"images": "image", "audio": "audio", "video": "video"}[m[1]]
			if typ == "" {
				typ = "file"
			}
			add(m[2], typ)
		}
		for _, m := range pulldata.FindAllStringSubmatch(s, -1) {
			add(m[1]+".csv", "file")
		}
	}
	var walk func(e *etree.Element)
	walk = func(e *etree.Element) {
		for _, a := range e.Attr {
			scan(a.Value)
		}
		if e.Tag == "input" && e.SelectAttr("query") != nil {
			// A select_one_external searches itemsets.csv, as in ODK Central.
			add("itemsets.csv", "file")
		}
		scan(e.Text())
		for _, c := range e.ChildElements() {
			walk(c)
		}
	}
	walk(doc.Root())
	names := make([]string, 0, len(found))
	for n := range found {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]Media, len(names))
	for i, n := range names {
		out[i] = Media{Name: n, Type: found[n]}
	}
	return out
}

// SafeFileName refuses file names that could escape a folder or confuse a
// device: empty, with a path separator, "..", NUL or control characters.
func SafeFileName(name string) error {
	if name == "" || name == "." || name == ".." || len(name) > 255 {
		return invalid("The file name %q cannot be used: give a plain file name such as photo.jpg.", name)
	}
	for _, r := range name {
		if r == '/' || r == '\\' || r < 0x20 || r == 0x7f {
			return invalid("The file name %q cannot be used: it contains a path separator or a control character.", name)
		}
	}
	if strings.Contains(name, "..") || (len(name) >= 2 && name[1] == ':') {
		return invalid("The file name %q cannot be used: it looks like a path.", name)
	}
	return nil
}

// SetVersion returns the XForm with its primary instance's version attribute
// set to version, leaving every other byte of the document as it was.
func SetVersion(xml []byte, version string) ([]byte, error) {
	f, err := Parse(xml)
	if err != nil {
		return nil, err
	}
	if f.Version == version {
		return xml, nil
	}
	// Find the root element's start tag in the primary instance: the first
	// "<RootName" whose tag carries id="ID".
	re := regexp.MustCompile(`<(?:[A-Za-z_][\w.\-]*:)?` + regexp.QuoteMeta(f.RootName) + `\b[^>]*\bid\s*=\s*["']` + regexp.QuoteMeta(f.ID) + `["'][^>]*>`)
	loc := re.FindIndex(xml)
	if loc == nil {
		return nil, invalid("Haven could not find the root element of the form's primary instance to set its version.")
	}
	tag := string(xml[loc[0]:loc[1]])
	esc := escapeAttr(version)
	verRe := regexp.MustCompile(`\sversion\s*=\s*("[^"]*"|'[^']*')`)
	if verRe.MatchString(tag) {
		tag = verRe.ReplaceAllLiteralString(tag, ` version="`+esc+`"`)
	} else {
		end := len(tag) - 1
		if strings.HasSuffix(tag, "/>") {
			end--
		}
		tag = tag[:end] + ` version="` + esc + `"` + tag[end:]
	}
	out := make([]byte, 0, len(xml)+len(esc)+12)
	out = append(out, xml[:loc[0]]...)
	out = append(out, tag...)
	out = append(out, xml[loc[1]:]...)
	g, err := Parse(out)
	if err != nil || g.Version != version {
		return nil, fmt.Errorf("setting the version of form %s failed", f.ID)
	}
	return out, nil
}

func escapeAttr(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '&':
			b.WriteString("&amp;")
		case '<':
			b.WriteString("&lt;")
		case '"':
			b.WriteString("&quot;")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
