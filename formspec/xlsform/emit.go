package xlsform

import (
	"bytes"
	"cmp"
	"encoding/xml"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/haven-org/haven/formspec"
)

// el is an element of the XForm being written.
type el struct {
	name     string
	attrs    []string // name, value, name, value...
	text     string   // escaped when written
	raw      string   // pre-escaped mixed content (text with <output/>), written inline
	children []*el
	copyOf   string // a repeat's instance element: "template" or "plain"
}

// splitCopies gives a repeat's instance children for its template and for
// its plain copy, as pyxform writes them: a repeat nested in it appears as a
// template in the first and as a plain copy in the second, except that a
// repeat nested within a group keeps both copies in the template.
func splitCopies(children []*el, direct bool) (template, plain []*el) {
	for _, c := range children {
		switch {
		case c.copyOf == "template":
			template = append(template, c)
		case c.copyOf == "plain":
			plain = append(plain, c)
			if !direct {
				template = append(template, c)
			}
		case hasCopies(c):
			t, p := splitCopies(c.children, false)
			tc, pc := *c, *c
			tc.children, pc.children = t, p
			template, plain = append(template, &tc), append(plain, &pc)
		default:
			template, plain = append(template, c), append(plain, c)
		}
	}
	return template, plain
}

func hasChild(e *el, name string) bool {
	for _, c := range e.children {
		if c.name == name {
			return true
		}
	}
	return false
}

func hasCopies(e *el) bool {
	for _, c := range e.children {
		if c.copyOf != "" || hasCopies(c) {
			return true
		}
	}
	return false
}

func elem(name string, attrs ...string) *el {
	return &el{name: name, attrs: attrs[:len(attrs)&^1]}
}

func (e *el) add(children ...*el) *el {
	for _, c := range children {
		if c != nil {
			e.children = append(e.children, c)
		}
	}
	return e
}

func (e *el) setText(s string) *el {
	e.text = s
	return e
}

// attr sets an attribute; setting one again replaces its value (an
// element never carries an attribute twice, or it would not parse).
func (e *el) attr(k, v string) *el {
	for i := 0; i < len(e.attrs); i += 2 {
		if e.attrs[i] == k {
			e.attrs[i+1] = v
			return e
		}
	}
	e.attrs = append(e.attrs, k, v)
	return e
}

// plainXML reports whether s is printable ASCII with nothing to escape, the
// usual case, which then needs no copying.
func plainXML(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f, c == '&', c == '<', c == '>', c == '"', c == '\'':
			return false
		}
	}
	return true
}

// xmlChars replaces what XML 1.0 cannot hold (control characters, invalid
// UTF-8, U+FFFE and U+FFFF) with U+FFFD, so the output is always well-formed.
func xmlChars(s string) string {
	if plainXML(s) {
		return s
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			return r
		case r < 0x20, r == 0xFFFE, r == 0xFFFF, r == utf8.RuneError:
			return '\uFFFD'
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
}

func escText(s string) string {
	if plainXML(s) {
		return s
	}
	var b strings.Builder
	xml.EscapeText(&b, []byte(xmlChars(s)))
	return strings.ReplaceAll(b.String(), "&#xA;", "\n")
}

var attrEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "\n", "&#10;", "\t", "&#9;", "\r", "&#13;")

func escAttr(s string) string {
	if plainXML(s) {
		return s
	}
	return attrEscaper.Replace(xmlChars(s))
}

// write prints e as pyxform does: two spaces per level, text inline.
func (e *el) write(b *bytes.Buffer, depth int) {
	indent(b, depth)
	b.WriteByte('<')
	b.WriteString(xmlChars(e.name))
	for i := 0; i < len(e.attrs); i += 2 {
		b.WriteByte(' ')
		b.WriteString(e.attrs[i])
		b.WriteString(`="`)
		b.WriteString(escAttr(e.attrs[i+1]))
		b.WriteByte('"')
	}
	switch {
	case e.raw != "":
		b.WriteByte('>')
		b.WriteString(e.raw)
		closeTag(b, e.name)
	case len(e.children) == 0 && e.text == "":
		b.WriteString("/>\n")
	case len(e.children) == 0:
		b.WriteByte('>')
		b.WriteString(escText(e.text))
		closeTag(b, e.name)
	default:
		b.WriteString(">\n")
		for _, c := range e.children {
			c.write(b, depth+1)
		}
		indent(b, depth)
		closeTag(b, e.name)
	}
}

const spaces = "                                                                "

func indent(b *bytes.Buffer, depth int) {
	for ; depth > len(spaces)/2; depth -= len(spaces) / 2 {
		b.WriteString(spaces)
	}
	b.WriteString(spaces[:2*depth])
}

// sizeHint guesses the XForm's size from the workbook's, so that writing it
// does not keep regrowing the buffer: a cell's text appears in a few places
// (instance, bind, body, itext), wrapped in markup. bench300 writes 8.2
// bytes per byte of cell text.
func (c *converter) sizeHint() int {
	n := 4096
	for _, sh := range c.wb.Sheets {
		for _, r := range sh.Rows {
			for _, v := range r.Cells {
				n += 10 * len(v)
			}
		}
	}
	return min(n, 64<<20)
}

func closeTag(b *bytes.Buffer, name string) {
	b.WriteString("</")
	b.WriteString(name)
	b.WriteString(">\n")
}

// withOutputs renders label text, turning ${name} into <output value=" /path "/>
// and an instance('list')/... expression into one output of its own.
func (c *converter) withOutputs(s string, at *node, col string) (text string, raw string) {
	spans := instanceSpans(s)
	if spans == nil && !refPattern.MatchString(s) {
		return s, ""
	}
	var b strings.Builder
	refs := func(s string) {
		last := 0
		for _, m := range refPattern.FindAllStringSubmatchIndex(s, -1) {
			b.WriteString(escText(s[last:m[0]]))
			fmt.Fprintf(&b, `<output value="%s"/>`, escAttr(c.expr(s[m[0]:m[1]], at, col)))
			last = m[1]
		}
		b.WriteString(escText(s[last:]))
	}
	last := 0
	for _, sp := range spans {
		refs(s[last:sp[0]])
		fmt.Fprintf(&b, `<output value="%s"/>`, escAttr(c.expr(s[sp[0]:sp[1]], at, col)))
		last = sp[1]
	}
	refs(s[last:])
	return "", " " + b.String() + " " // pyxform pads text holding an output
}

// translations returns a column's texts by language: the untranslated
// column first (as "default"), then each language in order, so that where
// default is also a named language the named column wins.
func (c *converter) translations(r Row, col string) [][2]string {
	var out [][2]string
	if v := r.Get(col); v != "" {
		out = append(out, [2]string{"default", v})
	}
	for _, l := range c.langs {
		if v := r.Get(col + "::" + l); v != "" {
			out = append(out, [2]string{l, v})
		}
	}
	return out
}

type itextEntry struct {
	id    string
	forms map[string]map[string]string // language -> form ("" for text, image, audio...) -> value
	at    *node
}

// has reports whether some language gives the entry that form.
func (t *itextEntry) has(form string) bool {
	for _, f := range t.forms {
		if _, ok := f[form]; ok {
			return true
		}
	}
	return false
}

