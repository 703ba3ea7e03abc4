package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/haven-org/haven/app"
	"github.com/haven-org/haven/clients/collect"
	"github.com/haven-org/haven/server"
	"github.com/haven-org/haven/storage"
	"github.com/haven-org/haven/storage/pgtest"
)

// env is a Haven server on a real SQLite file in a temporary data directory,
// served over real HTTP on loopback.
type env struct {
	t     *testing.T
	dir   string
	st    *storage.Store
	srv   *httptest.Server
	token string // the administrator's bearer token
}

const adminEmail, adminPassword = "admin@example.org", "correct horse battery"

func newEnv(t *testing.T, limits ...app.Limits) *env {
	t.Helper()
	return newEnvWith(t, storage.Options{}, limits...)
}

// newEnvWith is newEnv with storage options (an object store).
func newEnvWith(t *testing.T, opts storage.Options, limits ...app.Limits) *env {
	t.Helper()
	return newEnvConfig(t, server.Config{}, opts, limits...)
}

// newEnvConfig is newEnv with the server's configuration and storage options.
func newEnvConfig(t *testing.T, cfg server.Config, opts storage.Options, limits ...app.Limits) *env {
	t.Helper()
	dir := t.TempDir()
	opts.Database = pgtest.Database(t, dir)
	st, err := storage.OpenDir(context.Background(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Users.Create(context.Background(), adminEmail, adminPassword, "", true); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var aopts app.Options
	if len(limits) > 0 {
		aopts.Limits = &limits[0]
	}
	h := server.New(cfg, app.New(st, aopts), log)
	e := &env{t: t, dir: dir, st: st, srv: httptest.NewServer(h)}
	t.Cleanup(func() { e.srv.Close(); st.Close() })
	e.token = e.login(adminEmail, adminPassword)
	return e
}

func (e *env) login(email, password string) string {
	token, _ := e.session(email, password)
	return token
}

// session logs in and returns the access token and the refresh token.
func (e *env) session(email, password string) (token, refresh string) {
	var out struct{ Token, RefreshToken string }
	if st := e.call("POST", "/v1/sessions", "", map[string]string{"email": email, "password": password}, &out); st != 200 {
		e.t.Fatalf("login %s: %d", email, st)
	}
	return out.Token, out.RefreshToken
}

// request sends a raw request; token "" sends no credentials.
func (e *env) request(method, path, token, contentType string, body io.Reader) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

// exportJob starts a background export at path, waits for it and answers
// its download; a refused start is answered as it came.
func (e *env) exportJob(base, path, token string) *http.Response {
	e.t.Helper()
	resp := e.request("POST", path, token, "", nil)
	if resp.StatusCode != http.StatusAccepted {
		return resp
	}
	var job struct{ ID, State string }
	json.NewDecoder(resp.Body).Decode(&job)
	resp.Body.Close()
	for i := 0; job.State == "running" && i < 600; i++ {
		time.Sleep(20 * time.Millisecond)
		e.call("GET", base+"/export-jobs/"+job.ID, token, nil, &job)
	}
	return e.request("GET", base+"/export-jobs/"+job.ID+"/file", token, "", nil)
}

// consoleGet reads a console page with a session's cookie.
func (e *env) consoleGet(path, token string) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest("GET", e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.AddCookie(&http.Cookie{Name: "haven_session", Value: token})
	resp, err := noRedirect.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// call sends JSON (or raw bytes) and decodes a JSON answer into out; it returns the status.
func (e *env) call(method, path, token string, body any, out any) int {
	e.t.Helper()
	var r io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		r, ct = bytes.NewReader(b), "application/xml"
	default:
		js, _ := json.Marshal(b)
		r, ct = bytes.NewReader(js), "application/json"
	}
	resp := e.request(method, path, token, ct, r)
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			e.t.Fatalf("%s %s: decoding %s: %v", method, path, raw, err)
		}
	}
	if out != nil && resp.StatusCode >= 300 {
		json.Unmarshal(raw, out)
	}
	return resp.StatusCode
}

// admin is call with the administrator's token, failing the test on a non-200.
func (e *env) admin(method, path string, body any, out any) {
	e.t.Helper()
	if st := e.call(method, path, e.token, body, out); st != 200 {
		e.t.Fatalf("%s %s: status %d", method, path, st)
	}
}

