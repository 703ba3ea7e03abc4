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
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/haven-org/haven"
	"golang.org/x/crypto/argon2"
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
	ks     keyStore // the key store

	mu    sync.RWMutex
	cache map[int64]*ProjectKey

	slotMu   sync.Mutex
	slotNext map[int64]int64 // the last slot numbered, by project key id
	// slotBlocks are, on PostgreSQL, the slot numbers this node took and
	// has not handed out yet, by project key id.
	slotBlocks map[int64]*slotRange
	// written are, on a shared key store, the keys this node wrote ahead
	// and has not handed out yet, by project key id.
	written map[int64]*keyBlock
}

// ProjectKey is an unwrapped project data key.
type ProjectKey struct {
	ID        int64
	ProjectID int64
	aead      cipher.AEAD
	mac       []byte // key for HMACs of plaintext (dedupe), derived from the data key
}

// The master key. A copy of the data directory alone must not open
// itself, so the key is never kept inside it. It comes from one of:
//   - a key file outside the data directory (KeySource.File);
//   - the key itself, base64 or hex (KeySource.Value, e.g. HAVEN_MASTER_KEY);
//   - a passphrase given at start, stretched with argon2id under a salt
//     kept in the data directory (KeySource.Passphrase);
//   - by default, a key file in the user's configuration folder
//     (haven/master-ID.key), made on the first start.
// The data directory keeps key.json: an id for the default key file, the
// passphrase's salt, and a check value (an HMAC under the key) so a wrong
// key is refused at start, before anything is read with it.

// KeySource says where the master key comes from; the zero value means the
// default key file in the user's configuration folder.
type KeySource struct {
	File       string
	Value      string
	Passphrase string
}

// KeySourceFromEnv reads a key source from HAVEN_MASTER_KEY_FILE,
// HAVEN_MASTER_KEY and HAVEN_MASTER_PASSPHRASE.
func KeySourceFromEnv() KeySource {
	return KeySource{File: os.Getenv("HAVEN_MASTER_KEY_FILE"), Value: strings.TrimSpace(os.Getenv("HAVEN_MASTER_KEY")),
		Passphrase: os.Getenv("HAVEN_MASTER_PASSPHRASE")}
}

// keyInfo is key.json: nothing in it opens anything.
type keyInfo struct {
	ID    string `json:"id"`             // names the default key file
	Salt  []byte `json:"salt,omitempty"` // for a passphrase
	Check []byte `json:"check"`          // HMAC of a fixed text under the key
}

// legacyKeyFile is where Haven kept the master key before it was moved out.
const legacyKeyFile = "master.key"

// argon2id parameters for a passphrase: stretched once per start, so
// generously (64 MiB, 3 passes).
const (
	passphraseTime   = 3
	passphraseMemory = 64 * 1024
)

func keyCheck(key []byte) []byte { return DeriveSecret(key, "master key check") }

// DefaultKeyFile is where the master key of the data directory with id is
// kept when nothing else is said.
func DefaultKeyFile(id string) (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("there is no configuration folder to keep the master key in (%v): give a key file with --master-key-file or HAVEN_MASTER_KEY_FILE", err)
	}
	return filepath.Join(dir, "haven", "master-"+id+".key"), nil
}

