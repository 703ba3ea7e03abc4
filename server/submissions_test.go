package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/haven-org/haven/app"
	"github.com/haven-org/haven/clients/collect"
	"github.com/haven-org/haven/server"
	"github.com/haven-org/haven/storage/pgtest"
)

type subView struct {
	InstanceID     string
	CurrentVersion struct {
		InstanceID          string
		DeprecatedID        string
		InstanceName        string
		AttachmentsPresent  int
		AttachmentsExpected int
	}
}

func (e *env) submission(pid int64, id string) (subView, int) {
	var s subView
	st := e.call("GET", fmt.Sprintf("/v1/projects/%d/forms/household/submissions/%s", pid, id), e.token, nil, &s)
	return s, st
}

func (e *env) attachment(pid int64, id, name string) []byte {
	resp := e.request("GET", fmt.Sprintf("/v1/projects/%d/forms/household/submissions/%s/attachments/%s", pid, id, name), e.token, "", nil)
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil
	}
	b, _ := io.ReadAll(resp.Body)
	return b
}

func TestSplitUpload(t *testing.T) {
	lim := testLimits()
	lim.MaxBody = 300_000
	e := newEnv(t, lim)
	pid, dev := e.project()
	// The household form has one photo field; edit the form to have three.
	base := fmt.Sprintf("/v1/projects/%d/forms/household", pid)
	xform := householdXML(t)
	xform = bytes.Replace(xform, []byte("<photo/>"), []byte("<photo/><photo2/><photo3/>"), 1)
	xform = bytes.Replace(xform, []byte(`<bind nodeset="/household/shelter/photo" `),
		[]byte(`<bind nodeset="/household/shelter/photo2" type="binary" haven:purpose="Evidence"/><bind nodeset="/household/shelter/photo3" type="binary" haven:purpose="Evidence"/><bind nodeset="/household/shelter/photo" `), 1)
	e.admin("POST", base+"/draft", xform, nil)
	e.admin("POST", base+"/draft/publish?version=3photos", nil, nil)

	doc := bytes.Replace(instance("uuid:split", "Amina", "a.jpg"), []byte("<photo>a.jpg</photo>"),
		[]byte("<photo>a.jpg</photo><photo2>b.jpg</photo2><photo3>c.jpg</photo3>"), 1)
	doc = bytes.Replace(doc, []byte(`version="2026110101"`), []byte(`version="3photos"`), 1)
	files := []collect.File{
		collect.BytesFile("a.jpg", bytes.Repeat([]byte("a"), 200_000)),
		collect.BytesFile("b.jpg", bytes.Repeat([]byte("b"), 200_000)),
		collect.BytesFile("c.jpg", bytes.Repeat([]byte("c"), 200_000)),
	}
	// Send only the first request of the split, as a device cut off after it would.
	if b := collect.Batches(int64(len(doc)), files, lim.MaxBody); len(b) != 3 {
		t.Fatalf("batches: %d", len(b))
	}
	res, err := dev.Submit(ctx, doc, files[:1])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Message, "did not arrive") {
		t.Fatalf("message for a partial submission: %q", res.Message)
	}
	s, _ := e.submission(pid, "uuid:split")
	if s.CurrentVersion.AttachmentsExpected != 3 || s.CurrentVersion.AttachmentsPresent != 1 {
		t.Fatalf("after the first part: %+v", s.CurrentVersion)
	}
	// Collect retries the whole submission: split in three, *isIncomplete* on the first two.
	res, err = dev.Submit(ctx, doc, files)
	if err != nil || res.Posts != 3 {
		t.Fatalf("split submit: %+v %v", res, err)
	}
	s, _ = e.submission(pid, "uuid:split")
	if s.CurrentVersion.AttachmentsPresent != 3 {
		t.Fatalf("after the split upload: %+v", s.CurrentVersion)
	}
	for _, f := range files {
		r, _ := f.Open()
		want, _ := io.ReadAll(r)
		if !bytes.Equal(e.attachment(pid, "uuid:split", f.Name), want) {
			t.Fatalf("%s differs", f.Name)
		}
	}
	if n := e.submissionCount(pid); n != 1 {
		t.Fatalf("%d submissions", n)
	}
	// The resent a.jpg was not stored twice: 2 small form media kept in the
	// database, 3 photos of 200 KB in the blob store.
	if rows, files := e.blobRows(), len(e.blobFiles()); rows != 5 || files != 3 {
		t.Fatalf("%d objects, %d files; want 5 and 3", rows, files)
	}
}