// textOrder orders the languages as pyxform writes translations: the
// default language first, then each in the order a text first uses it
// (choices before questions), then any no text uses.
func textOrder(langs []string, texts []*itextEntry) []string {
	if len(langs) < 3 {
		return langs
	}
	out := []string{langs[0]}
	seen := map[string]bool{langs[0]: true}
	for _, t := range texts {
		for _, l := range langs[1:] {
			if !seen[l] && t.forms[l] != nil {
				seen[l] = true
				out = append(out, l)
			}
		}
	}
	for _, l := range langs {
		if !seen[l] {
			out = append(out, l)
		}
	}
	return out
}

func (c *converter) languages() []string {
	var langs []string
	if d := c.settings["default_language"]; d != "" {
		langs = append(langs, d)
	}
	hasDefault := false
	for _, sh := range []string{"survey", "choices"} {
		if s := c.wb.sheet(sh); s != nil {
			for _, h := range s.Headers {
				switch {
				case h == "label", h == "hint", h == "guidance_hint", strings.HasPrefix(h, "media::") && !strings.Contains(h[len("media::"):], "::"):
					hasDefault = true // an untranslated text or media column
				}
			}
		}
	}
	if (hasDefault || len(c.langs) == 0) && len(langs) == 0 {
		langs = append(langs, "default")
	}
	for _, l := range c.langs {
		if len(langs) == 0 || l != langs[0] {
			langs = append(langs, l)
		}
	}
	return langs
}

// mediaForms are a label's media columns: the itext form, the column and
// the URI prefix of the file.
var mediaForms = []struct{ form, column, prefix string }{
	{"image", "media::image", "jr://images/"},
	{"audio", "media::audio", "jr://audio/"},
	{"video", "media::video", "jr://video/"},
	{"big-image", "media::big-image", "jr://images/"},
}

// textEntry collects the translations and media of one label or hint.
func (c *converter) textEntry(id string, r Row, col string, at *node) *itextEntry {
	e := &itextEntry{id: id, forms: map[string]map[string]string{}, at: at}
	put := func(lang, form, v string) {
		if v == "" {
			return
		}
		if lang == "default" && c.settings["default_language"] != "" {
			lang = c.settings["default_language"]
		}
		if e.forms[lang] == nil {
			e.forms[lang] = map[string]string{}
		}
		e.forms[lang][form] = v
	}
	for _, t := range c.translations(r, col) {
		put(t[0], "", t[1])
	}
	if col == "hint" {
		for _, t := range c.translations(r, "guidance_hint") {
			put(t[0], "guidance", t[1])
		}
	}
	if col == "label" {
		for _, m := range mediaForms {
			for _, t := range c.translations(r, m.column) {
				put(t[0], m.form, m.prefix+t[1])
			}
		}
	}
	if len(e.forms) == 0 {
		return nil
	}
	return e
}

func (c *converter) emit() []byte {
	formID := c.settings["form_id"]
	if formID == "" {
		formID = c.opt.FormID
	}
	if formID == "" {
		formID = "data"
	}
	title := c.settings["form_title"]
	if title == "" {
		title = formID
	}
	c.checkLists()
	var texts []*itextEntry
	langs := c.languages()
	// Choice lists are written in the order of the choices sheet, those no
	// question uses too, as pyxform writes them.
	for _, list := range c.listOrder {
		if !c.listItext(list) {
			continue
		}
		for i, r := range c.choices[list] {
			if t := c.textEntry(fmt.Sprintf("%s-%d", list, i), r, "label", c.root); t != nil {
				texts = append(texts, t)
			}
		}
	}
	model := elem("model", "odk:xforms-version", "1.0.0")
	if sub := c.submission(); sub != nil {
		model.add(sub)
	}
	rootEl := c.rootElement(formID)
	var binds []*el
	body := elem("h:body")
	if style := c.settings["style"]; style != "" {
		body.attr("class", style) // the form's theme (pages, theme-grid), as pyxform writes it
	}
	c.triggers = c.collectTriggers()
	c.entities = c.readEntities()
	c.texts = &texts
	c.build(c.root, rootEl, body, &binds, &texts)
	if meta := c.meta(model, &binds); len(meta.children) > 0 {
		rootEl.add(meta)
	}
	if len(texts) > 0 {
		model.add(c.itext(langs, texts))
	}
	model.add(elem("instance").add(rootEl))
	c.secondaryInstances(model)
	model.add(binds...)
	c.protectionSettings(model)

	head := elem("h:head").add(&el{name: "h:title", text: title}, model)
	html := elem("h:html", "xmlns", "http://www.w3.org/2002/xforms", "xmlns:h", "http://www.w3.org/1999/xhtml",
		"xmlns:ev", "http://www.w3.org/2001/xml-events", "xmlns:xsd", "http://www.w3.org/2001/XMLSchema",
		"xmlns:jr", "http://openrosa.org/javarosa", "xmlns:orx", "http://openrosa.org/xforms",
		"xmlns:odk", "http://www.opendatakit.org/xforms").add(head, body)
	for _, ns := range c.namespaces {
		html.attr("xmlns:"+ns[0], ns[1])
	}
	if len(c.entities) > 0 && !c.declares("entities") {
		html.attr("xmlns:entities", entitiesNamespace)
	}
	if c.usesHaven && !c.declares("haven") {
		html.attr("xmlns:haven", formspec.Namespace)
	}
	var b bytes.Buffer
	b.Grow(c.sizeHint())
	b.WriteString("<?xml version=\"1.0\"?>\n")
	html.write(&b, 0)
	return b.Bytes()
}

// checkLists refuses what the choice lists cannot serve: one list used by a
// select with a search() appearance (which lists its choices inline) and by
// one without, and a file whose instance id is also a choice list's name.
func (c *converter) checkLists() {
	// A select with a search() appearance lists its choices inline, so its
	// list needs no instance; a list cannot serve both kinds of select.
	search, plain := map[string]*node{}, map[string]*node{}
	var walk func(n *node)
	walk = func(n *node) {
		for _, ch := range n.children {
			if ch.list != "" && isSelect(ch.typ) && strings.Contains(ch.row.Get("appearance"), "search(") {
				if id, _ := fileList(ch.list); id != "" {
					c.errorf("survey", ch.row.Num, "appearance", "Question %q selects from the file %s and uses search(): search() reads its own file, so choose one of the two.", ch.name, ch.list)
				}
				search[ch.list] = ch
			} else if ch.list != "" {
				plain[ch.list] = ch
			}
			walk(ch)
		}
	}
	walk(c.root)
	for _, list := range slices.Sorted(maps.Keys(search)) {
		if q, other := search[list], plain[list]; other != nil {
			c.errorf("survey", other.row.Num, "type", "Question %q uses search(), which lists the choices of %q inline; question %q uses the same list without search(). Give one of them its own copy of the list.", q.name, list, other.name)
		}
	}
	c.searchLists = search
	// A file's instance and a choice list must not share an id.
	var files func(n *node)
	files = func(n *node) {
		for _, ch := range n.children {
			if id, src := fileList(ch.list); id != "" && c.choices[id] != nil {
				c.errorf("survey", ch.row.Num, "type", "The file %s would be the instance %q, which is also the name of a choice list on the choices sheet: rename the file or the list.", src, id)
			}
			files(ch)
		}
	}
	files(c.root)
}