func householdXML(t testing.TB) []byte {
	b, err := os.ReadFile("../formspec/testdata/household.xml")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var pricesCSV = []byte("district,price\nnorth,10\nsouth,12\n")
var shelterPNG = []byte("\x89PNG\r\n\x1a\nnot really a picture")

// project makes a project with the household form published (media
// uploaded) and an app user; it returns the project id and a Collect client.
func (e *env) project() (int64, *collect.Client) {
	e.t.Helper()
	var pr struct{ ID int64 }
	e.admin("POST", "/v1/projects", map[string]string{"name": "Flood response"}, &pr)
	base := fmt.Sprintf("/v1/projects/%d/forms", pr.ID)
	e.admin("POST", base, householdXML(e.t), nil)
	e.admin("POST", base+"/household/draft/attachments/prices.csv", pricesCSV, nil)
	e.admin("POST", base+"/household/draft/attachments/shelter.png", shelterPNG, nil)
	e.admin("POST", base+"/household/draft/publish", nil, nil)
	return pr.ID, e.device(pr.ID, "Tablet 1")
}

// emptyProject makes a project with no form.
func (e *env) emptyProject() (pr struct{ ID int64 }) {
	e.t.Helper()
	e.admin("POST", "/v1/projects", map[string]string{"name": "P"}, &pr)
	return pr
}

// device makes an app user in a project, assigns it every form there is,
// and returns ODK Collect set up with it.
func (e *env) device(pid int64, name string) *collect.Client {
	e.t.Helper()
	_, url := e.appUser(pid, name)
	return collect.New(url)
}

// appUser makes an app user in a project, assigned every form of it (app
// users see only the forms assigned to them), and returns its actor id and
// the server URL Collect is set up with.
func (e *env) appUser(pid int64, name string) (int64, string) {
	e.t.Helper()
	var au struct {
		ID        int64
		ServerURL string
	}
	e.admin("POST", fmt.Sprintf("/v1/projects/%d/app-users", pid), map[string]string{"displayName": name}, &au)
	var forms []struct{ XMLFormID string }
	e.admin("GET", fmt.Sprintf("/v1/projects/%d/forms", pid), nil, &forms)
	for _, f := range forms {
		e.admin("POST", fmt.Sprintf("/v1/projects/%d/forms/%s/assignments/app-user/%d", pid, url.PathEscape(f.XMLFormID), au.ID), nil, nil)
	}
	return au.ID, au.ServerURL
}

const xlsxType = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

// publishXLSX uploads an XLSForm to a project and publishes it at once.
func (e *env) publishXLSX(pid int64, xlsx []byte) {
	e.t.Helper()
	resp := e.request("POST", fmt.Sprintf("/v1/projects/%d/forms?publish=true", pid), e.token, xlsxType, bytes.NewReader(xlsx))
	resp.Body.Close()
	if resp.StatusCode != 200 {
		e.t.Fatalf("publishing an XLSForm: status %d", resp.StatusCode)
	}
}

// collector makes a web user with the data collector role in a project and
// returns its actor id.
func (e *env) collector(pid int64, email, password string) int64 {
	e.t.Helper()
	var u struct{ ID int64 }
	e.admin("POST", "/v1/users", map[string]string{"email": email, "password": password}, &u)
	e.admin("POST", fmt.Sprintf("/v1/projects/%d/assignments/formfill/%d", pid, u.ID), nil, nil)
	return u.ID
}

// instance returns submission XML for the household form.
func instance(id, head string, extra ...string) []byte {
	photo := "<photo/>"
	if len(extra) > 0 {
		photo = "<photo>" + extra[0] + "</photo>"
	}
	return []byte(fmt.Sprintf(`<?xml version="1.0"?>
<household xmlns:orx="http://openrosa.org/xforms" id="household" version="2026110101"><start>2026-11-20T09:15:00.000+03:00</start>
<district>north</district><head_name>%s</head_name><members>3</members><visit_date>2026-11-20</visit_date>
<location>2.04 45.34 12 5</location><needs>food</needs><shelter><roof>tarp</roof>%s</shelter>
<member><age>34</age><sex>f</sex></member><price>10</price>
<orx:meta><orx:instanceID>%s</orx:instanceID><orx:instanceName>HH %s</orx:instanceName></orx:meta></household>`, head, photo, id, head))
}

// submissionCount returns how many submissions the household form has.
func (e *env) submissionCount(pid int64) int {
	e.t.Helper()
	var subs []json.RawMessage
	e.admin("GET", fmt.Sprintf("/v1/projects/%d/forms/household/submissions", pid), nil, &subs)
	return len(subs)
}

// blobRows counts the encrypted objects the database records (small ones
// are kept in it, larger ones in the blob store).
func (e *env) blobRows() int {
	e.t.Helper()
	var n int
	if err := e.st.DB.QueryRow(context.Background(), `SELECT count(*) FROM blobs`).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// blobFiles lists the object files in the blob store.
func (e *env) blobFiles() []string {
	var out []string
	filepath.WalkDir(filepath.Join(e.dir, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// scanFor reports every file under the data directory that contains marker.
func (e *env) scanFor(marker string) []string { return scanDirFor(e.dir, marker) }

func testLimits() app.Limits { return app.DefaultLimits }

func newBasicRequest(url, user, password string) (*http.Response, error) {
	req, _ := http.NewRequest("GET", url, nil)
	req.SetBasicAuth(user, password)
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	return resp, err
}

// scanDirFor reports the files under dir that contain marker.
func scanDirFor(dir, marker string) []string {
	var hits []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(marker)) {
				hits = append(hits, p)
			}
		}
		return nil
	})
	return hits
}