func TestResend(t *testing.T) {
	e := newEnv(t)
	pid, dev := e.project()
	doc := instance("uuid:dup", "Amina", "p.jpg")
	photo := collect.BytesFile("p.jpg", []byte("photo bytes"))
	for i := 0; i < 3; i++ {
		res, err := dev.Submit(ctx, doc, []collect.File{photo})
		if err != nil || res.Status != 201 {
			t.Fatalf("send %d: %+v %v", i, res, err)
		}
		if i > 0 && !strings.Contains(res.Message, "already received") {
			t.Fatalf("resend message: %q", res.Message)
		}
	}
	if n := e.submissionCount(pid); n != 1 {
		t.Fatalf("%d submissions after identical resends", n)
	}
	if n := e.blobRows(); n != 3 {
		t.Fatalf("%d stored objects, want 3 (2 media + 1 photo)", n)
	}
	// Same instanceID, different content: a conflict, nothing changes.
	res, err := dev.Submit(ctx, instance("uuid:dup", "Someone else", "p.jpg"), []collect.File{photo})
	if collect.StatusOf(err) != 409 || !strings.Contains(res.Message, "different submission") {
		t.Fatalf("conflicting resend: %v %+v", err, res)
	}
	s, _ := e.submission(pid, "uuid:dup")
	if s.CurrentVersion.InstanceName != "HH Amina" {
		t.Fatalf("the conflicting resend changed the submission: %+v", s)
	}
}

func TestEdit(t *testing.T) {
	e := newEnv(t)
	pid, dev := e.project()
	photo := []byte("original photo")
	if _, err := dev.Submit(ctx, instance("uuid:v1", "Amina", "p.jpg"), []collect.File{collect.BytesFile("p.jpg", photo)}); err != nil {
		t.Fatal(err)
	}
	edit := func(newID, oldID, name string) []byte {
		doc := instance(newID, name, "p.jpg")
		return bytes.Replace(doc, []byte("<orx:instanceName>"), []byte("<orx:deprecatedID>"+oldID+"</orx:deprecatedID><orx:instanceName>"), 1)
	}
	// The edit does not resend the photo: it carries over by name.
	res, err := dev.Submit(ctx, edit("uuid:v2", "uuid:v1", "Amina Y."), nil)
	if err != nil || res.Status != 201 {
		t.Fatalf("edit: %+v %v", res, err)
	}
	s, st := e.submission(pid, "uuid:v1")
	if st != 200 || s.CurrentVersion.InstanceID != "uuid:v2" || s.CurrentVersion.DeprecatedID != "uuid:v1" || s.CurrentVersion.InstanceName != "HH Amina Y." {
		t.Fatalf("after edit: %d %+v", st, s)
	}
	if !bytes.Equal(e.attachment(pid, "uuid:v1", "p.jpg"), photo) {
		t.Fatal("the photo did not carry over to the edit")
	}
	var versions []struct {
		InstanceID string
		Current    bool
	}
	e.admin("GET", fmt.Sprintf("/v1/projects/%d/forms/household/submissions/uuid:v1/versions", pid), nil, &versions)
	if len(versions) != 2 || versions[0].InstanceID != "uuid:v2" || !versions[0].Current || versions[1].Current {
		t.Fatalf("versions: %+v", versions)
	}
	if n := e.submissionCount(pid); n != 1 {
		t.Fatalf("an edit must not make a new submission: %d", n)
	}
	// An edit of a version already replaced conflicts; an edit of an unknown one is not found.
	if _, err := dev.Submit(ctx, edit("uuid:v3", "uuid:v1", "X"), nil); collect.StatusOf(err) != 409 {
		t.Fatalf("edit of a replaced version: %v", err)
	}
	if _, err := dev.Submit(ctx, edit("uuid:v4", "uuid:nope", "X"), nil); collect.StatusOf(err) != 404 {
		t.Fatalf("edit of an unknown submission: %v", err)
	}
}

