package server_test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/xuri/excelize/v2"
)

// A raw export: one CSV per repeat level linked by keys, the same tables as
// XLSX sheets, the consent columns, and an audit event with the parameters.
func TestExportTables(t *testing.T) {
	e := newEnv(t)
	pid, dev := e.project()
	for i := 0; i < 3; i++ {
		if res, err := dev.Submit(context.Background(), instance(fmt.Sprintf("uuid:x%d", i), fmt.Sprintf("Head %d", i)), nil); err != nil || res.Status != 201 {
			t.Fatalf("submit: %+v %v", res, err)
		}
	}
	url := fmt.Sprintf("/v1/projects/%d/forms/household/export", pid)
	get := func(q string) []byte {
		resp := e.request("GET", url+q, e.token, "", nil)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("export%s: %d %s", q, resp.StatusCode, b)
		}
		return b
	}
	b := get("?format=csv")
	z, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	tables := map[string][][]string{}
	for _, f := range z.File {
		rc, _ := f.Open()
		rows, err := csv.NewReader(rc).ReadAll()
		rc.Close()
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		tables[f.Name] = rows
	}
	main, member := tables["household.csv"], tables["household-member.csv"]
	if len(main) != 4 || len(member) != 4 {
		t.Fatalf("tables: %v", tables)
	}
	col := func(rows [][]string, name string) int {
		for i, h := range rows[0] {
			if h == name {
				return i
			}
		}
		t.Fatalf("no column %q in %v", name, rows[0])
		return -1
	}
	if main[1][col(main, "head_name")] != "Head 0" || main[1][col(main, "shelter-roof")] != "tarp" || main[1][col(main, "KEY")] != "uuid:x0" {
		t.Fatalf("main row: %v / %v", main[0], main[1])
	}
	if member[1][col(member, "PARENT_KEY")] != "uuid:x0" || member[1][col(member, "KEY")] != "uuid:x0/member[1]" || member[1][col(member, "age")] != "34" {
		t.Fatalf("repeat row: %v / %v", member[0], member[1])
	}
	col(main, "ConsentOutcome")

	// Labels instead of values: plain items, an itemset, a select_multiple, a repeat.
	b = get("?format=csv&labels=true&language=English%20(en)")
	z, _ = zip.NewReader(bytes.NewReader(b), int64(len(b)))
	labelled := map[string][][]string{}
	for _, f := range z.File {
		rc, _ := f.Open()
		labelled[f.Name], _ = csv.NewReader(rc).ReadAll()
		rc.Close()
	}
	lm, lr := labelled["household.csv"], labelled["household-member.csv"]
	if lm[1][col(main, "shelter-roof")] != "Tarpaulin" || lm[1][col(main, "needs")] != "Food" || lm[1][col(main, "district")] != "North" ||
		lm[1][col(main, "head_name")] != "Head 0" || lr[1][col(member, "sex")] != "Female" {
		t.Fatalf("labels: %v / %v", lm[1], lr[1])
	}
	var bad struct{ Message string }
	if st := e.call("GET", url+"?format=csv&labels=true&language=fr", e.token, nil, &bad); st != 400 || !strings.Contains(bad.Message, "English (en)") {
		t.Fatalf("unknown language: %d %q", st, bad.Message)
	}

	x, err := excelize.OpenReader(bytes.NewReader(get("?format=xlsx")))
	if err != nil {
		t.Fatal(err)
	}
	if sheets := x.GetSheetList(); len(sheets) != 2 || sheets[1] != "household-member" {
		t.Fatalf("sheets: %v", sheets)
	}
	rows, _ := x.GetRows("household")
	if len(rows) != 4 || rows[2][col(main, "head_name")] != "Head 1" {
		t.Fatalf("xlsx rows: %v", rows)
	}

	if geo := string(get("?format=geojson")); !strings.Contains(geo, `"coordinates":[45.34,2.04,12]`) || strings.Count(geo, `"Feature"`) != 3 {
		t.Fatalf("geojson: %.400s", geo)
	}

	var events []auditEvent
	e.admin("GET", "/v1/audit?action=submission.export", nil, &events)
	if len(events) != 5 || // the refused language too
		events[0].Details["parameters"].(map[string]any)["format"] != "geojson" {
		t.Fatalf("export audit: %+v", events)
	}
	var msg struct{ Message string }
	agg := fmt.Sprintf("/v1/projects/%d/forms/household/aggregate?by=district", pid)
	if st := e.call("GET", agg, e.token, nil, &msg); st != 403 || !strings.Contains(msg.Message, "too few to aggregate") {
		t.Fatalf("an aggregate on 3 submissions: %d %q", st, msg.Message)
	}
	if st := e.call("GET", agg+",head_name", e.token, nil, &msg); st != 400 || !strings.Contains(msg.Message, "never by free text") {
		t.Fatalf("grouping by free text: %d %q", st, msg.Message)
	}
	if st := e.call("GET", url+"?format=pdf", e.token, nil, &msg); st != 400 || !strings.Contains(msg.Message, "csv, xlsx or geojson") {
		t.Fatalf("unknown format: %d %q", st, msg.Message)
	}
}
