package storage_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
	"github.com/haven-org/haven/storage/pgtest"
)

var ctx = context.Background()

func open(t *testing.T, dir string) *storage.Store {
	t.Helper()
	st, err := openDir(t, ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestMigrationsApplyOnce(t *testing.T) {
	dir := t.TempDir()
	st := open(t, dir)
	st.Close()
	st = open(t, dir) // a second start applies nothing again and keeps the data
	if v, err := st.DB.IntegrityCheck(ctx); err != nil || v != "ok" {
		t.Fatalf("integrity: %q %v", v, err)
	}
}

// The master key never lives in the data directory: the first start on the
// defaults makes it in the configuration folder; a wrong key, a key file
// inside the directory and an older directory that still holds its key are
// refused; moving the key out leaves nothing in the directory that opens it.
func TestMasterKey(t *testing.T) {
	dir := t.TempDir()
	st, err := openDir(t, ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.KeyCreated == "" || strings.HasPrefix(st.KeyCreated, dir) {
		t.Fatalf("the first start made its key at %q", st.KeyCreated)
	}
	if fi, err := os.Stat(st.KeyCreated); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	pr, _ := st.Projects.Create(ctx, "P", "")
	blob, err := st.Blobs.Put(ctx, pr.ID, strings.NewReader("secret"), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st.DB.Write(ctx, func(tx *storage.Tx) error { return tx.RecordBlob(blob) })
	keyFile := st.KeyCreated
	st.Close()
	// The next start finds the key again, and says nothing new.
	st2 := open(t, dir)
	if st2.KeyCreated != "" {
		t.Fatalf("a second start made a key: %s", st2.KeyCreated)
	}
	if _, _, err := st2.Blobs.Open(ctx, blob.ID); err != nil {
		t.Fatal(err)
	}
	st2.Close()

	// The data directory alone opens nothing: without the key file, a start is refused.
	moved := keyFile + ".elsewhere"
	os.Rename(keyFile, moved)
	if _, err := openDir(t, ctx, dir); err == nil || !strings.Contains(err.Error(), "master key") {
		t.Fatalf("started without its key: %v", err)
	}
	// The key given by file or by value opens it.
	if st3, err := openDir(t, ctx, dir, storage.Options{Key: storage.KeySource{File: moved}}); err != nil {
		t.Fatal(err)
	} else {
		st3.Close()
	}
	raw, _ := os.ReadFile(moved)
	if st3, err := openDir(t, ctx, dir, storage.Options{Key: storage.KeySource{Value: string(raw)}}); err != nil {
		t.Fatal(err)
	} else {
		st3.Close()
	}
	// Another key is refused at start, before anything is read with it.
	other := make([]byte, 32)
	other[0] = 1
	if _, err := openDir(t, ctx, dir, storage.Options{Key: storage.KeySource{Value: base64.StdEncoding.EncodeToString(other)}}); err == nil || !strings.Contains(err.Error(), "not the master key") {
		t.Fatalf("opened with the wrong master key: %v", err)
	}
	if _, err := openDir(t, ctx, dir, storage.Options{Key: storage.KeySource{Value: "too short"}}); err == nil || !strings.Contains(err.Error(), "32 bytes") {
		t.Fatalf("a bad key: %v", err)
	}
	// A key file inside the data directory is refused, even through a link.
	os.WriteFile(filepath.Join(dir, "inside.key"), raw, 0o600)
	if _, err := openDir(t, ctx, dir, storage.Options{Key: storage.KeySource{File: filepath.Join(dir, "inside.key")}}); err == nil || !strings.Contains(err.Error(), "inside the data directory") {
		t.Fatalf("a key file inside the data directory: %v", err)
	}
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(dir, link)
	if _, err := openDir(t, ctx, dir, storage.Options{Key: storage.KeySource{File: filepath.Join(link, "inside.key")}}); err == nil || !strings.Contains(err.Error(), "inside the data directory") {
		t.Fatalf("a key file inside the data directory, through a link: %v", err)
	}
	os.Remove(filepath.Join(dir, "inside.key"))

	// An older Haven's directory, with master.key inside: refused until moved out.
	os.WriteFile(filepath.Join(dir, "master.key"), raw, 0o600)
	os.Remove(filepath.Join(dir, "key.json"))
	if _, err := openDir(t, ctx, dir, storage.Options{Key: storage.KeySource{File: moved}}); err == nil || !strings.Contains(err.Error(), "haven key move-out") {
		t.Fatalf("a directory holding its key: %v", err)
	}
	os.Remove(moved)
	to, err := storage.MoveKeyOut(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "master.key")); !os.IsNotExist(err) || inDir(dir, to) {
		t.Fatalf("after moving out: %v, key at %s", err, to)
	}
	if hits := scanDir(dir, strings.TrimSpace(string(raw))); len(hits) > 0 {
		t.Fatalf("the key is still in the data directory: %v", hits)
	}
	st4 := open(t, dir)
	if _, _, err := st4.Blobs.Open(ctx, blob.ID); err != nil {
		t.Fatalf("after moving the key out: %v", err)
	}
}

func inDir(dir, path string) bool { return strings.HasPrefix(path, dir+string(filepath.Separator)) }

// A passphrase is stretched with argon2id under a salt kept in the data
// directory; another passphrase is refused.
func TestMasterKeyPassphrase(t *testing.T) {
	dir := t.TempDir()
	pass := storage.Options{Key: storage.KeySource{Passphrase: "correct horse battery staple"}}
	st, err := openDir(t, ctx, dir, pass)
	if err != nil {
		t.Fatal(err)
	}
	if st.KeyCreated != "" {
		t.Fatalf("a passphrase start made a key file: %s", st.KeyCreated)
	}
	pr, _ := st.Projects.Create(ctx, "P", "")
	st.Close()
	st, err = openDir(t, ctx, dir, pass)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Keys.ProjectKey(ctx, pr.ID); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if _, err := openDir(t, ctx, dir, storage.Options{Key: storage.KeySource{Passphrase: "wrong horse"}}); err == nil || !strings.Contains(err.Error(), "not the master key") {
		t.Fatalf("a wrong passphrase: %v", err)
	}
	if _, err := openDir(t, ctx, dir); err == nil {
		t.Fatal("a passphrase directory opened without its passphrase")
	}
}

func TestSealBindsToPlace(t *testing.T) {
	st := open(t, t.TempDir())
	pr, _ := st.Projects.Create(ctx, "P", "")
	pk, err := st.Keys.ProjectKey(ctx, pr.ID)
	if err != nil {
		t.Fatal(err)
	}
	sealed := pk.Seal([]byte("value"), "row 1")
	if b, err := pk.Open(sealed, "row 1"); err != nil || string(b) != "value" {
		t.Fatalf("open: %q %v", b, err)
	}
	if _, err := pk.Open(sealed, "row 2"); err == nil {
		t.Fatal("a sealed value moved to another row must not open")
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := pk.Open(sealed, "row 1"); err == nil {
		t.Fatal("a tampered value must not open")
	}
	if bytes.Equal(pk.MAC([]byte("a")), pk.MAC([]byte("b"))) || !bytes.Equal(pk.MAC([]byte("a")), pk.MAC([]byte("a"))) {
		t.Fatal("MAC")
	}
}

func TestBlobs(t *testing.T) {
	dir := t.TempDir()
	st := open(t, dir)
	pr, _ := st.Projects.Create(ctx, "P", "")
	content := bytes.Repeat([]byte("MARKER-"), 300_000) // 2 MB: many DARE packages
	blob, err := st.Blobs.Put(ctx, pr.ID, bytes.NewReader(content), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DB.Write(ctx, func(tx *storage.Tx) error { return tx.RecordBlob(blob) }); err != nil {
		t.Fatal(err)
	}
	rc, _, err := st.Blobs.Open(ctx, blob.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, content) || blob.Size != int64(len(content)) {
		t.Fatalf("round trip: %d bytes, %v", len(got), err)
	}
	// On disk: ciphertext under a name that says nothing.
	path := filepath.Join(dir, "blobs", blob.Object[:2], blob.Object)
	raw, err := os.ReadFile(path)
	if err != nil || bytes.Contains(raw, []byte("MARKER")) {
		t.Fatalf("object on disk holds plaintext (or is missing: %v)", err)
	}
	// One flipped bit is detected when read.
	raw[len(raw)/2] ^= 1
	os.WriteFile(path, raw, 0o600)
	rc, _, _ = st.Blobs.Open(ctx, blob.ID)
	if _, err := io.ReadAll(rc); err == nil {
		t.Fatal("a tampered object was read without error")
	}
	rc.Close()

	// Over the limit: refused, and nothing left behind.
	before := countFiles(filepath.Join(dir, "blobs"))
	if _, err := st.Blobs.Put(ctx, pr.ID, bytes.NewReader(content), storage.PutOptions{Limit: 1000}); !errors.Is(err, storage.ErrTooLarge) {
		t.Fatalf("over the limit: %v", err)
	}
	if after := countFiles(filepath.Join(dir, "blobs")); after != before {
		t.Fatalf("a refused put left %d files", after-before)
	}
	// A reader that fails mid-way leaves nothing either.
	if _, err := st.Blobs.Put(ctx, pr.ID, io.MultiReader(bytes.NewReader(content[:5000]), failing{}), storage.PutOptions{}); err == nil {
		t.Fatal("a failing reader was stored")
	}
	if after := countFiles(filepath.Join(dir, "blobs")); after != before {
		t.Fatalf("a failed put left %d files", after-before)
	}
}

type failing struct{}

func (failing) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func countFiles(dir string) int {
	n := 0
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n++
		}
		return nil
	})
	return n
}

func TestLocalStoreNames(t *testing.T) {
	s, err := storage.NewLocalStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"../x", "ab/../../x", "a", ""} {
		if _, err := s.Put(ctx, bad, strings.NewReader("x")); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
}

func TestPasswords(t *testing.T) {
	h := storage.HashPassword("correct horse")
	if !strings.HasPrefix(h, "$argon2id$") || !storage.CheckPassword(h, "correct horse") || storage.CheckPassword(h, "correct horsE") {
		t.Fatalf("hash %s", h)
	}
	if h1, h2 := storage.HashPassword("a"), storage.HashPassword("a"); storage.CheckPassword("garbage", "x") || h1 == h2 {
		t.Fatal("hashes must be salted and garbage must not verify")
	}
	tok := storage.NewAppUserToken()
	if len(tok) != 64 || strings.ContainsAny(tok, "/+") {
		t.Fatalf("token %q", tok)
	}
}

func TestUsersAndSessions(t *testing.T) {
	st := open(t, t.TempDir())
	u, err := st.Users.Create(ctx, "Ana@Example.org", "long enough pw", "", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Users.Create(ctx, "ana@example.org", "long enough pw", "", false); haven.ErrorCode(err) != haven.EDUPLICATE {
		t.Fatalf("duplicate email (other case): %v", err)
	}
	if _, err := st.Users.Authenticate(ctx, "ANA@example.org", "long enough pw"); err != nil {
		t.Fatalf("email is case-insensitive: %v", err)
	}
	if _, err := st.Users.Authenticate(ctx, "ana@example.org", "wrong"); haven.ErrorCode(err) != haven.EUNAUTHORIZED {
		t.Fatalf("wrong password: %v", err)
	}
	st.Users.CreateSession(ctx, "jti-1", u.ID, st.DB.Now().Add(1e9).UnixMilli(), []byte("refresh hash"))
	if ok, _ := st.Users.SessionActive(ctx, "jti-1", u.ID); !ok {
		t.Fatal("new session inactive")
	}
	if ok, _ := st.Users.SessionActive(ctx, "jti-1", u.ID+1); ok {
		t.Fatal("a session is active for another user")
	}
	if _, err := st.Users.EndSession(ctx, "jti-1", []byte("another hash")); haven.ErrorCode(err) != haven.EUNAUTHORIZED {
		t.Fatalf("ending a session with a wrong refresh token: %v", err)
	}
	if id, err := st.Users.EndSession(ctx, "jti-1", []byte("refresh hash")); err != nil || id != u.ID {
		t.Fatalf("ending a session: %d %v", id, err)
	}
	if ok, _ := st.Users.SessionActive(ctx, "jti-1", u.ID); ok {
		t.Fatal("revoked session active")
	}
}

// TestGroupCommit runs many concurrent writes, some failing and one
// panicking: each failure rolls back alone, every success is committed.
func TestGroupCommit(t *testing.T) {
	st := open(t, t.TempDir())
	const n = 200
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func(i int) {
			errs <- st.DB.Write(ctx, func(tx *storage.Tx) error {
				if _, err := tx.Exec(`INSERT INTO projects (name, created_at, updated_at) VALUES (?, 0, 0)`, fmt.Sprint("p", i)); err != nil {
					return err
				}
				switch {
				case i == 7:
					panic("boom")
				case i%3 == 0:
					return errors.New("refused")
				}
				return nil
			})
		}(i)
	}
	ok := 0
	for i := 0; i < n; i++ {
		if err := <-errs; err == nil {
			ok++
		}
	}
	var rows int
	st.DB.Write(ctx, func(tx *storage.Tx) error { return tx.QueryRow(`SELECT count(*) FROM projects`).Scan(&rows) })
	want := 0
	for i := 0; i < n; i++ {
		if i != 7 && i%3 != 0 {
			want++
		}
	}
	if ok != want || rows != want {
		t.Fatalf("%d writes succeeded and %d rows exist, want %d", ok, rows, want)
	}
	// A cancelled caller's write is not run.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := st.DB.Write(cctx, func(tx *storage.Tx) error { t.Error("ran"); return nil }); err == nil {
		t.Fatal("a cancelled write returned no error")
	}
}

// TestAuditChainInOneBatch holds the committer so that many writes share
// one transaction, some of them appending an audit event and then failing:
// the chain must link each kept event to the kept one before it, never to
// an event a failed write rolled back.
func TestAuditChainInOneBatch(t *testing.T) {
	st := open(t, t.TempDir())
	release := make(chan struct{})
	held := make(chan error, 1)
	go func() { held <- st.DB.Write(ctx, func(tx *storage.Tx) error { <-release; return nil }) }()
	const n = 60
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func(i int) {
			errs <- st.DB.Write(ctx, func(tx *storage.Tx) error {
				if err := st.Audit.Append(tx, &haven.AuditEvent{Action: "test.write", Object: fmt.Sprint(i)}); err != nil {
					return err
				}
				if i%4 == 1 {
					return errors.New("refused after auditing")
				}
				return nil
			})
		}(i)
	}
	time.Sleep(200 * time.Millisecond) // let every write queue behind the held one
	close(release)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	ok := 0
	for i := 0; i < n; i++ {
		if err := <-errs; err == nil {
			ok++
		}
	}
	v, err := st.Audit.Verify(ctx)
	if err != nil || !v.OK || v.Events != int64(ok) {
		t.Fatalf("chain after %d kept writes: %+v, %v", ok, v, err)
	}
	// The next transaction chains to what the last one kept.
	if err := st.Audit.Log(ctx, &haven.AuditEvent{Action: "test.after"}); err != nil {
		t.Fatal(err)
	}
	if v, err := st.Audit.Verify(ctx); err != nil || !v.OK || v.Events != int64(ok)+1 {
		t.Fatalf("chain after one more event: %+v, %v", v, err)
	}
}

