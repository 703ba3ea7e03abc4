package server_test

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haven-org/haven/app"
	"github.com/haven-org/haven/clients/collect"
	"github.com/haven-org/haven/server"
	"github.com/haven-org/haven/storage"
	"github.com/haven-org/haven/storage/pgtest"
)

// The findings of an attacker's probes against Haven, one test each: every
// one of them failed before its fix.

// reader makes a user with a role and a clearance in a project and returns
// their token and actor id.
func (e *env) reader(pid int64, email, role, clearance string) (string, int64) {
	e.t.Helper()
	var u struct{ ID int64 }
	e.admin("POST", "/v1/users", map[string]string{"email": email, "password": "a long enough password"}, &u)
	e.admin("POST", fmt.Sprintf("/v1/projects/%d/assignments/%s/%d", pid, role, u.ID), nil, nil)
	e.admin("PUT", fmt.Sprintf("/v1/projects/%d/clearances/%d", pid, u.ID), map[string]string{"clearance": clearance}, nil)
	return e.login(email, "a long enough password"), u.ID
}

// get answers a GET with a token as text (zips unzipped) and its status.
func (e *env) get(path, token string) (int, string) {
	e.t.Helper()
	resp := e.request("GET", path, token, "", nil)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, readable(b)
}

// Finding 1: the instance name is made from a level_3 answer, so it is
// level_3 too, on every read path; the field list says so.
func TestDerivedInstanceName(t *testing.T) {
	e := newEnv(t)
	pid, dev := e.project()
	if _, err := dev.Submit(ctx, instance("uuid:d1", "SECRETNAME"), nil); err != nil {
		t.Fatal(err)
	}
	lead, _ := e.reader(pid, "l1@example.org", "datamanager", "level_2")
	base := fmt.Sprintf("/v1/projects/%d/forms/household", pid)
	for _, path := range []string{base + "/submissions", base + "/submissions/uuid:d1", base + "/submissions/uuid:d1/versions",
		base + "/export?format=csv", base + "/export?format=xlsx", base + "/export?format=geojson"} {
		st, body := e.get(path, lead)
		if st != 200 {
			t.Fatalf("%s: %d %.200s", path, st, body)
		}
		if strings.Contains(body, "SECRETNAME") {
			t.Errorf("%s: the level_3 name reached a level_2 reader through the instance name: %.300s", path, body)
		}
	}
	// The administrator sees it, so the check above can fail.
	if _, body := e.get(base+"/submissions/uuid:d1", e.token); !strings.Contains(body, "HH SECRETNAME") {
		t.Fatalf("the administrator does not see the instance name: %.300s", body)
	}
	var fields []struct{ Path, DerivedSensitivity, EffectiveSensitivity string }
	e.admin("GET", base+"/fields", nil, &fields)
	for _, f := range fields {
		if f.Path == "/household/meta/instanceName" && (f.DerivedSensitivity != "level_3" || f.EffectiveSensitivity != "level_3") {
			t.Fatalf("fields: %+v", f)
		}
	}
}

// lowered returns the household form with the photo's tier lowered to
// public and a new version.
func lowered(t *testing.T) []byte {
	x := householdXML(t)
	x = bytes.Replace(x, []byte(`haven:purpose="Evidence of shelter damage" haven:sensitivity="level_2"`), []byte(`haven:purpose="Evidence of shelter damage" haven:sensitivity="public"`), 1)
	return bytes.Replace(x, []byte(`version="2026110101"`), []byte(`version="2026110102"`), 1)
}

