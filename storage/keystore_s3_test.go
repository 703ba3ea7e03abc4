package storage_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
	"github.com/haven-org/haven/storage/miniotest"
	"github.com/haven-org/haven/storage/pgtest"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Nodes on separate machines: each its own data directory, one PostgreSQL
// database, one object store whose key bucket holds the keys. A deployment
// that kept its keys in one data directory moves them there when that
// node first starts with the object store (and they leave the folder);
// a node elsewhere then reads what the first wrote and the other way
// round; erasing a submission on one node zeroes its key in the bucket
// (the slot's bytes leave MinIO's drive) and the other node can no longer
// open it; a destruction one node began and died in is finished by
// another, removing the project's key and every slot; nodes
// with another master key, without the object store, or with another key
// bucket are refused, each with a message saying what to do.
func TestNodesOnSeparateMachines(t *testing.T) {
	onFirstPass(t)
	pg := pgtest.Start(t)
	s3 := miniotest.Start(t)
	cfg := s3.Config("files")
	master := storage.KeySource{Value: strings.Repeat("ab", 32)}
	dirA, dirB := t.TempDir(), t.TempDir()
	openNode := func(dir string, s3 *storage.S3Config, key storage.KeySource) (*storage.Store, error) {
		return storage.OpenDir(ctx, dir, storage.Options{Database: pg.DSN(), S3: s3, Key: key})
	}

	// One node, keys in its folder, as deployments were.
	first, err := openNode(dirA, nil, master)
	if err != nil {
		t.Fatal(err)
	}
	pr, f := filled(t, first, 3, "SPREAD", time.Now().AddDate(1, 0, 0))
	// While it serves, keys cannot move from its folder: it would go on
	// writing there.
	serving, err := first.DB.JoinNodes(ctx, "host-a", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openNode(dirA, &cfg, master); haven.ErrorCode(err) != haven.ECONFLICT || !strings.Contains(err.Error(), "stop them") {
		t.Fatalf("moving the keys while a node serves from the folder: %v", err)
	}
	serving.Leave()
	first.Close()
	if keys, _ := filepath.Glob(filepath.Join(dirA, "keys", "project-key-*")); len(keys) == 0 {
		t.Fatal("the first node kept no key in its folder")
	}
	// Past the last slot the database names, a slot file may hold keys of
	// writes that never committed (here, made up): they must not move,
	// since the next slot numbers start there.
	slotFiles, _ := filepath.Glob(filepath.Join(dirA, "keys", "project-key-*.submissions"))
	if len(slotFiles) != 1 {
		t.Fatalf("slot files: %v", slotFiles)
	}
	sf, err := os.OpenFile(slotFiles[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	sf.WriteAt(bytes.Repeat([]byte("uncommitted key!"), 3*6), 4*48) // slots 4 to 9
	sf.Close()
	if _, err := openNode(dirB, &cfg, master); err == nil || !strings.Contains(err.Error(), "another node's data directory") {
		t.Fatalf("a node elsewhere while the keys are in another's folder: %v", err)
	}

	a, err := openNode(dirA, &cfg, master)
	if err != nil {
		t.Fatalf("the first node with the object store: %v", err)
	}
	defer a.Close()
	if keys, _ := filepath.Glob(filepath.Join(dirA, "keys", "project-key-*")); len(keys) != 0 {
		t.Fatalf("keys left in the folder after they moved: %v", keys)
	}
	b, err := openNode(dirB, &cfg, master)
	if err != nil {
		t.Fatalf("a node on another machine: %v", err)
	}
	defer b.Close()

	u, err := b.Users.Create(ctx, "far@example.org", "a long enough password", "", false)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		id := fmt.Sprintf("uuid:from-b-%d", i)
		xml := fmt.Sprintf(`<d id="d" version="1"><name>FROM-B-%d</name><meta><instanceID>%s</instanceID></meta></d>`, i, id)
		if _, err := b.Submissions.Ingest(ctx, &storage.Incoming{ProjectID: pr.ID, FormID: f.ID, FormVersionID: f.CurrentVersionID,
			InstanceID: id, XML: []byte(xml), SubmitterID: u.ID, DeviceID: "collect:far",
			Audit: &haven.AuditEvent{Action: "submission.create", ActorID: u.ID, ProjectID: pr.ID, Object: id}}); err != nil {
			t.Fatal(err)
		}
	}
	// Each node opens every submission, whichever stored it.
	for _, st := range []*storage.Store{a, b} {
		subs, total, err := st.Submissions.List(ctx, pr.ID, f.ID, -1, 0)
		if err != nil || total != 8 {
			t.Fatalf("%d submissions (%v), want 8", total, err)
		}
		for _, sub := range subs {
			if x, err := st.Submissions.XML(ctx, pr.ID, &sub.Current); err != nil || !strings.Contains(string(x), sub.InstanceID) {
				t.Fatalf("%s does not open on a node: %v", sub.InstanceID, err)
			}
		}
	}

	// The slots are in the key bucket, none in either folder.
	mc, err := minio.New(cfg.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	slots := readSlots(t, mc, cfg.KeyBucketName())
	for k, b := range slots {
		if bytes.Contains(b, []byte("uncommitted")) {
			t.Fatalf("a key of a write that never committed moved to the bucket (slot %d)", k[1])
		}
	}
	var keyID, slotA, slotB int64
	a.DB.QueryRow(ctx, `SELECT id FROM project_keys WHERE project_id = ?`, pr.ID).Scan(&keyID)
	a.DB.QueryRow(ctx, `SELECT key_slot FROM submissions WHERE instance_id = 'uuid:spread-0'`).Scan(&slotA)
	a.DB.QueryRow(ctx, `SELECT key_slot FROM submissions WHERE instance_id = 'uuid:from-b-0'`).Scan(&slotB)
	erased, kept := slots[[2]int64{keyID, slotA}], slots[[2]int64{keyID, slotB}]
	if len(erased) != 48 || len(kept) != 48 {
		t.Fatalf("slots %d and %d of key %d are not in the key bucket (%d slots there)", slotA, slotB, keyID, len(slots))
	}
	for _, dir := range []string{dirA, dirB} {
		if found := scanFor(dir, erased); len(found) > 0 {
			t.Fatalf("a submission key is in a data directory: %v", found)
		}
	}
	if len(scanFor(s3.DataDir, erased)) == 0 {
		t.Fatal("the slot's bytes are not found on MinIO's drive: the scan below would prove nothing")
	}

	// Erased on B; A, which opened it a moment ago, cannot any more.
	sub, err := a.Submissions.Get(ctx, pr.ID, f.ID, "uuid:spread-0")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Submissions.Delete(ctx, b.Blobs, f.ID, "uuid:spread-0", &haven.AuditEvent{Action: "submission.delete", ProjectID: pr.ID}); err != nil {
		t.Fatal(err)
	}
	pk, err := a.Keys.ProjectKey(ctx, pr.ID)
	if err != nil {
		t.Fatal(err)
	}
	// (The rows went first, so no read reaches the key meanwhile; the
	// other node drops its copy when the erasing node tells it.)
	for erasedAt := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		if _, err := a.Keys.SubmissionKey(pk, slotA); err != nil {
			break
		}
		if time.Since(erasedAt) > 2*time.Second {
			t.Fatal("the other node still opens an erased submission's key after 2 s")
		}
	}
	if _, err := a.Keys.SubmissionKey(pk, slotB); err != nil {
		t.Fatalf("a key beside the erased one: %v", err)
	}
	_ = sub
	for k, v := range readSlots(t, mc, cfg.KeyBucketName()) {
		if bytes.Equal(v, erased) {
			t.Fatalf("the erased key is still in the key bucket (key %d, slot %d)", k[0], k[1])
		}
	}
	waitGone(t, s3.DataDir, erased, "an erased submission's key")
	if len(scanFor(s3.DataDir, kept)) == 0 {
		t.Fatal("the erasure took its neighbours' keys with it")
	}

	// Nodes that do not belong are refused, and write nothing.
	late := t.TempDir()
	if _, err := openNode(late, &cfg, storage.KeySource{Value: strings.Repeat("cd", 32)}); err == nil || !strings.Contains(err.Error(), "same master key") {
		t.Fatalf("a node with another master key: %v", err)
	}
	// Nor does a node started without saying where the key is (it would
	// make a key of its own): no key file stays behind, and the same data
	// directory then starts with the right key.
	keyFiles := func() []string {
		cfgDir, _ := os.UserConfigDir()
		files, _ := filepath.Glob(filepath.Join(cfgDir, "haven", "master-*.key"))
		return files
	}
	before := len(keyFiles())
	if _, err := openNode(late, &cfg, storage.KeySource{}); err == nil || !strings.Contains(err.Error(), "same master key") {
		t.Fatalf("a node with the default key source: %v", err)
	}
	if after := keyFiles(); len(after) != before {
		t.Fatalf("a refused node left a key file of its own: %v", after)
	}
	if st, err := openNode(late, &cfg, master); err != nil {
		t.Fatalf("the same data directory with the right key, after refusals: %v", err)
	} else {
		st.Close()
	}
	if _, err := openNode(t.TempDir(), nil, master); err == nil || !strings.Contains(err.Error(), "--s3-endpoint") {
		t.Fatalf("a node without the object store: %v", err)
	}
	other := cfg
	other.KeyBucket = "elsewhere-keys"
	if _, err := openNode(t.TempDir(), &other, master); err == nil || !strings.Contains(err.Error(), "--s3-key-bucket") {
		t.Fatalf("a node with another key bucket: %v", err)
	}

	// The audit trail's head is in the key bucket, and both nodes verify it.
	a.WriteAuditHead(ctx)
	if _, err := mc.StatObject(ctx, cfg.KeyBucketName(), "audit-head.json", minio.StatObjectOptions{}); err != nil {
		t.Fatalf("the audit head is not in the key bucket: %v", err)
	}
	for _, st := range []*storage.Store{a, b} {
		if v, err := st.VerifyAudit(ctx); err != nil || !v.OK {
			t.Fatalf("the audit trail on a node: %+v %v", v, err)
		}
	}

	// Back to one node on SQLite: the keys come down from the bucket with
	// the records, and every submission left opens there.
	if _, err := storage.CopyKeysDown(ctx, pg.DSN(), nil, t.TempDir()); err == nil || !strings.Contains(err.Error(), "--s3-endpoint") {
		t.Fatalf("moving back without the object store: %v", err)
	}
	dirC := t.TempDir()
	if n, err := storage.CopyKeysDown(ctx, pg.DSN(), &cfg, dirC); err != nil || n != 1 {
		t.Fatalf("copying the keys down: %d %v", n, err)
	}
	if _, err := storage.MoveRecordsBack(ctx, pg.DSN(), filepath.Join(dirC, "haven.db"), nil); err != nil {
		t.Fatal(err)
	}
	single, err := storage.OpenDir(ctx, dirC, storage.Options{Key: master})
	if err != nil {
		t.Fatal(err)
	}
	subs, total, err := single.Submissions.List(ctx, pr.ID, f.ID, -1, 0)
	if err != nil || total != 7 {
		t.Fatalf("%d submissions back on SQLite (%v), want 7", total, err)
	}
	for _, sub := range subs {
		if x, err := single.Submissions.XML(ctx, pr.ID, &sub.Current); err != nil || !strings.Contains(string(x), sub.InstanceID) {
			t.Fatalf("%s does not open back on SQLite: %v", sub.InstanceID, err)
		}
	}
	single.Close()

	// A destruction begun on A, which dies after its first batch, is
	// finished on B; the key and every slot leave the bucket, and C, a
	// third node that held the key, drops it.
	c, err := openNode(t.TempDir(), &cfg, master)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Keys.ProjectKey(ctx, pr.ID); err != nil {
		t.Fatal(err)
	}
	if n, err := a.DestroyOneBatch(ctx, pr.ID); err != nil || n != 7 {
		t.Fatalf("A's first batch: %d %v", n, err)
	}
	a.Close() // A dies
	cert, err := b.Destroy(ctx, pr.ID, "test")
	if err != nil {
		t.Fatal(err)
	}
	var certified storage.Certificate
	json.Unmarshal(cert.Body, &certified)
	if certified.Destroyed["submissions"] != 7 || len(certified.KeyIDs) != 1 || certified.KeyIDs[0] != keyID {
		t.Fatalf("the certificate B wrote: %s", cert.Body)
	}
	if left := readSlots(t, mc, cfg.KeyBucketName()); len(left) != 0 {
		t.Fatalf("%d slots left in the key bucket after destruction", len(left))
	}
	if _, err := mc.StatObject(ctx, cfg.KeyBucketName(), fmt.Sprintf("project-key-%d", keyID), minio.StatObjectOptions{}); err == nil {
		t.Fatal("the project key is still in the key bucket")
	}
	for destroyed := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		if _, err := c.Keys.ProjectKey(ctx, pr.ID); err != nil {
			break
		}
		if time.Since(destroyed) > 2*time.Second {
			t.Fatal("another node still holds a destroyed project key after 2 s")
		}
	}
	waitGone(t, s3.DataDir, kept, "a destroyed project's submission key")
}

// readSlots reads every slot in the key bucket, by key id and slot.
func readSlots(t *testing.T, mc *minio.Client, bucket string) map[[2]int64][]byte {
	t.Helper()
	out := map[[2]int64][]byte{}
	for obj := range mc.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: "slots/", Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		parts := strings.Split(obj.Key, "/")
		key, _ := strconv.ParseInt(parts[1], 10, 64)
		first, _ := strconv.ParseInt(parts[2], 10, 64)
		o, err := mc.GetObject(ctx, bucket, obj.Key, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(o)
		o.Close()
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+48 <= len(b); i += 48 {
			if !bytes.Equal(b[i:i+48], make([]byte, 48)) {
				out[[2]int64{key, first + int64(i/48)}] = b[i : i+48]
			}
		}
	}
	return out
}

// scanFor lists the files under dir whose bytes hold b.
func scanFor(dir string, b []byte) []string {
	var found []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			if data, err := os.ReadFile(p); err == nil && bytes.Contains(data, b) {
				found = append(found, p)
			}
		}
		return nil
	})
	return found
}

// waitGone waits until no file under MinIO's drive dir holds b, outside
// the trash where MinIO keeps a replaced or removed object's metadata
// until its own background cleanup (docs/scale-out.md says so).
func waitGone(t *testing.T, dir string, b []byte, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var found []string
		for _, p := range scanFor(dir, b) {
			if !strings.Contains(p, string(filepath.Separator)+".trash"+string(filepath.Separator)) {
				found = append(found, p)
			}
		}
		if len(found) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is still on MinIO's drive: %v", what, found)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