func TestDigestAndBasic(t *testing.T) {
	e := newEnv(t)
	pid, _ := e.project()
	var u struct{ ID int64 }
	e.admin("POST", "/v1/users", map[string]string{"email": "enum@example.org", "password": "enumerator pass 1"}, &u)
	url := fmt.Sprintf("%s/v1/projects/%d", e.srv.URL, pid)

	// Without a role in the project: the project is not there for them.
	dev := collect.New(url)
	dev.Username, dev.Password = "enum@example.org", "enumerator pass 1"
	if _, err := dev.FormList(ctx); collect.StatusOf(err) != 404 {
		t.Fatalf("user without a role: %v", err)
	}
	e.admin("POST", fmt.Sprintf("/v1/projects/%d/assignments/formfill/%d", pid, u.ID), nil, nil)
	forms, err := dev.FormList(ctx)
	if err != nil || len(forms) != 1 || !strings.HasPrefix(forms[0].DownloadURL, url+"/forms/") {
		t.Fatalf("form list over Digest: %+v %v", forms, err)
	}
	if _, err := dev.Download(ctx, forms[0].DownloadURL, forms[0].Hash); err != nil {
		t.Fatal(err)
	}
	res, err := dev.Submit(ctx, instance("uuid:digest", "A"), nil)
	if err != nil || res.Status != 201 {
		t.Fatalf("submit over Digest: %+v %v", res, err)
	}
	var subs []struct{ SubmitterID int64 }
	e.admin("GET", fmt.Sprintf("/v1/projects/%d/forms/household/submissions", pid), nil, &subs)
	if len(subs) != 1 || subs[0].SubmitterID != u.ID {
		t.Fatalf("submitter: %+v", subs)
	}
	// A data collector cannot read submissions.
	tok := e.login("enum@example.org", "enumerator pass 1")
	if st := e.call("GET", fmt.Sprintf("/v1/projects/%d/forms/household/submissions", pid), tok, nil, nil); st != 403 {
		t.Fatalf("data collector reading submissions: %d", st)
	}

	// Wrong password: 401 again.
	bad := collect.New(url)
	bad.Username, bad.Password = "enum@example.org", "wrong password"
	if _, err := bad.FormList(ctx); collect.StatusOf(err) != 401 {
		t.Fatalf("wrong password: %v", err)
	}
	// No credentials: 401 with a Digest challenge, and over plain http no
	// invitation to send the password in clear (Basic).
	resp := e.request("GET", fmt.Sprintf("/v1/projects/%d/formList", pid), "", "", nil)
	resp.Body.Close()
	ch := strings.Join(resp.Header.Values("WWW-Authenticate"), "|")
	if resp.StatusCode != 401 || !strings.Contains(ch, "Digest ") || strings.Contains(ch, "Basic ") || !strings.Contains(ch, `qop="auth"`) {
		t.Fatalf("challenge: %d %q", resp.StatusCode, ch)
	}
	// Basic over plain http is refused, even with the right password.
	r2, _ := newBasicRequest(url+"/formList", "enum@example.org", "enumerator pass 1")
	if r2.StatusCode != 401 {
		t.Fatalf("Basic over http: %d", r2.StatusCode)
	}
}

func TestRevokedAppUser(t *testing.T) {
	e := newEnv(t)
	pid, dev := e.project()
	var aus []struct{ ID int64 }
	e.admin("GET", fmt.Sprintf("/v1/projects/%d/app-users", pid), nil, &aus)
	e.admin("DELETE", fmt.Sprintf("/v1/projects/%d/app-users/%d", pid, aus[0].ID), nil, nil)
	_, err := dev.FormList(ctx)
	if collect.StatusOf(err) != 403 || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("revoked token: %v", err)
	}
	if _, err := dev.Submit(ctx, instance("uuid:x", "A"), nil); collect.StatusOf(err) != 403 {
		t.Fatalf("revoked token submitting: %v", err)
	}
	// A made-up token is refused the same way.
	fake := collect.New(strings.Replace(dev.ServerURL, "/key/", "/key/x", 1))
	if _, err := fake.FormList(ctx); collect.StatusOf(err) != 403 {
		t.Fatalf("made-up token: %v", err)
	}
}