// Finding 2: lowering a field's tier in a new version opens nothing
// collected under the old one, and only someone cleared for the old tier
// may lower it, by an audited act that names the field.
func TestReclassifiedVersions(t *testing.T) {
	e := newEnv(t)
	pid, dev := e.project()
	photo := []byte("PHOTO-UNDER-LEVEL-2")
	if _, err := dev.Submit(ctx, instance("uuid:r1", "A", "p.jpg"), []collect.File{collect.BytesFile("p.jpg", photo)}); err != nil {
		t.Fatal(err)
	}
	form := fmt.Sprintf("/v1/projects/%d/forms/household", pid)
	// A project lead cleared for level_1 drafts the lowered version, and may not publish it.
	lead, _ := e.reader(pid, "lead@example.org", "manager", "level_1")
	if st := e.call("POST", form+"/draft", lead, lowered(t), nil); st != 200 {
		t.Fatalf("draft: %d", st)
	}
	var refusal struct{ Message string }
	if st := e.call("POST", form+"/draft/publish", lead, nil, &refusal); st != 403 || !strings.Contains(refusal.Message, "/household/shelter/photo") {
		t.Fatalf("a level_1 lead lowering a level_2 field: %d %q", st, refusal.Message)
	}
	// The administrator may, and the event names the field and its tiers.
	e.admin("POST", form+"/draft/publish", nil, nil)
	published := e.audit("action=form.publish")
	if len(published) == 0 || !strings.Contains(fmt.Sprint(published[0].Details["lowered"]), "/household/shelter/photo") || published[0].ActorID == 0 {
		t.Fatalf("the lowering is not audited with its field: %+v", published)
	}
	var failed []auditEvent
	for _, ev := range published {
		if ev.Outcome == "forbidden" {
			failed = append(failed, ev)
		}
	}
	if len(failed) != 1 {
		t.Fatalf("the refused publication is not audited: %+v", published)
	}
	// A device edits under the new version without resending the photo: it
	// carries over, and stays level_2.
	edit := bytes.Replace(instance("uuid:r2", "A", "p.jpg"), []byte("<orx:instanceName>"), []byte("<orx:deprecatedID>uuid:r1</orx:deprecatedID><orx:instanceName>"), 1)
	edit = bytes.Replace(edit, []byte(`version="2026110101"`), []byte(`version="2026110102"`), 1)
	if res, err := dev.Submit(ctx, edit, nil); err != nil || res.Status != 201 {
		t.Fatalf("edit under the new version: %+v %v", res, err)
	}
	reader, _ := e.reader(pid, "r@example.org", "datamanager", "level_1")
	if st, body := e.get(form+"/submissions/uuid:r1/attachments/p.jpg", reader); st != 403 || strings.Contains(body, "PHOTO-UNDER") {
		t.Fatalf("the photo collected under level_2, read at level_1 after the lowering: %d %.100s", st, body)
	}
	if st, body := e.get(form+"/export?format=csv&attachments=true", reader); st != 200 || strings.Contains(body, "PHOTO-UNDER") {
		t.Fatalf("export: %d, photo in it: %v", st, strings.Contains(body, "PHOTO-UNDER"))
	}
	// A photo collected under the new version only is public, as the new version says.
	v2 := bytes.Replace(instance("uuid:r3", "B", "q.jpg"), []byte(`version="2026110101"`), []byte(`version="2026110102"`), 1)
	if _, err := dev.Submit(ctx, v2, []collect.File{collect.BytesFile("q.jpg", []byte("NEW-PUBLIC-PHOTO"))}); err != nil {
		t.Fatal(err)
	}
	if st, body := e.get(form+"/submissions/uuid:r3/attachments/q.jpg", reader); st != 200 || body != "NEW-PUBLIC-PHOTO" {
		t.Fatalf("a photo collected under the new version: %d %q", st, body)
	}
}

// Finding 4: looking a person up needs clearance for the identifier's tier,
// and a refused lookup answers the same whether or not the person exists.
func TestSubjectLookupIsNoOracle(t *testing.T) {
	e := newEnv(t)
	pr := e.emptyProject()
	e.publishXLSX(pr.ID, matrixForm(t))
	dev := e.device(pr.ID, "T")
	xml := `<data id="matrix" version="1"><district>north</district><hh_id>HH-KNOWN</hh_id><hh_name>L3MARK</hh_name><meta><instanceID>uuid:s1</instanceID></meta></data>`
	if _, err := dev.Submit(ctx, []byte(xml), nil); err != nil {
		t.Fatal(err)
	}
	low, _ := e.reader(pr.ID, "low@example.org", "datamanager", "level_1")
	base := fmt.Sprintf("/v1/projects/%d/subjects/", pr.ID)
	for _, method := range []string{"GET", "DELETE"} {
		var answers []string
		for _, id := range []string{"HH-KNOWN", "HH-UNKNOWN"} {
			resp := e.request(method, base+id, low, "", nil)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			answers = append(answers, fmt.Sprint(resp.StatusCode, " ", string(b)))
		}
		if !strings.HasPrefix(answers[0], "403 ") || answers[0] != answers[1] {
			t.Fatalf("%s by a level_1 reader: a known and an unknown person answer differently: %q", method, answers)
		}
	}
	if st := e.call("POST", base+"HH-KNOWN/objection", low, nil, nil); st != 403 {
		t.Fatalf("objection by a level_1 reader: %d", st)
	}
	// Cleared for the identifier, the lookup works.
	high, _ := e.reader(pr.ID, "high@example.org", "datamanager", "level_2")
	if st, body := e.get(base+"HH-KNOWN", high); st != 200 || strings.Contains(body, "L3MARK") || !strings.Contains(body, "uuid:s1") {
		t.Fatalf("a level_2 lookup: %d %.300s", st, body)
	}
}