func TestInlineBlobs(t *testing.T) {
	dir := t.TempDir()
	st := open(t, dir)
	pr, _ := st.Projects.Create(ctx, "P", "")
	small := bytes.Repeat([]byte("INLINEMARK "), 2000) // 22 KB: kept in the database
	blob, err := st.Blobs.Put(ctx, pr.ID, bytes.NewReader(small), storage.PutOptions{})
	if err != nil || blob.Data == nil {
		t.Fatalf("small object not inline: %v", err)
	}
	if err := st.DB.Write(ctx, func(tx *storage.Tx) error { return tx.RecordBlob(blob) }); err != nil {
		t.Fatal(err)
	}
	rc, _, err := st.Blobs.Open(ctx, blob.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	if !bytes.Equal(got, small) || countFiles(filepath.Join(dir, "blobs")) != 0 {
		t.Fatal("inline round trip")
	}
	if _, err := st.Blobs.Put(ctx, pr.ID, bytes.NewReader(small), storage.PutOptions{Limit: 1000}); !errors.Is(err, storage.ErrTooLarge) {
		t.Fatalf("inline over the limit: %v", err)
	}
	st.Close()
	for _, name := range []string{"haven.db", "haven.db-wal"} {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		if bytes.Contains(b, []byte("INLINEMARK")) {
			t.Fatalf("%s holds the plaintext of an inline object", name)
		}
	}
}

// Cutting the newest events off the trail is found: the signed head, kept
// outside the database, names an event the trail no longer reaches. A
// restart does not replace the head with an older one, and a head that is
// missing or changed does not pass either.
func TestAuditHead(t *testing.T) {
	dir := t.TempDir()
	st, err := openDir(t, ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if err := st.Audit.Log(ctx, &haven.AuditEvent{Action: "test.event", Object: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.WriteAuditHead(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := st.VerifyAudit(ctx); err != nil || !v.OK || v.Head == nil || v.Head.ID != 50 {
		t.Fatalf("whole trail: %+v %v", v, err)
	}
	copyOfHead := filepath.Join(t.TempDir(), "head.json")
	b, _ := os.ReadFile(filepath.Join(dir, "audit-head.json"))
	os.WriteFile(copyOfHead, b, 0o600)

	// Someone with raw access to the file deletes the newest 20 events.
	if err := st.DB.Write(ctx, func(tx *storage.Tx) error {
		drop := `DROP TRIGGER audits_no_delete`
		if pgtest.Backend() == "postgres" {
			drop += ` ON audits`
		}
		if _, err := tx.Exec(drop); err != nil {
			return err
		}
		_, err := tx.Exec(`DELETE FROM audits WHERE id > 30`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	v, err := st.VerifyAudit(ctx)
	if err != nil || v.OK || v.Broken != 31 || !strings.Contains(v.Reason, "20 event(s) were removed") {
		t.Fatalf("a cut tail: %+v %v", v, err)
	}
	// A restart, and new events after the cut, do not cover it up.
	st.Close()
	st = open(t, dir)
	for i := 0; i < 5; i++ {
		st.Audit.Log(ctx, &haven.AuditEvent{Action: "test.after"})
	}
	st.WriteAuditHead(ctx)
	if v, err := st.VerifyAudit(ctx); err != nil || v.OK {
		t.Fatalf("after a restart: %+v %v", v, err)
	}
	// Nor do new events past the old head's id.
	for i := 0; i < 30; i++ {
		st.Audit.Log(ctx, &haven.AuditEvent{Action: "test.after"})
	}
	st.WriteAuditHead(ctx)
	st.Close()
	st = open(t, dir)
	if v, err := st.VerifyAudit(ctx); err != nil || v.OK || !strings.Contains(v.Reason, "rewritten") {
		t.Fatalf("after the trail grew past its old head: %+v %v", v, err)
	}
	// A copy of the head kept elsewhere tells the same.
	if v, err := st.VerifyAudit(ctx, copyOfHead); err != nil || v.OK {
		t.Fatalf("against a copy of the head: %+v %v", v, err)
	}
	// A changed head, or none at all, does not pass.
	var h map[string]any
	json.Unmarshal(b, &h)
	h["id"] = 35
	forged, _ := json.Marshal(h)
	os.WriteFile(filepath.Join(dir, "audit-head.json"), forged, 0o600)
	if v, err := st.VerifyAudit(ctx); err != nil || v.OK || !strings.Contains(v.Reason, "does not verify") {
		t.Fatalf("a changed head: %+v %v", v, err)
	}
	os.Remove(filepath.Join(dir, "audit-head.json"))
	if v, err := st.VerifyAudit(ctx); err != nil || v.OK || !strings.Contains(v.Reason, "missing") {
		t.Fatalf("no head: %+v %v", v, err)
	}
}

// A restart on an untouched trail goes on updating its head.
func TestAuditHeadAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	for round := 1; round <= 3; round++ {
		st, err := openDir(t, ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		st.Audit.Log(ctx, &haven.AuditEvent{Action: "test.event"})
		if v, err := st.VerifyAudit(ctx); err != nil || !v.OK || v.Head == nil || v.Head.ID != int64(round) {
			t.Fatalf("round %d: %+v %v", round, v, err)
		}
		st.Close()
	}
}

// Nothing in the data directory is readable by other users: the database
// and its WAL, the key store, key.json, the audit head and stored files.
func TestDataDirectoryPermissions(t *testing.T) {
	dir := t.TempDir()
	st := open(t, dir)
	pr, _ := st.Projects.Create(ctx, "P", "")
	blob, err := st.Blobs.Put(ctx, pr.ID, bytes.NewReader(bytes.Repeat([]byte("x"), 100_000)), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st.DB.Write(ctx, func(tx *storage.Tx) error { return tx.RecordBlob(blob) })
	st.Audit.Log(ctx, &haven.AuditEvent{Action: "test.event"})
	st.WriteAuditHead(ctx)
	n := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		fi, _ := d.Info()
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s is mode %o: others may read it", p, perm)
		}
		n++
		return nil
	})
	if n < 8 {
		t.Fatalf("only %d entries checked", n)
	}
}

// openDir opens dir as OpenDir does, on the pass's database: the
// directory's SQLite file, or on the PostgreSQL pass the database pgtest
// keeps for dir.
func openDir(t testing.TB, ctx context.Context, dir string, o ...storage.Options) (*storage.Store, error) {
	t.Helper()
	var opt storage.Options
	if len(o) > 0 {
		opt = o[0]
	}
	opt.Database = pgtest.Database(t, dir)
	return storage.OpenDir(ctx, dir, opt)
}
