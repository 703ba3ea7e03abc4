package storage

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/haven-org/haven"
	"github.com/minio/minio-go/v7"
)

// Which key store a deployment uses, and the one place that decides it:
//   - SQLite: the data directory's keys/ folder (one process).
//   - PostgreSQL without an object store: the keys/ folder of one data
//     directory, which the database records (deployment.data_dir_id), so
//     that a node with another data directory is refused rather than
//     making keys no other node can read.
//   - PostgreSQL with an object store: a bucket of its own that every
//     node reads (objectKeys), recorded by the id written in it
//     (deployment.key_store_id). A deployment whose keys are still in one
//     data directory's folder moves them there when that directory's node
//     first starts with the object store; a node pointed at another
//     bucket, or at an empty one, is refused.
// On PostgreSQL the database also keeps a check value of the master key:
// every node must hold the same one, and one that does not is refused at
// start, before it writes anything.

// claimLock keys the advisory lock under which nodes claim the database.
const claimLock = 0x68617665_6e6b6579 // "havenkey"

type deployment struct {
	dataDir, keyStore sql.NullString
	check             []byte
}

// openKeyStore returns the key store of the data directory dir (and, on
// PostgreSQL, of the database db), after checking that they belong together.
func openKeyStore(ctx context.Context, db *DB, dir string, s3 *S3Config, master []byte) (keyStore, error) {
	local, err := newDirKeys(filepath.Join(dir, "keys"))
	if err != nil || !db.pg {
		return local, err
	}
	check := keyCheck(master)
	if s3 == nil {
		return local, claimDir(ctx, db, dir, check)
	}
	objects, err := newObjectKeys(ctx, *s3, db)
	if err != nil {
		return nil, err
	}
	if err := claimObjects(ctx, db, dir, check, local, objects); err != nil {
		return nil, err
	}
	// The keys that moved (now, or on a start that stopped before this)
	// leave the data directory.
	if err := dropMovedKeys(ctx, local, objects); err != nil {
		return nil, fmt.Errorf("removing the keys moved to the object store from %s: %w", local.dir, err)
	}
	local.close()
	return objects, nil
}

// readDeployment reads the database's claim, under the claim lock, in tx.
func readDeployment(tx *Tx) (*deployment, error) {
	if _, err := tx.Exec(`SELECT pg_advisory_xact_lock(?)`, int64(claimLock)); err != nil {
		return nil, err
	}
	var d deployment
	err := tx.QueryRow(`SELECT data_dir_id, key_store_id, master_check FROM deployment WHERE id = 1`).Scan(&d.dataDir, &d.keyStore, &d.check)
	if errors.Is(err, sql.ErrNoRows) {
		return &deployment{}, nil
	}
	return &d, err
}

// checkMaster refuses a master key other than the deployment's.
func (d *deployment) checkMaster(check []byte) error {
	if d.check != nil && !hmac.Equal(d.check, check) {
		return haven.Errorf(haven.EINVALID, "This node's master key is not the one this database was made with: every node must hold the same master key (the same --master-key-file, HAVEN_MASTER_KEY_FILE or HAVEN_MASTER_KEY). Nothing was written.")
	}
	return nil
}

// dataDirID reads (making it on first use) the id of a data directory.
func dataDirID(dir string) (string, error) {
	idFile := filepath.Join(dir, "data-dir-id")
	id, err := os.ReadFile(idFile)
	if errors.Is(err, os.ErrNotExist) {
		b := make([]byte, 16)
		rand.Read(b)
		id = []byte(hex.EncodeToString(b))
		if err := writeFileDurably(idFile, id, 0o600); err != nil {
			return "", err
		}
	} else if err != nil {
		return "", err
	}
	return string(id), nil
}

// claim runs decide with the database's claim, under the claim lock, once
// the master key is checked; id is the data directory's.
func claim(ctx context.Context, db *DB, dir string, check []byte, decide func(tx *Tx, d *deployment, id string) error) error {
	id, err := dataDirID(dir)
	if err != nil {
		return err
	}
	return db.Write(ctx, func(tx *Tx) error {
		d, err := readDeployment(tx)
		if err != nil {
			return err
		}
		if err := d.checkMaster(check); err != nil {
			return err
		}
		return decide(tx, d, id)
	})
}

// claimDir ties the database to the key store folder of dir. The same
// directory may open it again (admin commands beside the server).
func claimDir(ctx context.Context, db *DB, dir string, check []byte) error {
	return claim(ctx, db, dir, check, func(tx *Tx, d *deployment, id string) error {
		switch {
		case d.keyStore.Valid:
			return haven.Errorf(haven.EINVALID, "The keys of the database %s are on the object store, which this node was not given: start it with the deployment's object store settings (--s3-endpoint, --s3-bucket, --s3-access-key, --s3-secret-key, or HAVEN_S3_*).", db.Path)
		case d.dataDir.Valid && d.dataDir.String != id:
			return haven.Errorf(haven.EINVALID, "The database %s keeps its keys in another node's data directory (id %s; this one is %s), which this node cannot read. Start that node once with the object store settings (--s3-endpoint ...): it moves the keys to the object store, and then every node can serve.", db.Path, d.dataDir.String, id)
		}
		_, err := tx.Exec(`INSERT INTO deployment (id, data_dir_id, master_check) VALUES (1, ?, ?)
			ON CONFLICT (id) DO UPDATE SET master_check = excluded.master_check`, id, check)
		return err
	})
}