// Finding 5: a correction touches only fields the corrector is cleared
// for, and its answer shows only what they may see.
func TestCorrectionRespectsClearance(t *testing.T) {
	e := newEnv(t)
	pr := e.emptyProject()
	e.publishXLSX(pr.ID, matrixForm(t))
	dev := e.device(pr.ID, "T")
	xml := `<data id="matrix" version="1"><district>north</district><village>V</village><hh_id>HH-1</hh_id><phone>L2MARK</phone><hh_name>L3MARK</hh_name><meta><instanceID>uuid:c1</instanceID></meta></data>`
	if _, err := dev.Submit(ctx, []byte(xml), nil); err != nil {
		t.Fatal(err)
	}
	tok, _ := e.reader(pr.ID, "dm@example.org", "datamanager", "level_1")
	path := fmt.Sprintf("/v1/projects/%d/forms/matrix/submissions/uuid:c1/corrections", pr.ID)
	var refusal struct{ Message string }
	if st := e.call("POST", path, tok, map[string]any{"values": map[string]string{"/data/hh_name": "overwritten"}, "reason": "asked"}, &refusal); st != 403 || !strings.Contains(refusal.Message, "/data/hh_name") {
		t.Fatalf("a level_1 reader correcting a level_3 field: %d %q", st, refusal.Message)
	}
	resp := e.request("POST", path, tok, "application/json", strings.NewReader(`{"values":{"/data/village":"V2"},"reason":"the person asked"}`))
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "V2") {
		t.Fatalf("a level_1 correction: %d %s", resp.StatusCode, b)
	}
	for _, mark := range []string{"L2MARK", "L3MARK", "collect:"} {
		if strings.Contains(string(b), mark) {
			t.Errorf("the correction's answer shows %s to a level_1 reader: %s", mark, b)
		}
	}
	// The level_3 value is untouched.
	if _, body := e.get(fmt.Sprintf("/v1/projects/%d/forms/matrix/submissions/uuid:c1", pr.ID), e.token); !strings.Contains(body, "L3MARK") {
		t.Fatalf("the level_3 value changed: %.300s", body)
	}
}

