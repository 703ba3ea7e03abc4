package export

import (
	"bufio"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/formspec"
)

// OData: a form's submissions as ODK Central's OData service shapes them,
// which is what pyodk's get_table, ruODK, Power BI and Excel read. One
// entity set holds the submissions and one more each repeat ("Submissions",
// "Submissions.household.member"); groups are complex values; names are
// made OData identifiers as Central makes them; every row carries an __id
// (a repeat's is the SHA-1 Central computes, so links and keys match
// Central's); repeats are reached by navigation links, or inline with
// $expand=*. Fields the reader may not see are left out of everything,
// $metadata included: for that reader the form does not have them.

// odField is a node of the form as the OData service shows it.
type odField struct {
	name     string // as the form names it
	ident    string // as an OData identifier
	path     string // from the root, without it: /household/member/age
	kind     string // "structure", "repeat" or the bind type
	multiple bool   // a select_multiple
	parent   *odField
	children []*odField
	byName   map[string]*odField
}

func (f *odField) structural() bool { return f.kind == "structure" || f.kind == "repeat" }

// OData is the OData description of one form version for one reader.
type OData struct {
	xmlFormID string
	root      *odField
	byPath    map[string]*odField // by OData path: /household/member (identifiers)
	// Omitted lists the schema paths left out because the reader may not
	// see them, in document order.
	Omitted []string
}

// sanitizeRe are the two steps of Central's sanitizeOdataIdentifier.
var (
	leadRe  = regexp.MustCompile(`^([^a-zA-Z_])`)
	otherRe = regexp.MustCompile(`[^a-zA-Z0-9_]+`)
)

// ODataIdentifier makes a name an OData identifier exactly as ODK Central
// does: a leading character that is not a letter or '_' gets a '_' before
// it, and every run of other characters becomes one '_'.
func ODataIdentifier(name string) string {
	return otherRe.ReplaceAllString(leadRe.ReplaceAllString(name, "_$1"), "_")
}

// NewOData describes form for a reader who sees the fields sees accepts
// (by schema path). A group or repeat left with nothing the reader sees is
// left out as well: even how many rows a hidden repeat has is not shown.
func NewOData(form *formspec.Form, sees func(path string) bool) *OData {
	o := &OData{xmlFormID: form.ID, root: &odField{kind: "root", byName: map[string]*odField{}}, byPath: map[string]*odField{}}
	var build func(n *formspec.Node, parent *odField)
	build = func(n *formspec.Node, parent *odField) {
		for _, c := range n.Children {
			f := &odField{name: c.Name, ident: ODataIdentifier(c.Name), path: parent.path + "/" + c.Name, parent: parent}
			switch {
			case c.Repeat:
				f.kind = "repeat"
			case c.IsGroup():
				f.kind = "structure"
			default:
				if !sees(c.Path) {
					o.Omitted = append(o.Omitted, c.Path)
					continue
				}
				f.kind, f.multiple = c.Type, c.Control == "select"
				if f.kind == "" {
					f.kind = "string"
				}
			}
			if f.structural() {
				f.byName = map[string]*odField{}
				build(c, f)
				if len(f.children) == 0 {
					continue
				}
			}
			parent.children = append(parent.children, f)
			parent.byName[f.name] = f
		}
	}
	build(form.Root, o.root)
	var index func(f *odField, prefix string)
	index = func(f *odField, prefix string) {
		for _, c := range f.children {
			p := prefix + "/" + c.ident
			o.byPath[p] = c
			index(c, p)
		}
	}
	index(o.root, "")
	return o
}

// identPath is a field's path in identifiers: /household/member.
func (f *odField) identPath() string {
	if f.parent == nil || f.kind == "root" {
		return ""
	}
	return f.parent.identPath() + "/" + f.ident
}

// typeName is a structural field's name in $metadata: its identifier path
// joined by dots (household.member).
func (f *odField) typeName() string {
	return strings.ReplaceAll(strings.TrimPrefix(f.identPath(), "/"), "/", ".")
}

// repeats lists the repeats, in document order.
func (o *OData) repeats() []*odField {
	var out []*odField
	var walk func(f *odField)
	walk = func(f *odField) {
		for _, c := range f.children {
			if c.kind == "repeat" {
				out = append(out, c)
			}
			if c.structural() {
				walk(c)
			}
		}
	}
	walk(o.root)
	return out
}

