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
type Keyring struct {
	db     *DB
	master cipher.AEAD

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

// NewKeyring returns a keyring over db with the given master key.
func NewKeyring(db *DB, master []byte) (*Keyring, error) {
	aead, err := newAEAD(master)
	if err != nil {
		return nil, err
	}
	return &Keyring{db: db, master: aead, cache: map[int64]*ProjectKey{}}, nil
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
	_, err := tx.Exec(`INSERT INTO project_keys (project_id, wrapped, created_at) VALUES (?, ?, ?)`,
		projectID, wrapped, ms(tx.Now()))
	return err
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
	var wrapped []byte
	err := k.db.read.QueryRowContext(ctx, `SELECT id, wrapped FROM project_keys WHERE project_id = ? AND destroyed_at IS NULL`, projectID).Scan(&id, &wrapped)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, haven.Errorf(haven.ENOTFOUND, "Project %d has no data key: it does not exist or its data was destroyed.", projectID)
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
