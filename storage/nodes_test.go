package storage_test

import (
	"strings"
	"testing"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage/pgtest"
)

// With nodes on several machines every file must be on the object store:
// a node with local files is refused while a node on another machine
// serves, and every node while one on another machine has local files;
// nodes on one machine share the data directory and its folder; a node
// that left, or stopped beating, is no longer counted.
func TestNodesNeedSharedFiles(t *testing.T) {
	dir := t.TempDir()
	st := open(t, dir)
	a, err := st.DB.JoinNodes(ctx, "host-a", false)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Leave()
	if pgtest.Backend() == "sqlite" {
		// One process per data directory (serve.lock): nothing to share.
		if b, err := st.DB.JoinNodes(ctx, "host-b", false); err != nil {
			t.Fatal(err)
		} else {
			b.Leave()
		}
		return
	}
	same, err := st.DB.JoinNodes(ctx, "host-a", false)
	if err != nil {
		t.Fatalf("a second node on the same machine: %v", err)
	}
	same.Leave()
	_, err = st.DB.JoinNodes(ctx, "host-b", false)
	if haven.ErrorCode(err) != haven.ECONFLICT || !strings.Contains(err.Error(), "host-a") || !strings.Contains(err.Error(), "--s3-endpoint") {
		t.Fatalf("a second node with local files: %v", err)
	}
	if _, err := st.DB.JoinNodes(ctx, "host-b", true); haven.ErrorCode(err) != haven.ECONFLICT || !strings.Contains(err.Error(), "restart that node") {
		t.Fatalf("a node with shared files beside one with local files: %v", err)
	}
	a.Leave()
	b, err := st.DB.JoinNodes(ctx, "host-b", true)
	if err != nil {
		t.Fatalf("after the first left: %v", err)
	}
	defer b.Leave()
	c, err := st.DB.JoinNodes(ctx, "host-c", true)
	if err != nil {
		t.Fatalf("two nodes with shared files: %v", err)
	}
	defer c.Leave()
	if _, err := st.DB.JoinNodes(ctx, "host-d", false); err == nil {
		t.Fatal("a node with local files joined two with shared files")
	}
	// A node that died (its row no longer refreshed) does not count.
	b.Leave()
	c.Leave()
	x, err := st.DB.JoinNodes(ctx, "host-x", true)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Leave()
	if _, err := st.DB.JoinNodes(ctx, "host-d", false); err == nil {
		t.Fatal("a node with local files joined beside a live one")
	}
	now := time.Now()
	st.DB.Now = func() time.Time { return now.Add(time.Minute) } // x has not beaten for a minute
	d, err := st.DB.JoinNodes(ctx, "host-d", false)
	if err != nil {
		t.Fatalf("beside a node that stopped beating: %v", err)
	}
	d.Leave()
}
