package storage

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/haven-org/haven"
	"github.com/minio/minio-go/v7"
)

// objectKeys is the key store of nodes on several machines: a bucket of
// its own on the object store (not the files' bucket: backups and
// replication of the files must not carry keys, so that destroying a key
// makes every copy of what it sealed unreadable). Project keys are objects
// (project-key-ID); submission key slots are written in runs of
// consecutive slots, one object each (slots/ID/FIRST, at most runSlots
// slots): a node writes each block of keys it makes ahead as one run
// (Keyring.makeKey), and keys moved from a folder go in runs of at most
// runSlots. Erasing a slot rewrites its run with the slot zeroed (or
// removes the run once every slot in it is zero) under an advisory lock,
// since two nodes may erase slots of one run at once; the bucket must not
// keep versions, or a rewritten run's old version would keep the erased
// key.
type objectKeys struct {
	client *minio.Client
	bucket string
	db     *DB

	mu   sync.Mutex
	runs map[runID][]byte // runs read or written, a bounded cache
	gen  uint64           // bumped by forget: a read begun before it is not cached
}

type runID struct{ key, first int64 }

const (
	// runSlots bounds a run: the slots a lookup lists back from.
	runSlots = 64
	// maxCachedRuns bounds the cache (3 KB a run at most).
	maxCachedRuns = 4096
	// keyStoreIDObject names the deployment the bucket's keys belong to.
	keyStoreIDObject = "keystore-id"
)

func newObjectKeys(ctx context.Context, cfg S3Config, db *DB) (*objectKeys, error) {
	s3, err := NewS3Store(ctx, S3Config{Endpoint: cfg.Endpoint, Bucket: cfg.KeyBucketName(), AccessKey: cfg.AccessKey,
		SecretKey: cfg.SecretKey, TLS: cfg.TLS, Region: cfg.Region})
	if err != nil {
		return nil, err
	}
	ok := &objectKeys{client: s3.client, bucket: cfg.KeyBucketName(), db: db, runs: map[runID][]byte{}}
	v, err := ok.client.GetBucketVersioning(ctx, ok.bucket)
	if err != nil {
		return nil, haven.Errorf(haven.EUNAVAILABLE, "Haven cannot read the settings of the key bucket %q: %s", ok.bucket, explainS3(err, cfg))
	}
	if v.Enabled() || v.Suspended() {
		return nil, haven.Errorf(haven.EINVALID, "The key bucket %q keeps versions of its objects, so a destroyed key would survive as an old version. Use a bucket that never had versioning (mc mb without --with-versioning), then start again.", ok.bucket)
	}
	return ok, nil
}

func (o *objectKeys) where() string { return "the key bucket of the object store" }

func keyObject(id int64) string { return fmt.Sprintf("project-key-%d", id) }

func runPrefix(key int64) string { return fmt.Sprintf("slots/%d/", key) }

func runObject(key, first int64) string { return fmt.Sprintf("slots/%d/%016d", key, first) }

func noSuchObject(err error) bool { return minio.ToErrorResponse(err).Code == "NoSuchKey" }

func (o *objectKeys) put(ctx context.Context, name string, b []byte) error {
	_, err := o.client.PutObject(ctx, o.bucket, name, bytes.NewReader(b), int64(len(b)),
		minio.PutObjectOptions{ContentType: "application/octet-stream", DisableMultipart: true})
	if err != nil {
		return keysUnavailable(fmt.Errorf("writing %s to the key bucket %q: %w", name, o.bucket, err))
	}
	return nil
}

// keysUnavailable is the answer when the key bucket cannot be reached: as
// for a file, nothing was saved, and the sender tries again later.
func keysUnavailable(err error) error {
	return &haven.Error{Code: haven.EUNAVAILABLE, Err: err,
		Message: "The server could not reach its key store (the object storage) right now, so nothing was saved or read. Try again later."}
}

