package server_test

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/clients/collect"
	"github.com/haven-org/haven/formspec/xlsform/xlsxtest"
)

// matrixForm has one marked field per tier: PUBMARK (public), L1MARK
// (level_1), L2MARK (level_2, also in the photo's name and bytes) and
// L3MARK (level_3). It saves one of each to the entity list households,
// whose labels (the name) are level_3.
func matrixForm(t *testing.T) []byte {
	t.Helper()
	return matrixVersion(t, "1", "level_2")
}

// matrixVersion is the matrix form at a version, with the phone field at
// the given tier. Beside one marked field per tier it computes values from
// answers: name_copy (declared public) and the instance name both read
// hh_name, so both are level_3 whatever was declared.
func matrixVersion(t *testing.T, version, phoneTier string) []byte {
	t.Helper()
	b, err := xlsxtest.FromMarkdown(fmt.Sprintf(`
| survey   |                     |           |          |             |             |              |         |
|          | type                | name      | label    | purpose     | sensitivity | calculation  | save_to |
|          | select_one district | district  | District | Planning    | public      |              |         |
|          | text                | comment   | Comment  | Quality     | public      |              | comment |
|          | select_one sex      | sex       | Sex      | Breakdown   | level_1     |              |         |
|          | text                | village   | Village  | Targeting   | level_1     |              | village |
|          | text                | hh_id     | HH       | Links       | level_2     |              |         |
|          | text                | phone     | Phone    | Call back   | %s          |              | phone   |
|          | image               | photo     | Photo    | Damage      | level_2     |              |         |
|          | geopoint            | loc       | Location | Map         | level_2     |              |         |
|          | text                | hh_name   | Name     | Identify    | level_3     |              | hh_name |
|          | calculate           | name_copy |          | Greeting    | public      | ${hh_name}   |         |
| choices  |                     |           |          |             |             |              |         |
|          | list_name           | name      | label    |             |             |              |         |
|          | district            | north     | North    |             |             |              |         |
|          | district            | south     | South    |             |             |              |         |
|          | sex                 | f         | Female   |             |             |              |         |
|          | sex                 | m         | Male     |             |             |              |         |
| settings |                     |           |          |             |             |              |         |
|          | form_id             | version   | legal_basis     | subject_id | instance_name |     |         |
|          | matrix              | %s        | public_interest | hh_id      | concat(${hh_name}) |  |         |
| entities |                     |           |          |             |             |              |         |
|          | list_name           | label     |          |             |             |              |         |
|          | households          | concat(${hh_name}) |  |            |             |              |         |
`, phoneTier, version))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var tierMarks = map[haven.Sensitivity]string{haven.Public: "PUBMARK", haven.Level1: "L1MARK", haven.Level2: "L2MARK", haven.Level3: "L3MARK"}

// readable returns a response body as text, unzipping zips (CSV exports,
// XLSX) so markers inside them can be seen.
func readable(b []byte) string {
	if !bytes.HasPrefix(b, []byte("PK")) {
		return string(b)
	}
	z, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return string(b)
	}
	var out strings.Builder
	for _, f := range z.File {
		out.WriteString(f.Name + "\n")
		if rc, err := f.Open(); err == nil {
			io.Copy(&out, rc)
			rc.Close()
		}
	}
	return out.String()
}

