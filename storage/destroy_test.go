package storage_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
	"github.com/haven-org/haven/storage/pgtest"
)

const destroyForm = `<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml"><h:head><h:title>D</h:title><model>
<instance><d id="d" version="1"><name/><photo/><meta><instanceID/></meta></d></instance>
<bind nodeset="/d/photo" type="binary"/></model></h:head><h:body/></h:html>`

// filled makes a project with an end date, a published form and n
// submissions, each with a photo; names and photos carry marker, instance
// IDs carry it in lower case.
func filled(t *testing.T, st *storage.Store, n int, marker string, end time.Time) (*haven.Project, *haven.Form) {
	t.Helper()
	retention := 30
	pr, err := st.Projects.Create(ctx, "Destroy me", "", storage.Lifecycle{EndDate: &end, RetentionDays: &retention})
	if err != nil {
		t.Fatal(err)
	}
	u, err := st.Users.Create(ctx, fmt.Sprintf("u%d@example.org", pr.ID), "a long enough password", "", false)
	if err != nil {
		t.Fatal(err)
	}
	f, err := st.Forms.CreateForm(ctx, pr.ID, storage.NewFormVersion{XMLFormID: "d", Name: "D", Version: "1", XML: []byte(destroyForm), MD5: "x"}, true)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		blob, err := st.Blobs.Put(ctx, pr.ID, bytes.NewReader(bytes.Repeat([]byte(marker+"-PHOTO "), 9000)), storage.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// The instance ID is the one value of a submission kept in plain
		// text: the marker in it (lower case) shows rows really leave the disk.
		id := fmt.Sprintf("uuid:%s-%d", strings.ToLower(marker), i)
		xml := fmt.Sprintf(`<d id="d" version="1"><name>%s-NAME</name><photo>p.jpg</photo><meta><instanceID>%s</instanceID></meta></d>`, marker, id)
		_, err = st.Submissions.Ingest(ctx, &storage.Incoming{ProjectID: pr.ID, FormID: f.ID, FormVersionID: f.CurrentVersionID,
			InstanceID: id, XML: []byte(xml), SubmitterID: u.ID, DeviceID: "collect:" + marker,
			Expected: []string{"p.jpg"}, Files: map[string]*storage.Blob{"p.jpg": blob}, Subject: fmt.Sprintf("%s-SUBJ-%d", marker, i),
			Consent: &haven.ConsentRecord{Outcome: haven.ConsentGiven, LegalBasis: "consent", DeviceUserID: u.ID, DeviceID: "collect:" + marker}})
		if err != nil {
			t.Fatal(err)
		}
	}
	return pr, f
}