func TestAccessControl(t *testing.T) {
	e := newEnv(t)
	pid, dev := e.project()
	if _, err := dev.Submit(ctx, instance("uuid:ac", "A", "p.jpg"), []collect.File{collect.BytesFile("p.jpg", []byte("x"))}); err != nil {
		t.Fatal(err)
	}
	// A second project with its own app user.
	var other struct{ ID int64 }
	e.admin("POST", "/v1/projects", map[string]string{"name": "Other"}, &other)
	var au struct{ ServerURL string }
	e.admin("POST", fmt.Sprintf("/v1/projects/%d/app-users", other.ID), map[string]string{"displayName": "T"}, &au)
	otherDev := collect.New(strings.Replace(au.ServerURL, fmt.Sprintf("/projects/%d", other.ID), fmt.Sprintf("/projects/%d", pid), 1))
	if _, err := otherDev.FormList(ctx); collect.StatusOf(err) != 404 {
		t.Fatalf("an app user of another project listing forms: %v", err)
	}
	if _, err := otherDev.Submit(ctx, instance("uuid:ac2", "A"), nil); collect.StatusOf(err) != 404 {
		t.Fatalf("an app user of another project submitting: %v", err)
	}
	// Every read path of collected data: without credentials 401, as an app
	// user (token in the URL) 403, as a data collector 403.
	e.collector(pid, "c@example.org", "collector pass")
	collector, collectorRefresh := e.session("c@example.org", "collector pass")
	key := strings.TrimSuffix(dev.ServerURL[strings.Index(dev.ServerURL, "/v1/key/"):], fmt.Sprintf("/projects/%d", pid))
	paths := []string{
		"/forms/household/submissions",
		"/forms/household/submissions/uuid:ac",
		"/forms/household/submissions/uuid:ac.xml",
		"/forms/household/submissions/uuid:ac/versions",
		"/forms/household/submissions/uuid:ac/attachments",
		"/forms/household/submissions/uuid:ac/attachments/p.jpg",
	}
	for _, p := range paths {
		path := fmt.Sprintf("/v1/projects/%d%s", pid, p)
		if st := e.call("GET", path, "", nil, nil); st != 401 {
			t.Errorf("%s without credentials: %d", p, st)
		}
		if st := e.call("GET", path, collector, nil, nil); st != 403 {
			t.Errorf("%s as a data collector: %d", p, st)
		}
		if st := e.call("GET", key+path[3:], "", nil, nil); st != 404 && st != 403 && st != 405 {
			t.Errorf("%s with an app user's key: %d", p, st)
		}
		if st := e.call("GET", path, e.token, nil, nil); st != 200 {
			t.Errorf("%s as the administrator: %d", p, st)
		}
	}
	// Forms and projects: a data collector cannot publish or create app users.
	if st := e.call("POST", fmt.Sprintf("/v1/projects/%d/forms", pid), collector, householdXML(t), nil); st != 403 {
		t.Errorf("data collector creating a form: %d", st)
	}
	if st := e.call("POST", fmt.Sprintf("/v1/projects/%d/app-users", pid), collector, map[string]string{"displayName": "x"}, nil); st != 403 {
		t.Errorf("data collector creating an app user: %d", st)
	}
	if st := e.call("POST", "/v1/projects", collector, map[string]string{"name": "x"}, nil); st != 403 {
		t.Errorf("data collector creating a project: %d", st)
	}
	// A logged-out token stops working at once.
	e.admin("DELETE", "/v1/sessions/"+collectorRefresh, nil, nil)
	if st := e.call("GET", "/v1/users/current", collector, nil, nil); st != 401 {
		t.Errorf("token after logout: %d", st)
	}
	var errBody struct {
		Code    float64
		Message string
	}
	if st := e.call("GET", "/v1/projects/999", e.token, nil, &errBody); st != 404 || errBody.Code != 404.1 || errBody.Message == "" {
		t.Errorf("Central-style error: %d %+v", st, errBody)
	}
	if st := e.call("PUT", "/", e.token, nil, &errBody); st != 405 || !strings.Contains(errBody.Message, "PUT") {
		t.Errorf("a method the address does not take: %d %+v", st, errBody)
	}
}

