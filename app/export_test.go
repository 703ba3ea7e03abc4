package app_test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/xuri/excelize/v2"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/haven-org/haven/storage"
)

// A form with a repeat nested in a repeat and a second top-level repeat:
// four tables, three of which wait in spools during the one-pass export.
const nestedForm = `<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml" xmlns:jr="http://openrosa.org/javarosa" xmlns:haven="urn:haven:xforms">
<h:head><h:title>Visits</h:title>
<model haven:legal-basis="public_interest" haven:default-sensitivity="public">
<instance><visit id="visit" version="1">
  <village/>
  <child jr:template=""><name/><dose jr:template=""><vaccine/></dose></child>
  <note jr:template=""><text/></note>
  <meta><instanceID/></meta>
</visit></instance>
<bind nodeset="/visit/village" type="string" haven:purpose="Plan the round"/>
<bind nodeset="/visit/child/name" type="string" haven:purpose="Follow up the child"/>
<bind nodeset="/visit/child/dose/vaccine" type="string" haven:purpose="Record the dose"/>
<bind nodeset="/visit/note/text" type="string" haven:purpose="Explain gaps"/>
<bind nodeset="/visit/meta/instanceID" type="string" readonly="true()" jr:preload="uid"/>
</model></h:head>
<h:body>
<input ref="/visit/village"><label>Village</label></input>
<group ref="/visit/child"><label>Child</label><repeat nodeset="/visit/child">
  <input ref="/visit/child/name"><label>Name</label></input>
  <group ref="/visit/child/dose"><label>Dose</label><repeat nodeset="/visit/child/dose">
    <input ref="/visit/child/dose/vaccine"><label>Vaccine</label></input>
  </repeat></group>
</repeat></group>
<group ref="/visit/note"><label>Note</label><repeat nodeset="/visit/note"><input ref="/visit/note/text"><label>Text</label></input></repeat></group>
</h:body></h:html>`

// Every table of a nested form comes out whole and linked by keys, in CSV
// and in XLSX, from one pass over the submissions.
func TestExportNestedRepeats(t *testing.T) {
	svc, pid, _, o := setup(t)
	ctx := context.Background()
	admin := &haven.Principal{Admin: true}
	if _, err := svc.CreateForm(ctx, admin, pid, app.Upload{Body: []byte(nestedForm)}, true); err != nil {
		t.Fatal(err)
	}
	form, err := o.st.Forms.Get(ctx, pid, "visit")
	if err != nil {
		t.Fatal(err)
	}
	subs := []string{
		`<child><name>Ali</name><dose><vaccine>polio</vaccine></dose><dose><vaccine>measles</vaccine></dose></child>` +
			`<child><name>Sara</name></child><note><text>one absent</text></note>`,
		`<child><name>Omar</name><dose><vaccine>bcg</vaccine></dose></child>`,
	}
	for i, body := range subs {
		id := fmt.Sprintf("uuid:v%d", i)
		xml := fmt.Sprintf(`<visit id="visit" version="1"><village>V%d</village>%s<meta><instanceID>%s</instanceID></meta></visit>`, i, body, id)
		if _, err := o.st.Submissions.Ingest(ctx, &storage.Incoming{ProjectID: pid, FormID: form.ID, FormVersionID: form.CurrentVersionID,
			InstanceID: id, XML: []byte(xml), SubmitterID: 1}); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string][][]string{
		"visit":       {{"village", "KEY"}, {"V0", "uuid:v0"}, {"V1", "uuid:v1"}},
		"visit-child": {{"name", "PARENT_KEY", "KEY"}, {"Ali", "uuid:v0", "uuid:v0/child[1]"}, {"Sara", "uuid:v0", "uuid:v0/child[2]"}, {"Omar", "uuid:v1", "uuid:v1/child[1]"}},
		"visit-dose":  {{"vaccine", "PARENT_KEY", "KEY"}, {"polio", "uuid:v0/child[1]", "uuid:v0/child[1]/dose[1]"}, {"measles", "uuid:v0/child[1]", "uuid:v0/child[1]/dose[2]"}, {"bcg", "uuid:v1/child[1]", "uuid:v1/child[1]/dose[1]"}},
		"visit-note":  {{"text", "PARENT_KEY", "KEY"}, {"one absent", "uuid:v0", "uuid:v0/note[1]"}},
	}
	// pick keeps the columns the test looks at.
	pick := func(rows [][]string) [][]string {
		var idx []int
		for i, h := range rows[0] {
			switch h {
			case "village", "name", "vaccine", "text", "PARENT_KEY", "KEY":
				idx = append(idx, i)
			}
		}
		var out [][]string
		for _, r := range rows {
			var o []string
			for _, i := range idx {
				o = append(o, r[i])
			}
			out = append(out, o)
		}
		return out
	}
	export := func(format string) []byte {
		exp, err := svc.Export(ctx, admin, pid, "visit", app.ExportOptions{Format: format})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := exp.Write(ctx, &buf); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}

	csvZip := export("csv")
	z, err := zip.NewReader(bytes.NewReader(csvZip), int64(len(csvZip)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range z.File {
		names = append(names, f.Name)
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		rows, err := csv.NewReader(rc).ReadAll()
		rc.Close()
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		if got := pick(rows); !reflect.DeepEqual(got, want[strings.TrimSuffix(f.Name, ".csv")]) {
			t.Errorf("%s:\n got %q\nwant %q", f.Name, got, want[strings.TrimSuffix(f.Name, ".csv")])
		}
	}
	if fmt.Sprint(names) != "[visit.csv visit-child.csv visit-dose.csv visit-note.csv]" {
		t.Fatalf("zip entries %v", names)
	}

	x, err := excelize.OpenReader(bytes.NewReader(export("xlsx")))
	if err != nil {
		t.Fatal(err)
	}
	if sheets := x.GetSheetList(); fmt.Sprint(sheets) != "[visit visit-child visit-dose visit-note]" {
		t.Fatalf("sheets %v", sheets)
	}
	for _, sheet := range x.GetSheetList() {
		rows, err := x.GetRows(sheet)
		if err != nil {
			t.Fatal(err)
		}
		for i := range rows { // excelize drops trailing empty cells
			for len(rows[i]) < len(rows[0]) {
				rows[i] = append(rows[i], "")
			}
		}
		if got := pick(rows); !reflect.DeepEqual(got, want[sheet]) {
			t.Errorf("sheet %s:\n got %q\nwant %q", sheet, got, want[sheet])
		}
	}
}
