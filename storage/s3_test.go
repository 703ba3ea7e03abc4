package storage_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
	"github.com/haven-org/haven/storage/miniotest"
)

func openS3(t *testing.T, dir string, cfg storage.S3Config) *storage.Store {
	t.Helper()
	st, err := openDir(t, ctx, dir, storage.Options{S3: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func putRecorded(t *testing.T, st *storage.Store, pid int64, content []byte) *storage.Blob {
	t.Helper()
	b, err := st.Blobs.Put(ctx, pid, bytes.NewReader(content), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DB.Write(ctx, func(tx *storage.Tx) error { return tx.RecordBlob(b) }); err != nil {
		t.Fatal(err)
	}
	return b
}

func readBlob(t *testing.T, st *storage.Store, id int64) []byte {
	t.Helper()
	rc, _, err := st.Blobs.Open(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// scanDir reports the files under dir that contain marker.
func scanDir(dir, marker string) []string {
	var hits []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(marker)) {
				hits = append(hits, p)
			}
		}
		return nil
	})
	return hits
}

func TestS3RoundTripCiphertext(t *testing.T) {
	m := miniotest.Start(t)
	st := openS3(t, t.TempDir(), m.Config("haven-round-trip")) // the bucket does not exist yet
	pr, _ := st.Projects.Create(ctx, "P", "")
	small := []byte("signature of S3MARKER") // small: still goes to the object store
	large := bytes.Repeat([]byte("photo S3MARKER "), 100_000)
	b1, b2 := putRecorded(t, st, pr.ID, small), putRecorded(t, st, pr.ID, large)
	if b1.Store != storage.StoreS3 || b1.Data != nil || b2.Store != storage.StoreS3 {
		t.Fatalf("objects not in the object store: %+v %+v", b1.Store, b2.Store)
	}
	if !bytes.Equal(readBlob(t, st, b1.ID), small) || !bytes.Equal(readBlob(t, st, b2.ID), large) {
		t.Fatal("round trip")
	}
	if hits := scanDir(m.DataDir, "S3MARKER"); len(hits) > 0 {
		t.Fatalf("plaintext in MinIO's data: %v", hits)
	}
	// Object names say nothing: only random hex under haven/.
	var names []string
	filepath.WalkDir(filepath.Join(m.DataDir, "haven-round-trip"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && filepath.Base(filepath.Dir(p)) == "haven" {
			names = append(names, d.Name())
		}
		return nil
	})
	if len(names) != 2 {
		t.Fatalf("objects in MinIO: %v", names)
	}
	for _, n := range names {
		if _, err := strconv.ParseUint(n[:16], 16, 64); err != nil || len(n) != 32 {
			t.Fatalf("object name %q is not random hex", n)
		}
	}
	// The scan can see plaintext in MinIO's files: an object stored raw,
	// past Haven's encryption, is found.
	st.Blobs.Stores[storage.StoreS3].Put(ctx, "ffffffffffffffffffffffffffffffff", strings.NewReader("RAWMARKER in clear"))
	if hits := scanDir(m.DataDir, "RAWMARKER"); len(hits) == 0 {
		t.Fatal("the scan does not find plaintext in MinIO's files: it proves nothing")
	}
}

// TestS3LargeObjectStreams pushes a large object through encryption into
// MinIO and back, watching the heap: memory stays bounded by the part size.
// HAVEN_LARGE_OBJECT_MB sets the size (default 256; BENCHMARKS.md uses 500).
func TestS3LargeObjectStreams(t *testing.T) {
	m := miniotest.Start(t)
	st := openS3(t, t.TempDir(), m.Config("haven-large"))
	pr, _ := st.Projects.Create(ctx, "P", "")
	mb := 256
	if v, err := strconv.Atoi(os.Getenv("HAVEN_LARGE_OBJECT_MB")); err == nil {
		mb = v
	}
	size := int64(mb) << 20
	var peak atomic.Uint64
	stop := make(chan struct{})
	go func() {
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak.Load() {
					peak.Store(ms.HeapInuse)
				}
			}
		}
	}()
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	src := &pattern{left: size}
	h := sha256.New()
	blob, err := st.Blobs.Put(ctx, pr.ID, io.TeeReader(src, h), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st.DB.Write(ctx, func(tx *storage.Tx) error { return tx.RecordBlob(blob) })
	rc, _, err := st.Blobs.Open(ctx, blob.ID)
	if err != nil {
		t.Fatal(err)
	}
	h2 := sha256.New()
	n, err := io.Copy(h2, rc)
	rc.Close()
	close(stop)
	if err != nil || n != size || !bytes.Equal(h.Sum(nil), h2.Sum(nil)) {
		t.Fatalf("read back %d of %d bytes, equal %v: %v", n, size, bytes.Equal(h.Sum(nil), h2.Sum(nil)), err)
	}
	growth := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("%d MB through encryption into MinIO and back: heap grew by at most %.1f MB", mb, float64(growth)/(1<<20))
	if growth > 64<<20 {
		t.Fatalf("heap grew by %d MB for a streamed object", growth>>20)
	}
}

// pattern is a reader of left bytes that are not all alike.
type pattern struct{ left, i int64 }

func (p *pattern) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	for k := range b {
		b[k] = byte(p.i*7 + p.i>>11)
		p.i++
	}
	p.left -= int64(len(b))
	return len(b), nil
}

