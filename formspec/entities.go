package formspec

import (
	"strconv"
	"strings"

	"github.com/beevik/etree"
	"github.com/haven-org/haven"
)

// Entities (ODK entities spec, up to 2025.1). A form that saves to an
// entity list carries a meta/entity block in its primary instance (in the
// root's meta, or in a group's or repeat's: one entity per block, or per
// repeat item), and binds with entities:saveto naming the property each
// field's value is saved to. A field belongs to the block of its nearest
// enclosing group that has one.

// EntityBlock is one meta/entity block of a form.
type EntityBlock struct {
	Dataset string // the entity list it saves to
	Path    string // the entity element: /data/meta/entity
	Scope   string // the group whose meta holds it: /data, /data/household
	// Create and Update say whether the form may create or update entities
	// of the list (the block declares the attribute).
	Create, Update bool
	Properties     []EntityProperty
}

// EntityProperty is a property of an entity list a form saves a field to.
type EntityProperty struct {
	Name  string
	Field *Node
}

// Entities returns the form's entity blocks, in document order.
func (f *Form) Entities() []EntityBlock { return f.entities }

// readEntityBlocks finds the meta/entity elements (with a dataset
// attribute) under e.
func readEntityBlocks(e *etree.Element, parent string) []EntityBlock {
	path := parent + "/" + e.Tag
	var out []EntityBlock
	for _, c := range e.ChildElements() {
		if c.Tag == "meta" {
			if ent := child(c, "entity"); ent != nil {
				if ds := strings.TrimSpace(ent.SelectAttrValue("dataset", "")); ds != "" {
					out = append(out, EntityBlock{Dataset: ds, Path: path + "/meta/entity", Scope: path,
						Create: ent.SelectAttr("create") != nil, Update: ent.SelectAttr("update") != nil})
				}
			}
		}
	}
	seen := map[string]bool{}
	for _, c := range e.ChildElements() {
		if c.Tag == "meta" || seen[c.Tag] || len(c.ChildElements()) == 0 {
			continue
		}
		seen[c.Tag] = true // a repeat's template and its first item: once
		out = append(out, readEntityBlocks(c, path)...)
	}
	return out
}

// linkEntityProperties gives each block the fields saved to it.
func (f *Form) linkEntityProperties() {
	for _, n := range f.Fields() {
		if n.SaveTo == "" {
			continue
		}
		if b := f.entityBlockOf(n.Path); b != nil {
			b.Properties = append(b.Properties, EntityProperty{Name: n.SaveTo, Field: n})
		}
	}
}

// entityBlockOf returns the block of the nearest group above path that has one.
func (f *Form) entityBlockOf(path string) *EntityBlock {
	var best *EntityBlock
	for i := range f.entities {
		b := &f.entities[i]
		if strings.HasPrefix(path, b.Scope+"/") && (best == nil || len(b.Scope) > len(best.Scope)) {
			best = b
		}
	}
	return best
}

// reservedProperties are names an entity property cannot take: the
// columns Haven and Central add to every list, and those Collect reads.
var reservedProperties = map[string]bool{"name": true, "label": true, "__version": true, "__id": true,
	"__system": true, "__createdat": true, "__creatorid": true, "__creatorname": true, "__updates": true,
	"__updatedat": true, "__trunkversion": true, "__branchid": true}

// CheckEntityProperty says what is wrong with a property name, if anything.
func CheckEntityProperty(name string) string {
	switch {
	case name == "":
		return "An entity property needs a name."
	case reservedProperties[strings.ToLower(name)]:
		return "The entity property name " + strconv.Quote(name) + " is reserved: choose another name in save_to."
	case strings.HasPrefix(name, "__"):
		return "The entity property name " + strconv.Quote(name) + " starts with two underscores, which are reserved: choose another name in save_to."
	case !validXMLName(name):
		return "The entity property name " + strconv.Quote(name) + " is not a valid name (letters, digits, _, - and ., starting with a letter or _)."
	}
	return ""
}

// CheckDatasetName says what is wrong with an entity list name, if anything.
func CheckDatasetName(name string) string {
	switch {
	case name == "":
		return "An entity list needs a name."
	case strings.HasPrefix(name, "__"):
		return "The entity list name " + strconv.Quote(name) + " starts with two underscores, which are reserved."
	case strings.Contains(name, "."):
		return "The entity list name " + strconv.Quote(name) + " contains a period, which entity list names cannot."
	case !validXMLName(name):
		return "The entity list name " + strconv.Quote(name) + " is not a valid name (letters, digits, _ and -, starting with a letter or _)."
	}
	return ""
}

