package formspec

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/haven-org/haven"
)

// derivedForm has answers at every tier and values computed from them in
// every way an XForm computes: calculates (absolute, relative, through
// current(), chained, through a group), instanceName, an entity label, a
// dynamic default and a trigger's setvalue.
const derivedForm = `<?xml version="1.0"?>
<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml" xmlns:jr="http://openrosa.org/javarosa"
  xmlns:orx="http://openrosa.org/xforms" xmlns:entities="http://www.opendatakit.org/xforms/entities" xmlns:haven="urn:haven:xforms">
 <h:head><h:title>D</h:title>
  <model haven:legal-basis="public_interest" haven:default-sensitivity="public">
   <instance><data id="d" version="1">
     <district/><name/><age/><hiv/>
     <grp><a/><b/></grp>
     <rep jr:template=""><x/><xcalc/></rep>
     <c_abs/><c_rel/><c_chain/><c_group/><c_lookup/><c_ops/><c_const/><c_declared/><c_pull/><c_default/><c_trigger/>
     <meta><instanceID/><instanceName/><entity dataset="people" id=""><label/></entity></meta>
   </data></instance>
   <instance id="list"><root><item><name>n</name><label>N</label></item></root></instance>
   <bind nodeset="/data/district" type="string" haven:purpose="p"/>
   <bind nodeset="/data/name" type="string" haven:purpose="p" haven:sensitivity="level_3"/>
   <bind nodeset="/data/age" type="int" haven:purpose="p" haven:sensitivity="level_1"/>
   <bind nodeset="/data/hiv" type="string" haven:purpose="p" haven:sensitivity="level_2"/>
   <bind nodeset="/data/grp/a" type="string" haven:purpose="p"/>
   <bind nodeset="/data/grp/b" type="string" haven:purpose="p" haven:sensitivity="level_2"/>
   <bind nodeset="/data/rep/x" type="string" haven:purpose="p" haven:sensitivity="level_1"/>
   <bind nodeset="/data/rep/xcalc" type="string" haven:purpose="p" calculate="concat(../x, current()/../x)"/>
   <bind nodeset="/data/c_abs" type="string" haven:purpose="p" calculate="concat( /data/name , ' ')"/>
   <bind nodeset="/data/c_rel" type="string" haven:purpose="p" calculate="../age * 2"/>
   <bind nodeset="/data/c_chain" type="string" haven:purpose="p" calculate="/data/c_rel + 1"/>
   <bind nodeset="/data/c_group" type="string" haven:purpose="p" calculate="string(/data/grp)"/>
   <bind nodeset="/data/c_lookup" type="string" haven:purpose="p" calculate="instance('list')/root/item[name = /data/hiv]/label"/>
   <bind nodeset="/data/c_ops" type="string" haven:purpose="p" calculate="/data/district = 'x' and /data/age > 1 or 2 * /data/district"/>
   <bind nodeset="/data/c_const" type="string" haven:purpose="p" calculate="'constant' + 1"/>
   <bind nodeset="/data/c_declared" type="string" haven:purpose="p" haven:sensitivity="level_2" calculate="/data/district"/>
   <bind nodeset="/data/c_pull" type="string" haven:purpose="p" calculate="pulldata('prices', 'price', 'id', /data/orx:hiv)"/>
   <bind nodeset="/data/c_default" type="string" haven:purpose="p"/>
   <bind nodeset="/data/c_trigger" type="string" haven:purpose="p"/>
   <bind nodeset="/data/meta/instanceID" type="string" jr:preload="uid"/>
   <bind nodeset="/data/meta/instanceName" type="string" calculate="concat(/data/district, '-', /data/age)"/>
   <bind nodeset="/data/meta/entity/label" type="string" calculate="concat(/data/name, '')"/>
   <setvalue event="odk-instance-first-load" ref="/data/c_default" value="/data/grp/b"/>
  </model>
 </h:head>
 <h:body>
  <input ref="/data/district"><label>D</label></input>
  <input ref="/data/name"><label>N</label><setvalue event="xforms-value-changed" ref="/data/c_trigger" value="now() + ../name"/></input>
 </h:body>
</h:html>`