// claimObjects ties the database to the key bucket, moving the keys of a
// deployment that kept them in this data directory.
func claimObjects(ctx context.Context, db *DB, dir string, check []byte, local *dirKeys, objects *objectKeys) error {
	return claim(ctx, db, dir, check, func(tx *Tx, d *deployment, id string) error {
		bucketID, err := objects.get(ctx, keyStoreIDObject)
		if err != nil && err != errNoKey {
			return err
		}
		if d.keyStore.Valid {
			if string(bucketID) != d.keyStore.String {
				return haven.Errorf(haven.EINVALID, "The key bucket %q is not this deployment's: the database's keys are in the bucket with id %s, and %s. Give every node the same object store and key bucket (--s3-key-bucket).", objects.bucket, d.keyStore.String, describeID(bucketID))
			}
			return nil
		}
		if d.dataDir.Valid && d.dataDir.String != id {
			return haven.Errorf(haven.EINVALID, "The database %s keeps its keys in another node's data directory (id %s; this one is %s). Start that node once with the object store settings: it moves the keys to the object store, and then every node can serve.", db.Path, d.dataDir.String, id)
		}
		if bucketID != nil {
			return haven.Errorf(haven.EINVALID, "The key bucket %q already holds another deployment's keys (id %s). Give this deployment a bucket of its own with --s3-key-bucket.", objects.bucket, bucketID)
		}
		// Nodes still serving from the folder would go on writing keys
		// there after the move: they stop first.
		var serving int
		if err := tx.QueryRow(`SELECT count(*) FROM nodes WHERE seen_at >= ?`, ms(tx.Now().Add(-nodeTimeout))).Scan(&serving); err != nil {
			return err
		}
		if serving > 0 {
			return haven.Errorf(haven.ECONFLICT, "%d Haven node(s) serve from this database with their keys in a data directory's folder: stop them, then start this node with the object store settings to move the keys; then start the others with the same settings.", serving)
		}
		// Only the slots up to the last one the database names move: past
		// it a slot file holds keys of writes that never committed, which
		// the next slot numbers (started past the last named) reuse.
		named := map[int64]int64{}
		rows, err := tx.Query(`SELECT id, project_id FROM project_keys WHERE destroyed_at IS NULL`)
		if err != nil {
			return err
		}
		var keys [][2]int64
		for rows.Next() {
			var k [2]int64
			if err := rows.Scan(&k[0], &k[1]); err != nil {
				rows.Close()
				return err
			}
			keys = append(keys, k)
		}
		rows.Close()
		for _, k := range keys {
			var used int64
			if err := tx.QueryRow(usedSlots, k[1], k[0]).Scan(&used); err != nil {
				return err
			}
			named[k[0]] = used
		}
		if err := moveKeys(ctx, local, objects, named); err != nil {
			return err
		}
		newID := randomID()
		if err := objects.put(ctx, keyStoreIDObject, []byte(newID)); err != nil {
			return err
		}
		_, err = tx.Exec(`INSERT INTO deployment (id, data_dir_id, key_store_id, master_check) VALUES (1, NULL, ?, ?)
			ON CONFLICT (id) DO UPDATE SET data_dir_id = NULL, key_store_id = excluded.key_store_id, master_check = excluded.master_check`, newID, check)
		return err
	})
}

// describeID says what a key bucket's id is, for a message.
func describeID(b []byte) string {
	if b == nil {
		return "this bucket has none: it is empty"
	}
	return "this bucket's is " + string(b)
}