// Tables lists the entity sets: Submissions, then one per repeat.
func (o *OData) Tables() []string {
	out := []string{"Submissions"}
	for _, r := range o.repeats() {
		out = append(out, "Submissions."+r.typeName())
	}
	return out
}

// ServiceDocument is the service document (OData 4.0 JSON, section 5):
// the entity sets, with its context at metadataURL.
func (o *OData) ServiceDocument(metadataURL string) map[string]any {
	sets := []map[string]string{}
	for _, t := range o.Tables() {
		sets = append(sets, map[string]string{"name": t, "kind": "EntitySet", "url": t})
	}
	return map[string]any{"@odata.context": metadataURL, "value": sets}
}

// edmType maps bind types to OData types, as Central does (and the int
// spelling JavaRosa also takes); anything else is a string.
var edmType = map[string]string{
	"int": "Edm.Int64", "integer": "Edm.Int64", "decimal": "Edm.Decimal", "boolean": "Edm.Boolean",
	"geopoint": "Edm.GeographyPoint", "geotrace": "Edm.GeographyLineString", "geoshape": "Edm.GeographyPolygon",
	"date": "Edm.Date", "dateTime": "Edm.DateTimeOffset",
}

const fqdnRoot = "org.opendatakit.user"

// Metadata is the metadata document (CSDL as EDMX), as Central writes it.
func (o *OData) Metadata() []byte {
	esc := html.EscapeString
	base := fqdnRoot + "." + ODataIdentifier(o.xmlFormID)
	type prop struct{ name, typ, nav string }
	type bag struct {
		name    string
		primary bool
		props   []prop
	}
	submissions := &bag{name: "Submissions", primary: true}
	entities := []*bag{submissions}
	var complexes []*bag
	var walk func(f *odField, out *bag, context *odField)
	walk = func(f *odField, out *bag, context *odField) {
		for _, c := range f.children {
			switch c.kind {
			case "structure":
				cb := &bag{name: c.typeName()}
				complexes = append(complexes, cb)
				out.props = append(out.props, prop{name: c.ident, typ: base + "." + c.typeName()})
				walk(c, cb, context)
			case "repeat":
				parts := []string{"Submissions"}
				if context != nil {
					parts = append(parts, strings.Split(strings.TrimPrefix(context.identPath(), "/"), "/")...)
				}
				eb := &bag{name: "Submissions." + c.typeName(), props: []prop{{name: "__" + strings.Join(parts, "-") + "-id", typ: "Edm.String"}}}
				entities = append(entities, eb)
				out.props = append(out.props, prop{name: c.ident, nav: "Collection(" + base + ".Submissions." + c.typeName() + ")"})
				walk(c, eb, c)
			default:
				t := edmType[c.kind]
				if t == "" {
					t = "Edm.String"
				}
				out.props = append(out.props, prop{name: c.ident, typ: t})
			}
		}
	}
	walk(o.root, submissions, nil)

	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>
<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">
  <edmx:DataServices>
    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="org.opendatakit.submission">
      <ComplexType Name="metadata">
        <Property Name="submissionDate" Type="Edm.DateTimeOffset"/>
        <Property Name="updatedAt" Type="Edm.DateTimeOffset"/>
        <Property Name="deletedAt" Type="Edm.DateTimeOffset"/>
        <Property Name="submitterId" Type="Edm.String"/>
        <Property Name="submitterName" Type="Edm.String"/>
        <Property Name="attachmentsPresent" Type="Edm.Int64"/>
        <Property Name="attachmentsExpected" Type="Edm.Int64"/>
        <Property Name="status" Type="org.opendatakit.submission.Status"/>
        <Property Name="reviewState" Type="org.opendatakit.submission.ReviewState"/>
        <Property Name="deviceId" Type="Edm.String"/>
        <Property Name="edits" Type="Edm.Int64"/>
        <Property Name="formVersion" Type="Edm.String"/>
      </ComplexType>
      <EnumType Name="Status">
        <Member Name="notDecrypted"/>
        <Member Name="missingEncryptedFormData"/>
      </EnumType>
      <EnumType Name="ReviewState">
        <Member Name="hasIssues"/>
        <Member Name="edited"/>
        <Member Name="rejected"/>
        <Member Name="approved"/>
      </EnumType>
    </Schema>
`)
	fmt.Fprintf(&b, "    <Schema xmlns=\"http://docs.oasis-open.org/odata/ns/edm\" Namespace=\"%s\">\n", esc(base))
	writeProps := func(props []prop) {
		for _, p := range props {
			if p.nav != "" {
				fmt.Fprintf(&b, "        <NavigationProperty Name=\"%s\" Type=\"%s\"/>\n", esc(p.name), esc(p.nav))
			} else {
				fmt.Fprintf(&b, "        <Property Name=\"%s\" Type=\"%s\"/>\n", esc(p.name), esc(p.typ))
			}
		}
	}
	for _, e := range entities {
		fmt.Fprintf(&b, "      <EntityType Name=\"%s\">\n        <Key><PropertyRef Name=\"__id\"/></Key>\n        <Property Name=\"__id\" Type=\"Edm.String\"/>\n", esc(e.name))
		if e.primary {
			b.WriteString("        <Property Name=\"__system\" Type=\"org.opendatakit.submission.metadata\"/>\n")
		}
		writeProps(e.props)
		b.WriteString("      </EntityType>\n")
	}
	for _, c := range complexes {
		fmt.Fprintf(&b, "      <ComplexType Name=\"%s\">\n", esc(c.name))
		writeProps(c.props)
		b.WriteString("      </ComplexType>\n")
	}
	fmt.Fprintf(&b, "      <EntityContainer Name=\"%s\">\n", esc(o.xmlFormID))
	for _, e := range entities {
		fmt.Fprintf(&b, "        <EntitySet Name=\"%s\" EntityType=\"%s.%s\">\n", esc(e.name), esc(base), esc(e.name))
		if e.primary {
			b.WriteString(`          <Annotation Term="Org.OData.Capabilities.V1.ConformanceLevel" EnumMember="Org.OData.Capabilities.V1.ConformanceLevelType/Minimal"/>
          <Annotation Term="Org.OData.Capabilities.V1.BatchSupported" Bool="false"/>
          <Annotation Term="Org.OData.Capabilities.V1.CountRestrictions">
            <Record><PropertyValue Property="Countable" Bool="true"/></Record>
          </Annotation>
          <Annotation Term="Org.OData.Capabilities.V1.FilterFunctions">
            <Record>
              <PropertyValue Property="NonCountableProperties">
                <Collection>
                  <String>eq</String>
                </Collection>
              </PropertyValue>
            </Record>
          </Annotation>
          <Annotation Term="Org.OData.Capabilities.V1.FilterFunctions">
            <Record>
              <PropertyValue Property="Filterable" Bool="true"/>
              <PropertyValue Property="RequiresFilter" Bool="false"/>
              <PropertyValue Property="NonFilterableProperties">
                <Collection>
`)
			for _, p := range e.props {
				fmt.Fprintf(&b, "                  <PropertyPath>%s</PropertyPath>\n", esc(p.name))
			}
			b.WriteString(`                </Collection>
              </PropertyValue>
            </Record>
          </Annotation>
          <Annotation Term="Org.OData.Capabilities.V1.SortRestrictions">
            <Record><PropertyValue Property="Sortable" Bool="false"/></Record>
          </Annotation>
          <Annotation Term="Org.OData.Capabilities.V1.ExpandRestrictions">
            <Record><PropertyValue Property="Expandable" Bool="false"/></Record>
          </Annotation>
`)
		}
		b.WriteString("        </EntitySet>\n")
	}
	b.WriteString("      </EntityContainer>\n    </Schema>\n  </edmx:DataServices>\n</edmx:Edmx>")
	return []byte(b.String())
}

// ODataSystem is a submission's __system block.
type ODataSystem struct {
	SubmissionDate      time.Time
	UpdatedAt           *time.Time
	SubmitterID         int64
	SubmitterName       string
	AttachmentsPresent  int
	AttachmentsExpected int
	ReviewState         *string
	DeviceID            *string // nil when the reader may not see it
	Edits               int
	FormVersion         string
}

// ODataTime writes a time as Central does: UTC, milliseconds, Z.
func ODataTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func (s ODataSystem) fields() []kv {
	var updated any
	if s.UpdatedAt != nil {
		updated = ODataTime(*s.UpdatedAt)
	}
	var name any
	if s.SubmitterName != "" {
		name = s.SubmitterName
	}
	return []kv{
		{"submissionDate", ODataTime(s.SubmissionDate)}, {"updatedAt", updated},
		{"submitterId", strconv.FormatInt(s.SubmitterID, 10)}, {"submitterName", name},
		{"attachmentsPresent", s.AttachmentsPresent}, {"attachmentsExpected", s.AttachmentsExpected},
		{"status", nil}, {"reviewState", s.ReviewState}, {"deviceId", s.DeviceID}, {"edits", s.Edits},
		{"formVersion", s.FormVersion}, {"deletedAt", nil},
	}
}

// SystemFields are the __system properties $select may name.
var SystemFields = []string{"submissionDate", "updatedAt", "submitterId", "submitterName", "attachmentsPresent",
	"attachmentsExpected", "status", "reviewState", "deviceId", "edits", "formVersion", "deletedAt"}

// kv is one member of a JSON object.
type kv struct {
	k string
	v any
}

// obj is a JSON object that keeps its members' order (the form's).
type obj struct{ kvs []kv }

func (o *obj) set(k string, v any) {
	for i := range o.kvs {
		if o.kvs[i].k == k {
			o.kvs[i].v = v
			return
		}
	}
	o.kvs = append(o.kvs, kv{k, v})
}

func (o *obj) get(k string) any {
	for _, m := range o.kvs {
		if m.k == k {
			return m.v
		}
	}
	return nil
}

func (o *obj) del(k string) {
	for i, m := range o.kvs {
		if m.k == k {
			o.kvs = append(o.kvs[:i], o.kvs[i+1:]...)
			return
		}
	}
}

// MarshalJSON writes the members in order.
func (o *obj) MarshalJSON() ([]byte, error) {
	var b strings.Builder
	b.WriteByte('{')
	for i, m := range o.kvs {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(m.k)
		b.Write(k)
		b.WriteByte(':')
		v, err := json.Marshal(m.v)
		if err != nil {
			return nil, err
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return []byte(b.String()), nil
}

// ODataRow is one row of an entity set, ready to write as JSON.
type ODataRow = *obj

// ID returns a row's __id.
func (o *obj) ID() string { s, _ := o.get("__id").(string); return s }

// Get returns a member of a row, for tests and callers that filter rows.
func (o *obj) Get(k string) any { return o.get(k) }

// ODataQuery is what a request asks of a table beyond paging.
type ODataQuery struct {
	Table  string // Submissions, or Submissions.household.member
	Expand bool   // $expand=*: repeats inline
	WKT    bool   // $wkt=true: geometry as well-known text, not GeoJSON
	Select string // $select, "" for all
}

// Selection is a table of the service with what $select keeps of it.
type Selection struct {
	o      *OData
	table  *odField // the repeat, or the root for Submissions
	parts  []string // the table's identifiers after Submissions
	keep   map[*odField]bool
	meta   map[string]bool // the __ properties named; nil: all of them
	expand bool
	wkt    bool
}

// Select checks a query against the service and returns the table it
// reads and what it keeps. An unknown table or property is ENOTFOUND or
// EINVALID with what to ask instead.
func (o *OData) Select(q ODataQuery) (*Selection, error) {
	if q.Expand && q.Select != "" {
		return nil, haven.Errorf(ENOTIMPLEMENTED, "$expand and $select cannot be used together here (nor in ODK Central): ask for one or the other.")
	}
	parts := strings.Split(q.Table, ".")
	if parts[0] != "Submissions" {
		return nil, haven.Errorf(haven.ENOTFOUND, "There is no table %q: the service document lists them (%s).", q.Table, strings.Join(o.Tables(), ", "))
	}
	sel := &Selection{o: o, table: o.root, parts: parts[1:], expand: q.Expand, wkt: q.WKT}
	if len(parts) > 1 {
		f := o.byPath["/"+strings.Join(parts[1:], "/")]
		if f == nil || f.kind != "repeat" {
			return nil, haven.Errorf(haven.ENOTFOUND, "There is no table %q: the service document lists them (%s).", q.Table, strings.Join(o.Tables(), ", "))
		}
		sel.table = f
	}
	if q.Select == "" || q.Select == "*" {
		return sel, nil
	}
	sel.keep, sel.meta = map[*odField]bool{}, map[string]bool{}
	for f := sel.table; f != nil && f.kind != "root"; f = f.parent {
		sel.keep[f] = true
	}
	prefix := sel.table.identPath()
	parentID := sel.parentIDKey()
	for _, p := range strings.Split(q.Select, ",") {
		p = strings.TrimSpace(p)
		switch {
		case p == "__id" || (parentID != "" && p == parentID):
			sel.meta[p] = true
			continue
		case sel.table == o.root && (p == "__system" || strings.HasPrefix(p, "__system/")):
			if p != "__system" && !isSystemField(strings.TrimPrefix(p, "__system/")) {
				return nil, haven.Errorf(haven.EINVALID, "$select names %q, which is not a property of __system (%s).", p, strings.Join(SystemFields, ", "))
			}
			sel.meta[p] = true
			continue
		}
		f := o.byPath[prefix+"/"+p]
		if f == nil {
			return nil, haven.Errorf(haven.EINVALID, "$select names %q, which is not a property of %s (or is above your clearance).", p, q.Table)
		}
		for a := f.parent; a != nil && a != sel.table; a = a.parent {
			if a.kind == "repeat" {
				return nil, haven.Errorf(ENOTIMPLEMENTED, "$select cannot reach %q inside a repeat: read that repeat's own table.", p)
			}
			sel.keep[a] = true
		}
		sel.keep[f] = true
		if f.kind == "structure" {
			var all func(g *odField)
			all = func(g *odField) {
				for _, c := range g.children {
					sel.keep[c] = true
					if c.kind == "structure" {
						all(c)
					}
				}
			}
			all(f)
		}
	}
	return sel, nil
}

// ENOTIMPLEMENTED is a request for OData Haven (like Central) does not offer.
const ENOTIMPLEMENTED = haven.ENOTIMPLEMENTED

func isSystemField(name string) bool {
	for _, s := range SystemFields {
		if s == name {
			return true
		}
	}
	return false
}

// Subtable reports whether the selection reads a repeat's table.
func (s *Selection) Subtable() bool { return s.table != s.o.root }

// Table is the table's name.
func (s *Selection) Table() string {
	if !s.Subtable() {
		return "Submissions"
	}
	return "Submissions." + s.table.typeName()
}

// parentIDKey is the name of the member that links a repeat row to its
// parent row: __Submissions-id, or __Submissions-<parent repeat>-id.
func (s *Selection) parentIDKey() string {
	if !s.Subtable() {
		return ""
	}
	parts := []string{"Submissions"}
	for a := s.table.parent; a != nil && a.kind != "root"; a = a.parent {
		if a.kind == "repeat" {
			parts = append(parts, strings.Split(strings.TrimPrefix(a.identPath(), "/"), "/")...)
			break
		}
	}
	return "__" + strings.Join(parts, "-") + "-id"
}

func (s *Selection) keeps(f *odField) bool { return s.keep == nil || s.keep[f] }

// frame is one step into a submission: a field, and for a repeat which
// occurrence it is within the enclosing repeat occurrence (or the root).
type frame struct {
	f    *odField
	iter int
}

// hashID is Central's id of the repeat occurrence at the end of stack:
// the SHA-1 of its path of names and occurrence numbers.
func hashID(instanceID string, stack []frame) string {
	if len(stack) == 0 {
		return instanceID
	}
	parts := []string{"Submissions#" + instanceID}
	for _, fr := range stack {
		if fr.f.kind == "structure" {
			parts = append(parts, fr.f.name+"#")
		} else {
			parts = append(parts, fr.f.name+"#"+strconv.Itoa(fr.iter))
		}
	}
	sum := sha1.Sum([]byte(strings.Join(parts, "%%")))
	return hex.EncodeToString(sum[:])
}

// navigationLink is the link from a row to the repeat at the end of stack.
func navigationLink(instanceID string, stack []frame) string {
	out := []string{"Submissions('" + encodeURIComponent(instanceID) + "')"}
	for i, fr := range stack {
		if fr.f.kind == "repeat" && i < len(stack)-1 {
			out = append(out, fr.f.ident+"('"+hashID(instanceID, stack[:i+1])+"')")
		} else {
			out = append(out, fr.f.ident)
		}
	}
	return strings.Join(out, "/")
}

// encodeURIComponent escapes as JavaScript's function of that name does.
func encodeURIComponent(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.!~*'()", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// Rows turns one submission into the selection's rows: the submission's
// own row, or one row per occurrence of the repeat. sys is nil for a
// repeat's table.
func (s *Selection) Rows(inst *formspec.Instance, instanceID string, sys *ODataSystem) []ODataRow {
	g := &rowGen{sel: s, iid: instanceID}
	root := g.frameFor(s.o.root)
	if !s.Subtable() {
		root.set("__id", instanceID)
		if sys != nil {
			s.system(root, sys)
		}
		g.out = append(g.out, root)
	}
	if inst != nil && inst.Root != nil {
		g.walk(inst.Root.Children, s.o.root, root, nil, map[string]int{}, !s.Subtable())
	}
	return g.out
}

// Trim leaves out of a row the ids $select did not name (rows keep them
// until then, for following links and skip tokens).
func (s *Selection) Trim(r ODataRow) ODataRow {
	if s.meta == nil {
		return r
	}
	if !s.meta["__id"] {
		r.del("__id")
	}
	if k := s.parentIDKey(); k != "" && !s.meta[k] {
		r.del(k)
	}
	return r
}

// ParentIDKey is the member linking a repeat's row to its parent's ("" for Submissions).
func (s *Selection) ParentIDKey() string { return s.parentIDKey() }

// ODataKey is one step of a resource path: a name, and a key when the
// path names one row ('uuid:...').
type ODataKey struct {
	Name  string
	ID    string
	Keyed bool
}

// ParseODataPath reads the part of a URL after ".svc/" (as sent, escaped):
// a table (Submissions.household.member), or a row and what is under it
// (Submissions('uuid:1')/household/member('2f4...')/visit).
func ParseODataPath(raw string) (table string, keys []ODataKey, err error) {
	raw = strings.Trim(raw, "/")
	if raw == "" {
		return "", nil, haven.Errorf(haven.ENOTFOUND, "Name a table: Submissions, or one the service document lists.")
	}
	var names []string
	for _, part := range strings.Split(raw, "/") {
		p, err := url.PathUnescape(part)
		if err != nil {
			return "", nil, haven.Errorf(haven.EINVALID, "The path %q is not validly escaped.", raw)
		}
		k := ODataKey{Name: p}
		if i := strings.IndexByte(p, '('); i > 0 && strings.HasSuffix(p, ")") {
			lit := p[i+1 : len(p)-1]
			if len(lit) < 2 || lit[0] != '\'' || lit[len(lit)-1] != '\'' {
				return "", nil, haven.Errorf(haven.EINVALID, "The key in %q must be quoted: Submissions('uuid:...').", p)
			}
			k = ODataKey{Name: p[:i], ID: strings.ReplaceAll(lit[1:len(lit)-1], "''", "'"), Keyed: true}
		}
		keys = append(keys, k)
		names = append(names, k.Name)
	}
	if len(keys) == 1 && !keys[0].Keyed {
		return keys[0].Name, nil, nil // a table by its dotted name
	}
	if !keys[0].Keyed || keys[0].Name != "Submissions" {
		return "", nil, haven.Errorf(haven.ENOTFOUND, "A path into a submission starts with Submissions('instanceId').")
	}
	return strings.Join(names, "."), keys, nil
}

// system adds the __system block as the selection asks.
func (s *Selection) system(row *obj, sys *ODataSystem) {
	all := sys.fields()
	if s.meta == nil || s.meta["__system"] {
		row.set("__system", &obj{kvs: all})
		return
	}
	part := &obj{}
	for _, m := range all {
		if s.meta["__system/"+m.k] {
			part.kvs = append(part.kvs, m)
		}
	}
	if len(part.kvs) > 0 {
		row.set("__system", part)
	}
}

type rowGen struct {
	sel *Selection
	iid string
	out []ODataRow
}

// frameFor is a row's skeleton: every kept field of f, null, with groups
// nested (Central gives missing values as null, not absent).
func (g *rowGen) frameFor(f *odField) *obj {
	o := &obj{}
	for _, c := range f.children {
		if !g.sel.keeps(c) {
			continue
		}
		switch c.kind {
		case "repeat":
		case "structure":
			o.set(c.ident, g.frameFor(c))
		default:
			o.set(c.ident, nil)
		}
	}
	return o
}

// where places a stack relative to the table read: above it (on the way
// there), at it, below it (inside its rows), or off its branch.
func (g *rowGen) where(stack []frame) int {
	parts := g.sel.parts
	n := 0
	for _, fr := range stack {
		if n < len(parts) {
			if fr.f.ident != parts[n] {
				return off
			}
			n++
			continue
		}
		return below
	}
	if n == len(parts) {
		return at
	}
	return above
}

const (
	off = iota
	above
	at
	below
)

// walk follows a submission's elements under field f. data is where values
// go (nil: nowhere), write whether this level's values are the table's.
func (g *rowGen) walk(elems []*formspec.Element, f *odField, data *obj, stack []frame, counters map[string]int, write bool) {
	for _, e := range elems {
		c := f.byName[e.Name]
		if c == nil || !g.sel.keeps(c) {
			continue // not in the form, above the reader's clearance, or not selected
		}
		st := append(stack[:len(stack):len(stack)], frame{f: c})
		switch c.kind {
		case "structure":
			var sub *obj
			if data != nil {
				sub, _ = data.get(c.ident).(*obj)
				if sub == nil {
					sub = g.frameFor(c)
					data.set(c.ident, sub)
				}
			}
			g.walk(e.Children, c, sub, st, counters, write)
		case "repeat":
			st[len(st)-1].iter = counters[c.path]
			counters[c.path]++
			if data != nil {
				data.set(c.ident+"@odata.navigationLink", navigationLink(g.iid, st))
			}
			w := g.where(st)
			if w == off || (w == below && !g.sel.expand) {
				continue
			}
			bag := g.frameFor(c)
			bag.set("__id", hashID(g.iid, st))
			if data != nil && w == below { // only expanded repeats reach here below the table
				list, _ := data.get(c.ident).([]any)
				data.set(c.ident, append(list, bag))
			}
			if w == at {
				k, parent := g.sel.parentIDKey(), st[:0]
				for i := len(st) - 2; i >= 0; i-- {
					if st[i].f.kind == "repeat" {
						parent = st[:i+1]
						break
					}
				}
				bag.set(k, hashID(g.iid, parent))
				g.out = append(g.out, bag)
			}
			g.walk(e.Children, c, bag, st, map[string]int{}, w == at || w == below)
		default:
			if data != nil && write && e.Text != "" {
				if v, ok := odataValue(c.kind, e.Text, g.sel.wkt); ok {
					data.set(c.ident, v)
				}
			}
		}
	}
}

var tzHoursRe = regexp.MustCompile(`[+-]\d\d$`)

// odataValue converts a value as Central does: numbers as numbers (their
// leading digits, as JavaScript's parseInt and parseFloat read them),
// geometry as GeoJSON or well-known text, a dateTime's "+07" as "+07:00".
func odataValue(kind, text string, wkt bool) (any, bool) {
	switch kind {
	case "int", "integer":
		if n, ok := leadingInt(text); ok {
			return n, true
		}
		return nil, true
	case "decimal":
		if f, ok := leadingFloat(text); ok {
			return f, true
		}
		return nil, true
	case "boolean":
		switch strings.TrimSpace(text) {
		case "true", "1":
			return true, true
		case "false", "0":
			return false, true
		}
		return text, true
	case "geopoint":
		return geopoint(text, wkt)
	case "geotrace", "geoshape":
		return geoline(kind, text, wkt)
	case "dateTime":
		t := strings.TrimSpace(text)
		if tzHoursRe.MatchString(t) {
			t += ":00"
		}
		return t, true
	}
	return text, true
}

var (
	intRe   = regexp.MustCompile(`^\s*[+-]?\d+`)
	floatRe = regexp.MustCompile(`^\s*[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|Infinity)`)
)

func leadingInt(s string) (int64, bool) {
	m := intRe.FindString(s)
	if m == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(m), 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}

func leadingFloat(s string) (float64, bool) {
	m := strings.TrimSpace(floatRe.FindString(s))
	if m == "" || strings.HasSuffix(m, "Infinity") {
		return 0, false // JSON has no infinities: Central writes null
	}
	f, err := strconv.ParseFloat(m, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

// coords reads "lat lon [alt [accuracy]]".
func coords(s string) (lon, lat float64, alt, acc *float64, ok bool) {
	parts := strings.Fields(s)
	num := func(i int) (float64, bool) {
		if i >= len(parts) {
			return 0, false
		}
		return leadingFloat(parts[i])
	}
	var ok1, ok2 bool
	if lat, ok1 = num(0); !ok1 {
		return
	}
	if lon, ok2 = num(1); !ok2 {
		return
	}
	if a, ok := num(2); ok {
		alt = &a
	}
	if a, ok := num(3); ok {
		acc = &a
	}
	return lon, lat, alt, acc, true
}

func fnum(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func geopoint(text string, wkt bool) (any, bool) {
	lon, lat, alt, acc, ok := coords(text)
	if !ok {
		return nil, false
	}
	c := []float64{lon, lat}
	if alt != nil {
		c = append(c, *alt)
	}
	if wkt {
		s := make([]string, len(c))
		for i, v := range c {
			s[i] = fnum(v)
		}
		return "POINT (" + strings.Join(s, " ") + ")", true
	}
	p := &obj{kvs: []kv{{"type", "Point"}, {"coordinates", c}}}
	if acc != nil {
		p.set("properties", map[string]any{"accuracy": *acc})
	}
	return p, true
}

var pointSepRe = regexp.MustCompile(`; ?`)

func geoline(kind, text string, wkt bool) (any, bool) {
	strs := pointSepRe.Split(text, -1)
	var points [][]float64
	var accs []any
	anyAcc := false
	for _, s := range strs {
		lon, lat, alt, acc, ok := coords(s)
		if !ok {
			if len(strs) == 1 {
				return nil, false
			}
			continue
		}
		p := []float64{lon, lat}
		if alt != nil {
			p = append(p, *alt)
		}
		points = append(points, p)
		if acc != nil && *acc != 0 {
			accs, anyAcc = append(accs, *acc), true
		} else {
			accs = append(accs, nil)
		}
	}
	if points == nil {
		points = [][]float64{}
	}
	if wkt {
		s := make([]string, len(points))
		for i, p := range points {
			t := make([]string, len(p))
			for j, v := range p {
				t[j] = fnum(v)
			}
			s[i] = strings.Join(t, " ")
		}
		if kind == "geotrace" {
			return "LINESTRING (" + strings.Join(s, ",") + ")", true
		}
		return "POLYGON ((" + strings.Join(s, ",") + "))", true
	}
	var g *obj
	if kind == "geotrace" {
		g = &obj{kvs: []kv{{"type", "LineString"}, {"coordinates", points}}}
	} else {
		g = &obj{kvs: []kv{{"type", "Polygon"}, {"coordinates", [][][]float64{points}}}}
	}
	if anyAcc {
		g.set("properties", map[string]any{"accuracies": accs})
	}
	return g, true
}

// ODataPage writes a table's answer as it is made: the rows, then the
// context, the next page's link and the count.
type ODataPage struct {
	w     *bufio.Writer
	n     int
	first bool
}

// NewODataPage starts an answer on w.
func NewODataPage(w io.Writer) *ODataPage {
	return &ODataPage{w: bufio.NewWriterSize(w, 32<<10), first: true}
}

// Add writes one row.
func (p *ODataPage) Add(r ODataRow) error {
	if p.first {
		p.w.WriteString(`{"value":[`)
		p.first = false
	} else {
		p.w.WriteByte(',')
	}
	b, err := r.MarshalJSON()
	if err != nil {
		return err
	}
	p.n++
	_, err = p.w.Write(b)
	return err
}

// Rows is how many rows were written.
func (p *ODataPage) Rows() int { return p.n }

// ODataFooter is what follows a table's rows.
type ODataFooter struct {
	Context  string // the @odata.context URL
	NextLink string // "" on the last page
	Count    *int   // with $count=true
	// Omitted names the fields left out because the reader may not see
	// them (Haven's annotation; OData clients ignore annotations they do not know).
	Omitted []string
}

// Close writes the footer and flushes.
func (p *ODataPage) Close(f ODataFooter) error {
	if p.first {
		p.w.WriteString(`{"value":[`)
	}
	p.w.WriteString(`],`)
	m := &obj{kvs: []kv{{"@odata.context", f.Context}}}
	if f.NextLink != "" {
		m.set("@odata.nextLink", f.NextLink)
	}
	if f.Count != nil {
		m.set("@odata.count", *f.Count)
	}
	if len(f.Omitted) > 0 {
		m.set("@haven.omittedFields", f.Omitted)
	}
	b, err := m.MarshalJSON()
	if err != nil {
		return err
	}
	p.w.Write(b[1:]) // the members, after the rows' opening
	return p.w.Flush()
}

// CentralField is a field as ODK Central lists a form's fields
// (GET .../fields?odata=): groups and repeats included, paths from the
// root without it.
type CentralField struct {
	Name           string `json:"name"`
	Path           string `json:"path"`
	Type           string `json:"type"`
	Binary         *bool  `json:"binary"`
	SelectMultiple *bool  `json:"selectMultiple"`
}

// CentralFields lists the fields as Central does; odata gives names and
// paths as OData identifiers.
func (o *OData) CentralFields(odata bool) []CentralField {
	yes := true
	var out []CentralField
	var walk func(f *odField)
	walk = func(f *odField) {
		for _, c := range f.children {
			cf := CentralField{Name: c.name, Path: c.path, Type: c.kind}
			if odata {
				cf.Name, cf.Path = c.ident, c.identPath()
			}
			if c.kind == "binary" {
				cf.Binary = &yes
			}
			if c.multiple {
				cf.SelectMultiple = &yes
			}
			out = append(out, cf)
			if c.structural() {
				walk(c)
			}
		}
	}
	walk(o.root)
	return out
}