// get reads an object; errNoKey when there is none.
func (o *objectKeys) get(ctx context.Context, name string) ([]byte, error) {
	obj, err := o.client.GetObject(ctx, o.bucket, name, minio.GetObjectOptions{})
	if err != nil {
		return nil, keysUnavailable(err)
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	if noSuchObject(err) {
		return nil, errNoKey
	} else if err != nil {
		return nil, keysUnavailable(fmt.Errorf("reading %s from the key bucket %q: %w", name, o.bucket, err))
	}
	return b, nil
}

func (o *objectKeys) putKey(ctx context.Context, id int64, wrapped []byte) error {
	return o.put(ctx, keyObject(id), wrapped)
}

func (o *objectKeys) getKey(ctx context.Context, id int64) ([]byte, error) {
	return o.get(ctx, keyObject(id))
}

// shredKey removes the key and every run of its slots (the object store
// frees what they held; nothing is kept, the bucket keeping no versions).
func (o *objectKeys) shredKey(ctx context.Context, id int64) (bool, error) {
	_, err := o.client.StatObject(ctx, o.bucket, keyObject(id), minio.StatObjectOptions{})
	found := err == nil
	if err != nil && !noSuchObject(err) {
		return false, err
	}
	if found {
		if err := o.client.RemoveObject(ctx, o.bucket, keyObject(id), minio.RemoveObjectOptions{}); err != nil {
			return false, err
		}
	}
	for obj := range o.client.ListObjects(ctx, o.bucket, minio.ListObjectsOptions{Prefix: runPrefix(id), Recursive: true}) {
		if obj.Err != nil {
			return found, obj.Err
		}
		if err := o.client.RemoveObject(ctx, o.bucket, obj.Key, minio.RemoveObjectOptions{}); err != nil {
			return found, err
		}
	}
	o.mu.Lock()
	for r := range o.runs {
		if r.key == id {
			delete(o.runs, r)
		}
	}
	o.mu.Unlock()
	return found, nil
}

// putSlot is never asked of the bucket: its keys are written ahead, a
// block at a time, before they are handed out (Keyring.makeKey).
func (o *objectKeys) putSlot(keyID, slot int64, b []byte) error {
	return fmt.Errorf("submission key %d of project key %d was not written ahead to the key bucket", slot, keyID)
}

// syncSlots has nothing to do: every key in the bucket was written before
// it was handed out.
func (o *objectKeys) syncSlots(context.Context) error { return nil }

// putRun writes a run of slots as one object.
func (o *objectKeys) putRun(ctx context.Context, id runID, b []byte) error {
	if err := o.put(ctx, runObject(id.key, id.first), b); err != nil {
		return err
	}
	o.mu.Lock()
	o.cache(id, b)
	o.mu.Unlock()
	return nil
}

// cache keeps a run (o.mu held), emptying the cache when it is full.
func (o *objectKeys) cache(id runID, b []byte) {
	if len(o.runs) >= maxCachedRuns {
		clear(o.runs)
	}
	o.runs[id] = b
}

// cached finds the cached run holding a slot (o.mu held).
func (o *objectKeys) cached(key, slot int64) (runID, []byte, bool) {
	for first := slot; first > slot-runSlots && first > 0; first-- {
		id := runID{key, first}
		if b, ok := o.runs[id]; ok {
			if first+int64(len(b)/slotSize) > slot {
				return id, b, true
			}
			return runID{}, nil, false // the run before the slot ends before it
		}
	}
	return runID{}, nil, false
}

// findRuns lists the run holding a slot (it starts at most runSlots-1
// before it) and up to prefetchRuns-1 runs after it. found is false when
// no run holds the slot.
func (o *objectKeys) findRuns(ctx context.Context, key, slot int64) (runs []runID, found bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opts := minio.ListObjectsOptions{Prefix: runPrefix(key), MaxKeys: runSlots + prefetchRuns}
	if from := slot - runSlots; from > 0 {
		opts.StartAfter = runObject(key, from)
	}
	for obj := range o.client.ListObjects(ctx, o.bucket, opts) {
		if obj.Err != nil {
			return nil, false, keysUnavailable(obj.Err)
		}
		first, err := strconv.ParseInt(strings.TrimPrefix(obj.Key, runPrefix(key)), 10, 64)
		if err != nil {
			continue
		}
		switch {
		case !found && first <= slot && first+obj.Size/slotSize > slot:
			runs, found = append(runs, runID{key, first}), true
		case first > slot:
			if !found {
				return nil, false, nil
			}
			runs = append(runs, runID{key, first})
		}
		if len(runs) == prefetchRuns {
			break
		}
	}
	return runs, found, nil
}

// prefetchRuns is how many runs a miss reads at once (in parallel): the
// one it needs and those after it, which a walk in slot order (an export
// on a node that did not write them) asks for next.
const prefetchRuns = 16

// readRun reads a run, from the cache or the bucket; nil when it is gone.
func (o *objectKeys) readRun(ctx context.Context, key, slot int64) (runID, []byte, error) {
	o.mu.Lock()
	id, b, ok := o.cached(key, slot)
	gen := o.gen
	o.mu.Unlock()
	if ok {
		return id, b, nil
	}
	runs, ok, err := o.findRuns(ctx, key, slot)
	if err != nil || !ok {
		return runID{}, nil, err
	}
	got := make([][]byte, len(runs))
	errs := make([]error, len(runs))
	var wg sync.WaitGroup
	for i, r := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = o.get(ctx, runObject(r.key, r.first))
		}()
	}
	wg.Wait()
	if errs[0] == errNoKey {
		return runID{}, nil, nil // removed since it was listed: every slot in it was zeroed
	} else if errs[0] != nil {
		return runID{}, nil, errs[0]
	}
	o.mu.Lock()
	if o.gen == gen {
		for i, r := range runs {
			if errs[i] == nil {
				o.cache(r, got[i])
			}
		}
	}
	o.mu.Unlock()
	return runs[0], got[0], nil
}

