package formspec

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/haven-org/haven"
)

// entityForm is a form as pyxform writes one that makes an entity per
// item of a repeat (its label and one property from the item) and one for
// the whole submission, and reads a list of villages.
const entityForm = `<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml"
 xmlns:entities="http://www.opendatakit.org/xforms/entities" xmlns:haven="urn:haven:xforms"><h:head><h:title>E</h:title>
<model entities:entities-version="2025.1.0" haven:legal-basis="public_interest">
<instance><data id="e">
  <village/><head/>
  <member><name/><age/><meta><entity dataset="people" create="1" id=""><label/></entity></meta></member>
  <meta><instanceID/><entity dataset="households" create="1" update="" baseVersion="" id=""><label/></entity></meta>
</data></instance>
<instance id="villages" src="jr://file-csv/villages.csv"/>
<instance id="lookup" src="jr://file-csv/lookup.csv"/>
<bind nodeset="/data/village" type="string" haven:purpose="Where" haven:sensitivity="level_1"/>
<bind nodeset="/data/head" type="string" entities:saveto="head_name" haven:purpose="Who" haven:sensitivity="level_2"
  calculate="instance('villages')/root/item[name = /data/village and district=current()/../x]/chief"/>
<bind nodeset="/data/member/name" type="string" entities:saveto="full_name" haven:purpose="Who" haven:sensitivity="level_3"/>
<bind nodeset="/data/member/age" type="int" entities:saveto="age" haven:purpose="Age" haven:sensitivity="level_1"
  constraint="pulldata('lookup', 'max_age', 'key', /data/village) &gt; ."/>
<bind nodeset="/data/member/meta/entity/label" calculate="/data/member/name" type="string"/>
<bind nodeset="/data/meta/entity/label" calculate="concat('HH ', /data/head)" type="string"/>
</model></h:head><h:body>
<select1 ref="/data/village"><label>V</label><itemset nodeset="instance('villages')/root/item[region != 'x']"><value ref="name"/><label ref="display"/></itemset></select1>
<group ref="/data/member"><repeat nodeset="/data/member"><input ref="/data/member/name"/><input ref="/data/member/age"/></repeat></group>
</h:body></h:html>`