// Finding 6: device tokens, session tokens and subject identifiers never
// reach the log, even from requests that fail on the server; a client that
// goes away is no server error.
func TestSecretsNeverLogged(t *testing.T) {
	e := newEnv(t)
	pid, dev := e.project()
	key := dev.ServerURL[strings.Index(dev.ServerURL, "/v1/key/")+len("/v1/key/") : strings.Index(dev.ServerURL, "/projects/")]
	_, refresh := e.session(adminEmail, adminPassword)
	// Take the project's key away: every read and write of its data now
	// fails on the server (a second opening of the data directory, whose
	// key ring has not seen the key yet).
	st := withoutProjectKeys(t, e)
	var logs bytes.Buffer
	var mu sync.Mutex
	h := server.New(server.Config{}, app.New(st, app.Options{}), slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	srv := httptest.NewServer(h)
	defer srv.Close()
	requests := []struct{ method, path string }{
		{"POST", "/v1/key/" + key + "/projects/1/submission"},
		{"GET", "/v1/key/" + key + "/projects/1/formList"},
		{"GET", "/v1/key/" + key + "/projects/1/forms/household.xml"},
		{"GET", "/v1/key/" + key + "/projects/1/forms/household/attachments/prices.csv"},
		{"GET", "/v1/key/" + key + "/projects/1/nowhere"},
		{"GET", fmt.Sprintf("/v1/projects/%d/subjects/PERSON-ID-7731", pid)},
		{"DELETE", fmt.Sprintf("/v1/projects/%d/subjects/PERSON-ID-7731", pid)},
		{"POST", fmt.Sprintf("/v1/projects/%d/subjects/PERSON-ID-7731/objection", pid)},
		{"DELETE", "/v1/sessions/" + refresh},
		{"GET", fmt.Sprintf("/v1/projects/%d/forms/household/submissions", pid)},
	}
	for _, r := range requests {
		var body io.Reader
		ct := ""
		if r.method == "POST" && strings.HasSuffix(r.path, "/submission") {
			ct, body = "multipart/form-data; boundary=B", strings.NewReader("--B\r\nContent-Disposition: form-data; name=\"xml_submission_file\"; filename=\"s.xml\"\r\n\r\n"+string(instance("uuid:l1", "A"))+"\r\n--B--\r\n")
		}
		req, _ := http.NewRequest(r.method, srv.URL+r.path, body)
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		if !strings.HasPrefix(r.path, "/v1/key/") && !strings.HasPrefix(r.path, "/v1/sessions/") {
			req.Header.Set("Authorization", "Bearer "+e.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	// A device that hangs up halfway through an upload.
	c, _ := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	fmt.Fprintf(c, "POST /v1/key/%s/projects/1/submission HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: 100000\r\n\r\n--B\r\nContent-Disposition: form-data; name=\"p.jpg\"; filename=\"p.jpg\"\r\n\r\nabc", key)
	time.Sleep(100 * time.Millisecond)
	c.Close()
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	if !strings.Contains(out, "request failed") {
		t.Fatalf("no request failed on the server, so the test proves nothing: %s", out)
	}
	for _, secret := range []string{key, "PERSON-ID-7731", refresh, strings.SplitN(refresh, ".", 2)[1]} {
		if strings.Contains(out, secret) {
			t.Errorf("the log holds a secret (%.12s...):\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "/v1/key/***/") {
		t.Errorf("the log does not show the masked device path:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "request failed") && strings.Contains(line, "canceled") {
			t.Errorf("a client that went away was logged as a server error: %s", line)
		}
	}
}

// withoutProjectKeys opens the env's data directory a second time with its
// project keys moved away (they come back when the test ends).
func withoutProjectKeys(t *testing.T, e *env) *storage.Store {
	keys, _ := filepath.Glob(filepath.Join(e.dir, "keys", "project-key-*"))
	for _, k := range keys {
		os.Rename(k, k+".away")
	}
	st, err := storage.OpenDir(context.Background(), e.dir, storage.Options{Database: pgtest.Database(t, e.dir)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		st.Close()
		for _, k := range keys {
			os.Rename(k+".away", k)
		}
	})
	return st
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Finding 7: no connection is held without a deadline. A declared
// oversize body is refused before it is read, and closes the connection; a
// body that never comes is answered within the idle timeout.
func TestBodyDeadlines(t *testing.T) {
	e := newEnv(t)
	pid, dev := e.project()
	h := server.New(server.Config{BodyIdleTimeout: 300 * time.Millisecond}, app.New(e.st, app.Options{}), slog.New(slog.NewTextHandler(io.Discard, nil)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := h.HTTPServer(ln.Addr().String())
	go hs.Serve(ln)
	defer hs.Close()
	key := dev.ServerURL[strings.Index(dev.ServerURL, "/v1/key/"):]
	send := func(head string) (status int, closed bool, took time.Duration) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		io.WriteString(c, head)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return 0, true, time.Since(start)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		_, err = br.ReadByte()
		return resp.StatusCode, err != nil && !isTimeout(err), time.Since(start)
	}
	for _, c := range []struct {
		name, head string
		want       int
		closes     bool
		within     time.Duration
	}{
		{"a login declaring 2 MB", "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n", 413, true, 200 * time.Millisecond},
		{"a submission declaring 200 MB", "POST " + key + "/submission HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: 200000000\r\n\r\n", 413, true, 200 * time.Millisecond},
		{"an unauthenticated form upload declaring 50 MB", fmt.Sprintf("POST /v1/projects/%d/forms HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\nContent-Length: 50000000\r\n\r\n", pid), 413, true, 200 * time.Millisecond},
		{"a login whose body never comes", "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n", 408, true, 2 * time.Second},
		{"a login trickling its body", "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"em", 408, true, 2 * time.Second},
		{"a submission whose body never comes", "POST " + key + "/submission HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: 5000\r\n\r\n", 400, true, 2 * time.Second},
	} {
		st, closed, took := send(c.head)
		if st != c.want || took > c.within || (c.closes && !closed) {
			t.Errorf("%s: status %d after %v, connection closed: %v; want %d within %v, closed", c.name, st, took, closed, c.want, c.within)
		}
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// recorder keeps every Authorization header a client sends.
type recorder struct {
	mu   sync.Mutex
	sent []*http.Request
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.sent = append(r.sent, req.Clone(context.Background()))
	r.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

// Finding 8: a captured Digest header cannot be played again, on the
// device routes or anywhere else; a replayed submission stores nothing.
func TestDigestReplay(t *testing.T) {
	e := newEnv(t)
	pid, _ := e.project()
	e.collector(pid, "enum@example.org", "enumerator pass 1")
	rec := &recorder{}
	dev := collect.New(fmt.Sprintf("%s/v1/projects/%d", e.srv.URL, pid))
	dev.Username, dev.Password = "enum@example.org", "enumerator pass 1"
	dev.HTTP = &http.Client{Transport: rec}
	if _, err := dev.FormList(ctx); err != nil {
		t.Fatal(err)
	}
	body := instance("uuid:dr1", "A")
	if res, err := dev.Submit(ctx, body, nil); err != nil || res.Status != 201 {
		t.Fatalf("submit: %+v %v", res, err)
	}
	var list, post *http.Request
	for _, r := range rec.sent {
		if strings.HasPrefix(r.Header.Get("Authorization"), "Digest ") {
			if strings.HasSuffix(r.URL.Path, "/formList") {
				list = r
			}
			if r.Method == "POST" {
				post = r
			}
		}
	}
	if list == nil || post == nil {
		t.Fatalf("no Digest request captured: %d requests", len(rec.sent))
	}
	// The same header again, for the same request.
	replay := func(r *http.Request, b []byte) int {
		req, _ := http.NewRequest(r.Method, r.URL.String(), bytes.NewReader(b))
		req.Header = r.Header.Clone()
		if b == nil {
			req.Body = nil
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := replay(list, nil); st != 401 {
		t.Fatalf("a replayed form list: %d", st)
	}
	var mp bytes.Buffer
	w := multipartWriter(&mp, post.Header.Get("Content-Type"))
	part, _ := w.CreateFormFile("xml_submission_file", "submission.xml")
	part.Write(bytes.Replace(body, []byte("uuid:dr1"), []byte("uuid:dr2"), 1))
	w.Close()
	if st := replay(post, mp.Bytes()); st != 401 {
		t.Fatalf("a replayed submission: %d", st)
	}
	if n := e.submissionCount(pid); n != 1 {
		t.Fatalf("%d submissions after the replay", n)
	}
	// Digest is for devices: the API does not take it.
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/v1/projects/%d/forms/household/submissions", e.srv.URL, pid), nil)
	req.Header.Set("Authorization", list.Header.Get("Authorization"))
	resp, _ := http.DefaultClient.Do(req)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(string(b), "for devices") {
		t.Fatalf("Digest on the API: %d %s", resp.StatusCode, b)
	}
	// The device itself goes on working: a new nonce, without asking the enumerator.
	if _, err := dev.FormList(ctx); err != nil {
		t.Fatalf("the device after the replay: %v", err)
	}
}

// Finding 9: every read of collected data leaves its audit event, even
// when the client abandons the download after its first bytes.
func TestAbandonedDownloadsAudited(t *testing.T) {
	e := newEnv(t)
	pid, dev := e.project()
	big := bytes.Repeat([]byte("photo bytes "), 400_000) // 4.8 MB
	if _, err := dev.Submit(ctx, instance("uuid:ab1", "A", "p.jpg"), []collect.File{collect.BytesFile("p.jpg", big)}); err != nil {
		t.Fatal(err)
	}
	path := fmt.Sprintf("/v1/projects/%d/forms/household/submissions/uuid:ab1/attachments/p.jpg", pid)
	const tries = 10
	for i := 0; i < tries; i++ {
		c, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", path, e.token)
		buf := make([]byte, 512)
		if _, err := io.ReadAtLeast(c, buf, 512); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).SetLinger(0) // a reset, not a polite close
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := len(e.events("attachment.download"))
		if n == tries {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d abandoned downloads were audited", n, tries)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Finding 12: a CSV export neutralises cells a spreadsheet would run as a
// formula; escapeFormulas=false keeps them as stored, for machine readers.
func TestCSVFormulas(t *testing.T) {
	e := newEnv(t)
	pid, dev := e.project()
	evil := instance("uuid:f1", `=HYPERLINK("http://evil.example","x")`)
	evil = bytes.Replace(evil, []byte("<members>3</members>"), []byte("<members>-3</members>"), 1)
	if _, err := dev.Submit(ctx, evil, nil); err != nil {
		t.Fatal(err)
	}
	cell := func(query string) (string, string) {
		resp := e.request("GET", fmt.Sprintf("/v1/projects/%d/forms/household/export?format=csv%s", pid, query), e.token, "", nil)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		z, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		f, _ := z.File[0].Open()
		rows, err := csv.NewReader(f).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		var name, members string
		for i, h := range rows[0] {
			switch h {
			case "head_name":
				name = rows[1][i]
			case "members":
				members = rows[1][i]
			}
		}
		return name, members
	}
	if name, members := cell(""); name != `'=HYPERLINK("http://evil.example","x")` || members != "-3" {
		t.Fatalf("neutralised: %q, a negative number: %q", name, members)
	}
	if name, _ := cell("&escapeFormulas=false"); name != `=HYPERLINK("http://evil.example","x")` {
		t.Fatalf("raw: %q", name)
	}
}

// Finding 13: a lower-cleared manager cannot lower (or raise) the
// clearance of a higher-cleared user.
func TestClearanceOfHigherCleared(t *testing.T) {
	e := newEnv(t)
	pr := e.emptyProject()
	mgr, _ := e.reader(pr.ID, "m@example.org", "manager", "level_1")
	_, high := e.reader(pr.ID, "h@example.org", "datamanager", "level_3")
	_, low := e.reader(pr.ID, "l@example.org", "datamanager", "public")
	path := func(id int64) string { return fmt.Sprintf("/v1/projects/%d/clearances/%d", pr.ID, id) }
	for _, c := range []string{"public", "level_1"} {
		if st := e.call("PUT", path(high), mgr, map[string]string{"clearance": c}, nil); st != 403 {
			t.Fatalf("a level_1 manager setting a level_3 user to %s: %d", c, st)
		}
	}
	if st := e.call("PUT", path(low), mgr, map[string]string{"clearance": "level_1"}, nil); st != 200 {
		t.Fatalf("a level_1 manager raising a public user to level_1: %d", st)
	}
	if st := e.call("PUT", path(low), mgr, map[string]string{"clearance": "level_2"}, nil); st != 403 {
		t.Fatalf("a level_1 manager granting level_2: %d", st)
	}
	var cs []struct {
		ActorID   int64
		Clearance string
	}
	e.admin("GET", fmt.Sprintf("/v1/projects/%d/clearances", pr.ID), nil, &cs)
	for _, c := range cs {
		if c.ActorID == high && c.Clearance != "level_3" {
			t.Fatalf("the level_3 user's clearance changed: %+v", c)
		}
	}
}

// Finding 14: answers carrying collected data are never cached, no answer
// is content-sniffed, and no error message names a path on the server.
func TestResponseHeadersAndMessages(t *testing.T) {
	e := newEnv(t)
	pid, dev := e.project()
	if _, err := dev.Submit(ctx, instance("uuid:h1", "A"), nil); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fmt.Sprintf("/v1/projects/%d/forms/household/submissions/uuid:h1", pid), fmt.Sprintf("/v1/projects/%d/forms/household/export", pid), "/v1/projects/999", "/"} {
		resp := e.request("GET", path, e.token, "", nil)
		resp.Body.Close()
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", path)
		}
		if strings.HasPrefix(path, "/v1/") && resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: Cache-Control %q", path, resp.Header.Get("Cache-Control"))
		}
	}
	// Take the project's key away: the answer says what to do, not where the server keeps it.
	fresh := httptest.NewServer(server.New(server.Config{}, app.New(withoutProjectKeys(t, e), app.Options{}), slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer fresh.Close()
	st, body := 0, ""
	resp, err := dev.HTTP.Post(strings.Replace(dev.ServerURL, e.srv.URL, fresh.URL, 1)+"/submission", "multipart/form-data; boundary=B",
		strings.NewReader("--B\r\nContent-Disposition: form-data; name=\"xml_submission_file\"; filename=\"s.xml\"\r\n\r\n"+string(instance("uuid:h2", "A"))+"\r\n--B--\r\n"))
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		st, body = resp.StatusCode, string(b)
	}
	if st < 500 || strings.Contains(body, e.dir) || strings.Contains(body, "/tmp") {
		t.Fatalf("a missing key: %d %s", st, body)
	}
}

// multipartWriter writes a multipart body with the boundary of contentType.
func multipartWriter(w io.Writer, contentType string) *multipart.Writer {
	mw := multipart.NewWriter(w)
	_, params, _ := mime.ParseMediaType(contentType)
	mw.SetBoundary(params["boundary"])
	return mw
}
