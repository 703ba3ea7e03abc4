package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
	"github.com/haven-org/haven/storage/miniotest"
	"github.com/haven-org/haven/storage/pgtest"
)

func TestStorageCommands(t *testing.T) {
	m := miniotest.Start(t)
	ctx := context.Background()
	data := t.TempDir()
	st, err := storage.OpenDir(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	pr, _ := st.Projects.Create(ctx, "P", "")
	var ids []int64
	for i := 0; i < 3; i++ {
		b, err := st.Blobs.Put(ctx, pr.ID, bytes.NewReader(bytes.Repeat([]byte{byte(i)}, 50_000)), storage.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		st.DB.Write(ctx, func(tx *storage.Tx) error { return tx.RecordBlob(b) })
		ids = append(ids, b.ID)
	}
	st.Close()

	s3 := []string{"--s3-endpoint", m.Addr, "--s3-bucket", "haven-cli", "--s3-access-key", miniotest.AccessKey, "--s3-secret-key", miniotest.SecretKey}
	var out bytes.Buffer
	if err := run(ctx, append([]string{"storage", "migrate", "--to", "s3", "--data", data}, s3...), nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Done: 3 files moved to s3") {
		t.Fatalf("migrate: %q", out.String())
	}
	out.Reset()
	if err := run(ctx, append([]string{"storage", "migrate", "--to", "s3", "--data", data}, s3...), nil, &out, io.Discard); err != nil || !strings.Contains(out.String(), "Done: 0 files") {
		t.Fatalf("migrating again moves nothing: %q %v", out.String(), err)
	}
	st, err = storage.OpenDir(ctx, data, storage.Options{S3: &storage.S3Config{Endpoint: m.Addr, Bucket: "haven-cli", AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey}})
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		rc, b, err := st.Blobs.Open(ctx, id)
		if err != nil || b.Store != storage.StoreS3 {
			t.Fatalf("object %d: %v", i, err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, bytes.Repeat([]byte{byte(i)}, 50_000)) {
			t.Fatalf("object %d differs after migration", i)
		}
	}
	st.Close()
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"storage", "migrate", "--to", "s3", "--data", data}, "--s3-endpoint"},
		{[]string{"storage", "migrate", "--to", "ftp", "--data", data}, "--to s3 or --to local"},
		{[]string{"storage", "vacuum"}, "migrate or gc"},
	} {
		if err := run(ctx, c.args, nil, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%v: %v", c.args, err)
		}
	}
	out.Reset()
	if err := run(ctx, append([]string{"storage", "gc", "--data", data}, s3...), nil, &out, io.Discard); err != nil || !strings.Contains(out.String(), "Removed 0") {
		t.Fatalf("gc: %q %v", out.String(), err)
	}
}

