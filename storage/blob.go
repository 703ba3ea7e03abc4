package storage

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	gosync "sync"

	"github.com/haven-org/haven"
	"github.com/minio/sio"
)

// BlobStore keeps opaque objects by name. The objects it is given are already
// encrypted; it never sees a plaintext byte. An object Put is durable once
// Sync has returned after it (a store whose Put is durable by itself, like an
// object store, has nothing to do in Sync).
type BlobStore interface {
	Put(ctx context.Context, name string, r io.Reader) (int64, error)
	Sync(ctx context.Context) error
	Open(ctx context.Context, name string) (io.ReadCloser, error)
	Delete(ctx context.Context, name string) error
}

// LocalStore is the embedded default BlobStore: one file per object below a
// directory. Put writes a file without waiting for the disk; Sync makes every
// file written so far durable at once (one syncfs on Linux), so a batch of
// submissions costs one flush, not two per file. Large files are flushed as
// they stream, so Sync never has much left to write.
type LocalStore struct {
	Dir string

	mu      gosync.Mutex
	pending map[string]bool // folders with files written since the last Sync (where syncfs is unavailable: the files too)
}

// syncEvery is how much of a large file is written before it is flushed.
const syncEvery = 8 << 20

// NewLocalStore prepares dir and removes temporary files a crash left behind.
func NewLocalStore(dir string) (*LocalStore, error) {
	if err := os.MkdirAll(filepath.Join(dir, ".tmp"), 0o700); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(dir, ".tmp"))
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		os.Remove(filepath.Join(dir, ".tmp", e.Name()))
	}
	return &LocalStore{Dir: dir, pending: map[string]bool{}}, nil
}

func (s *LocalStore) path(name string) (string, error) {
	// Names are made by Haven (hex), but check anyway: nothing may escape Dir.
	if len(name) < 3 || name != filepath.Base(name) || strings.HasPrefix(name, ".") {
		return "", fmt.Errorf("invalid object name %q", name)
	}
	return filepath.Join(s.Dir, name[:2], name), nil
}

// Put writes r to a new object. The name is random and unknown to anyone
// until the database records it, so the file is written in place: a crash
// leaves at most an unrecorded file, never a recorded partial one.
func (s *LocalStore) Put(ctx context.Context, name string, r io.Reader) (int64, error) {
	final, err := s.path(name)
	if err != nil {
		return 0, err
	}
	dir := filepath.Dir(final)
	f, err := os.OpenFile(final, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrNotExist) {
		if err = os.MkdirAll(dir, 0o700); err == nil {
			s.mark(filepath.Dir(dir))
			f, err = os.OpenFile(final, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		}
	}
	if err != nil {
		return 0, err
	}
	n, err := copyFlushing(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(final)
		return 0, err
	}
	s.mark(dir)
	if !haveSyncfs {
		s.mark(final)
	}
	return n, nil
}

// copyFlushing copies r to f, flushing f to disk every syncEvery bytes and at
// the end of a large file.
func copyFlushing(f *os.File, r io.Reader) (int64, error) {
	var total int64
	for {
		n, err := io.Copy(f, io.LimitReader(r, syncEvery))
		total += n
		if err != nil {
			return total, err
		}
		if n < syncEvery {
			if total >= syncEvery {
				return total, f.Sync()
			}
			return total, nil
		}
		if err := f.Sync(); err != nil {
			return total, err
		}
	}
}

func (s *LocalStore) mark(path string) {
	s.mu.Lock()
	s.pending[path] = true
	s.mu.Unlock()
}

// Sync makes every object written so far durable, with its folder entry.
func (s *LocalStore) Sync(ctx context.Context) error {
	s.mu.Lock()
	pending := s.pending
	s.pending = map[string]bool{}
	s.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	err := func() error {
		if haveSyncfs {
			return syncfs(s.Dir)
		}
		for p := range pending {
			if err := syncPath(p); err != nil {
				return err
			}
		}
		return nil
	}()
	if err != nil {
		// Keep them pending: the next Sync tries again.
		s.mu.Lock()
		for p := range pending {
			s.pending[p] = true
		}
		s.mu.Unlock()
	}
	return err
}

func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Open opens the object name for reading.
func (s *LocalStore) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	p, err := s.path(name)
	if err != nil {
		return nil, err
	}
	return os.Open(p)
}

