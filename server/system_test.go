package server_test

import (
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
