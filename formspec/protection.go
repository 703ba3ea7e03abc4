package formspec

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/beevik/etree"
	"github.com/haven-org/haven"
)

// Namespace is the XML namespace of Haven's form attributes. ODK Collect
// ignores attributes in namespaces it does not know.
const Namespace = "urn:haven:xforms"

// Protection is what a form declares about the data it collects: the
// form-wide settings (attributes of <model>) and its consent question.
type Protection struct {
	DefaultSensitivity haven.Sensitivity // haven:default-sensitivity
	LegalBasis         string            // haven:legal-basis
	ConsentField       string            // haven:consent-field, as written
	SubjectField       string            // haven:subject-field, as written
	// Consent is the consent question, when the form names one that exists.
	Consent *Node
	// StatementVersion is the SHA-256 of the consent question's label in
	// every language; "" without a consent question.
	StatementVersion string
	// Languages of the form's labels, sorted; empty when it has no translations.
	Languages []string
	// DefaultLanguage is the translation the form marks default, else the
	// first of Languages ("" without translations).
	DefaultLanguage string

	start, end *Node                        // the fields the device fills with its start and end times
	subject    *Node                        // the subject identifier field, found once
	tiers      map[string]haven.Sensitivity // effective tier by field path, found once
}

// havenAttr returns the value of the attribute local in Haven's namespace.
func havenAttr(e *etree.Element, local string) (string, bool) {
	for _, a := range e.Attr {
		if a.Key == local && (a.NamespaceURI() == Namespace || a.Space == "haven") {
			return strings.TrimSpace(a.Value), true
		}
	}
	return "", false
}

func (f *Form) readModelProtection(model *etree.Element) {
	if v, ok := havenAttr(model, "default-sensitivity"); ok {
		f.DefaultSensitivity = haven.Sensitivity(strings.ToLower(v))
	}
	f.LegalBasis, _ = havenAttr(model, "legal-basis")
	f.ConsentField, _ = havenAttr(model, "consent-field")
	f.SubjectField, _ = havenAttr(model, "subject-field")
}

func isTrue(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "true()", "yes", "1":
		return true
	}
	return false
}

func readBind(n *Node, bind *etree.Element) {
	if v, ok := havenAttr(bind, "purpose"); ok {
		n.Purpose = v
	}
	if v, ok := havenAttr(bind, "sensitivity"); ok {
		n.Sensitivity = haven.Sensitivity(strings.ToLower(v))
	}
	if v, ok := havenAttr(bind, "consent"); ok && isTrue(v) {
		n.consentMark = true
	}
	if v, ok := havenAttr(bind, "subject"); ok && isTrue(v) {
		n.subjectMark = true
	}
	for _, a := range bind.Attr {
		switch a.Key {
		case "saveto":
			n.SaveTo = strings.TrimSpace(a.Value)
		case "preload":
			n.Preload = strings.TrimSpace(a.Value + " " + bind.SelectAttrValue("jr:preloadParams", bind.SelectAttrValue("preloadParams", "")))
		case "readonly":
			n.Readonly = isTrue(a.Value)
		case "calculate":
			n.Calculated = strings.TrimSpace(a.Value) != ""
			if n.Calculated {
				n.exprs = append(n.exprs, a.Value)
			}
		}
	}
}

// readItext returns the form's translations: text id -> language -> text.
func readItext(model *etree.Element) map[string]map[string]string {
	it := child(model, "itext")
	if it == nil {
		return nil
	}
	out := map[string]map[string]string{}
	for _, tr := range children(it, "translation") {
		lang := tr.SelectAttrValue("lang", "")
		for _, t := range children(tr, "text") {
			id := t.SelectAttrValue("id", "")
			for _, v := range children(t, "value") {
				if form := v.SelectAttrValue("form", ""); form != "" && form != "long" {
					continue // media and guidance, not the text
				}
				if out[id] == nil {
					out[id] = map[string]string{}
				}
				out[id][lang] = innerText(v)
			}
		}
	}
	return out
}