func TestEncryptedAtRest(t *testing.T) {
	pgtest.SQLiteOnly(t, "it scans the data directory, which holds the database only on SQLite; on PostgreSQL the files are the cluster's (docs/scale-out.md)")
	e := newEnv(t)
	pid, dev := e.project()
	const marker = "ZXQMARKER"
	doc := instance("uuid:secret", "Amina"+marker, "p.jpg")
	photo := []byte("photo of " + marker + strings.Repeat(" and more", 1000))
	if _, err := dev.Submit(ctx, doc, []collect.File{collect.BytesFile("p.jpg", photo)}); err != nil {
		t.Fatal(err)
	}
	// Readable through the API...
	if s, _ := e.submission(pid, "uuid:secret"); !strings.Contains(s.CurrentVersion.InstanceName, marker) {
		t.Fatalf("instance name: %+v", s)
	}
	if !bytes.Equal(e.attachment(pid, "uuid:secret", "p.jpg"), photo) {
		t.Fatal("photo differs")
	}
	// ...and in no file on disk: database, WAL, blobs.
	e.st.DB.Close()
	if hits := e.scanFor(marker); len(hits) > 0 {
		t.Fatalf("plaintext %q found on disk in %v", marker, hits)
	}
	if hits := e.scanFor("uuid:secret"); len(hits) == 0 {
		t.Fatal("the scan finds nothing at all: it cannot be trusted")
	}
}

