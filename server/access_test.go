package server_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
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
	_, serverURL := e.appUser(pid, "T")
	device := func(addr string) *collect.Client {
		d := collect.New(serverURL)
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
	// A submission posted without the preflight is refused and audited, with its route.
	if st, body := e.from("198.51.100.7", "POST", strings.TrimPrefix(serverURL, e.srv.URL)+"/submission", "", "x"); st != 403 || !strings.Contains(body, "OpenRosaResponse") {
		t.Fatalf("posted submission: %d %s", st, body)
	}
	subs := e.events("request.refused")
	if len(subs) != 3 || subs[0].Outcome != haven.EFORBIDDEN || subs[0].Details["refused"] != "site device allowlist" ||
		subs[0].Details["method"] != "POST" || subs[0].Details["route"] != "/v1/key/:key/projects/:pid/submission" {
		t.Fatalf("submission refusal audit: %+v", subs)
	}
	if got := e.events("submission.create"); len(got) != 0 {
		t.Fatalf("a refused request reached the use case: %+v", got)
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

// Password guessing is slowed with growing waits, per account and address,
// per address and per account; a stranger's guesses never lock the owner
// out of their usual place.
func TestLoginThrottle(t *testing.T) {
	ctx := context.Background()
	e := newEnvConfig(t, server.Config{TrustedProxies: mustAllow(t, "127.0.0.1")}, storage.Options{})
	now := time.Now()
	e.st.DB.Now = func() time.Time { return now }
	pid, _ := e.project()
	e.collector(pid, "ana@example.org", "ana's long password")
	e.collector(pid, "ben@example.org", "ben's long password")

	type answer struct {
		status     int
		retry, msg string
	}
	login := func(addr, email, password string) answer {
		req, _ := http.NewRequest("POST", e.srv.URL+"/v1/sessions", strings.NewReader(fmt.Sprintf(`{"email":%q,"password":%q}`, email, password)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-For", addr)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ Message string }
		json.NewDecoder(resp.Body).Decode(&body)
		return answer{resp.StatusCode, resp.Header.Get("Retry-After"), body.Message}
	}
	const home, stranger, elsewhere = "203.0.113.1", "198.51.100.9", "192.0.2.44"

	// Ana signs in from home: that address is hers from now on.
	if a := login(home, "ana@example.org", "ana's long password"); a.status != 200 {
		t.Fatalf("first login: %+v", a)
	}
	// Five mistakes from home are free; the sixth attempt waits, even with
	// the right password, and says how long.
	for i := 0; i < 5; i++ {
		if a := login(home, "ana@example.org", "typo"); a.status != 401 {
			t.Fatalf("mistake %d: %+v", i, a)
		}
	}
	if a := login(home, "ANA@example.org", "ana's long password"); a.status != 429 || a.retry != "1" || !strings.Contains(a.msg, "this account") {
		t.Fatalf("after five mistakes: %+v", a)
	}
	now = now.Add(time.Second)
	if a := login(home, "ana@example.org", "ana's long password"); a.status != 200 {
		t.Fatalf("after the wait: %+v", a)
	}

	// A stranger guesses Ana's password: each guess past the free ones waits
	// twice as long as the one before.
	var waits []string
	for i := 0; i < 14; i++ {
		a := login(stranger, "ana@example.org", fmt.Sprintf("guess %d", i))
		if a.status == 429 {
			t.Fatalf("guess %d held back although its wait was over: %+v", i, a)
		}
		if a := login(stranger, "ana@example.org", "guess"); a.status == 429 {
			waits = append(waits, a.retry)
			n, _ := strconv.Atoi(a.retry)
			now = now.Add(time.Duration(n) * time.Second)
		}
	}
	if strings.Join(waits, ",") != "1,2,4,8,16,32,64,128,256,512,900,900" {
		t.Fatalf("waits between guesses (doubling, never over 15 minutes): %v", waits)
	}
	// A guess just now: the account as a whole waits too.
	if a := login(stranger, "ana@example.org", "one more guess"); a.status != 401 {
		t.Fatalf("a guess after the wait: %+v", a)
	}
	// Ana is not locked out at home...
	if a := login(home, "ana@example.org", "ana's long password"); a.status != 200 {
		t.Fatalf("the owner at home during a guessing run: %+v", a)
	}
	// ...but a place she never signed in from waits, as the account is under attack.
	if a := login(elsewhere, "ana@example.org", "ana's long password"); a.status != 429 || !strings.Contains(a.msg, "this account") {
		t.Fatalf("a new address during a guessing run: %+v", a)
	}
	// Another account from the stranger's address is not held up.
	if a := login(stranger, "ben@example.org", "ben's long password"); a.status != 200 {
		t.Fatalf("other account: %+v", a)
	}
	// The waits never exceed 15 minutes, and an hour without failures forgets them.
	now = now.Add(time.Hour)
	if a := login(elsewhere, "ana@example.org", "ana's long password"); a.status != 200 {
		t.Fatalf("an hour later: %+v", a)
	}

	// Digest (ODK Collect) guesses count too, and are answered in an OpenRosaResponse.
	dev := collect.New(fmt.Sprintf("%s/v1/projects/%d", e.srv.URL, pid))
	dev.Username, dev.Password = "ben@example.org", "guess"
	for i := 0; ; i++ {
		_, err := dev.FormList(ctx)
		if collect.StatusOf(err) == 429 {
			if !strings.Contains(err.Error(), "Too many failed logins") {
				t.Fatalf("digest refusal: %v", err)
			}
			break
		}
		if collect.StatusOf(err) != 401 || i > 10 {
			t.Fatalf("digest guess %d: %v", i, err)
		}
	}
	now = now.Add(time.Hour)
	dev.Password = "ben's long password"
	if _, err := dev.FormList(ctx); err != nil {
		t.Fatalf("digest after the wait: %v", err)
	}

	// Guessing across many accounts from one address is held back too.
	for i := 0; i < 31; i++ {
		login(stranger, fmt.Sprintf("nobody%d@example.org", i), "guess")
	}
	if a := login(stranger, adminEmail, adminPassword); a.status != 429 || !strings.Contains(a.msg, "your address") {
		t.Fatalf("address limit: %+v", a)
	}
	// The administrator, elsewhere, is not.
	if a := login(home, adminEmail, adminPassword); a.status != 200 {
		t.Fatalf("administrator from another address: %+v", a)
	}
}

// TestSessionsRefreshAndRevoke runs with short access tokens, as an
// operator may configure them for the console.
func TestSessionsRefreshAndRevoke(t *testing.T) {
	ctx := context.Background()
	e := newEnvConfig(t, server.Config{AccessLifetime: 15 * time.Minute}, storage.Options{})
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

	// An access token alone neither renews nor ends its session: the
	// session's id is inside it, but a made-up secret beside it is only
	// refused, and logging out needs the refresh token.
	t3 := login()
	claims := strings.Split(t3.Token, ".")[1]
	raw, _ := base64.RawURLEncoding.DecodeString(claims)
	var sid struct{ Sid string }
	json.Unmarshal(raw, &sid)
	if sid.Sid == "" || !strings.HasPrefix(t3.RefreshToken, sid.Sid+".") {
		t.Fatalf("session id %q, refresh token %q", sid.Sid, t3.RefreshToken)
	}
	if _, st := refresh(sid.Sid + ".made-up"); st != 401 || me(t3.Token) != 200 {
		t.Fatalf("a made-up refresh token: %d; the session must survive it", st)
	}
	if st := e.call("DELETE", "/v1/sessions/current", t3.Token, nil, nil); st != 400 || me(t3.Token) != 200 {
		t.Fatalf("logout with an access token alone: %d; the session must survive it", st)
	}
	if st := e.call("DELETE", "/v1/sessions/"+sid.Sid+".made-up", "", nil, nil); st != 401 || me(t3.Token) != 200 {
		t.Fatalf("logout with a made-up refresh token: %d", st)
	}
	// Logout with the refresh token ends access and refresh at once.
	if st := e.call("DELETE", "/v1/sessions/current", t3.Token, map[string]string{"refreshToken": t3.RefreshToken}, nil); st != 200 {
		t.Fatalf("logout: %d", st)
	}
	if me(t3.Token) != 401 {
		t.Fatal("token works after logout")
	}
	if _, st := refresh(t3.RefreshToken); st != 401 {
		t.Fatal("refresh works after logout")
	}
	// The refresh token alone ends its session too (no access token needed).
	t5 := login()
	if st := e.call("DELETE", "/v1/sessions/"+t5.RefreshToken, "", nil, nil); st != 200 || me(t5.Token) != 401 {
		t.Fatalf("logout by refresh token: %d", st)
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