// moveKeys copies the live keys and their slots from the folder to the
// bucket, then reads each back to compare. Copying again is harmless.
func moveKeys(ctx context.Context, local *dirKeys, objects *objectKeys, named map[int64]int64) error {
	for id, last := range named {
		wrapped, err := local.getKey(ctx, id)
		if err == errNoKey {
			return haven.Errorf(haven.EUNAVAILABLE, "Project key %d is in neither %s nor %s, so it cannot move to the object store. Start this node with the data directory whose keys/ folder holds it.", id, local.where(), objects.where())
		} else if err != nil {
			return err
		}
		if err := objects.putKey(ctx, id, wrapped); err != nil {
			return err
		}
		if back, err := objects.getKey(ctx, id); err != nil || !hmac.Equal(back, wrapped) {
			return fmt.Errorf("project key %d did not read back from %s as it was written (%v)", id, objects.where(), err)
		}
		n, err := local.slotCount(id)
		if err != nil {
			return err
		}
		// Runs of consecutive slots, as the nodes write them, each read
		// back and compared.
		var run []byte
		var first int64
		flush := func() error {
			if len(run) == 0 {
				return nil
			}
			name := runObject(id, first)
			if err := objects.put(ctx, name, run); err != nil {
				return err
			}
			if back, err := objects.get(ctx, name); err != nil || !hmac.Equal(back, run) {
				return fmt.Errorf("submission keys %d to %d of project key %d did not read back from %s as they were written (%v)",
					first, first+int64(len(run)/slotSize)-1, id, objects.where(), err)
			}
			run = nil
			return nil
		}
		for slot := int64(1); slot < min(n, last+1); slot++ {
			b, err := local.getSlot(ctx, id, slot)
			if err != nil {
				return err
			}
			if b == nil || allZero(b) {
				if err := flush(); err != nil {
					return err
				}
				continue
			}
			if len(run) == 0 {
				first = slot
			}
			if run = append(run, b...); len(run) == runSlots*slotSize {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if err := flush(); err != nil {
			return err
		}
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// dropMovedKeys shreds, in the folder, the keys the bucket holds the same
// copy of (keys that moved, on this start or one that stopped after the
// claim committed).
func dropMovedKeys(ctx context.Context, local *dirKeys, objects *objectKeys) error {
	names, err := os.ReadDir(local.dir)
	if err != nil {
		return err
	}
	for _, e := range names {
		s, ok := strings.CutPrefix(e.Name(), "project-key-")
		if !ok || strings.Contains(s, ".") {
			continue
		}
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			continue
		}
		mine, err := local.getKey(ctx, id)
		if err != nil {
			return err
		}
		theirs, err := objects.getKey(ctx, id)
		if err == errNoKey {
			continue // not moved: left where it is
		} else if err != nil {
			return err
		}
		if hmac.Equal(mine, theirs) {
			if _, err := local.shredKey(ctx, id); err != nil {
				return err
			}
		}
	}
	return nil
}

// CopyKeysDown copies the keys of the database at dsn from its key bucket
// into the key store folder of the data directory dir, for a deployment
// going back to one node (haven storage migrate --to sqlite). It returns
// how many project keys it copied: none when the database keeps its keys
// in a folder already. Every key and slot is read back and compared.
func CopyKeysDown(ctx context.Context, dsn string, s3 *S3Config, dir string) (int, error) {
	db, err := OpenPostgresDB(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var keyStore sql.NullString
	err = db.read.QueryRowContext(ctx, `SELECT key_store_id FROM deployment WHERE id = 1`).Scan(&keyStore)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !keyStore.Valid) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	if s3 == nil {
		return 0, haven.Errorf(haven.EINVALID, "The keys of this database are on the object store: give its settings (--s3-endpoint, --s3-bucket, --s3-access-key, --s3-secret-key, or HAVEN_S3_*) so that they come into the data directory with the records.")
	}
	objects, err := newObjectKeys(ctx, *s3, db)
	if err != nil {
		return 0, err
	}
	if id, err := objects.get(ctx, keyStoreIDObject); err != nil && err != errNoKey {
		return 0, err
	} else if string(id) != keyStore.String {
		return 0, haven.Errorf(haven.EINVALID, "The key bucket %q is not this database's (its keys are in the bucket with id %s): give the deployment's --s3-key-bucket.", objects.bucket, keyStore.String)
	}
	local, err := newDirKeys(filepath.Join(dir, "keys"))
	if err != nil {
		return 0, err
	}
	defer local.close()
	ids, err := db.int64s(ctx, `SELECT id FROM project_keys WHERE destroyed_at IS NULL ORDER BY id`)
	if err != nil {
		return 0, err
	}
	for _, id := range ids {
		wrapped, err := objects.getKey(ctx, id)
		if err != nil {
			return 0, fmt.Errorf("project key %d: %w", id, err)
		}
		if err := local.putKey(ctx, id, wrapped); err != nil {
			return 0, err
		}
		slots := map[int64][]byte{}
		for obj := range objects.client.ListObjects(ctx, objects.bucket, minio.ListObjectsOptions{Prefix: runPrefix(id), Recursive: true}) {
			if obj.Err != nil {
				return 0, keysUnavailable(obj.Err)
			}
			first, err := strconv.ParseInt(strings.TrimPrefix(obj.Key, runPrefix(id)), 10, 64)
			if err != nil {
				continue
			}
			b, err := objects.get(ctx, obj.Key)
			if err != nil {
				return 0, err
			}
			for i := 0; i+slotSize <= len(b); i += slotSize {
				if s := b[i : i+slotSize]; !allZero(s) {
					slots[first+int64(i/slotSize)] = s
					if err := local.putSlot(id, first+int64(i/slotSize), s); err != nil {
						return 0, err
					}
				}
			}
		}
		if err := local.syncSlots(ctx); err != nil {
			return 0, err
		}
		for slot, want := range slots {
			if got, err := local.getSlot(ctx, id, slot); err != nil || !hmac.Equal(got, want) {
				return 0, fmt.Errorf("submission key %d of project key %d did not read back from %s (%v)", slot, id, local.where(), err)
			}
		}
	}
	return len(ids), nil
}

// int64s reads a column of integers.
func (db *DB) int64s(ctx context.Context, q string, args ...any) ([]int64, error) {
	rows, err := db.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var n int64
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}