func TestS3Outage(t *testing.T) {
	m := miniotest.Start(t)
	st := openS3(t, t.TempDir(), m.Config("haven-outage"))
	pr, _ := st.Projects.Create(ctx, "P", "")
	m.Stop()
	_, err := st.Blobs.Put(ctx, pr.ID, bytes.NewReader(bytes.Repeat([]byte("x"), 100_000)), storage.PutOptions{})
	if haven.ErrorCode(err) != haven.EUNAVAILABLE {
		t.Fatalf("put while MinIO is down: %v", err)
	}
	// A broken upload is the sender's error, not the store's.
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	_, err = st.Blobs.Put(ctx, pr.ID, io.MultiReader(bytes.NewReader(make([]byte, 50_000)), failing{}), storage.PutOptions{})
	if err == nil || haven.ErrorCode(err) == haven.EUNAVAILABLE {
		t.Fatalf("a failing reader: %v", err)
	}
	b := putRecorded(t, st, pr.ID, []byte("after the outage"))
	if string(readBlob(t, st, b.ID)) != "after the outage" {
		t.Fatal("round trip after restart")
	}
	// Reading while MinIO is down: 503, not a broken download.
	m.Stop()
	if _, _, err := st.Blobs.Open(ctx, b.ID); haven.ErrorCode(err) != haven.EUNAVAILABLE {
		t.Fatalf("read while MinIO is down: %v", err)
	}
}

func TestS3ConfigErrors(t *testing.T) {
	m := miniotest.Start(t)
	cases := []struct {
		cfg  storage.S3Config
		says string
	}{
		{storage.S3Config{Endpoint: m.Addr, Bucket: "bucket", AccessKey: miniotest.AccessKey, SecretKey: "wrong"}, "secret key"},
		{storage.S3Config{Endpoint: "127.0.0.1:1", Bucket: "bucket", AccessKey: "a", SecretKey: "b"}, "nothing answers"},
		{storage.S3Config{Endpoint: m.Addr, Bucket: "bucket", AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey, TLS: true}, "--s3-tls off"},
		{storage.S3Config{Endpoint: "", Bucket: "bucket"}, "--s3-endpoint"},
		{storage.S3Config{Endpoint: "http://" + m.Addr, Bucket: "bucket"}, "without http://"},
		{storage.S3Config{Endpoint: m.Addr, Bucket: "No_Such Bucket!", AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey}, "bucket"},
	}
	for _, c := range cases {
		_, err := storage.NewS3Store(ctx, c.cfg)
		if err == nil || !strings.Contains(haven.ErrorMessage(err), c.says) {
			t.Errorf("%+v: %v, want it to say %q", c.cfg, err, c.says)
		}
	}
}

