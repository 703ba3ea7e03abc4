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
	gosync "sync"
	"time"

	"github.com/haven-org/haven"
	"github.com/minio/sio"
)

// Store names, as the blobs table records them.
const (
	StoreLocal = "local"
	StoreS3    = "s3"
)

// Blob is an encrypted object written to a store but not necessarily yet
// recorded in the database (RecordBlob does that, inside the transaction
// that uses it).
type Blob struct {
	ID         int64
	ProjectID  int64
	Store      string // which store holds it; "" for an object kept in the database
	Object     string
	WrappedKey []byte
	Size       int64
	MD5        string
	// Data holds the ciphertext of a small object kept in the database
	// rather than a store; nil for objects in a store.
	Data []byte
	// KeySlot is the slot of the submission key that wraps the object's
	// key; 0 when the project key wraps it.
	KeySlot int64
}

// Blobs puts and gets encrypted objects: each object has its own random key,
// wrapped by the project key; its content is encrypted with DARE (minio/sio),
// a streaming authenticated format, so objects of any size pass through in
// bounded memory and any tampering is detected when read. Object names are
// random and say nothing of what they hold.
type Blobs struct {
	Stores  map[string]BlobStore // every store objects may be in, by name
	Current string               // where new objects go
	Keys    *Keyring
	DB      *DB
	// Inline is the size up to which objects are kept in the database
	// (encrypted the same way) instead of a store; 0 keeps all in the store.
	Inline int64
}

// DefaultInline keeps objects up to 32 KiB in the database when the blob
// store is the local directory: signatures, audit logs, small CSVs, for which
// a file of their own costs more than it holds. (Measured: 100 KB photos go
// faster as files, with one flush per batch.) At most this much per upload in
// progress is held in memory.
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

func storeUnavailable(err error) error {
	return &haven.Error{Code: haven.EUNAVAILABLE, Err: err,
		Message: "The server could not store the file right now, so nothing was saved. Send the form again later."}
}

// Put encrypts r into a new object of the project. Errors reading r are
// returned as they are (the sender's fault); errors of the store are
// EUNAVAILABLE (ours: try again later). Nothing is left behind on error.
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
	blob := &Blob{ProjectID: projectID, Object: object, WrappedKey: pk.Seal(key, "blob "+object)}
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
			blob.Size, blob.Data = int64(n), ct.Bytes()
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
	blob.Store = b.Current
	if _, err := b.Stores[b.Current].Put(ctx, object, enc); err != nil {
		b.Stores[b.Current].Delete(context.WithoutCancel(ctx), object)
		switch {
		case counted.over:
			return nil, ErrTooLarge
		case counted.readErr != nil:
			return nil, counted.readErr
		case ctx.Err() != nil:
			return nil, ctx.Err()
		}
		return nil, storeUnavailable(err)
	}
	blob.Size = counted.n
	if h != nil {
		blob.MD5 = hex.EncodeToString(h.Sum(nil))
	}
	return blob, nil
}

// countingReader counts what passes, enforces a limit, and remembers an
// error of its source, to tell a broken upload from a failing store.
type countingReader struct {
	r       io.Reader
	n       int64
	limit   int64
	over    bool
	readErr error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF {
		c.readErr = err
	}
	if c.limit > 0 && c.n > c.limit {
		c.over = true
		return n, ErrTooLarge
	}
	return n, err
}

// Discard deletes objects that were put but will not be recorded. An object
// that cannot be deleted now (its store is down) is left for the garbage
// collector.
func (b *Blobs) Discard(ctx context.Context, blobs ...*Blob) {
	for _, bl := range blobs {
		if bl != nil && bl.Data == nil {
			if st := b.Stores[bl.Store]; st != nil {
				st.Delete(context.WithoutCancel(ctx), bl.Object)
			}
		}
	}
}

