package storage_test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-org/haven/storage"
	"github.com/haven-org/haven/storage/pgtest"
)

// read reads a submission's XML and its photo, as any read path does.
func read(st *storage.Store, projectID, formID int64, id string) (string, error) {
	sub, err := st.Submissions.Get(ctx, projectID, formID, id)
	if err != nil {
		return "", err
	}
	xml, err := st.Submissions.XML(ctx, projectID, &sub.Current)
	if err != nil {
		return "", err
	}
	as, err := st.Submissions.Attachments(ctx, sub.Current.ID)
	if err != nil || len(as) != 1 {
		return "", err
	}
	rc, _, err := st.Blobs.Open(ctx, as[0].BlobID)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	photo, err := io.ReadAll(rc)
	return string(xml) + string(photo[:20]), err
}

// An erased submission stays unreadable in a backup taken before the
// erasure, restored beside the live key store, while the others read.
func TestErasureReachesBackups(t *testing.T) {
	pgtest.SQLiteOnly(t, "it restores a backup made by haven backup, which PostgreSQL deployments make with PostgreSQL's tools")
	dir := t.TempDir()
	st := open(t, dir)
	pr, f := filled(t, st, 3, "BACKED", time.Now().AddDate(1, 0, 0))
	backup := filepath.Join(t.TempDir(), "backup")
	if _, err := st.Backup(ctx, backup); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Submissions.EraseSubject(ctx, st.Blobs, pr.ID, "BACKED-SUBJ-1", 1, nil); err != nil {
		t.Fatal(err)
	}
	st.Close()

	// The backup's database and files, the live key store and key.json.
	restored := t.TempDir()
	for _, name := range []string{"haven.db", "blobs"} {
		if err := os.Rename(filepath.Join(backup, name), filepath.Join(restored, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"keys", "key.json"} {
		if err := os.Rename(filepath.Join(dir, name), filepath.Join(restored, name)); err != nil {
			t.Fatal(err)
		}
	}
	old := open(t, restored)
	for i, id := range []string{"uuid:backed-0", "uuid:backed-1", "uuid:backed-2"} {
		got, err := read(old, pr.ID, f.ID, id)
		switch {
		case i == 1 && err == nil:
			t.Fatalf("the erased submission reads from the old backup: %.60s", got)
		case i != 1 && (err != nil || !strings.Contains(got, "BACKED-NAME") || !strings.Contains(got, "BACKED-PHOTO")):
			t.Fatalf("%s from the backup: %q %v", id, got, err)
		}
	}
}

// After an erasure, whatever of the submission's ciphertext is still on
// disk (WAL frames, free pages) opens with no key there is: the database
// and WAL are scanned for it and every copy found is tried with the live
// project key and every live submission key.
func TestErasedCiphertextDoesNotOpen(t *testing.T) {
	pgtest.SQLiteOnly(t, "it finds the ciphertext in the database file before the erasure")
	dir := t.TempDir()
	st := open(t, dir)
	pr, f := filled(t, st, 3, "SCANNED", time.Now().AddDate(1, 0, 0))
	sub, err := st.Submissions.Get(ctx, pr.ID, f.ID, "uuid:scanned-1")
	if err != nil {
		t.Fatal(err)
	}
	// The sealed XML as stored: find it on disk before and after.
	var sealed []byte
	var slot int64
	if err := st.DB.QueryRow(ctx, `SELECT v.xml, s.key_slot FROM submission_versions v JOIN submissions s ON s.id = v.submission_id
		WHERE v.id = ?`, sub.Current.ID).Scan(&sealed, &slot); err != nil {
		t.Fatal(err)
	}
	probe := sealed[len(sealed)-24:] // the tail of the ciphertext and its tag
	onDisk := func() [][]byte {
		var found [][]byte
		for _, name := range []string{"haven.db", "haven.db-wal"} {
			b, _ := os.ReadFile(filepath.Join(dir, name))
			for i := bytes.Index(b, probe); i >= 0; {
				if start := i + len(probe) - len(sealed); start >= 0 {
					found = append(found, bytes.Clone(b[start:i+len(probe)]))
				}
				next := bytes.Index(b[i+1:], probe)
				if next < 0 {
					break
				}
				i += 1 + next
			}
		}
		return found
	}
	if len(onDisk()) == 0 {
		t.Fatal("the ciphertext is not on disk before the erasure: the scan finds nothing")
	}
	if err := st.Submissions.Delete(ctx, st.Blobs, f.ID, "uuid:scanned-1", nil); err != nil {
		t.Fatal(err)
	}
	left := onDisk()
	t.Logf("%d copies of the erased ciphertext are still on disk (WAL frames)", len(left))
	pk, err := st.Keys.ProjectKey(ctx, pr.ID)
	if err != nil {
		t.Fatal(err)
	}
	aad := storage.XMLAAD(f.ID, "uuid:scanned-1")
	for _, c := range left {
		if _, err := pk.Open(c, aad); err == nil {
			t.Fatal("a copy opens with the project key")
		}
		for slot := int64(0); slot < 10; slot++ {
			sk, err := st.Keys.SubmissionKey(pk, slot)
			if err != nil {
				continue
			}
			if _, err := sk.Open(c, aad); err == nil {
				t.Fatalf("a copy opens with the key in slot %d", slot)
			}
		}
	}
	// The key itself is gone, and the other submissions still read.
	if _, err := st.Keys.SubmissionKey(pk, slot); err == nil {
		t.Fatal("the erased submission's slot still holds a key")
	}
	if got, err := read(st, pr.ID, f.ID, "uuid:scanned-2"); err != nil || !strings.Contains(got, "SCANNED-NAME") {
		t.Fatalf("another submission: %q %v", got, err)
	}
}
