package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/haven-org/haven"
)

// Nodes: several `haven serve` on one PostgreSQL database. Every node must
// read every file, so files must be on the object store as soon as nodes
// run on more than one machine: a node whose files are in a local folder
// is refused while a node on another machine serves, and every node is
// refused while one on another machine keeps its files locally. (Nodes on
// one machine may share a data directory, and with it the local folder.)
// Each node keeps a row fresh while it runs; a row not refreshed for
// nodeTimeout is a node that died.

const (
	nodeBeat    = 5 * time.Second
	nodeTimeout = 20 * time.Second
)

// nodeLock keys the advisory lock under which nodes join, so that two
// starting at once do not both find themselves alone.
const nodeLock = 0x68617665_6e6f6465 // "havenode"

// Node is this process's place among the nodes of a database.
type Node struct {
	db     *DB
	id     string
	host   string
	shared bool
	stop   chan struct{}
	once   sync.Once
	done   sync.WaitGroup
}

// JoinNodes records this process as a node serving from the database, or
// says why it may not: sharedFiles is whether its files are on the object
// store. On SQLite (one process per data directory) it does nothing.
func (db *DB) JoinNodes(ctx context.Context, host string, sharedFiles bool) (*Node, error) {
	n := &Node{db: db, host: host, shared: sharedFiles, stop: make(chan struct{})}
	if !db.pg {
		return n, nil
	}
	var b [8]byte
	rand.Read(b[:])
	n.id = hex.EncodeToString(b[:])
	err := db.Write(ctx, func(tx *Tx) error {
		if _, err := tx.Exec(`SELECT pg_advisory_xact_lock(?)`, int64(nodeLock)); err != nil {
			return err
		}
		now := tx.Now()
		if _, err := tx.Exec(`DELETE FROM nodes WHERE seen_at < ?`, ms(now.Add(-nodeTimeout))); err != nil {
			return err
		}
		rows, err := tx.Query(`SELECT host, pid, shared_files, started_at FROM nodes ORDER BY started_at`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var otherHost string
			var pid, shared, started int64
			if err := rows.Scan(&otherHost, &pid, &shared, &started); err != nil {
				return err
			}
			since := fromMS(started).Format(time.RFC3339)
			switch {
			case otherHost == host:
				// The same machine: the same data directory and local folder.
			case !sharedFiles:
				return haven.Errorf(haven.ECONFLICT, "A Haven node on another machine (process %d on %s, serving since %s) uses this database, and this one keeps its files in a local folder, where that node cannot read them. With nodes on several machines, every file must be on the object store: start every node with --s3-endpoint (MinIO), or stop the other node.", pid, otherHost, since)
			case shared == 0:
				return haven.Errorf(haven.ECONFLICT, "A Haven node on another machine (process %d on %s, serving since %s) uses this database with its files in a local folder, which this node cannot read. With nodes on several machines, every file must be on the object store: restart that node with --s3-endpoint (MinIO) first.", pid, otherHost, since)
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		_, err = tx.Exec(`INSERT INTO nodes (id, host, pid, shared_files, started_at, seen_at) VALUES (?, ?, ?, ?, ?, ?)`,
			n.id, host, os.Getpid(), boolInt(sharedFiles), ms(now), ms(now))
		return err
	})
	if err != nil {
		return nil, err
	}
	n.done.Add(1)
	go n.beat()
	return n, nil
}

// beat keeps the node's row fresh until Leave.
func (n *Node) beat() {
	defer n.done.Done()
	t := time.NewTicker(nodeBeat)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), nodeBeat)
			// A row swept while this node was cut off from the database is
			// written again: it still serves.
			n.db.Write(ctx, func(tx *Tx) error {
				_, err := tx.Exec(`INSERT INTO nodes (id, host, pid, shared_files, started_at, seen_at) VALUES (?, ?, ?, ?, ?, ?)
					ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at`,
					n.id, n.host, os.Getpid(), boolInt(n.shared), ms(tx.Now()), ms(tx.Now()))
				return err
			})
			cancel()
		}
	}
}

// Leave removes the node's row: it no longer serves.
func (n *Node) Leave() {
	if n == nil || n.id == "" {
		return
	}
	n.once.Do(func() {
		close(n.stop)
		n.done.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.db.Write(ctx, func(tx *Tx) error {
			_, err := tx.Exec(`DELETE FROM nodes WHERE id = ?`, n.id)
			return err
		})
	})
}

// String names the node for logs.
func (n *Node) String() string { return fmt.Sprintf("node %s", n.id) }