// innerText is an element's text with its child elements' text (an
// <output value="..."/> shows as its expression in braces).
func innerText(e *etree.Element) string {
	var b strings.Builder
	for _, t := range e.Child {
		switch t := t.(type) {
		case *etree.CharData:
			b.WriteString(t.Data)
		case *etree.Element:
			if t.Tag == "output" {
				b.WriteString("{" + t.SelectAttrValue("value", "") + "}")
			} else {
				b.WriteString(innerText(t))
			}
		}
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

var itextRef = regexp.MustCompile(`^\s*jr:itext\(\s*['"]([^'"]+)['"]\s*\)\s*$`)

func readLabel(control *etree.Element, itext map[string]map[string]string) map[string]string {
	l := child(control, "label")
	if l == nil {
		return nil
	}
	if m := itextRef.FindStringSubmatch(l.SelectAttrValue("ref", "")); m != nil {
		return itext[m[1]]
	}
	if t := innerText(l); t != "" {
		return map[string]string{"": t}
	}
	return nil
}

// resolveConsent finds the consent question, its statement's version, the
// label languages and the start and end fields, once per form: ingestion
// reads them for every submission.
func (f *Form) resolveConsent() {
	langs := map[string]bool{}
	var marked []*Node
	for _, n := range f.Fields() {
		for l := range n.Label {
			if l != "" {
				langs[l] = true
			}
		}
		if n.consentMark {
			marked = append(marked, n)
		}
		switch n.Preload {
		case "timestamp start":
			f.start = n
		case "timestamp end":
			f.end = n
		}
	}
	for l := range langs {
		f.Languages = append(f.Languages, l)
	}
	sort.Strings(f.Languages)
	if f.DefaultLanguage == "" && len(f.Languages) > 0 {
		f.DefaultLanguage = f.Languages[0]
	}
	switch {
	case f.ConsentField != "":
		f.Consent = f.fieldByRef(f.ConsentField)
	case len(marked) == 1:
		f.Consent = marked[0]
	}
	if f.Consent != nil {
		f.StatementVersion = statementVersion(f.Consent.Label)
	}
	f.subject = f.findSubject()
	base := map[string]haven.Sensitivity{}
	for _, fd := range f.Schema() {
		base[fd.Path] = fd.Effective
	}
	f.deriveTiers(base)
	f.tiers = map[string]haven.Sensitivity{}
	for _, fd := range f.Schema() {
		f.tiers[fd.Path] = fd.Effective
	}
}

// Tier is the effective tier of the field at path: the tier access control
// applies. Paths the form does not define count as level_3.
func (f *Form) Tier(path string) haven.Sensitivity {
	if t, ok := f.tiers[path]; ok {
		return t
	}
	return haven.Level3
}

// fieldByRef finds a field by absolute path or by name, when the name is unique.
func (f *Form) fieldByRef(ref string) *Node {
	ref = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(ref, "${"), "}"))
	if strings.HasPrefix(ref, "/") {
		if n := f.Node(ref); n != nil && !n.IsGroup() {
			return n
		}
		return nil
	}
	var found *Node
	for _, n := range f.Fields() {
		if n.Name == ref {
			if found != nil {
				return nil
			}
			found = n
		}
	}
	return found
}

// Subject returns the field that identifies the person a submission is about
// (haven:subject-field or haven:subject="true"), or nil.
func (f *Form) Subject() *Node { return f.subject }

func (f *Form) findSubject() *Node {
	if f.SubjectField != "" {
		return f.fieldByRef(f.SubjectField)
	}
	for _, n := range f.Fields() {
		if n.subjectMark {
			return n
		}
	}
	return nil
}

