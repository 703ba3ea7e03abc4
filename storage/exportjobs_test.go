package storage_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/haven-org/haven/storage"
)

// Background export jobs in the database: one download takes the file;
// a running job not heard of for a while is swept with its node, a
// finished one when its time is up, each with its file; destroying the
// project removes its jobs.
func TestExportJobsLifecycle(t *testing.T) {
	st := open(t, t.TempDir())
	now := time.Now()
	st.DB.Now = func() time.Time { return now }
	pr, err := st.Projects.Create(ctx, "Exports", "")
	if err != nil {
		t.Fatal(err)
	}
	job := func(id string) {
		t.Helper()
		if err := st.ExportJobs.Create(ctx, &storage.ExportJobRow{ID: id, OwnerID: 7, ProjectID: pr.ID, XMLFormID: "f", Total: 3,
			FileName: "f.csv", ContentType: "text/csv", StartedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	job("dies")
	job("done")
	if mine, all, err := st.ExportJobs.Running(ctx, 7, now.Add(-time.Minute)); err != nil || mine != 2 || all != 2 {
		t.Fatalf("running: %d of mine, %d in all (%v)", mine, all, err)
	}
	file, err := st.Blobs.Put(ctx, pr.ID, bytes.NewReader(bytes.Repeat([]byte("EXPORTED,"), 5000)), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.ExportJobs.Finish(ctx, "done", file, 3, 45000, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if r, err := st.ExportJobs.Get(ctx, "done"); err != nil || r.State != "done" || r.BlobID != file.ID || r.Submissions != 3 {
		t.Fatalf("the finished job: %+v %v", r, err)
	}
	if took, err := st.ExportJobs.Take(ctx, "done", now.Add(time.Hour)); err != nil || !took {
		t.Fatalf("the first download: %v %v", took, err)
	}
	if took, _ := st.ExportJobs.Take(ctx, "done", now.Add(time.Hour)); took {
		t.Fatal("a second download took the file too")
	}
	// Two minutes on: the job whose node stopped beating is swept, the
	// one being downloaded is not.
	now = now.Add(2 * time.Minute)
	if n, err := st.ExportJobs.Sweep(ctx, now, now.Add(-time.Minute)); err != nil || n != 1 {
		t.Fatalf("swept %d (%v), want the dead job", n, err)
	}
	if r, _ := st.ExportJobs.Get(ctx, "dies"); r != nil {
		t.Fatal("a dead job was kept")
	}
	now = now.Add(2 * time.Hour)
	if n, err := st.ExportJobs.Sweep(ctx, now, now.Add(-time.Minute)); err != nil || n != 1 {
		t.Fatalf("swept %d (%v), want the expired job", n, err)
	}
	var blobs int
	st.DB.QueryRow(ctx, `SELECT count(*) FROM blobs WHERE project_id = ?`, pr.ID).Scan(&blobs)
	if blobs != 0 {
		t.Fatalf("%d files left after the jobs went", blobs)
	}
	// A project destroyed with an export waiting: both go.
	job("waiting")
	file, err = st.Blobs.Put(ctx, pr.ID, bytes.NewReader([]byte("EXPORTED")), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.ExportJobs.Finish(ctx, "waiting", file, 1, 8, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Destroy(ctx, pr.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if r, _ := st.ExportJobs.Get(ctx, "waiting"); r != nil {
		t.Fatal("a destroyed project's export is still there")
	}
}