func validXMLName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isNameStart(c) || i > 0 && (c >= '0' && c <= '9' || c == '-' || c == '.')) {
			return false
		}
	}
	return s != ""
}

// checkEntities lists what makes the form's entity declarations unusable.
func (f *Form) checkEntities() []Problem {
	var out []Problem
	for _, n := range f.Fields() {
		if n.SaveTo == "" {
			continue
		}
		b := f.entityBlockOf(n.Path)
		if b == nil {
			out = append(out, Problem{Path: n.Path, Message: "saves to the entity property " + strconv.Quote(n.SaveTo) +
				" but no entity block (meta/entity) encloses it: add an entities sheet, or remove save_to."})
			continue
		}
		if msg := CheckEntityProperty(n.SaveTo); msg != "" {
			out = append(out, Problem{Path: n.Path, Message: msg})
		}
		if f.InRepeat(n) && !strings.HasPrefix(b.Scope, f.repeatOf(n)) {
			out = append(out, Problem{Path: n.Path, Message: "is in a repeat but saves to an entity declared outside it: declare the entity in the repeat."})
		}
	}
	for _, b := range f.entities {
		if msg := CheckDatasetName(b.Dataset); msg != "" {
			out = append(out, Problem{Path: b.Path, Message: msg})
		}
		seen := map[string]string{}
		for _, p := range b.Properties {
			if prev, ok := seen[p.Name]; ok {
				out = append(out, Problem{Path: p.Field.Path, Message: "saves to the entity property " + strconv.Quote(p.Name) +
					" that " + prev + " saves to already: each property takes one field."})
			}
			seen[p.Name] = p.Field.Path
		}
	}
	return out
}

// repeatOf returns the path of the innermost repeat holding n ("" for none).
func (f *Form) repeatOf(n *Node) string {
	segs := strings.Split(n.Path, "/")
	for i := len(segs) - 1; i > 1; i-- {
		if g := f.Node(strings.Join(segs[:i], "/")); g != nil && g.Repeat {
			return g.Path
		}
	}
	return ""
}

// PropertyTier is the tier and purpose of an entity property as a form
// declares it: those of the field saved to it.
func (f *Form) PropertyTier(p EntityProperty) (haven.Sensitivity, string) {
	return f.Tier(p.Field.Path), p.Field.Purpose
}

// LabelTier is the tier of an entity block's label: it is built from answers.
func (f *Form) LabelTier(b EntityBlock) haven.Sensitivity { return f.Tier(b.Path + "/label") }

// EntityOps reads what a submission asks of entities: one op per entity
// element (a block in a repeat gives one per item). The list is the form's,
// whatever the submission's dataset attribute says.
func (f *Form) EntityOps(inst *Instance) []haven.EntityOp {
	var out []haven.EntityOp
	for _, b := range f.entities {
		segs := strings.Split(strings.Trim(b.Scope, "/"), "/")
		if inst.Root == nil || len(segs) == 0 || inst.Root.Name != segs[0] {
			continue
		}
		for _, scope := range elementsAt(inst.Root, segs[1:]) {
			meta := scope.Child("meta")
			if meta == nil {
				continue
			}
			ent := meta.Child("entity")
			if ent == nil {
				continue
			}
			out = append(out, readOp(b, scope, ent))
		}
	}
	return out
}

// elementsAt returns every element at the relative path below e (each item
// of a repeat on the way).
func elementsAt(e *Element, segs []string) []*Element {
	if len(segs) == 0 {
		return []*Element{e}
	}
	var out []*Element
	for _, c := range e.Children {
		if c.Name == segs[0] {
			out = append(out, elementsAt(c, segs[1:])...)
		}
	}
	return out
}

