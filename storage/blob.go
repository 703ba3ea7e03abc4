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
	"io"
	"os"
	"path/filepath"

	"github.com/haven-org/haven"
	"github.com/minio/sio"
)

// BlobStore keeps opaque objects by name. The objects it is given are already
// encrypted; it never sees a plaintext byte. Put must not return before the
// object is durable.
type BlobStore interface {
	Put(ctx context.Context, name string, r io.Reader) (int64, error)
	Open(ctx context.Context, name string) (io.ReadCloser, error)
	Delete(ctx context.Context, name string) error
}

// LocalStore is the embedded default BlobStore: one file per object below a
// directory, written through a temporary file, fsynced and renamed into place.
type LocalStore struct {
	Dir string
}

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
	return &LocalStore{Dir: dir}, nil
}

func (s *LocalStore) path(name string) (string, error) {
	// Names are made by Haven (hex), but check anyway: nothing may escape Dir.
	if len(name) < 3 || name != filepath.Base(name) {
		return "", fmt.Errorf("invalid object name %q", name)
	}
	return filepath.Join(s.Dir, name[:2], name), nil
}

// Put writes r to the object name durably.
func (s *LocalStore) Put(ctx context.Context, name string, r io.Reader) (int64, error) {
	final, err := s.path(name)
	if err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(filepath.Join(s.Dir, ".tmp"), "put-*")
	if err != nil {
		return 0, err
	}
	tmp := f.Name()
	n, err := io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.MkdirAll(filepath.Dir(final), 0o700)
	}
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err == nil {
		err = syncDir(filepath.Dir(final))
	}
	if err != nil {
		os.Remove(tmp)
		return 0, err
	}
	return n, nil
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

// DefaultInline keeps objects up to 128 KiB in the database: a photo Collect
// scaled down, a signature, an audit log. At most this much per upload in
// progress is held in memory.
const DefaultInline = 128 << 10

// ErrTooLarge is returned (wrapped) by Put when the content passes the limit.
var ErrTooLarge = errors.New("content too large")

// Put encrypts r into a new object of the project. With limit > 0, content
// longer than limit is refused (and nothing is left behind).
func (b *Blobs) Put(ctx context.Context, projectID int64, r io.Reader, limit int64) (*Blob, error) {
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
		head, err := io.ReadAll(io.LimitReader(r, b.Inline+1))
		if err != nil {
			return nil, err
		}
		if limit > 0 && int64(len(head)) > limit {
			return nil, ErrTooLarge
		}
		if int64(len(head)) <= b.Inline {
			var ct bytes.Buffer
			if _, err := sio.Encrypt(&ct, bytes.NewReader(head), cfg); err != nil {
				return nil, err
			}
			sum := md5.Sum(head)
			return &Blob{ProjectID: projectID, Object: object, WrappedKey: pk.Seal(key, "blob "+object),
				Size: int64(len(head)), MD5: hex.EncodeToString(sum[:]), Data: ct.Bytes()}, nil
		}
		r = io.MultiReader(bytes.NewReader(head), r)
	}
	h := md5.New()
	counted := &countingReader{r: io.TeeReader(r, h), limit: limit}
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
	return &Blob{
		ProjectID:  projectID,
		Object:     object,
		WrappedKey: pk.Seal(key, "blob "+object),
		Size:       counted.n,
		MD5:        hex.EncodeToString(h.Sum(nil)),
	}, nil
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
func (tx *Tx) RecordBlob(b *Blob) error {
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