// inside reports whether path lies inside dir (links followed).
func inside(dir, path string) bool {
	real := func(p string) string {
		p, err := filepath.Abs(p)
		if err != nil {
			return p
		}
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return r
		}
		if r, err := filepath.EvalSymlinks(filepath.Dir(p)); err == nil {
			return filepath.Join(r, filepath.Base(p))
		}
		return p
	}
	rel, err := filepath.Rel(real(dir), real(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// MasterKey is a loaded master key, and the key file made on this start
// (to be shown once), if any.
type MasterKey struct {
	Key     []byte
	Created string
	// checkMade: this start wrote key.json's check value for Key (a data
	// directory opened for the first time).
	checkMade bool
}

// undo removes what this start made for a key the deployment then refused
// (a node's first start with the wrong master key, or none): key.json's
// check and a default key file would refuse the right key next time.
func (mk *MasterKey) undo(dir string) {
	if mk.checkMade {
		os.Remove(filepath.Join(dir, "key.json"))
	}
	if mk.Created != "" {
		shredFile(mk.Created)
	}
}

// LoadMasterKey returns the master key of the data directory dir. A data
// directory that still holds its key (an older Haven's master.key) is
// refused until the key is moved out (MoveKeyOut).
func LoadMasterKey(dir string, src KeySource) (*MasterKey, error) {
	if _, err := os.Stat(filepath.Join(dir, legacyKeyFile)); err == nil {
		return nil, haven.Errorf(haven.EINVALID, "The master key is inside the data directory (%s), so any copy of the directory opens every project. Move it out with: haven key move-out --data %s (it says where it put the key), then start again.", filepath.Join(dir, legacyKeyFile), dir)
	}
	fresh := true
	if _, err := os.Stat(filepath.Join(dir, "haven.db")); err == nil {
		fresh = false
	}
	info, err := readKeyInfo(dir)
	if err != nil {
		return nil, err
	}
	if info == nil {
		info = &keyInfo{ID: randomID()}
	}
	mk := &MasterKey{}
	switch {
	case src.Value != "":
		if mk.Key, err = decodeKey(src.Value); err != nil {
			return nil, fmt.Errorf("HAVEN_MASTER_KEY: %w", err)
		}
	case src.Passphrase != "":
		if info.Salt == nil {
			if !fresh && info.Check != nil {
				return nil, haven.Errorf(haven.EINVALID, "This data directory was not made with a passphrase: give its master key file (--master-key-file) or HAVEN_MASTER_KEY instead.")
			}
			info.Salt = make([]byte, 16)
			rand.Read(info.Salt)
		}
		mk.Key = argon2.IDKey([]byte(src.Passphrase), info.Salt, passphraseTime, passphraseMemory, 1, KeySize)
	default:
		path := src.File
		if path == "" {
			if path, err = DefaultKeyFile(info.ID); err != nil {
				return nil, err
			}
		}
		if inside(dir, path) {
			return nil, haven.Errorf(haven.EINVALID, "The master key file %s is inside the data directory %s: a copy of the directory would then open itself. Keep the key file elsewhere (another disk, a secrets mount) and give its path.", path, dir)
		}
		if mk.Key, mk.Created, err = readOrMakeKeyFile(path, fresh && info.Check == nil); err != nil {
			return nil, err
		}
	}
	switch {
	case info.Check == nil:
		info.Check = keyCheck(mk.Key)
		if err := writeKeyInfo(dir, info); err != nil {
			return nil, err
		}
		mk.checkMade = true
	case !hmac.Equal(info.Check, keyCheck(mk.Key)):
		return nil, haven.Errorf(haven.EINVALID, "This is not the master key the data directory %s was made with (key.json does not match it). Give the right key file, key or passphrase; nothing was read or changed.", dir)
	}
	return mk, nil
}

// readOrMakeKeyFile reads the key file at path, or makes one (mode 0600)
// when create is true and there is none.
func readOrMakeKeyFile(path string, create bool) ([]byte, string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		key, err := decodeKey(string(b))
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", path, err)
		}
		return key, "", nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, "", err
	}
	if !create {
		return nil, "", haven.Errorf(haven.EINVALID, "The master key of this data directory is not at %s. Give its key file with --master-key-file (or HAVEN_MASTER_KEY_FILE), or the key with HAVEN_MASTER_KEY: without it the data cannot be read.", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, "", fmt.Errorf("creating the folder of the master key: %w", err)
	}
	key := make([]byte, KeySize)
	rand.Read(key)
	if err := writeFileDurably(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, "", fmt.Errorf("creating the master key: %w", err)
	}
	return key, path, nil
}

func randomID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func readKeyInfo(dir string) (*keyInfo, error) {
	b, err := os.ReadFile(filepath.Join(dir, "key.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var info keyInfo
	if err := json.Unmarshal(b, &info); err != nil || info.ID == "" {
		return nil, fmt.Errorf("%s is damaged: %v", filepath.Join(dir, "key.json"), err)
	}
	return &info, nil
}

func writeKeyInfo(dir string, info *keyInfo) error {
	b, _ := json.MarshalIndent(info, "", "  ")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return writeFileDurably(filepath.Join(dir, "key.json"), b, 0o600)
}

// MoveKeyOut moves an older data directory's master key (dir/master.key)
// to the file to (the default key file when empty), and leaves in the data
// directory only key.json. The old file is overwritten before it is
// removed. It returns where the key went.
func MoveKeyOut(dir, to string) (string, error) {
	old := filepath.Join(dir, legacyKeyFile)
	b, err := os.ReadFile(old)
	if errors.Is(err, os.ErrNotExist) {
		return "", haven.Errorf(haven.EINVALID, "There is no master key in %s to move: its key is kept outside already.", dir)
	} else if err != nil {
		return "", err
	}
	key, err := decodeKey(string(b))
	if err != nil {
		return "", fmt.Errorf("%s: %w", old, err)
	}
	info, err := readKeyInfo(dir)
	if err != nil {
		return "", err
	}
	if info == nil {
		info = &keyInfo{ID: randomID()}
	}
	if to == "" {
		if to, err = DefaultKeyFile(info.ID); err != nil {
			return "", err
		}
	}
	if inside(dir, to) {
		return "", haven.Errorf(haven.EINVALID, "%s is inside the data directory: move the key somewhere else.", to)
	}
	if prev, err := os.ReadFile(to); err == nil {
		if k, err := decodeKey(string(prev)); err != nil || !hmac.Equal(k, key) {
			return "", haven.Errorf(haven.EINVALID, "%s already holds another key; nothing was moved. Choose another place with --to.", to)
		}
	} else if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
		return "", err
	} else if err := writeFileDurably(to, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return "", err
	}
	info.Check = keyCheck(key)
	if err := writeKeyInfo(dir, info); err != nil {
		return "", err
	}
	if f, err := os.OpenFile(old, os.O_WRONLY, 0); err == nil {
		f.Write(make([]byte, len(b)))
		f.Sync()
		f.Close()
	}
	if err := os.Remove(old); err != nil {
		return "", err
	}
	return to, syncDir(dir)
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

// newKeyring returns a keyring over db with the given master key and key
// store. Keys an older version kept in the database move to the store.
func newKeyring(db *DB, master []byte, ks keyStore) (*Keyring, error) {
	aead, err := newAEAD(master)
	if err != nil {
		return nil, err
	}
	k := &Keyring{db: db, master: aead, ks: ks, cache: map[int64]*ProjectKey{}, slotNext: map[int64]int64{},
		slotBlocks: map[int64]*slotRange{}, written: map[int64]*keyBlock{}}
	// Another node destroyed a key: drop it, and any slot held in memory.
	db.OnChange("keys", k.forget)
	return k, k.moveKeysOutOfDatabase(context.Background())
}

// forget drops every unwrapped key and slot this node holds in memory.
func (k *Keyring) forget() {
	k.mu.Lock()
	clear(k.cache)
	k.mu.Unlock()
	k.ks.forget()
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
			if err := k.ks.putKey(context.Background(), x.id, x.wrapped); err != nil {
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
	var id int64
	if err := tx.Insert(&id, `INSERT INTO project_keys (project_id, created_at) VALUES (?, ?)`, projectID, ms(tx.Now())); err != nil {
		return err
	}
	// Written before the row commits: a crash in between leaves a key
	// no row names, which unlocks nothing that was ever stored.
	return k.ks.putKey(context.Background(), id, wrapped)
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
	ids, err := k.db.int64s(ctx, `SELECT id FROM project_keys WHERE destroyed_at IS NOT NULL`)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		k.slotMu.Lock()
		delete(k.written, id)
		delete(k.slotBlocks, id)
		k.slotMu.Unlock()
		found, err := k.ks.shredKey(ctx, id)
		if err != nil {
			return n, err
		}
		if found {
			n++
		}
	}
	if n > 0 {
		k.db.changed("keys") // other nodes drop their unwrapped copies
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
	wrapped, err := k.ks.getKey(ctx, id)
	if errors.Is(err, errNoKey) {
		return nil, haven.Errorf(haven.EUNAVAILABLE, "The key of project %d is not in %s. Restore the key store; a database restored from a backup needs the live key store beside it.", projectID, k.ks.where())
	} else if err != nil {
		return nil, err
	}
	raw, err := open(k.master, wrapped, projectKeyAAD(projectID))
	if err != nil {
		return nil, fmt.Errorf("unwrapping the key of project %d (is the master key the one this data directory was made with?): %w", projectID, err)
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