func (o *objectKeys) getSlot(ctx context.Context, key, slot int64) ([]byte, error) {
	id, b, err := o.readRun(ctx, key, slot)
	if err != nil || b == nil {
		return nil, err
	}
	off := (slot - id.first) * slotSize
	if off+slotSize > int64(len(b)) {
		return nil, nil
	}
	return bytes.Clone(b[off : off+slotSize]), nil
}

// zeroSlots rewrites each run holding one of the slots with them zeroed,
// under a lock every node takes for that run, and tells the other nodes
// to drop what they hold in memory.
func (o *objectKeys) zeroSlots(ctx context.Context, key int64, slots []int64) error {
	byRun := map[runID][]int64{}
	for _, s := range slots {
		id, b, err := o.readRun(ctx, key, s)
		if err != nil {
			return err
		}
		if b != nil {
			byRun[id] = append(byRun[id], s)
		}
	}
	for id, ss := range byRun {
		err := o.db.withLock(ctx, runLockKey(id), func() error {
			b, err := o.get(ctx, runObject(id.key, id.first))
			if err == errNoKey {
				return nil
			} else if err != nil {
				return err
			}
			for _, s := range ss {
				if off := (s - id.first) * slotSize; off+slotSize <= int64(len(b)) {
					clear(b[off : off+slotSize])
				}
			}
			if allZero(b) {
				return o.client.RemoveObject(ctx, o.bucket, runObject(id.key, id.first), minio.RemoveObjectOptions{})
			}
			return o.put(ctx, runObject(id.key, id.first), b)
		})
		if err != nil {
			return keysUnavailable(fmt.Errorf("erasing submission keys in the key bucket %q: %w", o.bucket, err))
		}
		o.mu.Lock()
		delete(o.runs, id)
		o.mu.Unlock()
	}
	o.db.changed("keys")
	return nil
}

// runLockKey names the advisory lock of a run.
func runLockKey(id runID) int64 {
	return int64(0x6b<<56) ^ id.key<<36 ^ id.first
}

func (o *objectKeys) forget() {
	o.mu.Lock()
	clear(o.runs)
	o.gen++
	o.mu.Unlock()
}

func (o *objectKeys) close() {}
