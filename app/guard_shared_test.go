package app_test

import (
	"context"
	"testing"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/haven-org/haven/storage"
	"github.com/haven-org/haven/storage/pgtest"
)

// Nodes sharing a PostgreSQL database count failed logins together: a run
// of guesses spread over two nodes holds the account back on both, where
// each node alone would have let it go on.
func TestLoginGuessesCountAcrossNodes(t *testing.T) {
	if pgtest.Backend() != "postgres" {
		t.Skip("runs on the PostgreSQL pass: on SQLite one process counts")
	}
	ctx := app.WithClient(context.Background(), "203.0.113.9")
	dir := t.TempDir()
	var nodes [2]*app.Service
	for i := range nodes {
		st, err := storage.OpenDir(ctx, dir, storage.Options{Database: pgtest.Database(t, dir)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		if i == 0 {
			if _, err := st.Users.Create(ctx, "lead@example.org", "the right password", "Lead", false); err != nil {
				t.Fatal(err)
			}
		}
		nodes[i] = app.New(st, app.Options{})
	}
	// Five wrong passwords from one place, three on one node and two on
	// the other: each alone is under the five a person mistyping may make,
	// together they are not.
	for i := range 5 {
		if _, err := nodes[i%2].Login(ctx, "lead@example.org", "a wrong guess"); haven.ErrorCode(err) != haven.EUNAUTHORIZED {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	for n, node := range nodes {
		if _, err := node.Login(ctx, "lead@example.org", "the right password"); haven.ErrorCode(err) != haven.ETOOMANY {
			t.Fatalf("node %d after five guesses over both nodes: %v, want to be told to wait", n, err)
		}
	}
}