// submission is the submission element: where and how Collect sends (Haven
// refuses a public key when the form is published: it must read
// submissions); nil when the settings say nothing of it.
func (c *converter) submission() *el {
	sub := elem("submission")
	if v := c.settings["submission_url"]; v != "" {
		sub.attr("action", v)
		sub.attr("method", "post")
	}
	if v := c.settings["public_key"]; v != "" {
		sub.attr("base64RsaPublicKey", strings.Join(strings.Fields(v), ""))
	}
	if v := c.settings["auto_send"]; v != "" {
		sub.attr("orx:auto-send", v)
	}
	if v := c.settings["auto_delete"]; v != "" {
		sub.attr("orx:auto-delete", v)
	}
	if yes(c.settings["client_editable"]) {
		sub.attr("odk:client-editable", "true")
	}
	if len(sub.attrs) == 0 {
		return nil
	}
	return sub
}

// rootElement is the primary instance's root, with the form's id, version,
// SMS settings, attribute:: settings and instance_xmlns.
func (c *converter) rootElement(formID string) *el {
	rootEl := elem(c.opt.RootName, "id", formID)
	if v := c.settings["version"]; v != "" {
		rootEl.attr("version", v)
	}
	// SMS settings, attribute::NAME settings and instance_xmlns.
	if v := c.settings["prefix"]; v != "" {
		rootEl.attr("odk:prefix", v)
	}
	if v := c.settings["delimiter"]; v != "" {
		rootEl.attr("odk:delimiter", v)
	}
	for _, k := range slices.Sorted(maps.Keys(c.settings)) {
		if name, ok := strings.CutPrefix(k, "attribute::"); ok && c.settings[k] != "" {
			if !c.declaredName(name) {
				c.warnf("settings", 2, k, "%q is not an attribute name Haven can write (an XML name, with a prefix declared in the namespaces setting if it has one): the setting is left out.", name)
				continue
			}
			rootEl.attr(name, c.settings[k])
		}
	}
	if v := c.settings["instance_xmlns"]; v != "" {
		rootEl.attr("xmlns", v)
	}
	return rootEl
}

// meta is the instance's meta block (the entities declared at the root,
// the audit, instanceID and instanceName) with their binds.
func (c *converter) meta(model *el, bindsp *[]*el) *el {
	binds := *bindsp
	defer func() { *bindsp = binds }()
	meta := elem("meta")
	if len(c.entities) > 0 {
		version := "2024.1.0"
		for _, e := range c.entities {
			if len(c.entities) > 1 || repeatsAbove(e.metaAt) > 0 {
				version = "2025.1.0" // several lists, or made in a repeat: see build
			}
			if e.metaAt == c.root {
				c.entityElements(e, meta, &binds)
			}
		}
		model.attr("entities:entities-version", version)
	}
	for _, ch := range c.root.children {
		if ch.typ == "audit" {
			meta.add(elem("audit"))
			under := *ch // the audit lives in meta
			under.path = c.root.path + "/meta/audit"
			binds = append(binds, c.bind(&under, "binary", ch.row))
		}
	}
	if !yes(c.settings["omit_instanceID"]) {
		meta.add(elem("instanceID"))
		preload := "uid"
		if v := strings.TrimSpace(c.settings["instance_id"]); v != "" {
			preload = v // pyxform's instance_id setting
		}
		binds = append(binds, elem("bind", "nodeset", c.root.path+"/meta/instanceID", "type", "string", "readonly", "true()", "jr:preload", preload))
	}
	if in := c.settings["instance_name"]; in != "" {
		meta.add(elem("instanceName"))
		binds = append(binds, elem("bind", "nodeset", c.root.path+"/meta/instanceName", "type", "string", "calculate", c.expr(in, c.root, "instance_name")))
	}

	return meta
}

// itext is the form's translations: every language's texts, those a
// language lacks filled with "-", in pyxform's order.
func (c *converter) itext(langs []string, texts []*itextEntry) *el {
	itext := elem("itext")
	hasDefault := false // "default" is a language only if some text is in it
	for _, t := range texts {
		hasDefault = hasDefault || t.forms["default"] != nil
	}
	// pyxform's order within a language: the texts it writes words for,
	// then questions it gives only media (pyxform adds those after the
	// words), each in document order; then those it lacks, filled with
	// "-", in the order the texts first appear across the languages.
	rank := func(t *itextEntry, lang string) int {
		forms := t.forms[lang]
		if forms == nil {
			return 2
		}
		if !strings.HasPrefix(t.id, "/") {
			return 0 // a choice's media come with its words
		}
		for f := range forms {
			switch f {
			case "image", "audio", "video", "big-image":
			default:
				return 0
			}
		}
		return 1
	}
	order := textOrder(langs, texts)
	own := map[string][]*itextEntry{}
	var union []*itextEntry
	seen := map[*itextEntry]bool{}
	for _, lang := range order {
		for r := 0; r <= 1; r++ {
			for _, t := range texts {
				if rank(t, lang) == r {
					own[lang] = append(own[lang], t)
				}
			}
		}
		for _, t := range own[lang] {
			if !seen[t] {
				seen[t] = true
				union = append(union, t)
			}
		}
	}
	for _, lang := range order {
		if lang == "default" && !hasDefault {
			continue
		}
		tr := elem("translation", "lang", lang)
		if lang == c.settings["default_language"] || (c.settings["default_language"] == "" && lang == "default") {
			tr.attr("default", "true()")
		}
		ordered := append([]*itextEntry{}, own[lang]...)
		for _, t := range union {
			if t.forms[lang] == nil {
				ordered = append(ordered, t)
			}
		}
		for _, t := range ordered {
			te := elem("text", "id", t.id)
			// A text this language lacks gets "-" for the words (and the
			// guidance) other languages have, below; media are not filled,
			// so a media-only text is empty, as pyxform writes it.
			forms := t.forms[lang]
			for _, f := range c.formOrder(t.id, forms) {
				v := elem("value")
				if f != "" {
					v.attr("form", f)
				}
				v.text, v.raw = c.withOutputs(forms[f], t.at, "label")
				te.add(v)
			}
			// The text and the guidance hint, when another language has
			// them and this one does not, are "-" (media are not filled).
			if _, ok := forms[""]; !ok && t.has("") {
				te.add(&el{name: "value", text: "-"})
			}
			if _, ok := forms["guidance"]; !ok && t.has("guidance") {
				te.add(elem("value", "form", "guidance").setText("-"))
			}
			tr.add(te)
		}
		itext.add(tr)
	}
	return itext
}

