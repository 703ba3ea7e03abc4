package storage_test

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haven-org/haven/storage"
)

// walLoad writes for d from 8 writers while 4 readers read without pause,
// as devices and API readers do on a census day, and returns the largest
// WAL seen.
func walLoad(t *testing.T, db *storage.DB, d time.Duration) int64 {
	t.Helper()
	if err := db.Write(ctx, func(tx *storage.Tx) error {
		_, err := tx.Exec(`CREATE TABLE IF NOT EXISTS wal_load (id INTEGER PRIMARY KEY, body BLOB)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	body := []byte(strings.Repeat("x", 4000))
	var stop atomic.Bool
	var biggest atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if err := db.Write(ctx, func(tx *storage.Tx) error {
					_, err := tx.Exec(`INSERT INTO wal_load (body) VALUES (?)`, body)
					return err
				}); err != nil {
					t.Error(err)
					return
				}
				if fi, err := os.Stat(db.Path + "-wal"); err == nil && fi.Size() > biggest.Load() {
					biggest.Store(fi.Size())
				}
			}
		}()
	}
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				var n int
				db.QueryRow(ctx, `SELECT count(*) FROM (SELECT id FROM wal_load ORDER BY id DESC LIMIT 50)`).Scan(&n)
			}
		}()
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	return biggest.Load()
}

// TestWALCeiling: under writes and reads without pause, the WAL stays under
// its ceiling (give or take one batch of writes), where the background
// checkpoints alone let it grow without end; and the file shrinks back.
func TestWALCeiling(t *testing.T) {
	const ceiling = 4 << 20
	unbounded, err := storage.Open(ctx, filepath.Join(t.TempDir(), "haven.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer unbounded.Close()
	unbounded.SetWALCeiling(1 << 40) // in effect, none: the background checkpoints alone
	without := walLoad(t, unbounded, 3*time.Second)

	db, err := storage.Open(ctx, filepath.Join(t.TempDir(), "haven.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.SetWALCeiling(ceiling); err != nil {
		t.Fatal(err)
	}
	with := walLoad(t, db, 3*time.Second)
	stats := db.WALStats()
	t.Logf("largest WAL: %d MB without a ceiling, %d MB with one of %d MB (%+v)", without>>20, with>>20, ceiling>>20, stats)
	if with > ceiling || stats.Restarts == 0 {
		t.Fatalf("the WAL reached %d bytes over a ceiling of %d: %+v", with, ceiling, stats)
	}
	if without <= ceiling {
		t.Logf("note: without a ceiling the background checkpoints kept up this time (%d bytes)", without)
	}
}