// metadataTiers are the purpose and tier Haven records for the fields
// devices fill in themselves, by kind of preload.
var metadataTiers = map[string]struct {
	purpose string
	tier    haven.Sensitivity
}{
	"timestamp": {"When the form was filled in (recorded by the device; consent evidence).", haven.Level1},
	"date":      {"When the form was filled in (recorded by the device).", haven.Level1},
	"property":  {"Which device or account filled in the form (recorded by the device).", haven.Level2},
	"meta":      {"Identifies the submission (protocol metadata).", haven.Public},
	"uid":       {"Identifies the submission (protocol metadata).", haven.Public},
	// An entity's label is built from answers (often a name): it takes the
	// tier of what its expression reads (derive.go); one whose expression
	// Haven cannot see gets the highest tier unless the form says.
	"entity": {"Names the entity the submission creates or updates (entity list); built from answers.", haven.Level3},
}

// IsMetadata reports whether the device fills n in itself: the meta block
// (instanceID, instanceName, audit...) and preloaded values (start, end,
// today, deviceid, username...). Haven maps these itself.
func (f *Form) IsMetadata(n *Node) bool {
	if n.Preload != "" || strings.HasPrefix(n.Path, "/"+f.RootName+"/meta/") {
		return true
	}
	// A meta block within a repeat (in it, or in a group in it): entities
	// made once per item of a repeat; and an entity's meta block in any
	// group (a form with several entity lists gives each its own).
	segs := strings.Split(n.Path, "/")
	for i := 2; i < len(segs)-1; i++ {
		if segs[i] != "meta" {
			continue
		}
		if segs[i+1] == "entity" {
			return true
		}
		if m := f.Node(strings.Join(segs[:i+1], "/")); m != nil && f.InRepeat(m) {
			return true
		}
	}
	return false
}

// isEntityLabel reports whether n is the label of the entity a submission
// creates or updates (meta/entity/label): it is computed from answers.
func isEntityLabel(n *Node) bool { return strings.HasSuffix(n.Path, "/meta/entity/label") }

// IsNote reports whether n is a note: a read-only text shown to the
// enumerator that holds no answer.
func IsNote(n *Node) bool {
	return n.Readonly && !n.Calculated && n.Control == "input" && (n.Type == "string" || n.Type == "")
}

// Field is the schema view of one field.
type Field struct {
	Path        string            `json:"path"`
	Name        string            `json:"name"`
	Type        string            `json:"type"`
	Kind        string            `json:"kind"` // data, note, metadata
	Purpose     string            `json:"purpose"`
	Sensitivity haven.Sensitivity `json:"sensitivity"`
	// Derived is the highest tier among the fields a computed value reads
	// (calculate, dynamic default, instance name); "" for answers.
	Derived haven.Sensitivity `json:"derivedSensitivity,omitempty"`
	// Effective is the tier access control applies: the declared tier or
	// the derived one, whichever is stricter (level_0 counts as level_3).
	Effective haven.Sensitivity `json:"effectiveSensitivity"`
	Repeat    bool              `json:"inRepeat"`
	Binary    bool              `json:"binary"`
	Consent   bool              `json:"consent,omitempty"`
	Subject   bool              `json:"subject,omitempty"`
}

// Schema lists every field with its declared purpose and tier, metadata
// mapped by Haven and a missing tier taken from the form's default.
func (f *Form) Schema() []Field {
	subject := f.Subject()
	var out []Field
	var walk func(n *Node, inRepeat bool)
	walk = func(n *Node, inRepeat bool) {
		for _, c := range n.Children {
			if c.IsGroup() {
				walk(c, inRepeat || c.Repeat)
				continue
			}
			fd := Field{Path: c.Path, Name: c.Name, Type: c.Type, Kind: "data", Purpose: c.Purpose,
				Sensitivity: c.Sensitivity, Repeat: inRepeat, Binary: c.Type == "binary",
				Consent: c == f.Consent, Subject: c == subject}
			switch {
			case f.IsMetadata(c):
				fd.Kind = "metadata"
				kind := "meta"
				if c.Preload != "" {
					kind = strings.Fields(c.Preload)[0]
				} else if isEntityLabel(c) {
					kind = "entity"
				}
				m, ok := metadataTiers[kind]
				if !ok {
					m = metadataTiers["property"]
				}
				if kind == "entity" && len(c.exprs) > 0 {
					m.tier = haven.Public // the label's expression decides (derived)
				}
				if fd.Purpose == "" {
					fd.Purpose = m.purpose
				}
				if fd.Sensitivity == "" {
					fd.Sensitivity = m.tier
				}
			case IsNote(c):
				fd.Kind = "note"
				if fd.Sensitivity == "" {
					fd.Sensitivity = haven.Public
				}
			}
			if fd.Sensitivity == "" {
				fd.Sensitivity = f.DefaultSensitivity
			}
			fd.Effective = fd.Sensitivity.Effective()
			if !fd.Sensitivity.Valid() {
				fd.Effective = haven.Level3
			}
			if c.derived != "" {
				fd.Derived = c.derived
				fd.Effective = haven.MaxSensitivity(fd.Effective, c.derived.Effective())
			}
			out = append(out, fd)
		}
	}
	walk(f.Root, false)
	return out
}

