package export_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/haven-org/haven/export"
	"github.com/haven-org/haven/formspec"
)

// A family form: a name, then children (a repeat inside a group), each
// with toys (a repeat inside a group inside the repeat). The ids below are
// the ones ODK Central gives these rows (its unit tests' expectations for
// the same shape): Haven's links and keys must match Central's, as
// clients store them.
const familyForm = `<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml" xmlns:orx="http://openrosa.org/xforms">
<h:head><h:title>Family</h:title><model>
<instance><data id="family" orx:version="1.0">
  <orx:meta><orx:instanceID/></orx:meta>
  <name/><age/><home/>
  <children><child><name/><age/><toys><toy><name/></toy></toys></child></children>
</data></instance>
<bind nodeset="/data/orx:meta/orx:instanceID" type="string"/>
<bind nodeset="/data/name" type="string"/>
<bind nodeset="/data/age" type="int"/>
<bind nodeset="/data/home" type="geopoint"/>
<bind nodeset="/data/children/child/name" type="string"/>
<bind nodeset="/data/children/child/age" type="int"/>
<bind nodeset="/data/children/child/toys/toy/name" type="string"/>
</model></h:head>
<h:body>
<input ref="/data/name"><label>Name</label></input>
<group ref="/data/children/child"><label>Child</label><repeat nodeset="/data/children/child">
  <input ref="/data/children/child/name"><label>Name</label></input>
  <group ref="/data/children/child/toys"><label>Toys</label><repeat nodeset="/data/children/child/toys/toy">
    <input ref="/data/children/child/toys/toy/name"><label>Toy</label></input>
  </repeat></group>
</repeat></group>
</h:body></h:html>`

const family = `<data id="family" version="1.0"><orx:meta xmlns:orx="http://openrosa.org/xforms"><orx:instanceID>double</orx:instanceID></orx:meta>
<name>Vick</name><age>4x</age><home>1.5 30.25 1200 5</home>
<children>
  <child><name>Alice</name></child>
  <child><name>Bob</name><toys><toy><name>Twilight Sparkle</name></toy><toy><name>Pinkie Pie</name></toy><toy><name>Applejack</name></toy><toy><name>Spike</name></toy></toys></child>
  <child><name>Chelsea</name><toys><toy><name>Rainbow Dash</name></toy></toys></child>
</children><unknown>dropped</unknown></data>`

