package app_test

import (
	"bytes"
	"context"
	"io/fs"
	"mime/multipart"
	"os"
	"path/filepath"
	"testing"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/haven-org/haven/storage"
	"github.com/haven-org/haven/storage/pgtest"
)

// objects counts what is stored of encrypted objects: rows in the database
// (small objects live there) plus files in the blob store.
type objects struct {
	st  *storage.Store
	dir string
}

func (o objects) count() int {
	var n int
	o.st.DB.QueryRow(context.Background(), `SELECT count(*) FROM blobs`).Scan(&n)
	return n + countFiles(o.dir)
}

// setup opens a data directory with the household form published and returns
// the service, the project id and a principal allowed to submit.
func setup(t testing.TB) (*app.Service, int64, *haven.Principal, objects) {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	st, err := storage.OpenDir(ctx, dir, storage.Options{Database: pgtest.Database(t, dir)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc := app.New(st, app.Options{})
	pr, err := st.Projects.Create(ctx, "P", "")
	if err != nil {
		t.Fatal(err)
	}
	admin := &haven.Principal{Admin: true}
	xform, err := os.ReadFile("../formspec/testdata/household.xml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateForm(ctx, admin, pr.ID, app.Upload{Body: xform}, true); err != nil {
		t.Fatal(err)
	}
	au, err := st.Users.CreateAppUser(ctx, pr.ID, "T")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.AssignForm(ctx, admin, pr.ID, "household", "app-user", au.ID, true); err != nil {
		t.Fatal(err)
	}
	p, err := st.Users.AppUserPrincipal(ctx, *au.Token)
	if err != nil {
		t.Fatal(err)
	}
	return svc, pr.ID, p, objects{st, filepath.Join(dir, "blobs")}
}

func countFiles(dir string) int {
	n := 0
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

const seedXML = `<household id="household" version="2026110101"><head_name>A</head_name><shelter><photo>p.jpg</photo></shelter><meta><instanceID>uuid:f</instanceID></meta></household>`

func body(parts ...[3]string) []byte {
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	w.SetBoundary("BOUNDARY")
	for _, p := range parts {
		pw, _ := w.CreateFormFile(p[0], p[1])
		pw.Write([]byte(p[2]))
	}
	w.Close()
	return b.Bytes()
}

// FuzzSubmit feeds arbitrary multipart bodies to ingestion: it must never
// panic, and a refused request must leave no file behind.
func FuzzSubmit(f *testing.F) {
	f.Add(body([3]string{"xml_submission_file", "submission.xml", seedXML}, [3]string{"p.jpg", "p.jpg", "jpeg"}))
	f.Add(body([3]string{"p.jpg", "p.jpg", "jpeg"}, [3]string{"xml_submission_file", "submission.xml", seedXML}))
	f.Add(body([3]string{"xml_submission_file", "submission.xml", seedXML}, [3]string{"../p.jpg", "../p.jpg", "x"}))
	f.Add([]byte("--BOUNDARY\r\nContent-Disposition: form-data; name=\"xml_submission_file\"\r\n\r\n<x"))
	svc, pid, p, blobs := setup(f)
	base := blobs.count()
	f.Fuzz(func(t *testing.T, b []byte) {
		before := blobs.count()
		mr := multipart.NewReader(bytes.NewReader(b), "BOUNDARY")
		rec, err := svc.Submit(context.Background(), app.SubmitRequest{Principal: p, ProjectID: pid, Parts: mr})
		if err != nil {
			if haven.ErrorCode(err) == haven.EINTERNAL {
				t.Fatalf("internal error on bad input: %v", err)
			}
			if after := blobs.count(); after != before {
				t.Fatalf("refused request left %d files behind", after-before)
			}
			return
		}
		if rec.InstanceID == "" || blobs.count() < base {
			t.Fatalf("receipt %+v", rec)
		}
	})
}

func TestSubmitFileBeforeXML(t *testing.T) {
	svc, pid, p, blobs := setup(t)
	ctx := context.Background()
	// Files may come before the XML; an unreferenced one is still refused and removed.
	bad := body([3]string{"q.jpg", "q.jpg", "x"}, [3]string{"xml_submission_file", "s.xml", seedXML})
	_, err := svc.Submit(ctx, app.SubmitRequest{Principal: p, ProjectID: pid, Parts: multipart.NewReader(bytes.NewReader(bad), "BOUNDARY")})
	if haven.ErrorCode(err) != haven.EINVALID || blobs.count() != 0 {
		t.Fatalf("unreferenced file before XML: %v, %d files", err, blobs.count())
	}
	good := body([3]string{"p.jpg", "p.jpg", "jpeg"}, [3]string{"xml_submission_file", "s.xml", seedXML})
	rec, err := svc.Submit(ctx, app.SubmitRequest{Principal: p, ProjectID: pid, Parts: multipart.NewReader(bytes.NewReader(good), "BOUNDARY")})
	if err != nil || !rec.Created || len(rec.Missing) != 0 || blobs.count() != 1 {
		t.Fatalf("file before XML: %+v %v, %d files", rec, err, blobs.count())
	}
	// The same again: a duplicate, and the file is not stored twice.
	rec, err = svc.Submit(ctx, app.SubmitRequest{Principal: p, ProjectID: pid, Parts: multipart.NewReader(bytes.NewReader(good), "BOUNDARY")})
	if err != nil || !rec.Duplicate || blobs.count() != 1 {
		t.Fatalf("resend with file before XML: %+v %v, %d files", rec, err, blobs.count())
	}
}

func TestSubmitNeedsRight(t *testing.T) {
	svc, pid, _, _ := setup(t)
	stranger := &haven.Principal{ActorID: 99, Type: haven.ActorFieldKey, Roles: map[int64][]string{pid + 1: {haven.RoleAppUser}}}
	_, err := svc.Submit(context.Background(), app.SubmitRequest{Principal: stranger, ProjectID: pid,
		Parts: multipart.NewReader(bytes.NewReader(body([3]string{"xml_submission_file", "s.xml", seedXML})), "BOUNDARY")})
	// A device of another project is told this one is not there.
	if haven.ErrorCode(err) != haven.ENOTFOUND {
		t.Fatalf("stranger: %v", err)
	}
	if _, err := svc.FormList(context.Background(), stranger, pid, ""); haven.ErrorCode(err) != haven.ENOTFOUND {
		t.Fatalf("stranger's form list: %v", err)
	}
}
