package server_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/haven-org/haven/clients/collect"
	"github.com/haven-org/haven/formspec/xlsform/xlsxtest"
	"github.com/haven-org/haven/storage/pgtest"
)

// subjectForm is an XLSForm that records a household identifier as its
// subject identifier, under a basis other than consent.
func subjectForm(t *testing.T, id string) []byte {
	t.Helper()
	b, err := xlsxtest.FromMarkdown(`
| survey   |         |         |            |                         |             |
|          | type    | name    | label      | purpose                 | sensitivity |
|          | text    | hh_id   | Household  | Links visits            | level_2     |
|          | text    | name    | Name       | Contact for follow-up   | level_3     |
|          | image   | photo   | Shelter    | Evidence of damage      | level_2     |
| settings |         |         |            |                         |             |
|          | form_id | version | subject_id | legal_basis             |             |
|          | ` + id + ` | 1    | hh_id      | public_interest         |             |
`)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func subjectInstance(form, id, hh, name, photo string) []byte {
	return []byte(fmt.Sprintf(`<data id="%s" version="1"><hh_id>%s</hh_id><name>%s</name><photo>%s</photo><meta><instanceID>%s</instanceID></meta></data>`,
		form, hh, name, photo, id))
}

// Access, correction, objection and erasure by the subject identifier,
// across a project's forms; the identifier itself is never stored.
func TestSubjectRequests(t *testing.T) {
	e := newEnv(t)
	pr := e.emptyProject()
	base := fmt.Sprintf("/v1/projects/%d", pr.ID)
	e.publishXLSX(pr.ID, subjectForm(t, "registration"))
	e.publishXLSX(pr.ID, subjectForm(t, "followup"))
	dev := e.device(pr.ID, "Tablet")
	ctx := context.Background()
	submit := func(form, id, hh, name string, files ...collect.File) *collect.Result {
		t.Helper()
		photo := ""
		if len(files) > 0 {
			photo = files[0].Name
		}
		res, err := dev.Submit(ctx, subjectInstance(form, id, hh, name, photo), files)
		if res == nil || res.Status == 0 {
			t.Fatalf("%s: %v", id, err) // no answer at all; refusals come back in res
		}
		return res
	}
	photo := collect.BytesFile("p.jpg", bytes.Repeat([]byte("SHELTER"), 2000))
	for _, s := range []struct{ form, id, hh, name string }{
		{"registration", "uuid:r1", "HH-0001", "Amina Yusuf"},
		{"registration", "uuid:r2", "HH-0002", "Omar Ali"},
		{"followup", "uuid:f1", " HH-0001 ", "Amina Yusuf"},
	} {
		if res := submit(s.form, s.id, s.hh, s.name, photo); res.Status != 201 {
			t.Fatalf("%s: %+v", s.id, res)
		}
	}

	// Access: both forms, with values, files and versions.
	type report struct {
		Submissions []struct {
			XMLFormID   string
			InstanceID  string
			Data        map[string]any
			Attachments []struct {
				Name   string
				Exists bool
			}
			Versions []struct{ InstanceID, EditReason string }
		}
		Objection *struct{ RecordedBy int64 }
	}
	var rep report
	e.admin("GET", base+"/subjects/HH-0001", nil, &rep)
	if len(rep.Submissions) != 2 || rep.Submissions[0].XMLFormID != "registration" || rep.Submissions[1].XMLFormID != "followup" ||
		rep.Submissions[0].Data["name"] != "Amina Yusuf" || len(rep.Submissions[0].Attachments) != 1 || !rep.Submissions[0].Attachments[0].Exists {
		t.Fatalf("access HH-0001: %+v", rep)
	}
	e.admin("GET", base+"/subjects/HH-9999", nil, &rep)
	if len(rep.Submissions) != 0 {
		t.Fatalf("access to an unknown person: %+v", rep)
	}
	// Only a keyed hash is indexed; the identifier is neither indexed nor audited.
	var macs, audited int
	noID := `instr(subject_mac, 'HH-0001') = 0`
	if pgtest.Backend() == "postgres" {
		noID = `position('HH-0001'::bytea in subject_mac) = 0`
	}
	e.st.DB.QueryRow(ctx, `SELECT count(*) FROM subject_index WHERE length(subject_mac) = 32 AND `+noID).Scan(&macs)
	e.st.DB.QueryRow(ctx, `SELECT count(*) FROM audits WHERE object LIKE '%HH-%' OR details LIKE '%HH-%'`).Scan(&audited)
	if macs != 3 || audited != 0 {
		t.Fatalf("index: %d keyed hashes (want 3); %d audit events name the identifier", macs, audited)
	}

	// Access is for those with the right to answer subject requests.
	e.collector(pr.ID, "collector@example.org", "a long enough password")
	tok := e.login("collector@example.org", "a long enough password")
	if st := e.call("GET", base+"/subjects/HH-0001", tok, nil, nil); st != 403 {
		t.Fatalf("a data collector read a subject's data: %d", st)
	}
	if st := e.call("DELETE", base+"/subjects/HH-0001", tok, nil, nil); st != 403 {
		t.Fatalf("a data collector erased a subject's data: %d", st)
	}

	// Correction: a new version with the reason; files carry over.
	corr := base + "/forms/registration/submissions/uuid:r1/corrections"
	var msg struct{ Message string }
	if st := e.call("POST", corr, e.token, map[string]any{"values": map[string]string{"/data/name": "Amina Yusuf Hassan"}}, &msg); st != 400 ||
		!strings.Contains(msg.Message, "reason") {
		t.Fatalf("correction without a reason: %d %q", st, msg.Message)
	}
	if st := e.call("POST", corr, e.token, map[string]any{"values": map[string]string{"/data/meta/instanceID": "x"}, "reason": "r"}, &msg); st != 400 {
		t.Fatalf("correcting metadata: %d %q", st, msg.Message)
	}
	e.admin("POST", corr, map[string]any{"values": map[string]string{"/data/name": "Amina Yusuf Hassan"},
		"reason": "Subject request: family name missing"}, nil)
	e.admin("GET", base+"/subjects/HH-0001", nil, &rep)
	r1 := rep.Submissions[0]
	if r1.Data["name"] != "Amina Yusuf Hassan" || len(r1.Versions) != 2 || r1.Versions[0].EditReason != "Subject request: family name missing" ||
		!r1.Attachments[0].Exists {
		t.Fatalf("after correction: %+v", r1)
	}
	var events []auditEvent
	e.admin("GET", "/v1/audit?action=submission.correct", nil, &events)
	// Newest first: the correction, then the two refused attempts.
	if len(events) != 3 || events[0].Outcome != "ok" || events[1].Outcome != "invalid" || events[0].Details["newVersion"] != r1.Versions[0].InstanceID ||
		strings.Contains(fmt.Sprint(events[0].Details), "family name") {
		t.Fatalf("correction audit: %+v", events)
	}

	// Objection: new forms about the person are refused, others are not.
	e.admin("POST", base+"/subjects/HH-0002/objection", nil, nil)
	before := e.blobRows()
	if res := submit("followup", "uuid:f2", "HH-0002", "OBJECTED-MARKER", photo); res.Status != 403 || !strings.Contains(res.Message, "objected") {
		t.Fatalf("a submission about a person who objected: %+v", res)
	}
	if e.blobRows() != before || len(e.scanFor("OBJECTED-MARKER")) != 0 {
		t.Fatal("a refused submission left something behind")
	}
	if res := submit("followup", "uuid:f3", "HH-0003", "Someone else"); res.Status != 201 {
		t.Fatalf("another person's form: %+v", res)
	}
	e.admin("GET", base+"/subjects/HH-0002", nil, &rep)
	if rep.Objection == nil || len(rep.Submissions) != 1 {
		t.Fatalf("access after objection: %+v", rep)
	}
	e.admin("DELETE", base+"/subjects/HH-0002/objection", nil, nil)
	if res := submit("followup", "uuid:f2", "HH-0002", "Omar Ali"); res.Status != 201 {
		t.Fatalf("after the objection was lifted: %+v", res)
	}

	// Erasure: every submission of the person, its versions and files; a
	// record with counts only; resends are not stored again.
	rows, files := e.blobRows(), len(e.blobFiles())
	var erased struct {
		Erasure struct{ Submissions, Files int64 }
	}
	e.admin("DELETE", base+"/subjects/HH-0001", nil, &erased)
	if erased.Erasure.Submissions != 2 || erased.Erasure.Files != 2 {
		t.Fatalf("erasure: %+v", erased)
	}
	if e.blobRows() != rows-2 || len(e.blobFiles()) > files {
		t.Fatalf("erased files remain: %d rows (was %d)", e.blobRows(), rows)
	}
	e.admin("GET", base+"/subjects/HH-0001", nil, &rep)
	if len(rep.Submissions) != 0 {
		t.Fatalf("access after erasure: %+v", rep)
	}
	var n int
	e.st.DB.QueryRow(ctx, `SELECT count(*) FROM submission_versions WHERE instance_id IN ('uuid:r1', 'uuid:f1')`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d versions of erased submissions remain", n)
	}
	var records []map[string]any
	e.admin("GET", base+"/subject-erasures", nil, &records)
	if len(records) != 1 {
		t.Fatalf("erasure records: %+v", records)
	}
	for k := range records[0] {
		switch k {
		case "id", "erasedAt", "recordedBy", "submissions", "files", "entities": // counts only
		default:
			t.Errorf("the erasure record holds %q", k)
		}
	}
	if res := submit("registration", "uuid:r1", "HH-0001", "Amina Yusuf", photo); res.Status != 201 || !strings.Contains(res.Message, "erased") {
		t.Fatalf("resend after erasure: %+v", res)
	}
	if e.blobRows() != rows-2 {
		t.Fatal("a resend of an erased submission stored its file")
	}
	// An edit of it, from a device that still had it, is not kept either.
	edit := bytes.Replace(subjectInstance("registration", "uuid:r1-edit", "HH-0001", "Amina Y.", ""),
		[]byte("</instanceID>"), []byte("</instanceID><deprecatedID>uuid:r1</deprecatedID>"), 1)
	if res, _ := dev.Submit(ctx, edit, nil); res == nil || res.Status != 201 || !strings.Contains(res.Message, "erased") {
		t.Fatalf("an edit after erasure: %+v", res)
	}
	e.admin("GET", base+"/subjects/HH-0001", nil, &rep)
	if len(rep.Submissions) != 0 {
		t.Fatalf("an erased submission came back: %+v", rep)
	}
	if st := e.call("DELETE", base+"/subjects/HH-0001", e.token, nil, nil); st != 404 {
		t.Fatalf("erasing again: %d", st)
	}
}