// Undecided lists the data fields still at level_0.
func (f *Form) Undecided() []Field {
	var out []Field
	for _, fd := range f.Schema() {
		if fd.Sensitivity == haven.Level0 {
			out = append(out, fd)
		}
	}
	return out
}

// CheckProtection lists what stops the form from being published: data
// fields without a purpose or a tier, unknown tiers and legal bases, and a
// missing or unusable consent question when the form has no other legal
// basis. Each problem names the field and what to write.
func (f *Form) CheckProtection() []Problem {
	var out []Problem
	model := "/" + f.RootName
	if f.DefaultSensitivity != "" && !f.DefaultSensitivity.Valid() {
		out = append(out, Problem{Path: model, Message: fmt.Sprintf("the default sensitivity %q is not a tier: use one of %s (settings column default_sensitivity)", f.DefaultSensitivity, tierList())})
	}
	for _, fd := range f.Schema() {
		if fd.Kind != "data" {
			continue
		}
		var missing []string
		if fd.Purpose == "" {
			missing = append(missing, "purpose (survey column purpose: why it is collected and how it will be used)")
		}
		if fd.Sensitivity == "" {
			missing = append(missing, fmt.Sprintf("sensitivity (survey column sensitivity: %s; or a default_sensitivity setting)", tierList()))
		} else if !fd.Sensitivity.Valid() {
			out = append(out, Problem{Path: fd.Path, Message: fmt.Sprintf("the sensitivity %q is not a tier: use one of %s", fd.Sensitivity, tierList())})
		}
		if len(missing) > 0 {
			out = append(out, Problem{Path: fd.Path, Message: "has no " + strings.Join(missing, " and no ")})
		}
	}
	basis := strings.ToLower(f.LegalBasis)
	if basis != "" && !knownBasis(basis) {
		out = append(out, Problem{Path: model, Message: fmt.Sprintf("the legal basis %q is not one Haven knows: use one of %s (settings column legal_basis)", f.LegalBasis, strings.Join(haven.LegalBases, ", "))})
	}
	switch {
	case f.ConsentField != "" && f.Consent == nil:
		out = append(out, Problem{Path: model, Message: fmt.Sprintf("the consent setting names %q, which is not a field of the form (or names more than one): give the name of the consent question", f.ConsentField)})
	case f.Consent != nil:
		if msg := consentUsable(f.Consent); msg != "" {
			out = append(out, Problem{Path: f.Consent.Path, Message: msg})
		}
	case basis == "" || basis == haven.BasisConsent:
		out = append(out, Problem{Path: model, Message: "the form has no consent question and declares no other legal basis: name the consent question in the settings column consent (a select_one yes/no or an acknowledge question), or set legal_basis to one of " + strings.Join(haven.LegalBases[1:], ", ")})
	}
	switch {
	case f.SubjectField != "" && f.subject == nil:
		out = append(out, Problem{Path: model, Message: fmt.Sprintf("the subject_id setting names %q, which is not a field of the form (or names more than one): give the name of the question that records the person's identifier", f.SubjectField)})
	case f.subject != nil && f.InRepeat(f.subject):
		out = append(out, Problem{Path: f.subject.Path, Message: "is the subject identifier but sits inside a repeat: a submission is about one person, so put the identifier question outside any repeat"})
	}
	return append(out, f.checkEntities()...)
}

