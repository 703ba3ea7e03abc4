package server_test

import (
	"strings"
	"testing"

	"github.com/haven-org/haven/storage/pgtest"
)

// The operator's view of the server: administrators only.
func TestSystemStats(t *testing.T) {
	e := newEnv(t)
	pid, _ := e.project()
	var st struct {
		Goroutines    int
		DatabaseBytes int64
		WAL           struct{ Ceiling int64 }
	}
	e.admin("GET", "/v1/system/stats", nil, &st)
	ceiling := int64(64 << 20)
	if pgtest.Backend() == "postgres" {
		ceiling = 0 // PostgreSQL bounds its own WAL
	}
	if st.Goroutines == 0 || st.DatabaseBytes == 0 || st.WAL.Ceiling != ceiling {
		t.Fatalf("stats: %+v", st)
	}
	e.collector(pid, "c@example.org", "a long enough password")
	if code := e.call("GET", "/v1/system/stats", e.login("c@example.org", "a long enough password"), nil, nil); code != 403 {
		t.Fatalf("a data collector read the server's stats: %d", code)
	}
}

// A load balancer's health check needs no credentials and tells nothing
// but whether the node reaches its database.
func TestHealthz(t *testing.T) {
	e := newEnv(t)
	resp := e.request("GET", "/healthz", "", "", nil)
	body := readAll(resp)
	if resp.StatusCode != 200 || body != "ok\n" {
		t.Fatalf("healthz: %d %q", resp.StatusCode, body)
	}
	e.st.Close()
	resp = e.request("GET", "/healthz", "", "", nil)
	if body := readAll(resp); resp.StatusCode != 503 || strings.Contains(body, "sql") {
		t.Fatalf("healthz without a database: %d %q", resp.StatusCode, body)
	}
}
