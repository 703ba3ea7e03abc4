package app_test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"reflect"
	"slices"
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

// A form with numbers, dates, a time, a geopoint and a note, as an XLSX
// a project lead opens: numbers and dates typed, the geopoint in four
// columns, no column for the note, and labels on request.
const typedForm = `<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml" xmlns:jr="http://openrosa.org/javarosa" xmlns:haven="urn:haven:xforms">
<h:head><h:title>Typed</h:title>
<model haven:legal-basis="public_interest" haven:default-sensitivity="public">
<instance><typed id="typed" version="1"><intro/><size/><weight/><visited/><seen/><loc/><district/><meta><instanceID/></meta></typed></instance>
<bind nodeset="/typed/intro" type="string" readonly="true()"/>
<bind nodeset="/typed/size" type="int" haven:purpose="Plan"/>
<bind nodeset="/typed/weight" type="decimal" haven:purpose="Plan"/>
<bind nodeset="/typed/visited" type="date" haven:purpose="Plan"/>
<bind nodeset="/typed/seen" type="dateTime" haven:purpose="Plan"/>
<bind nodeset="/typed/loc" type="geopoint" haven:purpose="Map"/>
<bind nodeset="/typed/district" type="string" haven:purpose="Plan"/>
<bind nodeset="/typed/meta/instanceID" type="string" readonly="true()" jr:preload="uid"/>
</model></h:head>
<h:body>
<input ref="/typed/intro"><label>Welcome</label></input>
<input ref="/typed/size"><label>Household size</label></input>
<input ref="/typed/weight"><label>Weight</label></input>
<input ref="/typed/visited"><label>Visit date</label></input>
<input ref="/typed/seen"><label>Seen at</label></input>
<input ref="/typed/loc"><label>Location</label></input>
<select1 ref="/typed/district"><label>District</label><item><label>North</label><value>n</value></item><item><label>South</label><value>s</value></item></select1>
</h:body></h:html>`

func TestExportTypedCells(t *testing.T) {
	svc, pid, _, o := setup(t)
	ctx := context.Background()
	admin := &haven.Principal{Admin: true}
	if _, err := svc.CreateForm(ctx, admin, pid, app.Upload{Body: []byte(typedForm)}, true); err != nil {
		t.Fatal(err)
	}
	form, err := o.st.Forms.Get(ctx, pid, "typed")
	if err != nil {
		t.Fatal(err)
	}
	xml := `<typed id="typed" version="1"><intro/><size>7</size><weight>61.5</weight><visited>2026-11-03</visited><seen>2026-11-03T10:30:00.000+03:00</seen><loc>2.04 45.3 10.5 4</loc><district>n</district><meta><instanceID>uuid:t1</instanceID></meta></typed>`
	if _, err := o.st.Submissions.Ingest(ctx, &storage.Incoming{ProjectID: pid, FormID: form.ID, FormVersionID: form.CurrentVersionID,
		InstanceID: "uuid:t1", XML: []byte(xml), SubmitterID: 1}); err != nil {
		t.Fatal(err)
	}
	export := func(opts app.ExportOptions) []byte {
		exp, err := svc.Export(ctx, admin, pid, "typed", opts)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := exp.Write(ctx, &buf); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	x, err := excelize.OpenReader(bytes.NewReader(export(app.ExportOptions{Format: "xlsx", Labels: true})))
	if err != nil {
		t.Fatal(err)
	}
	rows, _ := x.GetRows("typed")
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	if _, ok := col["intro"]; ok {
		t.Errorf("the note has a column: %v", rows[0])
	}
	for _, h := range []string{"loc-Latitude", "loc-Longitude", "loc-Altitude", "loc-Accuracy"} {
		if _, ok := col[h]; !ok {
			t.Errorf("no column %s: %v", h, rows[0])
		}
	}
	cell := func(h string) (excelize.CellType, string) {
		name, _ := excelize.CoordinatesToCellName(col[h]+1, 2)
		typ, _ := x.GetCellType("typed", name)
		v, _ := x.GetCellValue("typed", name)
		return typ, v
	}
	for h, want := range map[string]string{"size": "7", "weight": "61.5", "loc-Latitude": "2.04", "loc-Longitude": "45.3", "loc-Accuracy": "4", "SubmitterID": "1"} {
		if typ, v := cell(h); typ != excelize.CellTypeUnset && typ != excelize.CellTypeNumber || v != want {
			t.Errorf("%s: %v %q, want the number %s", h, typ, v, want)
		}
	}
	// Dates are dates (a serial number with a date format), times in UTC.
	if _, v := cell("visited"); v != "2026-11-03" {
		t.Errorf("visited: %q", v)
	}
	if _, v := cell("seen"); v != "2026-11-03 07:30:00" {
		t.Errorf("seen: %q", v)
	}
	name, _ := excelize.CoordinatesToCellName(col["visited"]+1, 2)
	if raw, _ := x.GetCellValue("typed", name, excelize.Options{RawCellValue: true}); raw != "46329" {
		t.Errorf("visited is stored as %q, not a date serial", raw)
	}
	if _, v := cell("district"); v != "North" {
		t.Errorf("a choice's label: %q", v)
	}

	// CSV splits geopoints too, unless asked to keep them whole; header labels on request.
	table := func(opts app.ExportOptions) [][]string {
		opts.Format = "table"
		rows, err := csv.NewReader(bytes.NewReader(export(opts))).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		return rows
	}
	if h := strings.Join(table(app.ExportOptions{})[0], ","); !strings.Contains(h, "loc-Latitude,loc-Longitude,loc-Altitude,loc-Accuracy") || strings.Contains(h, "intro") {
		t.Errorf("CSV headers: %s", h)
	}
	whole := table(app.ExportOptions{GeoCombined: true})
	if i := slices.Index(whole[0], "loc"); i < 0 || whole[1][i] != "2.04 45.3 10.5 4" {
		t.Errorf("the combined geopoint: %v", whole)
	}
	if h := strings.Join(table(app.ExportOptions{HeaderLabels: true})[0], ","); !strings.Contains(h, "Household size") || !strings.Contains(h, "Location-Latitude") {
		t.Errorf("header labels: %s", h)
	}
}