// secondaryInstances adds the last-saved and external instances and one
// instance per choice list (those listed inline for search() excepted).
func (c *converter) secondaryInstances(model *el) {
	externals := c.externalInstances()
	if c.lastSaved {
		model.add(elem("instance", "id", "__last-saved", "src", "jr://instance/last-saved"))
		for _, x := range externals {
			if x.id == "__last-saved" {
				row := 0
				if n := c.byName["__last-saved"]; n != nil {
					row = n.row.Num
				}
				c.errorf("survey", row, "name", "The external instance __last-saved (%s) would clash with the last saved form that ${last-saved#...} reads: rename the external instance.", x.src)
			}
		}
	}
	for _, x := range externals {
		model.add(elem("instance", "id", x.id, "src", x.src))
	}
	files := map[string]string{}
	for _, x := range externals {
		files[x.id] = x.src
	}
	for _, list := range c.listOrder {
		if c.searchLists[list] != nil {
			continue // written inline in the select
		}
		if src, ok := files[list]; ok && len(c.choices[list]) > 0 {
			// As pyxform: every list on the choices sheet is an instance,
			// used or not, and an instance id names one thing.
			c.errorf("choices", c.choices[list][0].Num, "list_name", "The choice list %q has the same name as the instance of the file %s, so one instance id would stand for both: rename the list or the file's instance.", list, src)
			continue
		}
		rt := elem("root")
		for i, r := range c.choices[list] {
			item := elem("item")
			itext := c.listItext(list)
			if itext {
				item.add(&el{name: "itextId", text: fmt.Sprintf("%s-%d", list, i)})
			}
			item.add(&el{name: "name", text: r.Get("name")})
			if !itext && r.Get("label") != "" {
				item.add(&el{name: "label", text: r.Get("label")})
			}
			// Other columns (geometry, filter keys...) go in as written.
			for _, h := range c.choiceColumns {
				if v := r.Get(h); v != "" {
					item.add(&el{name: h, text: v})
				}
			}
			rt.add(item)
		}
		model.add(elem("instance", "id", list).add(rt))
	}
}

type external struct{ id, src string }

// protectionSettings writes the settings Haven's publishing checks read
// (default_sensitivity, legal_basis, consent, subject_id) as haven:
// attributes of the model. consent and subject_id name a question; they
// become its path when the name is a question of the form.
func (c *converter) protectionSettings(model *el) {
	for _, kv := range [][2]string{{"default_sensitivity", "haven:default-sensitivity"}, {"legal_basis", "haven:legal-basis"},
		{"consent", "haven:consent-field"}, {"subject_id", "haven:subject-field"}} {
		v := strings.TrimSpace(c.settings[kv[0]])
		if v == "" {
			continue
		}
		if kv[0] == "consent" || kv[0] == "subject_id" {
			name := strings.TrimSuffix(strings.TrimPrefix(v, "${"), "}")
			if n := c.byName[name]; n != nil {
				v = n.path
			}
		}
		model.attr(kv[1], v)
		c.usesHaven = true
	}
}

// fileList gives the instance id and source of a select's choices read from
// a file beside the form ("" for a list on the choices sheet).
func fileList(list string) (id, src string) {
	for ext, prefix := range map[string]string{".csv": "jr://file-csv/", ".xml": "jr://file/", ".geojson": "jr://file/"} {
		if base, ok := strings.CutSuffix(list, ext); ok && base != "" {
			return base, prefix + list
		}
	}
	return "", ""
}

var pulldataRef = regexp.MustCompile(`pulldata\(\s*['"]([^'"]+)['"]`)

// externalInstances lists the instances of files beside the form: declared
// ones (csv-external, xml-external) and the CSVs pulldata() reads, in form
// order. One name may not stand for two different files.
func (c *converter) externalInstances() []external {
	var out []external
	seen := map[string]string{}
	addOne := func(n *node, id, src string) {
		if prev, ok := seen[id]; ok {
			if prev != src {
				c.errorf("survey", n.row.Num, "name", "The same instance id %q would stand for two files, %s and %s. Give the external instance another name, or read the same file.", id, prev, src)
			}
			return
		}
		seen[id] = src
		out = append(out, external{id, src})
	}
	// An xml-external or csv-external question names an instance: two
	// such questions may not share a name anywhere in the form, even in
	// different groups (and even for the same file), as in pyxform.
	externalRows := map[string][]int{}
	var order []string
	var walk func(n *node)
	walk = func(n *node) {
		for _, ch := range n.children {
			if ch.typ == "csv-external" || ch.typ == "xml-external" {
				if externalRows[ch.name] == nil {
					order = append(order, ch.name)
				}
				externalRows[ch.name] = append(externalRows[ch.name], ch.row.Num)
			}
			for _, col := range []string{"calculation", "relevant", "constraint", "default", "choice_filter", "readonly", "required"} {
				for _, m := range pulldataRef.FindAllStringSubmatch(ch.row.Get(col), -1) {
					addOne(ch, m[1], "jr://file-csv/"+m[1]+".csv")
				}
			}
			if id, src := fileList(ch.list); id != "" {
				addOne(ch, id, src)
			}
			switch ch.typ {
			case "csv-external":
				addOne(ch, ch.name, "jr://file-csv/"+ch.name+".csv")
			case "xml-external":
				addOne(ch, ch.name, "jr://file/"+ch.name+".xml")
			}
			walk(ch)
		}
	}
	walk(c.root)
	for _, name := range order {
		if rows := externalRows[name]; len(rows) > 1 {
			c.errorf("survey", rows[1], "name", "Instance names must be unique within a form. The name %q was found %d time(s), on rows %s: give each external instance its own name.", name, len(rows), joinInts(rows))
		}
	}
	return out
}

func joinInts(ns []int) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ", ")
}

// unshown reports whether a question is computed with nothing to show: a
// calculated or triggered question without label or hint has no control,
// as pyxform does, so it can trigger nothing.
func unshown(r Row) bool {
	return (r.Get("calculation") != "" || r.Get("trigger") != "") && !hasColumn(r, "label") && !hasColumn(r, "hint")
}

