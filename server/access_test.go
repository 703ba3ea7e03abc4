package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/clients/collect"
	"github.com/haven-org/haven/server"
	"github.com/haven-org/haven/storage"
)

// from sends a request as if from addr, through the trusted proxy on
// loopback (X-Forwarded-For), and returns the status and body.
func (e *env) from(addr, method, path, token string, body string) (int, string) {
	e.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if addr != "" {
		req.Header.Set("X-Forwarded-For", addr)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// viaProxy makes a device's requests arrive as if from addr.
type viaProxy struct{ addr string }

func (v viaProxy) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Forwarded-For", v.addr)
	return http.DefaultTransport.RoundTrip(r)
}

func (e *env) events(action string) []haven.AuditEvent {
	e.t.Helper()
	evs, err := e.st.Audit.List(context.Background(), storage.AuditFilter{Action: action})
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

func mustAllow(t *testing.T, s ...string) haven.Allowlist {
	l, err := haven.ParseAllowlist(s...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestAllowlists(t *testing.T) {
	ctx := context.Background()
	e := newEnvConfig(t, server.Config{
		DeviceAllow:    mustAllow(t, "192.0.2.0/24, 2001:db8::/32"),
		TrustedProxies: mustAllow(t, "127.0.0.1"),
	}, storage.Options{})
	pid, _ := e.project()
	var au struct{ ServerURL string }
	e.admin("POST", fmt.Sprintf("/v1/projects/%d/app-users", pid), map[string]string{"displayName": "T"}, &au)
	device := func(addr string) *collect.Client {
		d := collect.New(au.ServerURL)
		d.HTTP = &http.Client{Transport: viaProxy{addr}}
		return d
	}

	// Site-wide device list: a tablet outside it is refused with a message
	// Collect shows, the refusal is audited, and nothing is stored.
	_, err := device("198.51.100.7").FormList(ctx)
	if collect.StatusOf(err) != 403 || !strings.Contains(err.Error(), "198.51.100.7") || !strings.Contains(err.Error(), "allowlist") {
		t.Fatalf("device outside the list: %v", err)
	}
	if _, err := device("192.0.2.9").FormList(ctx); err != nil {
		t.Fatalf("device inside the list: %v", err)
	}
	if _, err := device("2001:db8::5").FormList(ctx); err != nil {
		t.Fatalf("IPv6 device inside the list: %v", err)
	}
	if _, err := device("198.51.100.7").Submit(ctx, instance("uuid:ip-1", "A"), nil); collect.StatusOf(err) != 403 {
		t.Fatalf("submission from outside the list: %v", err)
	}
	if n := e.submissionCount(pid); n != 0 {
		t.Fatalf("a refused submission was stored: %d", n)
	}
	refused := e.events("request.refused") // the form list, and the submission's HEAD preflight
	if len(refused) != 2 || refused[0].Address != "198.51.100.7" || refused[0].Details["refused"] != "site device allowlist" || refused[0].Outcome != haven.EFORBIDDEN {
		t.Fatalf("form list refusal audit: %+v", refused)
	}
	// A submission posted without the preflight is refused in its own audited event.
	if st, body := e.from("198.51.100.7", "POST", strings.TrimPrefix(au.ServerURL, e.srv.URL)+"/submission", "", "x"); st != 403 || !strings.Contains(body, "OpenRosaResponse") {
		t.Fatalf("posted submission: %d %s", st, body)
	}
	subs := e.events("submission.create")
	if len(subs) != 1 || subs[0].Outcome != haven.EFORBIDDEN || subs[0].Details["refused"] != "site device allowlist" {
		t.Fatalf("submission refusal audit: %+v", subs)
	}
	// A spoofed chain: only the address the trusted proxy saw counts. From
	// 192.0.2.9 alone the request passes the list (and asks for credentials).
	formList := fmt.Sprintf("/v1/projects/%d/formList", pid)
	if st, _ := e.from("192.0.2.9", "GET", formList, "", ""); st != 401 {
		t.Fatalf("from an allowed address: %d", st)
	}
	if st, _ := e.from("192.0.2.9, 198.51.100.7", "GET", formList, "", ""); st != 403 {
		t.Fatalf("a spoofed first address was believed: %d", st)
	}
	// The API is not under the device list.
	if st, _ := e.from("198.51.100.7", "GET", fmt.Sprintf("/v1/projects/%d", pid), e.token, ""); st != 200 {
		t.Fatalf("API from outside the device list: %d", st)
	}

	// Per project: a lead cannot lock themselves out...
	path := fmt.Sprintf("/v1/projects/%d", pid)
	st, body := e.from("198.51.100.7", "PATCH", path, e.token, `{"apiAllow":["203.0.113.0/24"]}`)
	if st != 400 || !strings.Contains(body, "198.51.100.7") {
		t.Fatalf("lock-out: %d %s", st, body)
	}
	if st, body := e.from("203.0.113.5", "PATCH", path, e.token, `{"apiAllow":["203.0.113.0/24", "not-an-address"]}`); st != 400 || !strings.Contains(body, "not-an-address") {
		t.Fatalf("bad entry: %d %s", st, body)
	}
	st, body = e.from("203.0.113.5", "PATCH", path, e.token, `{"apiAllow":["203.0.113.0/24"], "deviceAllow":["192.0.2.128/25"]}`)
	if st != 200 || !strings.Contains(body, `"apiAllow":["203.0.113.0/24"]`) {
		t.Fatalf("setting the lists: %d %s", st, body)
	}
	// ...and from then on the project answers only there, even to an administrator.
	if st, _ := e.from("198.51.100.7", "GET", path+"/forms", e.token, ""); st != 403 {
		t.Fatalf("project API from outside its list: %d", st)
	}
	if st, _ := e.from("203.0.113.5", "GET", path+"/forms", e.token, ""); st != 200 {
		t.Fatalf("project API from inside its list: %d", st)
	}
	// Routes outside the project are not under its list.
	if st, _ := e.from("198.51.100.7", "GET", "/v1/projects", e.token, ""); st != 200 {
		t.Fatalf("project list: %d", st)
	}
	// The project's device list narrows the site's: 192.0.2.9 is in the site's, not the project's.
	if _, err := device("192.0.2.9").FormList(ctx); collect.StatusOf(err) != 403 || !strings.Contains(err.Error(), "project lead") {
		t.Fatalf("device outside the project's list: %v", err)
	}
	if _, err := device("192.0.2.200").Submit(ctx, instance("uuid:ip-2", "A"), nil); err != nil {
		t.Fatalf("device inside both lists: %v", err)
	}
	last := e.events("request.refused")
	if len(last) < 2 || last[0].Details["refused"] != "project device allowlist" {
		t.Fatalf("project refusal audit: %+v", last[0])
	}
	if st, _ := e.from("198.51.100.7", "GET", path, e.token, ""); st != 403 {
		t.Fatalf("reading the project from outside its API list: %d", st)
	}
	if got := e.events("project.update"); len(got) == 0 || got[0].Details["apiAllow"] == nil {
		t.Fatalf("list change not audited: %+v", got)
	}
}

// Without a trusted proxy, X-Forwarded-For is ignored: a client cannot
// claim an allowed address.
func TestForwardedForIgnored(t *testing.T) {
	e := newEnv(t)
	pr := e.emptyProject()
	path := fmt.Sprintf("/v1/projects/%d", pr.ID)
	if st, body := e.from("203.0.113.5", "PATCH", path, e.token, `{"apiAllow":["203.0.113.0/24"]}`); st != 400 || !strings.Contains(body, "127.0.0.1") {
		t.Fatalf("the list was judged on the forwarded address: %d %s", st, body)
	}
	if st, _ := e.from("", "PATCH", path, e.token, `{"apiAllow":["127.0.0.1", "203.0.113.0/24"]}`); st != 200 {
		t.Fatalf("setting: %d", st)
	}
	if st, _ := e.from("198.51.100.7", "GET", path, e.token, ""); st != 200 {
		t.Fatalf("a forwarded address was believed: %d", st)
	}
}

func TestLoginThrottle(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	now := time.Now()
	e.st.DB.Now = func() time.Time { return now }
	pid, _ := e.project()
	e.collector(pid, "ana@example.org", "ana's long password")
	e.collector(pid, "ben@example.org", "ben's long password")

	login := func(email, password string) (int, string) {
		return e.from("", "POST", "/v1/sessions", "", fmt.Sprintf(`{"email":%q,"password":%q}`, email, password))
	}
	for i := 0; i < 10; i++ {
		if st, _ := login("ana@example.org", "guess"); st != 401 {
			t.Fatalf("wrong password %d: %d", i, st)
		}
	}
	// The right password no longer helps until the window ends.
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/sessions", strings.NewReader(`{"email":"ANA@example.org","password":"ana's long password"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Message string }
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || !strings.Contains(body.Message, "this account") {
		t.Fatalf("throttled login: %d %q %q", resp.StatusCode, resp.Header.Get("Retry-After"), body.Message)
	}
	// Another account from the same address is not held up.
	if st, _ := login("ben@example.org", "ben's long password"); st != 200 {
		t.Fatalf("other account: %d", st)
	}

	// Digest (ODK Collect) guesses count too, and are answered in an OpenRosaResponse.
	dev := collect.New(fmt.Sprintf("%s/v1/projects/%d", e.srv.URL, pid))
	dev.Username, dev.Password = "ben@example.org", "guess"
	for i := 0; ; i++ {
		_, err := dev.FormList(ctx)
		if collect.StatusOf(err) == 429 && i >= 4 {
			break // Collect answers a 401 by retrying with the new challenge: two tries per request
		}
		if collect.StatusOf(err) != 401 || i > 10 {
			t.Fatalf("digest guess %d: %v", i, err)
		}
	}
	dev.Password = "ben's long password"
	if _, err := dev.FormList(ctx); collect.StatusOf(err) != 429 || !strings.Contains(err.Error(), "Too many failed logins") {
		t.Fatalf("digest after guesses: %v", err)
	}

	now = now.Add(loginWindow())
	if st, _ := login("ana@example.org", "ana's long password"); st != 200 {
		t.Fatalf("after the window: %d", st)
	}
	if _, err := dev.FormList(ctx); err != nil {
		t.Fatalf("digest after the window: %v", err)
	}

	// Guessing across many accounts from one address is held up too.
	for i := 0; i < 30; i++ {
		login(fmt.Sprintf("nobody%d@example.org", i), "guess")
	}
	if st, body := login(adminEmail, adminPassword); st != 429 || !strings.Contains(body, "your address") {
		t.Fatalf("address limit: %d %s", st, body)
	}
}

func loginWindow() time.Duration { return 15*time.Minute + time.Second }

func TestSessionsRefreshAndRevoke(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	now := time.Now()
	e.st.DB.Now = func() time.Time { return now }
	pid, _ := e.project()
	ana := e.collector(pid, "ana@example.org", "ana's long password")

	type tokens struct {
		Token, RefreshToken         string
		ExpiresAt, SessionExpiresAt time.Time
	}
	login := func() tokens {
		var t1 tokens
		if st := e.call("POST", "/v1/sessions", "", map[string]string{"email": "ana@example.org", "password": "ana's long password"}, &t1); st != 200 {
			t.Fatalf("login: %d", st)
		}
		return t1
	}
	refresh := func(r string) (tokens, int) {
		var t2 tokens
		st := e.call("POST", "/v1/sessions/refresh", "", map[string]string{"refreshToken": r}, &t2)
		return t2, st
	}
	me := func(token string) int { return e.call("GET", "/v1/users/current", token, nil, nil) }

	t1 := login()
	if d := t1.ExpiresAt.Sub(now); d > 16*time.Minute || d < 14*time.Minute {
		t.Fatalf("access token lives %v", d)
	}
	if d := t1.SessionExpiresAt.Sub(now); d < 23*time.Hour {
		t.Fatalf("session lives %v", d)
	}
	if me(t1.Token) != 200 {
		t.Fatal("fresh token refused")
	}
	now = now.Add(16 * time.Minute)
	if me(t1.Token) != 401 {
		t.Fatal("an access token outlived its 15 minutes")
	}
	t2, st := refresh(t1.RefreshToken)
	if st != 200 || me(t2.Token) != 200 || t2.RefreshToken == t1.RefreshToken {
		t.Fatalf("refresh: %d", st)
	}
	// A refresh token used twice was copied: the whole session ends.
	if _, st := refresh(t1.RefreshToken); st != 401 {
		t.Fatalf("reused refresh token: %d", st)
	}
	if me(t2.Token) != 401 {
		t.Fatal("the session outlived a replayed refresh token")
	}
	if _, st := refresh(t2.RefreshToken); st != 401 {
		t.Fatal("the session's latest refresh token still works after a replay")
	}

	// Logout ends access and refresh at once.
	t3 := login()
	if st := e.call("DELETE", "/v1/sessions/current", t3.Token, nil, nil); st != 200 {
		t.Fatalf("logout: %d", st)
	}
	if me(t3.Token) != 401 {
		t.Fatal("token works after logout")
	}
	if _, st := refresh(t3.RefreshToken); st != 401 {
		t.Fatal("refresh works after logout")
	}

	// Disabling a user ends their sessions and stops every credential.
	t4 := login()
	dev := collect.New(fmt.Sprintf("%s/v1/projects/%d", e.srv.URL, pid))
	dev.Username, dev.Password = "ana@example.org", "ana's long password"
	if _, err := dev.FormList(ctx); err != nil {
		t.Fatalf("digest before disabling: %v", err)
	}
	e.token = e.login(adminEmail, adminPassword)
	e.admin("DELETE", fmt.Sprintf("/v1/users/%d", ana), nil, nil)
	if me(t4.Token) != 401 {
		t.Fatal("token works after the user was disabled")
	}
	if _, st := refresh(t4.RefreshToken); st != 401 {
		t.Fatal("refresh works after the user was disabled")
	}
	if st := e.call("POST", "/v1/sessions", "", map[string]string{"email": "ana@example.org", "password": "ana's long password"}, nil); st != 401 {
		t.Fatalf("login after disabling: %d", st)
	}
	if _, err := dev.FormList(ctx); collect.StatusOf(err) != 401 {
		t.Fatalf("digest after disabling: %v", err)
	}
	if got := e.events("user.disable"); len(got) != 1 || got[0].Object != fmt.Sprintf("actor/%d", ana) {
		t.Fatalf("disable audit: %+v", got)
	}
	var self struct{ ID int64 }
	e.admin("GET", "/v1/users/current", nil, &self)
	if st := e.call("DELETE", fmt.Sprintf("/v1/users/%d", self.ID), e.token, nil, nil); st != 409 {
		t.Fatalf("disabling oneself: %d", st)
	}
}