// Delete removes the object name; a missing object is not an error.
func (s *LocalStore) Delete(ctx context.Context, name string) error {
	p, err := s.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Blob is an encrypted object written to the store but not necessarily yet
// recorded in the database (RecordBlob does that, inside the transaction that
// uses it).
type Blob struct {
	ID         int64
	ProjectID  int64
	Object     string
	WrappedKey []byte
	Size       int64
	MD5        string
	// Data holds the ciphertext of a small object kept in the database
	// rather than the store; nil for objects in the store.
	Data []byte
}

// Blobs puts and gets encrypted objects: each object has its own random key,
// wrapped by the project key; its content is encrypted with DARE (minio/sio),
// a streaming authenticated format, so objects of any size pass through in
// bounded memory and any tampering is detected when read.
type Blobs struct {
	Store BlobStore
	Keys  *Keyring
	DB    *DB
	// Inline is the size up to which objects are kept in the database
	// (encrypted the same way) instead of the store; 0 keeps all in the store.
	Inline int64
}

// DefaultInline keeps objects up to 32 KiB in the database: signatures, audit
// logs, small CSVs, for which a file of their own costs more than it holds.
// (Measured: 100 KB photos go faster as files, with one flush per batch.)
// At most this much per upload in progress is held in memory.
const DefaultInline = 32 << 10

// ErrTooLarge is returned (wrapped) by Put when the content passes the limit.
var ErrTooLarge = errors.New("content too large")

// PutOptions say how to store an object.
type PutOptions struct {
	// Limit refuses content longer than this many bytes (0: no limit),
	// leaving nothing behind.
	Limit int64
	// MD5 computes the plaintext's MD5 (form media need it for manifests;
	// submission attachments do not).
	MD5 bool
}

// inlineBufs recycles the buffers that read small objects.
var inlineBufs gosync.Pool

// Put encrypts r into a new object of the project.
func (b *Blobs) Put(ctx context.Context, projectID int64, r io.Reader, opt PutOptions) (*Blob, error) {
	limit := opt.Limit
	pk, err := b.Keys.ProjectKey(ctx, projectID)
	if err != nil {
		return nil, err
	}
	var raw [16]byte
	rand.Read(raw[:])
	object := hex.EncodeToString(raw[:])
	key := make([]byte, KeySize)
	rand.Read(key)

	cfg := sio.Config{Key: key, MinVersion: sio.Version20}
	if b.Inline > 0 {
		buf, _ := inlineBufs.Get().(*[]byte)
		if buf == nil || int64(len(*buf)) != b.Inline+1 {
			nb := make([]byte, b.Inline+1)
			buf = &nb
		}
		defer inlineBufs.Put(buf)
		n, err := io.ReadFull(r, *buf)
		if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
			return nil, err
		}
		head := (*buf)[:n]
		if limit > 0 && int64(n) > limit {
			return nil, ErrTooLarge
		}
		if int64(n) <= b.Inline {
			size, _ := sio.EncryptedSize(uint64(n))
			ct := bytes.NewBuffer(make([]byte, 0, size))
			if _, err := sio.Encrypt(ct, bytes.NewReader(head), cfg); err != nil {
				return nil, err
			}
			blob := &Blob{ProjectID: projectID, Object: object, WrappedKey: pk.Seal(key, "blob "+object), Size: int64(n), Data: ct.Bytes()}
			if opt.MD5 {
				sum := md5.Sum(head)
				blob.MD5 = hex.EncodeToString(sum[:])
			}
			return blob, nil
		}
		// Larger: copy what was read, since the buffer goes back to the pool.
		r = io.MultiReader(bytes.NewReader(bytes.Clone(head)), r)
	}
	var h hash.Hash
	if opt.MD5 {
		h = md5.New()
		r = io.TeeReader(r, h)
	}
	counted := &countingReader{r: r, limit: limit}
	enc, err := sio.EncryptReader(counted, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := b.Store.Put(ctx, object, enc); err != nil {
		b.Store.Delete(context.WithoutCancel(ctx), object)
		if counted.over {
			return nil, ErrTooLarge
		}
		return nil, err
	}
	blob := &Blob{ProjectID: projectID, Object: object, WrappedKey: pk.Seal(key, "blob "+object), Size: counted.n}
	if h != nil {
		blob.MD5 = hex.EncodeToString(h.Sum(nil))
	}
	return blob, nil
}

type countingReader struct {
	r     io.Reader
	n     int64
	limit int64
	over  bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.limit > 0 && c.n > c.limit {
		c.over = true
		return n, ErrTooLarge
	}
	return n, err
}

// Discard deletes objects that were put but will not be recorded.
func (b *Blobs) Discard(ctx context.Context, blobs ...*Blob) {
	for _, bl := range blobs {
		if bl != nil && bl.Data == nil {
			b.Store.Delete(context.WithoutCancel(ctx), bl.Object)
		}
	}
}

// RecordBlob records a put object in the database within tx and sets its ID.
// The transaction will not commit before the blob store has made the object
// durable (see DB.BeforeCommit).
func (tx *Tx) RecordBlob(b *Blob) error {
	if b.Data == nil {
		tx.batch.needSync = true
	}
	res, err := tx.Exec(`INSERT INTO blobs (project_id, object, wrapped_key, size, md5, data, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		b.ProjectID, b.Object, b.WrappedKey, b.Size, b.MD5, b.Data, ms(tx.Now()))
	if err != nil {
		return err
	}
	b.ID, err = res.LastInsertId()
	return err
}

// Open returns the decrypted content of a recorded blob.
func (b *Blobs) Open(ctx context.Context, blobID int64) (io.ReadCloser, *Blob, error) {
	bl := &Blob{ID: blobID}
	err := b.DB.read.QueryRowContext(ctx, `SELECT project_id, object, wrapped_key, size, md5, data FROM blobs WHERE id = ?`, blobID).
		Scan(&bl.ProjectID, &bl.Object, &bl.WrappedKey, &bl.Size, &bl.MD5, &bl.Data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, notFound("The file")
	} else if err != nil {
		return nil, nil, err
	}
	pk, err := b.Keys.ProjectKey(ctx, bl.ProjectID)
	if err != nil {
		return nil, nil, err
	}
	key, err := pk.Open(bl.WrappedKey, "blob "+bl.Object)
	if err != nil {
		return nil, nil, err
	}
	cfg := sio.Config{Key: key, MinVersion: sio.Version20}
	if bl.Data != nil {
		dec, err := sio.DecryptReader(bytes.NewReader(bl.Data), cfg)
		if err != nil {
			return nil, nil, err
		}
		return io.NopCloser(dec), bl, nil
	}
	f, err := b.Store.Open(ctx, bl.Object)
	if err != nil {
		return nil, nil, haven.Errorf(haven.EINTERNAL, "stored file %d is missing: %v", blobID, err)
	}
	dec, err := sio.DecryptReader(f, cfg)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return readCloser{dec, f}, bl, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}