// collectTriggers reads the trigger column: a question whose trigger names
// other questions is (re)calculated when they change, by a setvalue placed in
// their controls. It returns those setvalues by the triggering question's path.
func (c *converter) collectTriggers() map[string][]*el {
	out := map[string][]*el{}
	var walk func(n *node)
	walk = func(n *node) {
		for _, ch := range n.children {
			if t := ch.row.Get("trigger"); t != "" && ch.kind == "question" {
				// ${a}, ${b}: empty entries and spaces between them do not
				// matter, but a comma must separate each two.
				bad := strings.Trim(refPattern.ReplaceAllString(t, ""), ", \t\n") != ""
				locs := refPattern.FindAllStringIndex(t, -1)
				for i := 1; i < len(locs); i++ {
					bad = bad || !strings.Contains(t[locs[i-1][1]:locs[i][0]], ",")
				}
				if bad {
					c.errorf("survey", ch.row.Num, "trigger", "The trigger value is invalid: write the questions that trigger this one as ${name}, with a comma between each two.")
					return
				}
				for _, ref := range refPattern.FindAllStringSubmatch(t, -1) {
					refs := [][]string{ref}
					name := strings.TrimSpace(refs[0][1])
					target := c.byName[name]
					if target == nil {
						c.errorf("survey", ch.row.Num, "trigger", "The trigger value is invalid: there is no question named %q on the survey sheet.", name)
						return
					}
					if questionTypes[target.typ].control == "" || target.kind != "question" || unshown(target.row) {
						c.errorf("survey", ch.row.Num, "trigger", "The question ${%s} is not shown to the enumerator, so it cannot trigger ${%s}: use a visible question.", name, ch.name)
						return
					}
					sv := elem("setvalue", "ref", ch.path, "event", "xforms-value-changed")
					if ch.typ == "background-geopoint" {
						sv = elem("odk:setgeopoint", "ref", ch.path, "event", "xforms-value-changed")
					} else if calc := ch.row.Get("calculation"); calc != "" {
						sv.attr("value", c.expr(calc, ch, "calculation"))
					}
					out[target.path] = append(out[target.path], sv)
				}
			}
			walk(ch)
		}
	}
	walk(c.root)
	// As pyxform: a question's setvalues, then its setgeopoints.
	for k, acts := range out {
		slices.SortStableFunc(acts, func(a, b *el) int {
			return cmp.Compare(boolInt(a.name == "odk:setgeopoint"), boolInt(b.name == "odk:setgeopoint"))
		})
		out[k] = acts
	}
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// build adds n's children to the instance element inst, the body element
// container, and the binds and texts.
func (c *converter) build(n *node, inst, container *el, binds *[]*el, texts *[]*itextEntry) {
	for _, ch := range n.children {
		switch ch.kind {
		case "group", "repeat":
			c.buildGroup(n, ch, inst, container, binds, texts)
		default:
			c.buildQuestion(ch, inst, container, binds, texts)
		}
	}
}

// bindValue is a readonly, required, relevant, constraint or calculate
// cell as a bind writes it: pyxform's yes and no spellings as true() or
// false(), anything else an expression with ${name} made a path.
func (c *converter) bindValue(v string, n *node, col string) string {
	if conv, ok := bindingConversions[v]; ok {
		return conv
	}
	return c.expr(v, n, col)
}

// bodyAttrs writes body::x columns as attributes of the control (a group's
// group, a repeat's repeat), with ${name} made a path as pyxform does. A
// deeper column (body::esri::style) is a group, which pyxform writes as
// one attribute holding a Python dict: esri="{'style': '...'}".
func (c *converter) bodyAttrs(ch *node, ctl *el) {
	r := ch.row
	var groups []string
	grouped := map[string][]string{}
	for _, h := range sortedKeys(r.Cells) {
		k, ok := strings.CutPrefix(h, "body::")
		if !ok || r.Get(h) == "" {
			continue
		}
		if g, sub, nested := strings.Cut(k, "::"); nested {
			if grouped[g] == nil {
				groups = append(groups, g)
			}
			grouped[g] = append(grouped[g], pyRepr(sub)+": "+pyRepr(c.expr(r.Get(h), ch, h)))
			continue
		}
		ctl.attr(k, c.expr(r.Get(h), ch, h))
	}
	for _, g := range groups {
		ctl.attr(g, "{"+strings.Join(grouped[g], ", ")+"}")
	}
}

// buildGroup writes a group or repeat: its instance element (a repeat's
// template first), its bind, its body control, and what it holds.
func (c *converter) buildGroup(n, ch *node, inst, container *el, binds *[]*el, texts *[]*itextEntry) {
	r := ch.row
	var ctl *el
	if container != nil {
		ctl = elem("group", "ref", ch.path)
		c.labels(ch, ctl, texts)
		if a := r.Get("appearance"); a != "" && ch.kind != "repeat" {
			ctl.attr("appearance", a)
		}
		if v := r.Get("intent"); v != "" && ch.kind != "repeat" {
			ctl.attr("intent", c.expr(v, ch, "intent")) // an external app shows the group
		}
		if ch.kind != "repeat" {
			c.bodyAttrs(ch, ctl)
		}
	}
	inner := ctl
	if ch.kind == "repeat" && ctl != nil {
		if !hasChild(ctl, "label") {
			ctl.add(elem("label")) // pyxform gives a repeat an empty label
		}
		inner = elem("repeat", "nodeset", ch.path)
		if a := r.Get("appearance"); a != "" {
			inner.attr("appearance", a) // a repeat's appearance is on the repeat
		}
		if v := r.Get("intent"); v != "" {
			inner.attr("intent", c.expr(v, ch, "intent"))
		}
		if rc := strings.TrimSpace(r.Get("repeat_count")); rc != "" {
			if single := refPattern.FindString(rc); single == rc {
				inner.attr("jr:count", c.expr(rc, ch, "repeat_count"))
			} else {
				// Anything but one reference is computed into a
				// generated element beside the repeat, as pyxform does.
				cnt := ch.name + "_count"
				for _, sib := range n.children {
					if sib.name == cnt {
						c.errorf("survey", sib.row.Num, "name", "The name %q is taken by the element Haven generates for the repeat_count of %q: rename this question.", cnt, ch.name)
					}
				}
				path := n.path + "/" + cnt
				inst.add(elem(cnt))
				*binds = append(*binds, elem("bind", "nodeset", path, "type", "string", "readonly", "true()", "calculate", c.expr(rc, ch, "repeat_count")))
				inner.attr("jr:count", " "+path+" ")
			}
		}
		c.bodyAttrs(ch, inner)
		ctl.add(inner)
	}
	fresh := elem(ch.name)
	for _, h := range sortedKeys(r.Cells) {
		if k, ok := strings.CutPrefix(h, "instance::"); ok && r.Get(h) != "" {
			fresh.attr(k, c.expr(r.Get(h), ch, h)) // instance attributes of a group or repeat, as of a question
		}
	}
	placedBefore := len(c.placed)
	// A group's bind comes before its children's, in document order, as
	// pyxform writes them.
	if binds != nil {
		if b := c.bind(ch, "", r); b != nil {
			*binds = append(*binds, b)
		}
	}
	c.build(ch, fresh, inner, binds, texts)
	for _, e := range c.entities {
		if e.metaAt == ch && binds != nil {
			// The entity placed here (in a group, or made once per
			// item of a repeat): its meta goes last.
			meta := elem("meta")
			c.entityElements(e, meta, binds)
			fresh.add(meta)
			c.placed = append(c.placed, e)
		}
	}
	if ch.kind == "repeat" && inner != nil {
		for _, e := range c.placed[placedBefore:] {
			if e.scope == ch && e.id == "" {
				// A new id with each new item.
				inner.add(elem("setvalue", "ref", e.metaAt.path+"/meta/entity/@id", "event", "odk-new-repeat", "value", "uuid()"))
			}
		}
		// Dynamic defaults of the item's questions, in its groups
		// too (not in nested repeats, which set their own).
		var defaults func(n *node)
		defaults = func(n *node) {
			for _, q := range n.children {
				if d := q.row.Get("default"); q.kind == "question" && d != "" && dynamicDefault(d, q.typ) {
					inner.add(elem("setvalue", "ref", q.path, "event", "odk-new-repeat", "value", c.expr(d, q, "default")))
				}
				if q.kind == "group" {
					defaults(q)
				}
			}
		}
		defaults(ch)
	}
	if ch.kind == "repeat" {
		tmpl := elem(ch.name, "jr:template", "")
		tmpl.children, fresh.children = splitCopies(fresh.children, true)
		tmpl.copyOf, fresh.copyOf = "template", "plain"
		inst.add(tmpl)
	}
	inst.add(fresh)
	if container != nil {
		container.add(ctl)
	}
}

// buildQuestion writes a question: its instance element with its default,
// its bind and actions, and its body control.
func (c *converter) buildQuestion(ch *node, inst, container *el, binds *[]*el, texts *[]*itextEntry) {
	r := ch.row
	switch ch.typ {
	case "csv-external", "xml-external", "audit":
		return // not in the instance's body of questions: see emit
	}
	qt := questionTypes[ch.typ]
	ie := elem(ch.name)
	if v := r.Get("compact_tag"); v != "" {
		ie.attr("odk:tag", v) // the field's tag in compact (SMS) submissions
	}
	for _, h := range sortedKeys(r.Cells) {
		if k, ok := strings.CutPrefix(h, "instance::"); ok && r.Get(h) != "" {
			ie.attr(k, c.expr(r.Get(h), ch, h)) // references become paths, as pyxform writes them
		}
	}
	if d := r.Get("default"); d != "" && !dynamicDefault(d, ch.typ) {
		ie.text = d
		if ch.typ == "image" && !strings.HasPrefix(d, "jr://") {
			ie.text = "jr://images/" + d // a default picture from the form's media
		}
	}
	inst.add(ie)
	if binds == nil {
		return
	}
	bt := qt.bind
	if ch.typ == "range" && c.rangeIsDecimal(ch) {
		bt = "decimal"
	}
	*binds = append(*binds, c.bind(ch, bt, r))
	if d := r.Get("default"); d != "" && dynamicDefault(d, ch.typ) {
		*binds = append(*binds, elem("setvalue", "ref", ch.path, "event", "odk-instance-first-load", "value", c.expr(d, ch, "default")))
	}
	if ch.typ == "start-geopoint" {
		*binds = append(*binds, elem("odk:setgeopoint", "ref", ch.path, "event", "odk-instance-first-load"))
	}
	if ch.typ == "background-audio" {
		rec := elem("odk:recordaudio", "ref", ch.path, "event", "odk-instance-load")
		if params, _ := c.parseParamsQuiet(ch); params["quality"] != "" {
			rec.attr("odk:quality", params["quality"])
		}
		*binds = append(*binds, rec)
	}
	if qt.control == "" || container == nil {
		return
	}
	if unshown(r) {
		return
	}
	container.add(c.control(ch, qt, texts))
}

// control is a question's body control: its attributes from the row and
// its parameters, its labels, and its choices.
func (c *converter) control(ch *node, qt qtype, texts *[]*itextEntry) *el {
	r := ch.row
	ctl := elem(qt.control, "ref", ch.path)
	if ch.external != "" {
		query := "instance('" + ch.external + "')/root/item"
		if f := r.Get("choice_filter"); f != "" {
			query += "[" + c.exprFrom(f, ch.path, ch.row.Num, "choice_filter", true) + "]"
		}
		ctl.attr("query", query)
	}
	if qt.mediatype != "" {
		ctl.attr("mediatype", qt.mediatype)
	}
	if a := r.Get("appearance"); a != "" {
		ctl.attr("appearance", a)
	}
	if a := r.Get("autoplay"); a != "" {
		ctl.attr("autoplay", a)
	}
	if v := r.Get("rows"); v != "" {
		ctl.attr("rows", v) // the rows column, as pyxform reads it (a rows parameter wins)
	}
	c.bodyAttrs(ch, ctl)
	if ch.typ == "range" {
		c.rangeParams(ch, ctl)
	}
	params, _ := c.parseParamsQuiet(ch)
	if v, ok := params["capture-accuracy"]; ok {
		ctl.attr("accuracyThreshold", v)
	}
	if v, ok := params["warning-accuracy"]; ok {
		ctl.attr("unacceptableAccuracyThreshold", v)
	}
	if v, ok := params["rows"]; ok {
		ctl.attr("rows", v)
	}
	// The intent column names an external app that fills the
	// question; an image's app parameter overrides it.
	intent := r.Get("intent")
	if intent != "" {
		intent = c.expr(intent, ch, "intent")
	}
	if v, ok := params["app"]; ok {
		// Another app takes the picture only when no drawing
		// appearance asks Collect to (pyxform's rule).
		if a := r.Get("appearance"); a == "" || a == "annotate" {
			intent = v
		}
	}
	if intent != "" {
		ctl.attr("intent", intent)
	}
	if v, ok := params["incremental"]; ok && yes(v) {
		ctl.attr("incremental", "true")
	}
	c.labels(ch, ctl, texts)
	for _, tag := range c.osmTags(ch.osm) {
		lbl := &el{name: "label"}
		lbl.text = tag.Get("label")
		ctl.add(elem("tag", "key", tag.Get("name")).add(lbl))
	}
	c.choiceItems(ch, params, ctl)
	if g, ok := params["reference-geometry"]; ok {
		ctl.add(c.referenceGeometry(ch, g))
	}
	if l := params["tick_labelset"]; ch.typ == "range" && c.choices[l] != nil {
		label := "label"
		if c.listItext(l) {
			label = "jr:itext(itextId)"
		}
		ctl.add(elem("itemset", "nodeset", "instance('"+l+"')/root/item").add(elem("value", "ref", "name"), elem("label", "ref", label)))
	}
	ctl.add(c.triggers[ch.path]...)
	return ctl
}

// choiceItems adds a select's choices to its control: an itemset over the
// choice list's instance (filtered, randomized), the answers of another
// question, or the items themselves where a search() appearance needs them.
func (c *converter) choiceItems(ch *node, params map[string]string, ctl *el) {
	r := ch.row
	if ch.fromAnswers != "" {
		ctl.add(c.answersItemset(ch))
	} else if isSelect(ch.typ) && c.searchLists[ch.list] != nil && strings.Contains(r.Get("appearance"), "search(") {
		for i, cr := range c.choices[ch.list] {
			lbl := elem("label")
			if c.listItext(ch.list) {
				lbl.attr("ref", fmt.Sprintf("jr:itext('%s-%d')", ch.list, i))
			} else {
				lbl.text = cr.Get("label")
			}
			ctl.add(elem("item").add(lbl, &el{name: "value", text: cr.Get("name")}))
		}
	} else if isSelect(ch.typ) {
		id, _ := fileList(ch.list)
		valueRef, labelRef := "name", "label"
		if strings.HasSuffix(ch.list, ".geojson") {
			valueRef, labelRef = "id", "title" // GeoJSON features' id and title
		}
		if id != "" {
			if v := params["value"]; v != "" {
				valueRef = v
			}
			if v := params["label"]; v != "" {
				labelRef = v
			}
		} else {
			id = ch.list
		}
		nodeset := fmt.Sprintf("instance('%s')/root/item", id)
		if f := r.Get("choice_filter"); f != "" {
			nodeset += "[" + c.exprFrom(f, ch.path, ch.row.Num, "choice_filter", true) + "]"
		}
		if params["randomize"] == "true" {
			if seed := params["seed"]; seed != "" {
				nodeset = "randomize(" + nodeset + ", " + strings.TrimSpace(c.exprFrom(seed, ch.path, ch.row.Num, "parameters", false)) + ")"
			} else {
				nodeset = "randomize(" + nodeset + ")"
			}
		}
		is := elem("itemset", "nodeset", nodeset).add(elem("value", "ref", valueRef))
		if c.listItext(ch.list) {
			is.add(elem("label", "ref", "jr:itext(itextId)"))
		} else {
			is.add(elem("label", "ref", labelRef))
		}
		ctl.add(is)
	}
}

// formOrder lists an itext entry's forms as pyxform writes them: the text,
// then the media in the order of their columns on the entry's sheet (the
// survey's for a question's texts, the choices' for a choice's), then a
// guidance hint.
func (c *converter) formOrder(id string, forms map[string]string) []string {
	sheet := "survey"
	if !strings.HasPrefix(id, "/") {
		sheet = "choices"
	}
	if c.formOrders == nil {
		c.formOrders = map[string][]string{}
	}
	order, ok := c.formOrders[sheet]
	if !ok {
		order = c.sheetFormOrder(sheet)
		c.formOrders[sheet] = order
	}
	out := make([]string, 0, len(forms))
	for _, f := range order {
		if _, ok := forms[f]; ok {
			out = append(out, f)
		}
	}
	return out
}

// sheetFormOrder is the order of a sheet's text forms: the plain text,
// then media in the order of the sheet's columns, then the rest.
func (c *converter) sheetFormOrder(sheet string) []string {
	order := []string{""}
	if sh := c.wb.sheet(sheet); sh != nil {
		for _, h := range sh.Headers {
			if rest, ok := strings.CutPrefix(h, "media::"); ok {
				f, _, _ := strings.Cut(rest, "::")
				if !slices.Contains(order, f) {
					order = append(order, f)
				}
			}
		}
	}
	for _, f := range []string{"audio", "image", "big-image", "video", "guidance"} {
		if !slices.Contains(order, f) {
			order = append(order, f)
		}
	}
	return order
}

// colItext reports whether a row's column goes to itext, as pyxform decides
// per column: when it is translated, a label when the row has media, a hint
// when it has a guidance hint.
func colItext(r Row, col string) bool {
	for h, v := range r.Cells {
		if strings.TrimSpace(v) == "" {
			continue
		}
		if strings.HasPrefix(h, col+"::") || (col == "label" && strings.HasPrefix(h, "media::")) || (col == "hint" && strings.HasPrefix(h, "guidance_hint")) {
			return true
		}
		if h == col && strings.HasSuffix(col, "_message") && refPattern.MatchString(v) {
			return true // a message with an output cannot be an attribute
		}
	}
	return false
}

// answersItemset builds the itemset of "select_one ${q}": the answers to q
// in the items of its repeat (the items where it is answered, or those the
// choice_filter keeps, with references to the item's questions as ./path).
func (c *converter) answersItemset(n *node) *el {
	q := c.byName[n.fromAnswers]
	rep := (*node)(nil)
	if q != nil {
		if r := boundary(q.parent); r != c.root {
			rep = r
		}
	}
	if rep == nil {
		c.errorf("survey", n.row.Num, "type", "%s ${%s} takes its choices from the answers to a question in a repeat: ${%s} is not one.", n.typ, n.fromAnswers, n.fromAnswers)
		return nil
	}
	inItem := func(x *node) string { return strings.TrimPrefix(x.path, rep.path+"/") }
	base := rep.path
	if rel, ok := c.relative(n.path, rep.path); ok {
		base = rel
	} else if strings.HasPrefix(n.path, rep.path+"/") && rep.parent != nil {
		// The select is in an item of that repeat: up to the repeat's
		// parent, then the repeat's items, as pyxform writes it.
		up := strings.Count(strings.TrimPrefix(n.path, rep.parent.path+"/"), "/") + 1
		base = strings.Repeat("../", up) + rep.name
	}
	pred := "./" + inItem(q) + " != ''"
	if f := n.row.Get("choice_filter"); f != "" {
		pred = refPattern.ReplaceAllStringFunc(f, func(ref string) string {
			if x := c.byName[strings.TrimSpace(ref[2:len(ref)-1])]; x != nil && strings.HasPrefix(x.path, rep.path+"/") {
				return " ./" + inItem(x) + " "
			}
			return c.exprFrom(ref, n.path, n.row.Num, "choice_filter", true)
		})
	}
	return elem("itemset", "nodeset", base+"["+pred+"]").add(elem("value", "ref", inItem(q)), elem("label", "ref", inItem(q)))
}

// referenceGeometry builds the itemset of shapes a geo question shows for
// reference (the reference-geometry parameter): a choice list's, an
// external file's or entity list's items, or a repeat's geometry answers.
func (c *converter) referenceGeometry(n *node, v string) *el {
	filter := n.row.Get("choice_filter")
	itemset := func(nodeset, value, label string) *el {
		return elem("itemset", "nodeset", nodeset).add(elem("value", "ref", value), elem("label", "ref", label))
	}
	if m := refPattern.FindStringSubmatch(v); m != nil && m[0] == v {
		target := c.byName[strings.TrimSpace(m[1])]
		if target == nil || target.kind != "repeat" {
			c.errorf("survey", n.row.Num, "parameters", "reference-geometry=%s must name a repeat whose geometry question holds the shapes to show.", v)
			return nil
		}
		pred := "./geometry != ''"
		if filter != "" {
			// References to the repeat's questions are relative to each of its items.
			pred = refPattern.ReplaceAllStringFunc(filter, func(ref string) string {
				if q := c.byName[strings.TrimSpace(ref[2:len(ref)-1])]; q != nil && strings.HasPrefix(q.path, target.path+"/") {
					return " ./" + strings.TrimPrefix(q.path, target.path+"/") + " "
				}
				return c.exprFrom(ref, n.path, n.row.Num, "choice_filter", true)
			})
		}
		return itemset(target.path+"["+pred+"]", "geometry", "geometry")
	}
	nodeset := "instance('" + v + "')/root/item"
	if filter != "" {
		nodeset += "[" + c.exprFrom(filter, n.path, n.row.Num, "choice_filter", true) + "]"
	}
	if c.choices[v] != nil {
		label := "label"
		if c.listItext(v) {
			label = "jr:itext(itextId)"
		}
		return itemset(nodeset, "name", label)
	}
	if v != "__last-saved" && c.instanceName(v) {
		return itemset(nodeset, "name", "label")
	}
	c.errorf("survey", n.row.Num, "parameters", "reference-geometry=%s names nothing the form has: use a choice list's name, an entity list's name, the name of an attached file (csv-external, xml-external or select_one_from_file), or ${repeat} for a repeat with a geometry question.", v)
	return nil
}

// instanceName reports whether a secondary instance of that name comes
// from a file the form attaches or from the entity list.
func (c *converter) instanceName(id string) bool {
	for _, e := range c.entities {
		if e.dataset == id {
			return true
		}
	}
	found := false
	var walk func(n *node)
	walk = func(n *node) {
		for _, ch := range n.children {
			if f, _ := fileList(ch.list); f == id || ((ch.typ == "csv-external" || ch.typ == "xml-external") && ch.name == id) {
				found = true
			}
			walk(ch)
		}
	}
	walk(c.root)
	return found
}

// pyRepr writes a string as Python's repr does: in single quotes, or in
// double quotes when it holds a single quote and no double one.
func pyRepr(s string) string {
	if strings.Contains(s, "'") && !strings.Contains(s, `"`) {
		return `"` + strings.ReplaceAll(s, `\`, `\\`) + `"`
	}
	return "'" + strings.NewReplacer(`\`, `\\`, "'", `\'`).Replace(s) + "'"
}

// bindingConversions are the spellings of yes and no that pyxform writes
// as true() and false() in a bind's readonly, required, relevant,
// constraint and calculate; other values are expressions.
var bindingConversions = map[string]string{
	"yes": "true()", "Yes": "true()", "YES": "true()", "true": "true()", "True": "true()", "TRUE": "true()",
	"no": "false()", "No": "false()", "NO": "false()", "false": "false()", "False": "false()", "FALSE": "false()",
}

// bind makes the bind of a node (nil for a group with nothing to bind).
func (c *converter) bind(n *node, typ string, r Row) *el {
	b := elem("bind", "nodeset", n.path)
	if n.typ == "note" {
		// pyxform's note type declares readonly before type.
		if v := r.Get("readonly"); v == "" {
			b.attr("readonly", "true()")
		} else {
			b.attr("readonly", c.bindValue(v, n, "readonly"))
		}
	}
	if typ != "" {
		b.attr("type", typ)
	}
	qt := questionTypes[n.typ]
	// readonly, required, relevant, constraint and calculate: a yes or no
	// as pyxform spells them becomes true() or false() (written, even
	// when false), anything else is an expression written as given.
	for _, kv := range [][2]string{{"readonly", "readonly"}, {"required", "required"}, {"relevant", "relevant"}, {"constraint", "constraint"}, {"calculation", "calculate"}} {
		v := r.Get(kv[0])
		if kv[0] == "calculation" && r.Get("trigger") != "" {
			continue // calculated when its trigger changes, by a setvalue
		}
		if kv[0] == "readonly" && n.typ == "note" {
			continue // written first
		}
		if v == "" {
			continue
		}
		b.attr(kv[1], c.bindValue(v, n, kv[0]))
	}
	if r.Get("save_to") != "" {
		if prop := c.saveTo(n); prop != "" {
			b.attr("entities:saveto", prop)
		}
	}
	for _, m := range [][2]string{{"constraint_message", "jr:constraintMsg"}, {"required_message", "jr:requiredMsg"}, {"noAppErrorString", "jr:noAppErrorString"}} {
		if colItext(r, m[0]) && c.texts != nil {
			if t := c.textEntry(n.path+":"+m[1], r, m[0], n); t != nil {
				*c.texts = append(*c.texts, t)
				b.attr(m[1], "jr:itext('"+t.id+"')")
			}
		} else if v := r.Get(m[0]); v != "" {
			b.attr(m[1], v)
		}
	}
	if qt.preload != "" {
		b.attr("jr:preload", qt.preload)
		b.attr("jr:preloadParams", qt.preloadParams)
	}
	if n.kind == "question" {
		params, _ := c.parseParamsQuiet(n)
		if v, ok := params["allow-mock-accuracy"]; ok {
			b.attr("odk:allow-mock-accuracy", map[bool]string{true: "true", false: "false"}[yes(v)])
		}
		if v, ok := params["max-pixels"]; ok {
			b.attr("orx:max-pixels", v)
		}
		if v, ok := params["quality"]; ok && n.typ != "background-audio" {
			b.attr("odk:quality", v)
		}
		if n.typ == "audit" {
			for _, k := range sortedKeys(params) {
				b.attr("odk:"+k, params[k])
			}
		}
	}
	for _, kv := range [][2]string{{"purpose", "haven:purpose"}, {"sensitivity", "haven:sensitivity"}} {
		if v := r.Get(kv[0]); v != "" {
			b.attr(kv[1], v)
			c.usesHaven = true
		}
	}
	for _, h := range sortedKeys(r.Cells) {
		if k, ok := strings.CutPrefix(h, "bind::"); ok && r.Get(h) != "" {
			b.attr(k, c.expr(r.Get(h), n, h)) // ${name} becomes a path in any bind, as pyxform
			if strings.HasPrefix(k, "haven:") {
				c.usesHaven = true
			}
		}
	}
	if typ == "" && len(b.attrs) == 2 {
		return nil
	}
	return b
}

// labels adds a control's label and hint, inline or through itext.
func (c *converter) labels(n *node, ctl *el, texts *[]*itextEntry) {
	for _, col := range []string{"label", "hint"} {
		if col == "hint" && n.kind != "question" {
			continue // pyxform shows no hint for a group or a repeat
		}
		if col == "label" && n.kind == "question" && !hasColumn(n.row, "label") && !colItext(n.row, "label") && (hasText(n.row) || strings.HasPrefix(n.name, "reserved_name_for_field_list_labels_")) {
			// A question shown with only a hint still has a label, and so
			// do a table-list's column heads.
			ctl.add(elem("label"))
			continue
		}
		if colItext(n.row, col) {
			if t := c.textEntry(n.path+":"+col, n.row, col, n); t != nil {
				*texts = append(*texts, t)
				ctl.add(elem(col, "ref", "jr:itext('"+t.id+"')"))
			}
			continue
		}
		if v := n.row.Get(col); v != "" {
			e := &el{name: col}
			e.text, e.raw = c.withOutputs(v, n, col)
			ctl.add(e)
		}
	}
}

// rangeParams writes a range's start, end and step (and ticks) on its control.
func (c *converter) rangeParams(n *node, ctl *el) {
	params, _ := c.parseParamsQuiet(n)
	for _, k := range []string{"start", "end", "step"} {
		v, ok := params[k]
		if !ok {
			v = map[string]string{"start": "1", "end": "10", "step": "1"}[k]
		}
		ctl.attr(k, v)
	}
	for _, k := range []string{"tick_interval", "placeholder"} { // tick_labelset is an itemset
		if v, ok := params[k]; ok {
			ctl.attr("odk:"+strings.ReplaceAll(k, "_", "-"), v)
		}
	}
}

// rangeIsDecimal: a range whose start, end or step is not a whole number
// holds decimals.
func (c *converter) rangeIsDecimal(n *node) bool {
	params, _ := c.parseParamsQuiet(n)
	for _, k := range []string{"start", "end", "step"} {
		if v, ok := params[k]; ok && strings.ContainsAny(v, ".eE") {
			return true
		}
	}
	return false
}

// parseParamsQuiet reads parameters already checked when the survey was read.
func (c *converter) parseParamsQuiet(n *node) (map[string]string, bool) {
	errs, warns := len(c.res.Errors), len(c.res.Warnings)
	p, ok := c.parseParams(n)
	c.res.Errors, c.res.Warnings = c.res.Errors[:errs], c.res.Warnings[:warns]
	return p, ok
}

// hasColumn reports whether a row has a value in column col or any of its
// translations (col::Language).
func hasColumn(r Row, col string) bool {
	for h, v := range r.Cells {
		if (h == col || strings.HasPrefix(h, col+"::")) && strings.TrimSpace(v) != "" {
			return true
		}
	}
	return false
}