// SubjectID returns the subject identifier a submission carries, trimmed;
// "" when the form names none or the submission leaves it empty.
func (f *Form) SubjectID(inst *Instance) string {
	if f.subject == nil {
		return ""
	}
	v, _ := inst.Value(f.subject.Path)
	return strings.TrimSpace(v)
}

// InRepeat reports whether n is inside a repeat (or is one).
func (f *Form) InRepeat(n *Node) bool {
	parts := strings.Split(strings.Trim(n.Path, "/"), "/")
	for i := 2; i <= len(parts); i++ {
		if a := f.Node("/" + strings.Join(parts[:i], "/")); a != nil && a.Repeat {
			return true
		}
	}
	return false
}

func tierList() string {
	s := make([]string, len(haven.Sensitivities))
	for i, t := range haven.Sensitivities {
		s[i] = string(t)
	}
	return strings.Join(s, ", ")
}

func knownBasis(b string) bool {
	for _, k := range haven.LegalBases {
		if b == k {
			return true
		}
	}
	return false
}

// affirmative are the answers that mean yes to a consent question.
var affirmative = map[string]bool{"yes": true, "y": true, "1": true, "true": true, "ok": true, "agree": true, "agreed": true, "accept": true, "accepted": true, "consent": true, "consented": true}

func consentUsable(n *Node) string {
	switch {
	case n.Control == "trigger":
		return ""
	case n.Type == "select1" && n.Choices != nil:
		for v := range n.Choices {
			if affirmative[strings.ToLower(v)] {
				return ""
			}
		}
		return "the consent question has no choice meaning yes: give it a choice named yes (a yes/no list)"
	}
	return "the consent question must be a select_one with a yes choice, or an acknowledge question"
}

// ConsentStatement is the text an enumerator read out, in every language,
// and its version.
func (f *Form) ConsentStatement() (text map[string]string, version string) {
	if f.Consent == nil {
		return nil, ""
	}
	return f.Consent.Label, f.StatementVersion
}

// statementVersion is the SHA-256 of a statement's languages and texts.
func statementVersion(text map[string]string) string {
	langs := make([]string, 0, len(text))
	for l := range text {
		langs = append(langs, l)
	}
	sort.Strings(langs)
	h := sha256.New()
	for _, l := range langs {
		fmt.Fprintf(h, "%s\x00%s\x00", l, text[l])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Value returns the text of the first element at an absolute form path in
// the instance, and whether it is there.
func (inst *Instance) Value(path string) (string, bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if len(parts) == 0 || inst.Root == nil || parts[0] != inst.Root.Name {
		return "", false
	}
	e := inst.Root
	for _, p := range parts[1:] {
		if e = e.Child(p); e == nil {
			return "", false
		}
	}
	return e.Text, true
}

// ConsentOutcome says whether the submission carries consent: given,
// refused, missing, or not asked when the form relies on another basis.
func (f *Form) ConsentOutcome(inst *Instance) string {
	if f.Consent == nil {
		return haven.ConsentNotNeeded
	}
	v, _ := inst.Value(f.Consent.Path)
	v = strings.TrimSpace(v)
	switch {
	case v == "":
		return haven.ConsentMissing
	case affirmative[strings.ToLower(v)]:
		return haven.ConsentGiven
	}
	return haven.ConsentRefused
}

// DeviceTimes returns the start and end times the device recorded, when the
// form has start and end fields and the device filled them.
func (f *Form) DeviceTimes(inst *Instance) (start, end *time.Time) {
	return deviceTime(inst, f.start), deviceTime(inst, f.end)
}

// deviceTime reads a time the device recorded in field n (ODK Collect
// writes 2026-11-20T09:15:00.000+03:00), or nil.
func deviceTime(inst *Instance, n *Node) *time.Time {
	if n == nil {
		return nil
	}
	v, _ := inst.Value(n.Path)
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(v))
	if err != nil {
		return nil
	}
	t = t.UTC()
	return &t
}