func readOp(b EntityBlock, scope, ent *Element) haven.EntityOp {
	op := haven.EntityOp{Dataset: b.Dataset, Values: map[string]string{}}
	op.UUID = strings.ToLower(strings.TrimPrefix(strings.TrimSpace(ent.Attrs["id"]), "uuid:"))
	op.Create = isTrue(ent.Attrs["create"])
	op.Update = isTrue(ent.Attrs["update"])
	op.BranchID = strings.TrimSpace(ent.Attrs["branchId"])
	if l := ent.Child("label"); l != nil {
		op.Label, op.HasLabel = l.Text, strings.TrimSpace(l.Text) != ""
	}
	num := func(attr string) int64 {
		v := strings.TrimSpace(ent.Attrs[attr])
		if v == "" {
			return 0
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			op.Problem = "The entity's " + attr + " " + strconv.Quote(v) + " is not a version number."
			return 0
		}
		return n
	}
	op.BaseVersion, op.TrunkVersion = num("baseVersion"), num("trunkVersion")
	for _, p := range b.Properties {
		rel := strings.Split(strings.TrimPrefix(p.Field.Path, b.Scope+"/"), "/")
		e := scope
		for _, s := range rel {
			if e = e.Child(s); e == nil {
				break
			}
		}
		if e != nil {
			op.Values[p.Name] = e.Text
		}
	}
	switch {
	case op.Problem != "":
	case !op.Create && !op.Update:
	case op.UUID == "" || !validUUID(op.UUID):
		op.Problem = "The entity's id " + strconv.Quote(ent.Attrs["id"]) + " is not a UUID."
	case op.Update && !op.Create && op.BaseVersion == 0:
		op.Problem = "The entity update has no baseVersion."
	}
	return op
}

// validUUID reports whether s is a UUID in its 36-character form.
func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// ValidUUID reports whether s is a lower-case UUID.
func ValidUUID(s string) bool { return validUUID(s) }

// EntityListFiles maps the CSV files the form reads that may be entity lists
// (jr://file-csv/NAME.csv instances) to the list names: NAME.
func (f *Form) EntityListFiles() map[string]string {
	out := map[string]string{}
	for file := range f.fileInstances {
		if strings.HasSuffix(file, ".csv") && SafeFileName(file) == nil {
			out[file] = strings.TrimSuffix(file, ".csv")
		}
	}
	return out
}

// ListColumns returns the columns of the CSV file the form reads that its
// expressions use: item children named in paths through
// instance('ID')/root/item (steps and predicates), the value and label
// refs of itemsets over it, and pulldata columns. A device needs no other
// column, so no other is sent to it.
func (f *Form) ListColumns(file string) map[string]bool {
	id := f.fileInstances[file]
	out := map[string]bool{}
	if id == "" {
		return out
	}
	for _, s := range f.exprSites {
		collectColumns(s.expr, id, strings.TrimSuffix(file, ".csv"), out)
	}
	for _, r := range f.itemsetRefs[id] {
		out[r] = true
	}
	return out
}

// collectColumns adds the columns of instance id that expr names.
func collectColumns(expr, id, pulldataName string, out map[string]bool) {
	toks := lexXPath(expr)
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		if t.kind != tokName {
			continue
		}
		if t.text == "pulldata" && i+3 < len(toks) && toks[i+1].text == "(" && toks[i+2].kind == tokString && toks[i+2].text == pulldataName {
			// pulldata('list', 'column', 'key column', key)
			var strs []string
			for j := i + 3; j < len(toks) && toks[j].text != ")" && len(strs) < 2; j++ {
				if toks[j].kind == tokString {
					strs = append(strs, toks[j].text)
				}
			}
			for _, s := range strs {
				out[s] = true
			}
			continue
		}
		if t.text != "instance" || i+3 >= len(toks) || toks[i+1].text != "(" || toks[i+2].kind != tokString || toks[i+2].text != id || toks[i+3].text != ")" {
			continue
		}
		// Walk the path after instance('id'): steps and predicates.
		j := i + 4
		depth, steps := 0, 0
		prev := ""
		for ; j < len(toks); j++ {
			tk := toks[j]
			switch {
			case tk.text == "[":
				depth++
			case tk.text == "]":
				depth--
				if depth < 0 {
					j = len(toks)
				}
			case depth == 0 && tk.text == "/":
			case depth == 0 && tk.kind == tokName:
				if prev != "/" {
					j = len(toks) // the path has ended
					break
				}
				steps++
				if steps > 2 { // after root/item: a column
					out[tk.text] = true
				}
			case depth == 0:
				if tk.text != "/" {
					j = len(toks)
				}
			case depth > 0 && tk.kind == tokName:
				// Inside a predicate on item, a relative path's first step
				// names a column; names in absolute paths (after /), in
				// ${}-made paths and function names do not.
				if prev != "/" && prev != "$" && prev != "{" && !(j+1 < len(toks) && toks[j+1].text == "(") && !isOperatorWord(tk.text) {
					out[tk.text] = true
				}
			}
			prev = tk.text
		}
	}
}