func familyOData(t *testing.T, sees func(string) bool) (*export.OData, *formspec.Instance) {
	t.Helper()
	f, err := formspec.Parse([]byte(familyForm))
	if err != nil {
		t.Fatal(err)
	}
	inst, err := formspec.ParseInstance([]byte(family), formspec.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	return export.NewOData(f, sees), inst
}

func rowsJSON(t *testing.T, sel *export.Selection, rows []export.ODataRow) string {
	t.Helper()
	out := make([]json.RawMessage, len(rows))
	for i, r := range rows {
		b, err := json.Marshal(sel.Trim(r))
		if err != nil {
			t.Fatal(err)
		}
		out[i] = b
	}
	b, _ := json.Marshal(out)
	return string(b)
}

func TestODataRowsAsCentral(t *testing.T) {
	all := func(string) bool { return true }
	od, inst := familyOData(t, all)
	if got := strings.Join(od.Tables(), ","); got != "Submissions,Submissions.children.child,Submissions.children.child.toys.toy" {
		t.Fatalf("tables: %s", got)
	}
	sys := &export.ODataSystem{SubmissionDate: time.Date(2026, 1, 2, 3, 4, 5, 6_000_000, time.UTC), SubmitterID: 5, SubmitterName: "Tablet"}

	// The submission's row: values typed, the repeat only linked.
	sel, err := od.Select(export.ODataQuery{Table: "Submissions", Select: "name,age,home,children"})
	if err != nil {
		t.Fatal(err)
	}
	got := rowsJSON(t, sel, sel.Rows(inst, "double", sys))
	want := `[{"name":"Vick","age":4,"home":{"type":"Point","coordinates":[30.25,1.5,1200],"properties":{"accuracy":5}},"children":{"child@odata.navigationLink":"Submissions('double')/children/child"}}]`
	if got != want {
		t.Fatalf("submission row\n got %s\nwant %s", got, want)
	}
	sel, _ = od.Select(export.ODataQuery{Table: "Submissions"})
	row := sel.Rows(inst, "double", sys)[0]
	b, _ := json.Marshal(row)
	if !strings.Contains(string(b), `"__id":"double","__system":{"submissionDate":"2026-01-02T03:04:05.006Z","updatedAt":null,"submitterId":"5","submitterName":"Tablet"`) ||
		strings.Contains(string(b), "dropped") {
		t.Fatalf("__system: %s", b)
	}

	// The children: Central's ids, each linked to the submission.
	sel, _ = od.Select(export.ODataQuery{Table: "Submissions.children.child", WKT: true})
	rows := sel.Rows(inst, "double", nil)
	if len(rows) != 3 || rows[1].ID() != "b6e93a81a53eed0566e65e472d4a4b9ae383ee6d" || rows[1].Get("__Submissions-id") != "double" ||
		rows[1].Get("toys").(interface{ MarshalJSON() ([]byte, error) }) == nil {
		t.Fatalf("children: %s", rowsJSON(t, sel, rows))
	}
	b, _ = json.Marshal(rows[1])
	if !strings.Contains(string(b), `"toy@odata.navigationLink":"Submissions('double')/children/child('b6e93a81a53eed0566e65e472d4a4b9ae383ee6d')/toys/toy"`) {
		t.Fatalf("nested link: %s", b)
	}

	// The toys, under the child that has them.
	sel, _ = od.Select(export.ODataQuery{Table: "Submissions.children.child.toys.toy"})
	rows = sel.Rows(inst, "double", nil)
	want4 := []string{"a9058d7b2ed9557205ae53f5b1dc4224043eca2a", "8d2dc7bd3e97a690c0813e646658e51038eb4144",
		"b716dd8b79a4c9369d6b1e7a9c9d55ac18da1319", "52fbd613acc151ee1187026890f6246b35f69144"}
	if len(rows) != 5 {
		t.Fatalf("toys: %s", rowsJSON(t, sel, rows))
	}
	for i, id := range want4 {
		if rows[i].ID() != id || rows[i].Get("__Submissions-children-child-id") != "b6e93a81a53eed0566e65e472d4a4b9ae383ee6d" {
			t.Fatalf("toy %d: %s", i, rowsJSON(t, sel, rows[i:i+1]))
		}
	}

	// $expand=* puts the repeats inline.
	sel, _ = od.Select(export.ODataQuery{Table: "Submissions", Expand: true})
	b, _ = json.Marshal(sel.Rows(inst, "double", sys)[0])
	if !strings.Contains(string(b), `"toy":[{"name":"Twilight Sparkle","__id":"a9058d7b2ed9557205ae53f5b1dc4224043eca2a"}`) {
		t.Fatalf("expanded: %s", b)
	}
}

// Central's ids for repeats directly under a group, from two submissions.
func TestODataRepeatIDs(t *testing.T) {
	od, _ := familyOData(t, func(string) bool { return true })
	sel, _ := od.Select(export.ODataQuery{Table: "Submissions.children.child"})
	for _, c := range []struct {
		iid, xml string
		ids      []string
	}{
		{"two", `<children><child><name>Billy</name></child><child><name>Blaine</name></child></children>`,
			[]string{"cf9a1b5cc83c6d6270c1eb98860d294eac5d526d", "c76d0ccc6d5da236be7b93b985a80413d2e3e172"}},
		{"three", `<children><child><name>Candace</name></child></children>`, []string{"beaedcdba519e6e6b8037605c9ae3f6a719984fa"}},
	} {
		inst, err := formspec.ParseInstance([]byte(`<data id="family"><meta><instanceID>`+c.iid+`</instanceID></meta>`+c.xml+`</data>`), formspec.DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		rows := sel.Rows(inst, c.iid, nil)
		if len(rows) != len(c.ids) {
			t.Fatalf("%s: %d rows", c.iid, len(rows))
		}
		for i, id := range c.ids {
			if rows[i].ID() != id {
				t.Errorf("%s child %d: %s, Central gives %s", c.iid, i, rows[i].ID(), id)
			}
		}
	}
}

// What the reader may not see is not in the service at all.
func TestODataLeavesOutWhatTheReaderMayNotSee(t *testing.T) {
	od, inst := familyOData(t, func(p string) bool { return p != "/data/home" && !strings.HasPrefix(p, "/data/children/child/toys") })
	if strings.Join(od.Omitted, ",") != "/data/home,/data/children/child/toys/toy/name" {
		t.Fatalf("omitted: %v", od.Omitted)
	}
	meta := string(od.Metadata())
	if strings.Contains(meta, `"home"`) || strings.Contains(meta, "toy") || !strings.Contains(meta, `<Property Name="age" Type="Edm.Int64"/>`) {
		t.Fatalf("$metadata: %s", meta)
	}
	if _, err := od.Select(export.ODataQuery{Table: "Submissions.children.child.toys.toy"}); err == nil {
		t.Fatal("a table of hidden fields must not exist")
	}
	if _, err := od.Select(export.ODataQuery{Table: "Submissions", Select: "home"}); err == nil {
		t.Fatal("$select of a hidden field must be refused")
	}
	sel, _ := od.Select(export.ODataQuery{Table: "Submissions", Expand: true})
	b, _ := json.Marshal(sel.Rows(inst, "double", nil)[0])
	if strings.Contains(string(b), "Twilight") || strings.Contains(string(b), "30.25") || strings.Contains(string(b), "toys") {
		t.Fatalf("hidden values leaked: %s", b)
	}
}

func TestODataIdentifier(t *testing.T) {
	for in, want := range map[string]string{"name": "name", "1st": "_1st", "a-b c": "a_b_c", "é": "__", "x.y": "x_y", "_ok": "_ok"} {
		if got := export.ODataIdentifier(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func TestODataFilter(t *testing.T) {
	day := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	approved := "approved"
	m := export.ODataMeta{InstanceID: "uuid:1", SubmissionDate: day, SubmitterID: 7, ReviewState: &approved}
	now := day.Add(time.Hour)
	for expr, want := range map[string]bool{
		"__system/submissionDate gt 2026-01-01":                                         true,
		"__system/submissionDate lt '2026-03-01T11:00:00Z'":                             false,
		"year(__system/submissionDate) eq 2026 and month(__system/submissionDate) eq 3": true,
		"__system/reviewState eq 'approved'":                                            true,
		"__system/reviewState ne null":                                                  true,
		"__system/updatedAt eq null":                                                    true,
		"__system/updatedAt gt 2020-01-01":                                              false, // null compared: unknown
		"not (__system/updatedAt gt 2020-01-01)":                                        false, // still unknown
		"__system/submitterId eq 7 or __id eq 'x'":                                      true,
		"__id eq 'uuid:1' and __system/submissionDate le now()":                         true,
		"__system/deletedAt eq null":                                                    true,
		"hour(__system/submissionDate) ge 12":                                           true,
	} {
		f, err := export.ParseODataFilter(expr, false)
		if err != nil {
			t.Errorf("%s: %v", expr, err)
			continue
		}
		if got := f.Match(m, now); got != want {
			t.Errorf("%s: %v, want %v", expr, got, want)
		}
	}
	for _, bad := range []string{"name eq 'x'", "__id eq", "(__id eq 'x'", "__id add 1", "length(__id) eq 3", "__id eq 'unclosed"} {
		if _, err := export.ParseODataFilter(bad, false); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
	// A repeat's table reaches the submission only through $root.
	if _, err := export.ParseODataFilter("__system/submitterId eq 7", true); err == nil {
		t.Error("a subtable filter without $root was accepted")
	}
	if _, err := export.ParseODataFilter("$root/Submissions/__system/submitterId eq 7", true); err != nil {
		t.Error(err)
	}
}

func FuzzODataFilter(f *testing.F) {
	f.Add("__system/submissionDate gt 2026-01-01 and not (__id eq 'a''b')")
	f.Add("year(now()) eq 2026 or __system/reviewState eq null")
	f.Fuzz(func(t *testing.T, expr string) {
		flt, err := export.ParseODataFilter(expr, false)
		if err == nil {
			flt.Match(export.ODataMeta{}, time.Now())
		}
	})
}
