package server_test

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/haven-org/haven/app"
	"github.com/haven-org/haven/formspec/xlsform/xlsxtest"
	"github.com/haven-org/haven/storage"
)

// A background export: started, watched until done, downloaded once;
// nobody else sees it, and it leaves nothing in the data directory.
func TestBackgroundExport(t *testing.T) {
	e := newEnv(t)
	pid, dev := e.project()
	for i := 0; i < 30; i++ {
		if res, err := dev.Submit(t.Context(), instance(fmt.Sprintf("uuid:bg-%d", i), "JOBMARK"), nil); err != nil || res.Status != 201 {
			t.Fatalf("submission %d: %+v %v", i, res, err)
		}
	}
	base := fmt.Sprintf("/v1/projects/%d", pid)
	var job struct {
		ID                 string
		State              string
		Submissions, Total int
		FileName           string
	}
	if st := e.call("POST", base+"/forms/household/export-jobs?format=csv", e.token, nil, &job); st != 202 || job.ID == "" || job.Total != 30 {
		t.Fatalf("start: %d %+v", st, job)
	}
	deadline := time.Now().Add(30 * time.Second)
	for job.State == "running" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		e.call("GET", base+"/export-jobs/"+job.ID, e.token, nil, &job)
	}
	if job.State != "done" || job.Submissions != 30 || job.FileName != "household.csv.zip" {
		t.Fatalf("the job: %+v", job)
	}
	// Another user, even an administrator, does not see it.
	var u struct{ ID int64 }
	e.admin("POST", "/v1/users", map[string]any{"email": "other@example.org", "password": "a long enough password", "admin": true}, &u)
	other := e.login("other@example.org", "a long enough password")
	if st := e.call("GET", base+"/export-jobs/"+job.ID, other, nil, nil); st != 404 {
		t.Errorf("another user reads the job: %d", st)
	}
	if resp := e.request("GET", base+"/export-jobs/"+job.ID+"/file", other, "", nil); resp.StatusCode != 404 {
		t.Errorf("another user downloads the job: %d", resp.StatusCode)
	}
	resp := e.request("GET", base+"/export-jobs/"+job.ID+"/file", e.token, "", nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("download: %d %s", resp.StatusCode, body)
	}
	z, err := zip.NewReader(bytes.NewReader(body), int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := z.Open("household.csv")
	csv, _ := io.ReadAll(rc)
	n := 0
	for _, line := range strings.Split(string(csv), "\n") {
		if strings.Contains(line, "JOBMARK") {
			n++
		}
	}
	if n != 30 {
		t.Errorf("the downloaded export has %d submissions", n)
	}
	// Downloaded once, it is gone.
	if resp := e.request("GET", base+"/export-jobs/"+job.ID+"/file", e.token, "", nil); resp.StatusCode != 404 {
		t.Errorf("a second download: %d", resp.StatusCode)
	}
	if found := e.scanFor("JOBMARK"); len(found) != 0 {
		t.Errorf("the export's plaintext is on disk: %v", found)
	}
	// A job whose node stopped (no progress for over a minute) says so,
	// on any node, and its download says to start again.
	if st := e.call("POST", base+"/forms/household/export-jobs?format=csv", e.token, nil, &job); st != 202 {
		t.Fatalf("a second job: %d", st)
	}
	for job.State == "running" && time.Now().Before(deadline) { // then make it look as if its node died
		time.Sleep(50 * time.Millisecond)
		e.call("GET", base+"/export-jobs/"+job.ID, e.token, nil, &job)
	}
	e.st.DB.Write(t.Context(), func(tx *storage.Tx) error {
		_, err := tx.Exec(`UPDATE export_jobs SET state = 'running', seen_at = ? WHERE id = ?`, time.Now().Add(-2*time.Minute).UnixMilli(), job.ID)
		return err
	})
	var dead struct{ State, Error string }
	if e.call("GET", base+"/export-jobs/"+job.ID, e.token, nil, &dead); dead.State != "failed" || !strings.Contains(dead.Error, "stopped") {
		t.Errorf("a job whose node died: %+v", dead)
	}
	// The minute's sweep keeps it, as a failed job, for its owner to see.
	if _, err := app.New(e.st, app.Options{}).SweepExportJobs(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := e.call("GET", base+"/export-jobs/"+job.ID, e.token, nil, &dead); st != 200 || dead.State != "failed" {
		t.Errorf("a job whose node died, after a sweep: %d %+v", st, dead)
	}
	if resp := e.request("GET", base+"/export-jobs/"+job.ID+"/file", e.token, "", nil); resp.StatusCode != 500 {
		t.Errorf("downloading a job whose node died: %d", resp.StatusCode)
	}
	var events []struct{ Action string }
	e.admin("GET", "/v1/audit?action=submission.", nil, &events)
	var actions []string
	for _, ev := range events {
		actions = append(actions, ev.Action)
	}
	if got := strings.Join(actions, " "); !strings.Contains(got, "submission.export.download") || !strings.Contains(got, "submission.export ") {
		t.Errorf("the start and the download are not both audited: %s", got)
	}
}

// A select_one_external reads itemsets.csv: Haven makes it from the
// external_choices sheet and attaches it to the draft, as pyxform makes it.
func TestItemsetsAttached(t *testing.T) {
	e := newEnv(t)
	pr := e.emptyProject()
	x, err := xlsxtest.FromMarkdown(`
| survey           |                          |       |       |               |          |             |
|                  | type                     | name  | label | choice_filter | purpose  | sensitivity |
|                  | text                     | state | State |               | Routing  | public      |
|                  | select_one_external city | city  | City  | state=${state} | Routing | public      |
| external_choices |                          |       |       |               |          |             |
|                  | list_name                | name  | state |               |          |             |
|                  | city                     | Sydney | nsw  |               |          |             |
| settings         |                          |       |       |               |          |             |
|                  | form_id                  | legal_basis |  |               |          |             |
|                  | towns                    | public_interest | |             |          |             |
`)
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("/v1/projects/%d/forms", pr.ID)
	if resp := e.request("POST", base, e.token, xlsxType, bytes.NewReader(x)); resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("upload: %d %s", resp.StatusCode, b)
	}
	var media []struct {
		Name   string
		Exists bool
	}
	e.admin("GET", base+"/towns/draft/attachments", nil, &media)
	if len(media) != 1 || media[0].Name != "itemsets.csv" || !media[0].Exists {
		t.Fatalf("the draft's media: %+v", media)
	}
	resp := e.request("GET", base+"/towns/draft/attachments/itemsets.csv", e.token, "", nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "\"list_name\",\"name\",\"state\"\r\n\"city\",\"Sydney\",\"nsw\"\r\n"; string(body) != want {
		t.Errorf("itemsets.csv: %q", body)
	}
	// Published, devices get it in the manifest.
	e.admin("POST", base+"/towns/draft/publish", nil, nil)
	e.admin("GET", base+"/towns/attachments", nil, &media)
	if len(media) != 1 || !media[0].Exists {
		t.Errorf("the published version's media: %+v", media)
	}
}
