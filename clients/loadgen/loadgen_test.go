package loadgen_test

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/haven-org/haven/clients/loadgen"
	"github.com/haven-org/haven/formspec"
	"github.com/haven-org/haven/server"
	"github.com/haven-org/haven/storage"
)

// TestRun loads a real server for a moment with flaky devices: every
// acknowledged submission is stored exactly once, and cut uploads store nothing.
func TestRun(t *testing.T) {
	ctx := context.Background()
	st, err := storage.OpenDir(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	svc := app.New(st, app.Options{})
	srv := httptest.NewServer(server.New(server.Config{}, svc, slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer srv.Close()
	pr, _ := st.Projects.Create(ctx, "P", "")
	admin := &haven.Principal{Admin: true}
	if _, err := svc.CreateForm(ctx, admin, pr.ID, app.Upload{Body: loadgen.BenchForm("1")}, true); err != nil {
		t.Fatal(err)
	}
	au, _ := st.Users.CreateAppUser(ctx, pr.ID, "T")
	if err := svc.AssignForm(ctx, admin, pr.ID, "bench", "app-user", au.ID, true); err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/v1/key/" + *au.Token + "/projects/1"

	rep, err := loadgen.Run(ctx, loadgen.Config{ServerURL: url, Devices: 4, Count: 60, Duration: 20 * time.Second, Photo: 40_000, Flaky: 0.3})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Operations != 60 || len(rep.Errors) != 0 || rep.CutUploads == 0 || rep.LatencyMS.P50 <= 0 || rep.LatencyMS.Max < rep.LatencyMS.P99 {
		t.Fatalf("report: %+v", rep)
	}
	f, _ := st.Forms.Get(ctx, pr.ID, "bench")
	subs, total, err := st.Submissions.List(ctx, pr.ID, f.ID, 1000, 0)
	if err != nil || total != 60 {
		t.Fatalf("%d submissions stored for 60 acknowledged (%v)", total, err)
	}
	for _, s := range subs {
		if s.Current.AttachmentsPresent != 1 {
			t.Fatalf("%s stored without its photo", s.InstanceID)
		}
	}
	var objects int
	st.DB.QueryRow(ctx, `SELECT count(*) FROM blobs`).Scan(&objects)
	if objects != 60 {
		t.Fatalf("%d stored objects for 60 photos: cut uploads left something", objects)
	}
}

// TestInstanceFitsForm: generated answers pass the form's own validation.
func TestInstanceFitsForm(t *testing.T) {
	f, err := formspec.Parse(loadgen.BenchForm("7"))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(f.Fields()); n < 31 {
		t.Fatalf("the benchmark form has %d fields", n)
	}
	doc := loadgen.Instance(f, formspec.NewInstanceID(), "p.jpg", rand.New(rand.NewPCG(1, 2)))
	inst, err := formspec.ParseInstance(doc, formspec.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if v := f.Validate(inst); len(v.Problems) != 0 || len(v.Files) != 1 {
		t.Fatalf("problems %+v files %v", v.Problems, v.Files)
	}
	if len(doc) < 1500 || len(doc) > 3000 {
		t.Fatalf("a benchmark submission is %d bytes, not about 2 KB", len(doc))
	}
}

// BenchmarkInstance: filling in the benchmark form, once per simulated
// submission, on the cores the server under test uses too.
func BenchmarkInstance(b *testing.B) {
	f, err := formspec.Parse(loadgen.BenchForm("1"))
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	for b.Loop() {
		loadgen.Instance(f, "uuid:x", "p.jpg", r)
	}
}