// Destruction: the reaper leaves projects alone until their date, defers to
// a legal hold, then destroys everything and the key; no file under the
// data directory holds a marker, an old backup cannot be read, and the
// certificate verifies.
func TestDestruction(t *testing.T) {
	dir := t.TempDir()
	st := open(t, dir)
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	st.DB.Now = func() time.Time { return now }
	end := now.Add(24 * time.Hour)
	pr, f := filled(t, st, 5, "DOOMED", end)
	keep, keepForm := filled(t, st, 2, "KEPT", now.Add(365*24*time.Hour))
	// Subject requests leave records of their own: an objection, and an
	// erasure (of a sixth submission) with its erased-instance record.
	_, err := st.Submissions.Ingest(ctx, &storage.Incoming{ProjectID: pr.ID, FormID: f.ID, FormVersionID: f.CurrentVersionID,
		InstanceID: "uuid:doomed-erased", XML: []byte(`<d id="d" version="1"><name>DOOMED-ERASED</name><meta><instanceID>uuid:doomed-erased</instanceID></meta></d>`),
		SubmitterID: 1, Subject: "DOOMED-SUBJ-X"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Submissions.EraseSubject(ctx, st.Blobs, pr.ID, "DOOMED-SUBJ-X", 1, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.Submissions.Object(ctx, pr.ID, "DOOMED-SUBJ-0", 1, nil); err != nil {
		t.Fatal(err)
	}

	backup := filepath.Join(t.TempDir(), "backup")
	if pgtest.Backend() == "sqlite" { // PostgreSQL is backed up with its own tools
		if _, err := st.Backup(ctx, backup); err != nil {
			t.Fatal(err)
		}
	}
	if hits := scanStore(t, st, dir, "uuid:doomed-"); len(hits) == 0 {
		t.Fatal("the scan finds no instance id before the destruction: it cannot be trusted")
	}

	// Not yet due: a dry run and a real run leave it; days left are counted.
	due, err := st.Reap(ctx, false, "schedule")
	if err != nil || len(due) != 2 || due[0].Due || due[0].DaysLeft != 31 {
		t.Fatalf("before the date: %+v %v", due, err)
	}
	now = end.AddDate(0, 0, 31)
	if _, err := st.Projects.PlaceHold(ctx, pr.ID, "Investigation", "CASE-42", 1); err != nil {
		t.Fatal(err)
	}
	if due, _ := st.Reap(ctx, false, "schedule"); due[0].Due {
		t.Fatal("a project on legal hold is due")
	}
	if _, err := st.Destroy(ctx, pr.ID, "someone"); haven.ErrorCode(err) != haven.ECONFLICT {
		t.Fatalf("destroying a project on hold: %v", err)
	}
	if subs, _, _ := st.Submissions.List(ctx, pr.ID, f.ID, 100, 0); len(subs) != 5 {
		t.Fatalf("the hold did not keep the data: %d", len(subs))
	}
	if _, err := st.Projects.LiftHold(ctx, pr.ID, 1); err != nil {
		t.Fatal(err)
	}
	due, err = st.Reap(ctx, true, "schedule")
	if err != nil || !due[0].Due {
		t.Fatalf("dry run: %+v %v", due, err)
	}
	if subs, _, _ := st.Submissions.List(ctx, pr.ID, f.ID, 100, 0); len(subs) != 5 {
		t.Fatal("a dry run destroyed data")
	}
	if _, err := st.Reap(ctx, false, "schedule"); err != nil {
		t.Fatal(err)
	}

	// Everything of the project is gone, the other project is untouched.
	if _, _, err := st.Submissions.List(ctx, pr.ID, f.ID, 100, 0); haven.ErrorCode(err) != haven.ENOTFOUND {
		t.Fatalf("reading a destroyed project: %v", err)
	}
	if subs, _, err := st.Submissions.List(ctx, keep.ID, keepForm.ID, 100, 0); err != nil || len(subs) != 2 {
		t.Fatalf("the other project: %d %v", len(subs), err)
	}
	var n int
	st.DB.QueryRow(ctx, `SELECT count(*) FROM blobs WHERE project_id = ?`, pr.ID).Scan(&n)
	if n != 0 {
		t.Fatalf("%d blobs left", n)
	}
	st.DB.QueryRow(ctx, `SELECT count(*) FROM subject_index WHERE project_id = ?`, pr.ID).Scan(&n)
	if n != 0 {
		t.Fatalf("%d subject index entries left", n)
	}
	for _, m := range []string{"DOOMED", "collect:DOOMED", "uuid:doomed-"} {
		if hits := scanStore(t, st, dir, m); len(hits) > 0 {
			t.Fatalf("%q found after destruction in %v", m, hits)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "haven.db-wal")); err == nil && fi.Size() != 0 {
		t.Errorf("the WAL still holds %d bytes", fi.Size())
	}

	cert, err := st.Certificate(ctx, pr.ID)
	if err != nil {
		t.Fatal(err)
	}
	var c storage.Certificate
	json.Unmarshal(cert.Body, &c)
	if c.Destroyed["submissions"] != 5 || c.Destroyed["attachments"] != 5 || c.Destroyed["consent records"] != 5 ||
		c.Destroyed["subject objections"] != 1 || c.Destroyed["subject erasure records"] != 1 || c.Destroyed["erased instance records"] != 1 ||
		c.Kept["submissions of form d"] != 5 || len(c.KeyIDs) != 1 || c.By != "schedule" {
		t.Fatalf("certificate: %s", cert.Body)
	}
	if err := st.VerifyCertificate(ctx, cert); err != nil {
		t.Fatal(err)
	}
	forged := *cert
	forged.Body = bytes.Replace(cert.Body, []byte(`"submissions":5`), []byte(`"submissions":6`), 1)
	if err := st.VerifyCertificate(ctx, &forged); err == nil {
		t.Fatal("a changed certificate verifies")
	}

	if pgtest.Backend() == "postgres" {
		return // the rest restores a haven backup
	}
	// The backup taken before destruction, restored beside the live key
	// store, cannot be read for the destroyed project, and can for the other.
	st.Close()
	restored := t.TempDir()
	os.Rename(backup+"/haven.db", restored+"/haven.db")
	os.Rename(backup+"/blobs", restored+"/blobs")
	os.Rename(dir+"/keys", restored+"/keys")
	os.Rename(dir+"/key.json", restored+"/key.json") // names the master key file, kept outside
	old := open(t, restored)
	if _, _, err := old.Submissions.List(ctx, pr.ID, f.ID, 100, 0); err == nil {
		t.Fatal("the destroyed project's submissions can be read from an old backup")
	}
	if subs, _, err := old.Submissions.List(ctx, keep.ID, keepForm.ID, 100, 0); err != nil || len(subs) != 2 {
		t.Fatalf("the live project from the backup: %d %v", len(subs), err)
	}
	if hits := scanDir(restored, "DOOMED"); len(hits) > 0 {
		t.Fatalf("plaintext in the backup: %v", hits)
	}
}

// A destruction cut off after its first transaction finishes on the next
// run, and its certificate counts everything.
func TestDestructionResumes(t *testing.T) {
	dir := t.TempDir()
	st := open(t, dir)
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	st.DB.Now = func() time.Time { return now }
	pr, _ := filled(t, st, 230, "RESUME", now.Add(-time.Hour))
	if n, err := st.DestroyOneBatch(ctx, pr.ID); err != nil || n != 200 {
		t.Fatalf("first batch: %d %v", n, err)
	}
	st.Close() // the crash

	st = open(t, dir)
	st.DB.Now = func() time.Time { return now.AddDate(0, 0, 60) }
	if p, _ := st.Projects.Get(ctx, pr.ID); !p.Closed(now) || p.DestructionStartedAt == nil {
		t.Fatalf("after the crash: %+v", p)
	}
	if _, err := st.Reap(ctx, false, "schedule"); err != nil {
		t.Fatal(err)
	}
	cert, err := st.Certificate(ctx, pr.ID)
	if err != nil {
		t.Fatal(err)
	}
	var c storage.Certificate
	json.Unmarshal(cert.Body, &c)
	if c.Destroyed["submissions"] != 230 || c.Destroyed["attachments"] != 230 {
		t.Fatalf("certificate after resuming: %s", cert.Body)
	}
	for _, m := range []string{"RESUME", "uuid:resume-"} {
		if hits := scanStore(t, st, dir, m); len(hits) > 0 {
			t.Fatalf("%q left in %v", m, hits)
		}
	}
	if v, _ := st.DB.IntegrityCheck(ctx); v != "ok" {
		t.Fatalf("integrity: %s", v)
	}
}

// scanStore reports the files holding marker: under the data directory,
// and on PostgreSQL the database's own files and the cluster's WAL (where
// every row is written first).
func scanStore(t *testing.T, st *storage.Store, dir, marker string) []string {
	t.Helper()
	hits := scanDir(dir, marker)
	if pgtest.Backend() != "postgres" {
		return hits
	}
	var oid string
	if err := st.DB.QueryRow(ctx, `SELECT oid::text FROM pg_database WHERE datname = current_database()`).Scan(&oid); err != nil {
		t.Fatal(err)
	}
	data := pgtest.DataDir(t)
	for _, d := range []string{filepath.Join(data, "base", oid), filepath.Join(data, "pg_wal")} {
		hits = append(hits, scanDir(d, marker)...)
	}
	return hits
}