// haven audit verify checks the chain and names the first broken event.
func TestAuditVerify(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	st, err := storage.OpenDir(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if err := st.Audit.Log(ctx, &haven.AuditEvent{Action: "test.event", Object: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	var out bytes.Buffer
	if err := run(ctx, []string{"audit", "verify", "--data", data}, nil, &out, io.Discard); err != nil || !strings.Contains(out.String(), "5 events") {
		t.Fatalf("verify: %v %q", err, out.String())
	}
	if !strings.Contains(out.String(), "reaching its head (event 5") {
		t.Fatalf("verify does not say it checked the head: %q", out.String())
	}
	// Remove event 3 behind the database's back.
	st, _ = storage.OpenDir(ctx, data)
	st.DB.Write(ctx, func(tx *storage.Tx) error {
		tx.Exec(`DROP TRIGGER audits_no_delete`)
		_, err := tx.Exec(`DELETE FROM audits WHERE id = 3`)
		return err
	})
	st.Close()
	err = run(ctx, []string{"audit", "verify", "--data", data}, nil, io.Discard, io.Discard)
	if err == nil || !strings.Contains(haven.ErrorMessage(err), "event 3 is missing") {
		t.Fatalf("a deleted event: %v", err)
	}
	// Cutting the newest events off is found too: the signed head names them.
	data = t.TempDir()
	st, _ = storage.OpenDir(ctx, data)
	for i := 0; i < 5; i++ {
		st.Audit.Log(ctx, &haven.AuditEvent{Action: "test.event"})
	}
	st.Close()
	st, _ = storage.OpenDir(ctx, data)
	st.DB.Write(ctx, func(tx *storage.Tx) error {
		tx.Exec(`DROP TRIGGER audits_no_delete`)
		_, err := tx.Exec(`DELETE FROM audits WHERE id > 2`)
		return err
	})
	st.Close()
	err = run(ctx, []string{"audit", "verify", "--data", data}, nil, io.Discard, io.Discard)
	if err == nil || !strings.Contains(haven.ErrorMessage(err), "the newest 3 event(s) were removed") {
		t.Fatalf("a cut tail: %v", err)
	}
}

// haven reap, haven backup and haven certificate verify on a data directory.
func TestReapBackupCertificate(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	st, err := storage.OpenDir(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	end := time.Now().Add(-48 * time.Hour)
	pr, err := st.Projects.Create(ctx, "Ended", "", storage.Lifecycle{EndDate: &end})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	var out bytes.Buffer
	if err := run(ctx, []string{"backup", "--to", filepath.Join(t.TempDir(), "b"), "--data", data}, nil, &out, io.Discard); err != nil ||
		!strings.Contains(out.String(), "not in it") {
		t.Fatalf("backup: %v %q", err, out.String())
	}
	out.Reset()
	if err := run(ctx, []string{"reap", "--dry-run", "--data", data}, nil, &out, io.Discard); err != nil || !strings.Contains(out.String(), "would be destroyed") {
		t.Fatalf("dry run: %v %q", err, out.String())
	}
	out.Reset()
	if err := run(ctx, []string{"reap", "--data", data}, nil, &out, io.Discard); err != nil || !strings.Contains(out.String(), `"Ended": destroyed`) {
		t.Fatalf("reap: %v %q", err, out.String())
	}
	st, _ = storage.OpenDir(ctx, data)
	cert, err := st.Certificate(ctx, pr.ID)
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(cert)
	file := filepath.Join(t.TempDir(), "cert.json")
	os.WriteFile(file, b, 0o600)
	if err := run(ctx, []string{"certificate", "verify", file, "--data", data}, nil, io.Discard, io.Discard); err != nil {
		t.Fatalf("verify: %v", err)
	}
	os.WriteFile(file, bytes.Replace(b, []byte("Ended"), []byte("Endex"), 1), 0o600)
	if err := run(ctx, []string{"certificate", "verify", file, "--data", data}, nil, io.Discard, io.Discard); err == nil {
		t.Fatal("a changed certificate verifies")
	}
}

// haven storage migrate --to postgres://... moves a deployment's records,
// and Haven then opens them there with the same data directory.
func TestMoveRecordsCommand(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	const email, password = "mover@example.org", "a long enough password"
	if err := run(ctx, []string{"admin", "create", "--email", email, "--data", data}, strings.NewReader(password+"\n"), io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	dsn := pgtest.Start(t).DSN()
	var out bytes.Buffer
	if err := run(ctx, []string{"storage", "migrate", "--to", dsn, "--data", data}, nil, &out, io.Discard); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "Done:") || !strings.Contains(out.String(), "users") {
		t.Fatalf("the move says:\n%s", out.String())
	}
	st, err := storage.OpenDir(ctx, data, storage.Options{Database: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Users.Authenticate(ctx, email, password); err != nil {
		t.Fatalf("the administrator after the move: %v", err)
	}
	if err := run(ctx, []string{"storage", "migrate", "--to", dsn, "--data", t.TempDir()}, nil, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "no haven.db") {
		t.Fatalf("a move from an empty directory: %v", err)
	}
	// A mistyped data directory beside --database is refused, and not made.
	typo := filepath.Join(t.TempDir(), "typo")
	if err := run(ctx, []string{"audit", "verify", "--data", typo, "--database", dsn}, nil, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("a mistyped data directory with --database: %v", err)
	}
	if _, err := os.Stat(typo); err == nil {
		t.Fatal("the mistyped data directory was made")
	}
	st.Close()
	// And back, into a new file beside the same key store.
	if err := run(ctx, []string{"storage", "migrate", "--to", "sqlite", "--database", dsn, "--data", data}, nil, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("moving back over an existing haven.db: %v", err)
	}
	os.Rename(filepath.Join(data, "haven.db"), filepath.Join(data, "old.db"))
	out.Reset()
	if err := run(ctx, []string{"storage", "migrate", "--to", "sqlite", "--database", dsn, "--data", data}, nil, &out, io.Discard); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	back, err := storage.OpenDir(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if _, err := back.Users.Authenticate(ctx, email, password); err != nil {
		t.Fatalf("the administrator back on SQLite: %v", err)
	}
}
