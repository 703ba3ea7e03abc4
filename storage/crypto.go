package storage

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/haven-org/haven"
)

// KeySize is the size of every key Haven makes: AES-256.
const KeySize = 32

// Keyring does Haven's envelope encryption. The master key (one per server)
// wraps one data key per project; project keys seal submission XML and wrap
// the per-object keys of attachments. Destroying a project key makes every
// copy of that project's data, wherever it survives, unreadable.
//
// Project keys live in the key store (a keys/ folder beside the database,
// one file per key, each wrapped by the master key), not in the database:
// a backup of the database and the blobs holds no project key, so once a
// project's key file is destroyed no old backup of its data can be read.
type Keyring struct {
	db     *DB
	master cipher.AEAD
	dir    string // the key store

	mu    sync.RWMutex
	cache map[int64]*ProjectKey
}

// ProjectKey is an unwrapped project data key.
type ProjectKey struct {
	ID        int64
	ProjectID int64
	aead      cipher.AEAD
	mac       []byte // key for HMACs of plaintext (dedupe), derived from the data key
}

// LoadMasterKey returns the master key: from HAVEN_MASTER_KEY (base64 or hex
// of 32 bytes) when set, else from dataDir/master.key, creating that file
// (mode 0600) with a random key on first start.
func LoadMasterKey(dataDir string) ([]byte, error) {
	if v := strings.TrimSpace(os.Getenv("HAVEN_MASTER_KEY")); v != "" {
		key, err := decodeKey(v)
		if err != nil {
			return nil, fmt.Errorf("HAVEN_MASTER_KEY: %w", err)
		}
		return key, nil
	}
	path := filepath.Join(dataDir, "master.key")
	b, err := os.ReadFile(path)
	if err == nil {
		key, err := decodeKey(string(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return key, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key := make([]byte, KeySize)
	rand.Read(key)
	if err := writeFileDurably(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("creating master key: %w", err)
	}
	return key, nil
}

func decodeKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if k, err := hex.DecodeString(s); err == nil && len(k) == KeySize {
		return k, nil
	}
	if k, err := base64.StdEncoding.DecodeString(s); err == nil && len(k) == KeySize {
		return k, nil
	}
	return nil, errors.New("a master key must be 32 bytes, written as base64 or hex")
}

// NewKeyring returns a keyring over db with the given master key and key
// store folder. Keys an older version kept in the database move to the store.
func NewKeyring(db *DB, master []byte, dir string) (*Keyring, error) {
	aead, err := newAEAD(master)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the key store: %w", err)
	}
	k := &Keyring{db: db, master: aead, dir: dir, cache: map[int64]*ProjectKey{}}
	return k, k.moveKeysOutOfDatabase(context.Background())
}

func (k *Keyring) keyFile(keyID int64) string {
	return filepath.Join(k.dir, fmt.Sprintf("project-key-%d", keyID))
}

// moveKeysOutOfDatabase writes any wrapped key still in the database to the
// key store, then clears it from the database (secure_delete overwrites it).
func (k *Keyring) moveKeysOutOfDatabase(ctx context.Context) error {
	return k.db.Write(ctx, func(tx *Tx) error {
		rows, err := tx.Query(`SELECT id, wrapped FROM project_keys WHERE wrapped IS NOT NULL AND destroyed_at IS NULL`)
		if err != nil {
			return err
		}
		type kw struct {
			id      int64
			wrapped []byte
		}
		var keys []kw
		for rows.Next() {
			var x kw
			if err := rows.Scan(&x.id, &x.wrapped); err != nil {
				rows.Close()
				return err
			}
			keys = append(keys, x)
		}
		rows.Close()
		for _, x := range keys {
			if err := writeFileDurably(k.keyFile(x.id), x.wrapped, 0o600); err != nil {
				return err
			}
			if _, err := tx.Exec(`UPDATE project_keys SET wrapped = NULL WHERE id = ?`, x.id); err != nil {
				return err
			}
		}
		return nil
	})
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// seal encrypts plaintext with a fresh random nonce, which it prepends.
func seal(aead cipher.AEAD, plaintext, aad []byte) []byte {
	out := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	rand.Read(out)
	return aead.Seal(out, out, plaintext, aad)
}

func open(aead cipher.AEAD, sealed, aad []byte) ([]byte, error) {
	n := aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("sealed value too short")
	}
	return aead.Open(nil, sealed[:n], sealed[n:], aad)
}

// SealMaster encrypts a small server secret (a Digest HA1) under the master key.
func (k *Keyring) SealMaster(plaintext []byte, purpose string) []byte {
	return seal(k.master, plaintext, []byte(purpose))
}

// OpenMaster decrypts what SealMaster sealed for the same purpose.
func (k *Keyring) OpenMaster(sealed []byte, purpose string) ([]byte, error) {
	return open(k.master, sealed, []byte(purpose))
}

// DeriveSecret derives a named secret from the master key (for example the
// JWT signing key), so the data directory holds one secret only.
func DeriveSecret(master []byte, name string) []byte {
	m := hmac.New(sha256.New, master)
	m.Write([]byte("haven derive " + name))
	return m.Sum(nil)
}

func projectKeyAAD(projectID int64) []byte {
	return []byte(fmt.Sprintf("haven project key %d", projectID))
}

// createProjectKey makes and stores a new data key for a project, inside tx.
func (k *Keyring) createProjectKey(tx *Tx, projectID int64) error {
	key := make([]byte, KeySize)
	rand.Read(key)
	wrapped := seal(k.master, key, projectKeyAAD(projectID))
	res, err := tx.Exec(`INSERT INTO project_keys (project_id, created_at) VALUES (?, ?)`, projectID, ms(tx.Now()))
	if err != nil {
		return err
	}
	id, _ := res.LastInsertId()
	// Written before the row commits: a crash in between leaves a key file
	// no row names, which unlocks nothing that was ever stored.
	return writeFileDurably(k.keyFile(id), wrapped, 0o600)
}

// destroyProjectKey marks a project's live key destroyed within tx and
// returns its id; the caller calls ShredKeyFiles once tx has committed.
func (k *Keyring) destroyProjectKey(tx *Tx, projectID int64) (int64, error) {
	var id int64
	err := tx.QueryRow(`SELECT id FROM project_keys WHERE project_id = ? AND destroyed_at IS NULL`, projectID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		err = tx.QueryRow(`SELECT id FROM project_keys WHERE project_id = ? ORDER BY id DESC LIMIT 1`, projectID).Scan(&id)
		return id, err // already destroyed (a resumed destruction)
	} else if err != nil {
		return 0, err
	}
	_, err = tx.Exec(`UPDATE project_keys SET wrapped = NULL, destroyed_at = ? WHERE id = ?`, ms(tx.Now()), id)
	k.mu.Lock()
	delete(k.cache, projectID)
	k.mu.Unlock()
	return id, err
}

// ShredKeyFiles overwrites and removes the key file of every destroyed key
// still in the key store, and flushes the folder. It is idempotent: a
// destruction interrupted after its transaction finishes here next time.
func (k *Keyring) ShredKeyFiles(ctx context.Context) (int, error) {
	rows, err := k.db.read.QueryContext(ctx, `SELECT id FROM project_keys WHERE destroyed_at IS NOT NULL`)
	if err != nil {
		return 0, err
	}
	var ids []int64
	for rows.Next() {
		var id int64
		rows.Scan(&id)
		ids = append(ids, id)
	}
	rows.Close()
	n := 0
	for _, id := range ids {
		path := k.keyFile(id)
		fi, err := os.Stat(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return n, err
		}
		if f, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
			f.Write(make([]byte, fi.Size()))
			f.Sync()
			f.Close()
		}
		if err := os.Remove(path); err != nil {
			return n, err
		}
		n++
	}
	if n > 0 {
		return n, syncDir(k.dir)
	}
	return n, nil
}