func TestEntityBlocks(t *testing.T) {
	f, err := Parse([]byte(entityForm))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range f.Entities() {
		var props []string
		for _, p := range b.Properties {
			tier, purpose := f.PropertyTier(p)
			props = append(props, fmt.Sprintf("%s=%s:%s:%s", p.Name, p.Field.Path, tier, purpose))
		}
		got = append(got, fmt.Sprintf("%s %s %s create=%v update=%v label=%s %v", b.Dataset, b.Path, b.Scope, b.Create, b.Update, f.LabelTier(b), props))
	}
	want := []string{
		// head reads a CSV Haven cannot see: level_3, whatever was declared,
		// and so is the label built from it.
		"households /data/meta/entity /data create=true update=true label=level_3 [head_name=/data/head:level_3:Who]",
		"people /data/member/meta/entity /data/member create=true update=false label=level_3 [full_name=/data/member/name:level_3:Who age=/data/member/age:level_1:Age]",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("blocks:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if p := f.CheckProtection(); len(p) != 0 {
		t.Fatalf("problems: %v", p)
	}
	// The columns each file is read by: steps after root/item, relative
	// names in its predicates, itemset refs, pulldata's columns; never the
	// form's own fields named in absolute paths, nor functions.
	cols := func(file string) []string {
		var out []string
		for c := range f.ListColumns(file) {
			out = append(out, c)
		}
		slices.Sort(out)
		return out
	}
	if got := cols("villages.csv"); !slices.Equal(got, []string{"chief", "display", "district", "name", "region"}) {
		t.Fatalf("villages.csv columns: %v", got)
	}
	if got := cols("lookup.csv"); !slices.Equal(got, []string{"key", "max_age"}) {
		t.Fatalf("lookup.csv columns: %v", got)
	}
	if got := cols("other.csv"); len(got) != 0 {
		t.Fatalf("a file the form does not read: %v", got)
	}
	if files := f.EntityListFiles(); len(files) != 2 || files["villages.csv"] != "villages" {
		t.Fatalf("list files: %v", files)
	}
}

func TestEntityOps(t *testing.T) {
	f, err := Parse([]byte(entityForm))
	if err != nil {
		t.Fatal(err)
	}
	inst, err := ParseInstance([]byte(`<data id="e"><village>v1</village><head>Ali</head>
<member><name>Amina</name><age>34</age><meta><entity dataset="forged" create="1" id="uuid:0B6F6A2E-3C1D-4D7E-9A1B-2C3D4E5F6A7B"><label>Amina</label></entity></meta></member>
<member><name>Omar</name><age/><meta><entity dataset="people" create="true" id="not-a-uuid"><label>Omar</label></entity></meta></member>
<meta><instanceID>uuid:x</instanceID><entity dataset="households" create="0" update="1" baseVersion="3" trunkVersion="2" branchId="b-1" id="1c7a7b3f-4d2e-4e8f-8b2c-3d4e5f6a7b8c"/></meta></data>`), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	ops := f.EntityOps(inst)
	want := []haven.EntityOp{
		{Dataset: "households", UUID: "1c7a7b3f-4d2e-4e8f-8b2c-3d4e5f6a7b8c", Update: true, BaseVersion: 3, TrunkVersion: 2, BranchID: "b-1",
			Values: map[string]string{"head_name": "Ali"}},
		// The list is the form's, whatever the submission says; the id
		// loses its uuid: prefix and its case.
		{Dataset: "people", UUID: "0b6f6a2e-3c1d-4d7e-9a1b-2c3d4e5f6a7b", Create: true, Label: "Amina", HasLabel: true,
			Values: map[string]string{"full_name": "Amina", "age": "34"}},
		{Dataset: "people", UUID: "not-a-uuid", Create: true, Label: "Omar", HasLabel: true, Values: map[string]string{"full_name": "Omar", "age": ""},
			Problem: `The entity's id "not-a-uuid" is not a UUID.`},
	}
	if fmt.Sprintf("%+v", ops) != fmt.Sprintf("%+v", want) {
		t.Fatalf("ops:\n%+v\nwant\n%+v", ops, want)
	}
}

// A form's entity declarations that no device or server could apply are
// refused at publishing, each naming the field.
func TestEntityDeclarationsRefused(t *testing.T) {
	for _, c := range []struct{ change, want string }{
		{`entities:saveto="head_name"`, ""},
		{`entities:saveto="label"`, "reserved"},
		{`entities:saveto="__x"`, "two underscores"},
		{`entities:saveto="2x"`, "not a valid name"},
		{`entities:saveto="full_name"`, ""}, // another list's property: allowed
	} {
		form := strings.Replace(entityForm, `entities:saveto="head_name"`, c.change, 1)
		f, err := Parse([]byte(form))
		if err != nil {
			t.Fatal(err)
		}
		var msgs []string
		for _, p := range f.CheckProtection() {
			msgs = append(msgs, p.Path+" "+p.Message)
		}
		got := strings.Join(msgs, "; ")
		if c.want == "" && got != "" || c.want != "" && !strings.Contains(got, c.want) {
			t.Errorf("%s: %q, want %q", c.change, got, c.want)
		}
	}
	// A saveto outside any entity block, and two fields to one property.
	noBlock := strings.Replace(entityForm, `<meta><instanceID/><entity dataset="households" create="1" update="" baseVersion="" id=""><label/></entity></meta>`, `<meta><instanceID/></meta>`, 1)
	noBlock = strings.Replace(noBlock, `<bind nodeset="/data/meta/entity/label" calculate="concat('HH ', /data/head)" type="string"/>`, "", 1)
	f, err := Parse([]byte(noBlock))
	if err != nil {
		t.Fatal(err)
	}
	if p := f.CheckProtection(); len(p) != 1 || p[0].Path != "/data/head" || !strings.Contains(p[0].Message, "no entity block") {
		t.Fatalf("saveto without a block: %v", p)
	}
	twice := strings.Replace(entityForm, `entities:saveto="age"`, `entities:saveto="full_name"`, 1)
	if f, err = Parse([]byte(twice)); err != nil {
		t.Fatal(err)
	}
	if p := f.CheckProtection(); len(p) != 1 || !strings.Contains(p[0].Message, "saves to already") {
		t.Fatalf("two fields to one property: %v", p)
	}
}

// FuzzEntityOps: whatever a device sends, the ops read from it are the
// form's lists, and an op that would be applied has a UUID.
func FuzzEntityOps(f *testing.F) {
	form, err := Parse([]byte(entityForm))
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`<data id="e"><member><name>A</name><meta><entity create="1" id="0b6f6a2e-3c1d-4d7e-9a1b-2c3d4e5f6a7b"><label>A</label></entity></meta></member><meta><entity update="1" baseVersion="x" id=""/></meta></data>`))
	f.Add([]byte(`<data><meta><entity/></meta></data>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		inst, err := ParseInstance(b, DefaultLimits)
		if err != nil {
			return
		}
		for _, op := range form.EntityOps(inst) {
			if op.Dataset != "people" && op.Dataset != "households" {
				t.Fatalf("an op on %q", op.Dataset)
			}
			if op.Problem == "" && (op.Create || op.Update) && !ValidUUID(op.UUID) {
				t.Fatalf("an op to apply without a UUID: %+v", op)
			}
		}
		for file := range form.EntityListFiles() {
			form.ListColumns(file)
		}
	})
}