// Every role at every clearance on every read path: what the role may not
// do is refused, and no value above the reader's clearance appears in any
// answer, JSON, XML, listings, files, exports (unzipped), aggregates and
// subject access alike.
func TestClearanceMatrix(t *testing.T) {
	e := newEnv(t)
	pr := e.emptyProject()
	base := fmt.Sprintf("/v1/projects/%d", pr.ID)
	e.publishXLSX(pr.ID, matrixForm(t))
	dev := e.device(pr.ID, "Tablet")
	for i := 0; i < 12; i++ {
		xml := fmt.Sprintf(`<data id="matrix" version="1"><district>%s</district><comment>PUBMARK %d</comment><sex>%s</sex><village>L1MARK %d</village>`+
			`<hh_id>HH-%d</hh_id><phone>L2MARK %d</phone><photo>L2MARK.jpg</photo><loc>2.0%d 45.3 10 5</loc><hh_name>L3MARK %d</hh_name>`+
			`<name_copy>L3MARK %d</name_copy><meta><instanceID>uuid:m%d</instanceID><instanceName>L3MARK %d</instanceName>`+
			`<entity dataset="households" create="1" id="%s"><label>L3MARK %d</label></entity></meta></data>`,
			[]string{"north", "south"}[i%2], i, []string{"f", "m"}[i/6], i, i, i, i, i, i, i, i, matrixEntity(i), i)
		res, err := dev.Submit(context.Background(), []byte(xml), []collect.File{collect.BytesFile("L2MARK.jpg", []byte("photo bytes L2MARK"))})
		if err != nil || res.Status != 201 {
			t.Fatalf("submission %d: %+v %v", i, res, err)
		}
	}
	// Version 2 lowers the phone to public. The phones collected under
	// version 1 stay level_2, even in submissions edited under version 2.
	form := base + "/forms/matrix"
	consoleProject := fmt.Sprintf("/projects/%d", pr.ID)
	console := consoleProject + "/forms/matrix"
	if resp := e.request("POST", form+"/draft", e.token, xlsxType, bytes.NewReader(matrixVersion(t, "2", "public"))); resp.StatusCode != 200 {
		t.Fatalf("draft of version 2: %d", resp.StatusCode)
	}
	e.admin("POST", form+"/draft/publish", nil, nil)
	edit := `<data id="matrix" version="2"><district>south</district><comment>PUBMARK edited</comment><sex>m</sex><village>L1MARK 11</village>` +
		`<hh_id>HH-11</hh_id><phone>L2MARK 11</phone><photo>L2MARK.jpg</photo><loc>2.011 45.3 10 5</loc><hh_name>L3MARK 11</hh_name><name_copy>L3MARK 11</name_copy>` +
		`<meta><instanceID>uuid:m11-edit</instanceID><deprecatedID>uuid:m11</deprecatedID><instanceName>L3MARK 11</instanceName></meta></data>`
	if res, err := dev.Submit(context.Background(), []byte(edit), nil); err != nil || res.Status != 201 {
		t.Fatalf("edit under version 2: %+v %v", res, err)
	}
	e.admin("POST", form+"/submissions/uuid:m0/comments", map[string]string{"body": "Confirmed L3MARK by phone"}, nil)
	paths := []struct {
		path   string
		action haven.Action
		// needs is the clearance the path needs beyond the action (raw XML,
		// a level_2 file, a level_1 dimension); "" for none.
		needs haven.Sensitivity
		// shows is true when the answer carries field values, so the
		// reader's own tier must show (the check can fail).
		shows bool
	}{
		{form + "/submissions", haven.ActionSubmissionRead, "", false},
		{form + "/submissions/uuid:m0", haven.ActionSubmissionRead, "", true},
		{form + "/submissions/uuid:m0.xml", haven.ActionSubmissionRead, haven.Level3, true},
		{form + "/submissions/uuid:m0/versions", haven.ActionSubmissionRead, "", false},
		// Edited under version 2, which lowers the phone: still level_2 here.
		{form + "/submissions/uuid:m11", haven.ActionSubmissionRead, "", true},
		{form + "/submissions/uuid:m11/versions", haven.ActionSubmissionRead, "", false},
		{form + "/submissions/uuid:m11/attachments/L2MARK.jpg", haven.ActionSubmissionRead, haven.Level2, false},
		{form + "/submissions/uuid:m0/attachments", haven.ActionSubmissionRead, "", false},
		{form + "/submissions/uuid:m0/attachments/L2MARK.jpg", haven.ActionSubmissionRead, haven.Level2, false},
		{form + "/export?format=csv&attachments=true", haven.ActionSubmissionRead, "", true},
		{form + "/export?format=csv&labels=true&splitSelectMultiples=true", haven.ActionSubmissionRead, "", true},
		{form + "/export?format=csv&version=2", haven.ActionSubmissionRead, "", true},
		{form + "/export?format=xlsx", haven.ActionSubmissionRead, "", true},
		{form + "/export?format=geojson", haven.ActionSubmissionRead, haven.Level2, true},
		{form + "/aggregate?by=district", haven.ActionAggregate, "", false},
		{form + "/aggregate?by=sex&format=csv", haven.ActionAggregate, haven.Level1, false},
		{form + "/aggregate?by=district&format=xlsx", haven.ActionAggregate, "", false},
		// Looking a person up by their identifier (hh_id, level_2) needs its clearance.
		{base + "/subjects/HH-0", haven.ActionSubjectRequest, haven.Level2, true},
		// OData, as pyodk, Power BI and Excel read it, and Central's export addresses.
		{form + ".svc", haven.ActionSubmissionRead, "", false},
		{form + ".svc/$metadata", haven.ActionSubmissionRead, "", false},
		{form + ".svc/Submissions", haven.ActionSubmissionRead, "", true},
		{form + ".svc/Submissions?$expand=*&$wkt=true&$count=true", haven.ActionSubmissionRead, "", true},
		{form + ".svc/Submissions('uuid:m0')", haven.ActionSubmissionRead, "", true},
		{form + ".svc/Submissions?$select=__id,comment,__system", haven.ActionSubmissionRead, "", false},
		{form + "/submissions.csv.zip", haven.ActionSubmissionRead, "", true},
		{form + "/submissions.csv", haven.ActionSubmissionRead, "", true},
		// Comments are as sensitive as their author's clearance (one by a level_3 administrator here).
		{form + "/submissions/uuid:m0/comments", haven.ActionSubmissionRead, "", false},
		// A correction of a public field answers with the submission as the corrector may see it.
		{"POST " + form + "/submissions/uuid:m1/corrections", haven.ActionSubjectRequest, "", true},
		// The web console's pages, read with the same session as a cookie.
		// A background export, started, waited for and downloaded.
		{"JOB " + form + "/export-jobs?format=csv", haven.ActionSubmissionRead, "", true},
		{"JOB " + form + "/export-jobs?format=xlsx", haven.ActionSubmissionRead, "", true},
		{"CONSOLE " + console + "/submissions", haven.ActionSubmissionRead, "", true},
		{"CONSOLE " + console + "/submissions?version=1&since=2000-01-01", haven.ActionSubmissionRead, "", true},
		{"CONSOLE " + console + "/submissions/uuid:m0", haven.ActionSubmissionRead, "", true},
		{"CONSOLE " + console + "/submissions/uuid:m11", haven.ActionSubmissionRead, "", true},
		{"CONSOLE " + console + "/submissions/uuid:m0/files/L2MARK.jpg", haven.ActionSubmissionRead, haven.Level2, false},
		{"CONSOLE " + console + "/export?format=csv", haven.ActionSubmissionRead, "", true},
		{"CONSOLE " + console + "/export?format=xlsx", haven.ActionSubmissionRead, "", true},
		{"CONSOLE " + console + "/map.svg", haven.ActionSubmissionRead, haven.Level2, false},
		{"CONSOLE " + console + "/aggregate?by=/data/district", haven.ActionAggregate, "", false},
		{"CONSOLE " + console + "/aggregate?by=/data/sex&format=csv", haven.ActionAggregate, haven.Level1, false},
		{"CONSOLE " + consoleProject + "/subjects?id=HH-0", haven.ActionSubjectRequest, haven.Level2, true},
		{"CONSOLE " + consoleProject + "/inventory", haven.ActionFormRead, "", false},
		// Entities: the list's definition is form design; its entities
		// are collected data, each property and the label at its tier.
		{base + "/datasets", haven.ActionFormRead, "", false},
		{base + "/datasets/households", haven.ActionFormRead, "", false},
		{base + "/datasets/households/entities", haven.ActionSubmissionRead, "", false},
		{base + "/datasets/households/entities/" + matrixEntity(0), haven.ActionSubmissionRead, "", true},
		{base + "/datasets/households/entities/" + matrixEntity(11) + "/versions", haven.ActionSubmissionRead, "", true},
		{base + "/datasets/households/entities.csv", haven.ActionSubmissionRead, "", true},
		{base + "/datasets/households/entities/" + matrixEntity(3) + "/diffs", haven.ActionSubmissionRead, "", false},
		{base + "/datasets/households/entities/" + matrixEntity(3) + "/audits", haven.ActionSubmissionRead, "", false},
		{base + "/datasets/households.svc", haven.ActionFormRead, "", false},
		{base + "/datasets/households.svc/$metadata", haven.ActionFormRead, "", false},
		{base + "/datasets/households.svc/Entities", haven.ActionSubmissionRead, "", true},
		{base + "/datasets/households.svc/Entities?$top=2&$count=true", haven.ActionSubmissionRead, "", true},
		{"CONSOLE " + consoleProject + "/entity-lists", haven.ActionFormRead, "", false},
		{"CONSOLE " + consoleProject + "/entity-lists/households", haven.ActionFormRead, "", false},
		{"CONSOLE " + console, haven.ActionFormRead, "", false},
	}
	n := 0
	for _, role := range haven.Roles {
		for _, clearance := range haven.Clearances {
			n++
			email := fmt.Sprintf("u%d@example.org", n)
			var u struct{ ID int64 }
			e.admin("POST", "/v1/users", map[string]string{"email": email, "password": "a long enough password"}, &u)
			e.admin("POST", fmt.Sprintf("%s/assignments/%s/%d", base, role, u.ID), nil, nil)
			e.admin("PUT", fmt.Sprintf("%s/clearances/%d", base, u.ID), map[string]string{"clearance": string(clearance)}, nil)
			tok := e.login(email, "a long enough password")
			for _, p := range paths {
				method, path, reqBody, ct := "GET", p.path, io.Reader(nil), ""
				var resp *http.Response
				if m, rest, ok := strings.Cut(p.path, " "); ok && m == "CONSOLE" {
					path = rest
					resp = e.consoleGet(path, tok)
				} else if ok && m == "JOB" {
					path = rest
					resp = e.exportJob(base, path, tok)
				} else {
					if ok {
						method, path, ct = m, rest, "application/json"
						reqBody = strings.NewReader(`{"values":{"/data/comment":"PUBMARK corrected"},"reason":"the person asked"}`)
					}
					resp = e.request(method, path, tok, ct, reqBody)
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				body := readable(raw)
				who := fmt.Sprintf("%s at %s, %s %s", role, clearance, method, path)
				allowed := haven.RoleCan(role, p.action) && (p.needs == "" || p.needs.Rank() <= clearance.Rank())
				switch {
				case !haven.RoleCan(role, p.action) && resp.StatusCode != 403:
					t.Errorf("%s: %d, want 403 (the role has no %s)", who, resp.StatusCode, p.action)
				case allowed && resp.StatusCode != 200:
					t.Errorf("%s: %d, want 200: %.300s", who, resp.StatusCode, body)
				case !allowed && resp.StatusCode == 200:
					t.Errorf("%s: 200, want a refusal", who)
				}
				for tier, mark := range tierMarks {
					if tier.Rank() > clearance.Rank() && strings.Contains(body, mark) {
						t.Errorf("%s: %s (%s) leaked into the answer", who, mark, tier)
					}
				}
				if allowed && p.shows && !strings.Contains(body, tierMarks[clearance]) {
					t.Errorf("%s: the reader's own tier (%s) is missing: %.300s", who, tierMarks[clearance], body)
				}
			}
		}
	}
}

// matrixEntity is the uuid of the household the i-th matrix submission makes.
func matrixEntity(i int) string { return fmt.Sprintf("5e1f0000-0000-4000-8000-%012d", i) }