func TestDerivedTiers(t *testing.T) {
	f, err := Parse([]byte(derivedForm))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]haven.Sensitivity{
		"/data/rep/xcalc":         haven.Level1,
		"/data/c_abs":             haven.Level3,
		"/data/c_rel":             haven.Level1,
		"/data/c_chain":           haven.Level1, // reads a calculate that reads age
		"/data/c_group":           haven.Level2, // a group: everything in it
		"/data/c_lookup":          haven.Level2, // a secondary instance filtered by an answer
		"/data/c_ops":             haven.Level1,
		"/data/c_const":           haven.Public,
		"/data/c_declared":        haven.Level2, // never lower than declared
		"/data/c_pull":            haven.Level2, // a prefixed step still names the field
		"/data/c_default":         haven.Level2, // a dynamic default
		"/data/c_trigger":         haven.Level3, // a trigger's setvalue, relative to its node
		"/data/meta/instanceName": haven.Level1,
		"/data/meta/entity/label": haven.Level3,
		"/data/district":          haven.Public,
		"/data/meta/instanceID":   haven.Public,
	}
	got := map[string]haven.Sensitivity{}
	for _, fd := range f.Schema() {
		if _, ok := want[fd.Path]; ok {
			got[fd.Path] = fd.Effective
			if fd.Effective != f.Tier(fd.Path) {
				t.Errorf("%s: the schema says %s, Tier %s", fd.Path, fd.Effective, f.Tier(fd.Path))
			}
		}
	}
	if !reflect.DeepEqual(got, want) {
		for p, w := range want {
			if got[p] != w {
				t.Errorf("%s: %s, want %s", p, got[p], w)
			}
		}
	}
	// The field listing shows the derived tier beside the declared one.
	for _, fd := range f.Schema() {
		if fd.Path == "/data/c_declared" && (fd.Sensitivity != haven.Level2 || fd.Derived != haven.Public) {
			t.Errorf("c_declared: declared %s, derived %s", fd.Sensitivity, fd.Derived)
		}
		if fd.Path == "/data/c_abs" && fd.Derived != haven.Level3 {
			t.Errorf("c_abs: derived %q", fd.Derived)
		}
	}
}

func TestExprRefs(t *testing.T) {
	for _, c := range []struct {
		expr, ctx string
		want      []string
	}{
		{"/data/a + /data/b", "/data/c", []string{"/data/a", "/data/b"}},
		{"../a", "/data/g/c", []string{"/data/g/a"}},
		{"current()/../../b", "/data/g/c", []string{"/data/b"}},
		{".", "/data/c", []string{"/data/c"}},
		{"'/data/secret'", "/data/c", nil}, // a string literal names nothing
		{"instance('l')/root/item[x = /data/a]/label", "/data/c", []string{"/data/a"}},
		{"jr:choice-name( /data/s ,' /data/s ')", "/data/c", []string{"/data/s"}},
		{"/data/a div /data/b mod /data/c", "/data/x", []string{"/data/a", "/data/b", "/data/c"}},
		{"/data//deep", "/data/x", []string{"/data"}},
		{"/data/r[position() = 1]/v", "/data/x", []string{"/data/r/v"}},
		{"count(/data/rep) > 0", "/data/x", []string{"/data/rep"}},
		{"if(/data/a, /data/b", "/data/x", []string{"/data/a", "/data/b"}}, // malformed, still read
	} {
		got := exprRefs(c.expr, c.ctx)
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("exprRefs(%q, %q) = %q, want %q", c.expr, c.ctx, got, c.want)
		}
	}
}

// FuzzExprRefs: any expression is read without a panic, and every path it
// yields is absolute.
func FuzzExprRefs(f *testing.F) {
	for _, s := range []string{"/data/a", "../b[c = /d/e]", "current()/..", "instance('x')/r/i[n=/data/q]/l", "'", "[[[", "//", "a:b/c:d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		for _, p := range exprRefs(expr, "/data/x") {
			if len(p) == 0 || p[0] != '/' {
				t.Fatalf("exprRefs(%q) gave %q", expr, p)
			}
		}
	})
}