// RecordBlob records a put object in the database within tx and sets its ID.
// The transaction will not commit before the blob store has made the object
// durable (see DB.BeforeCommit).
func (tx *Tx) RecordBlob(b *Blob) error {
	store := b.Store
	if b.Data == nil {
		tx.batch.needSync = true
	} else {
		store = StoreLocal // unused for objects kept in the database
	}
	var slot any
	if b.KeySlot != 0 {
		slot = b.KeySlot
	}
	return tx.Insert(&b.ID, `INSERT INTO blobs (project_id, object, wrapped_key, size, md5, data, store, created_at, key_slot) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		b.ProjectID, b.Object, b.WrappedKey, b.Size, b.MD5, b.Data, store, ms(tx.Now()), slot)
}

// Open returns the decrypted content of a recorded blob.
func (b *Blobs) Open(ctx context.Context, blobID int64) (io.ReadCloser, *Blob, error) {
	bl := &Blob{ID: blobID}
	var slot sql.NullInt64
	err := b.DB.read.QueryRowContext(ctx, `SELECT project_id, object, wrapped_key, size, md5, data, store, key_slot FROM blobs WHERE id = ?`, blobID).
		Scan(&bl.ProjectID, &bl.Object, &bl.WrappedKey, &bl.Size, &bl.MD5, &bl.Data, &bl.Store, &slot)
	bl.KeySlot = slot.Int64
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, notFound("The file")
	} else if err != nil {
		return nil, nil, err
	}
	pk, err := b.Keys.ProjectKey(ctx, bl.ProjectID)
	if err != nil {
		return nil, nil, err
	}
	sk, err := b.Keys.sealerFor(pk, bl.KeySlot)
	if err != nil {
		return nil, nil, err
	}
	key, err := sk.Open(bl.WrappedKey, "blob "+bl.Object)
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
	st := b.Stores[bl.Store]
	if st == nil {
		return nil, nil, haven.Errorf(haven.EUNAVAILABLE, "This file is kept in the %q store, which this server is not configured to use.", bl.Store)
	}
	f, err := st.Open(ctx, bl.Object)
	if err != nil {
		return nil, nil, &haven.Error{Code: haven.EUNAVAILABLE, Message: "The file could not be read from storage right now. Try again later.", Err: err}
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

// SyncAll makes every object put so far durable, in every store.
func (b *Blobs) SyncAll(ctx context.Context) error {
	for _, st := range b.Stores {
		if err := st.Sync(ctx); err != nil {
			return err
		}
	}
	return nil
}

// incompleteRemover is a store that can hold unfinished uploads (S3).
type incompleteRemover interface {
	RemoveIncomplete(ctx context.Context, cutoff time.Time) (int, error)
}

// CollectGarbage deletes objects that no database row records and that
// were written more than grace ago: what a crash or an outage left between
// writing an object and recording it (or between moving it and deleting the
// original). Younger objects may belong to an upload in progress.
func (b *Blobs) CollectGarbage(ctx context.Context, grace time.Duration) (int, error) {
	cutoff := b.DB.Now().Add(-grace)
	removed := 0
	for name, st := range b.Stores {
		var orphans []string
		err := st.List(ctx, func(object string, written time.Time) error {
			if written.After(cutoff) {
				return nil
			}
			var n int
			if err := b.DB.read.QueryRowContext(ctx, `SELECT count(*) FROM blobs WHERE object = ? AND store = ? AND data IS NULL`, object, name).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				orphans = append(orphans, object)
			}
			return nil
		})
		if err != nil {
			return removed, fmt.Errorf("listing the %s store: %w", name, err)
		}
		for _, o := range orphans {
			if err := st.Delete(ctx, o); err != nil {
				return removed, err
			}
			removed++
		}
		if ir, ok := st.(incompleteRemover); ok {
			n, err := ir.RemoveIncomplete(ctx, cutoff)
			removed += n
			if err != nil {
				return removed, err
			}
		}
	}
	return removed, nil
}

// Migrate moves every object kept in a store other than to into the store
// to, one at a time: copy the ciphertext as it is, record the move, then
// delete the original. It can be stopped at any moment and run again: an
// object is always recorded where a whole copy of it is. progress, when
// not nil, is told of each object moved.
func (b *Blobs) Migrate(ctx context.Context, to string, progress func(moved, total int)) (int, error) {
	target := b.Stores[to]
	if target == nil {
		return 0, haven.Errorf(haven.EINVALID, "There is no %q store configured to move files to.", to)
	}
	var total int
	if err := b.DB.read.QueryRowContext(ctx, `SELECT count(*) FROM blobs WHERE data IS NULL AND store <> ?`, to).Scan(&total); err != nil {
		return 0, err
	}
	moved := 0
	for {
		var id int64
		var object, from string
		err := b.DB.read.QueryRowContext(ctx, `SELECT id, object, store FROM blobs WHERE data IS NULL AND store <> ? ORDER BY id LIMIT 1`, to).Scan(&id, &object, &from)
		if errors.Is(err, sql.ErrNoRows) {
			return moved, nil
		} else if err != nil {
			return moved, err
		}
		source := b.Stores[from]
		if source == nil {
			return moved, haven.Errorf(haven.EINVALID, "File %d is in the %q store, which is not configured: configure it too, so its files can be moved.", id, from)
		}
		if err := b.copyObject(ctx, source, target, object); err != nil {
			return moved, fmt.Errorf("moving object %d from %s to %s: %w", id, from, to, err)
		}
		err = b.DB.Write(ctx, func(tx *Tx) error {
			tx.batch.needSync = true // the copy must be durable before the row points at it
			_, err := tx.Exec(`UPDATE blobs SET store = ? WHERE id = ?`, to, id)
			return err
		})
		if err != nil {
			return moved, err
		}
		source.Delete(ctx, object) // if this fails, the garbage collector finishes it
		moved++
		if progress != nil {
			progress(moved, total)
		}
	}
}

func (b *Blobs) copyObject(ctx context.Context, from, to BlobStore, object string) error {
	r, err := from.Open(ctx, object)
	if err != nil {
		return err
	}
	defer r.Close()
	to.Delete(ctx, object) // a copy left by an interrupted run
	_, err = to.Put(ctx, object, r)
	return err
}