func TestGarbageCollection(t *testing.T) {
	m := miniotest.Start(t)
	dir := t.TempDir()
	st := openS3(t, dir, m.Config("haven-gc"))
	pr, _ := st.Projects.Create(ctx, "P", "")
	kept := putRecorded(t, st, pr.ID, bytes.Repeat([]byte("k"), 50_000))
	for i := 0; i < 3; i++ { // written, never recorded: what a crash leaves
		if _, err := st.Blobs.Put(ctx, pr.ID, bytes.NewReader(bytes.Repeat([]byte("o"), 50_000)), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// An orphan file in the local store too.
	local := st.Blobs.Stores[storage.StoreLocal]
	local.Put(ctx, "00orphan0000000000000000000000000", strings.NewReader("x"))
	count := func() int {
		n := 0
		for _, s := range st.Blobs.Stores {
			s.List(ctx, func(string, time.Time) error { n++; return nil })
		}
		return n
	}
	if n := count(); n != 5 {
		t.Fatalf("%d objects before collection", n)
	}
	// Within the grace period nothing goes: it may be an upload in progress.
	if n, err := st.Blobs.CollectGarbage(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("collected %d within the grace period: %v", n, err)
	}
	st.DB.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	n, err := st.Blobs.CollectGarbage(ctx, time.Hour)
	if err != nil || n != 4 || count() != 1 {
		t.Fatalf("collected %d, %d left: %v", n, count(), err)
	}
	if !bytes.Equal(readBlob(t, st, kept.ID), bytes.Repeat([]byte("k"), 50_000)) {
		t.Fatal("the recorded object was collected")
	}
}

func TestMigrate(t *testing.T) {
	m := miniotest.Start(t)
	dir := t.TempDir()
	st := open(t, dir) // local only, as an existing deployment
	pr, _ := st.Projects.Create(ctx, "P", "")
	var ids []int64
	var contents [][]byte
	for i := 0; i < 5; i++ {
		c := bytes.Repeat([]byte{byte('a' + i)}, 60_000)
		ids, contents = append(ids, putRecorded(t, st, pr.ID, c).ID), append(contents, c)
	}
	inline := putRecorded(t, st, pr.ID, []byte("small, kept in the database"))
	st.Close()

	st = openS3(t, dir, m.Config("haven-migrate"))
	// Interrupted after two objects, then run again: it finishes.
	cctx, cancel := context.WithCancel(ctx)
	moved, err := st.Blobs.Migrate(cctx, storage.StoreS3, func(n, total int) {
		if n == 2 {
			cancel()
		}
	})
	if moved != 2 || err == nil {
		t.Fatalf("interrupted migration: moved %d, %v", moved, err)
	}
	if moved, err := st.Blobs.Migrate(ctx, storage.StoreS3, nil); err != nil || moved != 3 {
		t.Fatalf("resumed migration: moved %d, %v", moved, err)
	}
	for i, id := range ids {
		if !bytes.Equal(readBlob(t, st, id), contents[i]) {
			t.Fatalf("object %d after migration", i)
		}
	}
	if n := countFiles(filepath.Join(dir, "blobs")); n != 0 {
		t.Fatalf("%d files left in the local store", n)
	}
	if string(readBlob(t, st, inline.ID)) != "small, kept in the database" {
		t.Fatal("inline object")
	}
	// And back.
	if moved, err := st.Blobs.Migrate(ctx, storage.StoreLocal, nil); err != nil || moved != 5 {
		t.Fatalf("migration back: %d, %v", moved, err)
	}
	n := 0
	st.Blobs.Stores[storage.StoreS3].List(ctx, func(string, time.Time) error { n++; return nil })
	if n != 0 || countFiles(filepath.Join(dir, "blobs")) != 5 {
		t.Fatalf("after moving back: %d objects in MinIO, %d files", n, countFiles(filepath.Join(dir, "blobs")))
	}
	for i, id := range ids {
		if !bytes.Equal(readBlob(t, st, id), contents[i]) {
			t.Fatalf("object %d after moving back", i)
		}
	}
}