func TestBasicBehindTLS(t *testing.T) {
	e := newEnv(t)
	pid, _ := e.project()
	e.collector(pid, "k@example.org", "kobo collect pass")
	// The same data directory served by a server told a TLS proxy sits in front.
	tls := httptest.NewServer(server.New(server.Config{BehindTLS: true}, app.New(e.st, app.Options{}), slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer tls.Close()
	url := fmt.Sprintf("/v1/projects/%d/formList", pid)
	if r, _ := newBasicRequest(tls.URL+url, "k@example.org", "kobo collect pass"); r.StatusCode != 200 {
		t.Fatalf("Basic behind TLS: %d", r.StatusCode)
	}
	if r, _ := newBasicRequest(tls.URL+url, "k@example.org", "wrong"); r.StatusCode != 401 {
		t.Fatalf("Basic with a wrong password: %d", r.StatusCode)
	}
	if r, _ := newBasicRequest(e.srv.URL+url, "k@example.org", "kobo collect pass"); r.StatusCode != 401 {
		t.Fatalf("Basic over plain http: %d", r.StatusCode)
	}
	// Behind TLS both challenges are offered, and browsers are told to keep to https.
	resp, err := http.Get(tls.URL + url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ch := strings.Join(resp.Header.Values("WWW-Authenticate"), "|")
	if resp.StatusCode != 401 || !strings.Contains(ch, "Digest ") || !strings.Contains(ch, "Basic ") || resp.Header.Get("Strict-Transport-Security") == "" {
		t.Fatalf("challenge behind TLS: %d %q, HSTS %q", resp.StatusCode, ch, resp.Header.Get("Strict-Transport-Security"))
	}
}

func TestPagingAndLimits(t *testing.T) {
	lim := testLimits()
	lim.MaxAttachments = 1
	e := newEnv(t, lim)
	pid, dev := e.project()
	for i := 0; i < 5; i++ {
		if _, err := dev.Submit(ctx, instance(fmt.Sprintf("uuid:p-%d", i), "A"), nil); err != nil {
			t.Fatal(err)
		}
	}
	resp := e.request("GET", fmt.Sprintf("/v1/projects/%d/forms/household/submissions?limit=2&offset=3", pid), e.token, "", nil)
	var page []struct{ InstanceID string }
	json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if resp.Header.Get("X-Total-Count") != "5" || len(page) != 2 || page[0].InstanceID != "uuid:p-3" || page[1].InstanceID != "uuid:p-4" {
		t.Fatalf("page: %+v total %s", page, resp.Header.Get("X-Total-Count"))
	}
	if st := e.call("GET", fmt.Sprintf("/v1/projects/%d/forms/household/submissions?limit=x", pid), e.token, nil, nil); st != 400 {
		t.Fatalf("bad limit: %d", st)
	}
	// More files in one request than the limit: refused whole.
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	fw, _ := w.CreateFormFile("xml_submission_file", "s.xml")
	fw.Write(instance("uuid:many", "A", "a.jpg"))
	for _, n := range []string{"a.jpg", "b.jpg"} {
		fw, _ := w.CreateFormFile(n, n)
		fw.Write([]byte("x"))
	}
	w.Close()
	st, msg, _ := post(t, dev.ServerURL, w.FormDataContentType(), &b)
	if st != 413 || !strings.Contains(msg, "more than 1 files") {
		t.Fatalf("too many files: %d %s", st, msg)
	}
	if _, code := e.submission(pid, "uuid:many"); code != 404 {
		t.Fatalf("the refused submission is visible: %d", code)
	}
}

func TestDeleteSubmission(t *testing.T) {
	e := newEnv(t)
	pid, dev := e.project()
	photo := bytes.Repeat([]byte("p"), 100_000) // a file of its own in the blob store
	if _, err := dev.Submit(ctx, instance("uuid:del-1", "A", "p.jpg"), []collect.File{collect.BytesFile("p.jpg", photo)}); err != nil {
		t.Fatal(err)
	}
	edit := bytes.Replace(instance("uuid:del-2", "A2", "p.jpg"), []byte("<orx:instanceName>"), []byte("<orx:deprecatedID>uuid:del-1</orx:deprecatedID><orx:instanceName>"), 1)
	if _, err := dev.Submit(ctx, edit, nil); err != nil { // the photo carries over: one object, two versions
		t.Fatal(err)
	}
	if _, err := dev.Submit(ctx, instance("uuid:keep", "B", "q.jpg"), []collect.File{collect.BytesFile("q.jpg", photo)}); err != nil {
		t.Fatal(err)
	}
	rows, files := e.blobRows(), len(e.blobFiles())
	path := fmt.Sprintf("/v1/projects/%d/forms/household/submissions/uuid:del-1", pid)

	e.collector(pid, "c2@example.org", "collector pass")
	if st := e.call("DELETE", path, e.login("c2@example.org", "collector pass"), nil, nil); st != 403 {
		t.Fatalf("a data collector deleting: %d", st)
	}
	if st := e.call("DELETE", path, "", nil, nil); st != 401 {
		t.Fatalf("deleting without credentials: %d", st)
	}
	e.admin("DELETE", path, nil, nil)
	if _, st := e.submission(pid, "uuid:del-1"); st != 404 {
		t.Fatalf("after deletion: %d", st)
	}
	if st := e.call("DELETE", path, e.token, nil, nil); st != 404 {
		t.Fatalf("deleting again: %d", st)
	}
	if r, f := e.blobRows(), len(e.blobFiles()); r != rows-1 || f != files-1 {
		t.Fatalf("objects %d -> %d, files %d -> %d: the photo should be gone", rows, r, files, f)
	}
	if !bytes.Equal(e.attachment(pid, "uuid:keep", "q.jpg"), photo) {
		t.Fatal("another submission's photo was touched")
	}
	// The instanceIDs of the erased versions are free again: the device may resend.
	if res, err := dev.Submit(ctx, instance("uuid:del-1", "A", "p.jpg"), []collect.File{collect.BytesFile("p.jpg", photo)}); err != nil || res.Status != 201 {
		t.Fatalf("resend after deletion: %+v %v", res, err)
	}
}