// ProjectKey returns the live data key of a project.
func (k *Keyring) ProjectKey(ctx context.Context, projectID int64) (*ProjectKey, error) {
	k.mu.RLock()
	pk := k.cache[projectID]
	k.mu.RUnlock()
	if pk != nil {
		return pk, nil
	}
	var id int64
	err := k.db.read.QueryRowContext(ctx, `SELECT id FROM project_keys WHERE project_id = ? AND destroyed_at IS NULL`, projectID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, haven.Errorf(haven.ENOTFOUND, "Project %d has no data key: it does not exist or its data was destroyed.", projectID)
	} else if err != nil {
		return nil, err
	}
	wrapped, err := os.ReadFile(k.keyFile(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, haven.Errorf(haven.EUNAVAILABLE, "The key of project %d is not in the key store (%s). Restore the keys folder of this data directory; a database restored from a backup needs the live key store beside it.", projectID, k.dir)
	} else if err != nil {
		return nil, err
	}
	raw, err := open(k.master, wrapped, projectKeyAAD(projectID))
	if err != nil {
		return nil, fmt.Errorf("unwrapping the key of project %d (is HAVEN_MASTER_KEY the key this data directory was made with?): %w", projectID, err)
	}
	aead, err := newAEAD(raw)
	if err != nil {
		return nil, err
	}
	pk = &ProjectKey{ID: id, ProjectID: projectID, aead: aead, mac: DeriveSecret(raw, "mac")}
	k.mu.Lock()
	k.cache[projectID] = pk
	k.mu.Unlock()
	return pk, nil
}

// Seal encrypts a value of the project; aad binds it to its place (a row), so
// a sealed value copied to another row does not open.
func (pk *ProjectKey) Seal(plaintext []byte, aad string) []byte {
	return seal(pk.aead, plaintext, []byte(aad))
}

// Open decrypts what Seal sealed with the same aad.
func (pk *ProjectKey) Open(sealed []byte, aad string) ([]byte, error) {
	b, err := open(pk.aead, sealed, []byte(aad))
	if err != nil {
		return nil, fmt.Errorf("decrypting %s: %w", aad, err)
	}
	return b, nil
}

// MAC returns a keyed hash of b: equal plaintexts give equal MACs within a
// project, and nobody without the key can test a guess against it.
func (pk *ProjectKey) MAC(b []byte) []byte {
	m := hmac.New(sha256.New, pk.mac)
	m.Write(b)
	return m.Sum(nil)
}

// writeFileDurably writes a file through a temporary name, fsyncs it, renames
// it into place and fsyncs the folder: after a crash the file is whole or absent.
func writeFileDurably(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir flushes a file or folder (a folder's entries: new names in it) to disk.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
