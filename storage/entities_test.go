package storage_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
	"github.com/haven-org/haven/storage/pgtest"
)

// entityUUID is a household's uuid; kept in the clear (its tombstone
// tells devices it is gone), it shows whether rows leave the disk.
func entityUUID(i int) string { return fmt.Sprintf("5e1fdead-0000-4000-8000-%012d", i) }

// registered stores a submission that makes household i and applies it.
func registered(t *testing.T, st *storage.Store, pr *haven.Project, f *haven.Form, i int) {
	t.Helper()
	id := fmt.Sprintf("uuid:reg-%d", i)
	xml := fmt.Sprintf(`<d id="d" version="1"><name>ENTMARK-%d</name><meta><instanceID>%s</instanceID></meta></d>`, i, id)
	res, err := st.Submissions.Ingest(ctx, &storage.Incoming{ProjectID: pr.ID, FormID: f.ID, FormVersionID: f.CurrentVersionID,
		InstanceID: id, XML: []byte(xml), SubmitterID: 1, Entities: true})
	if err != nil || !res.EntitiesQueued {
		t.Fatalf("ingest: %+v %v", res, err)
	}
	items, err := st.Entities.Queue(ctx, time.Now().Add(-time.Hour), 10)
	if err != nil || len(items) != 1 {
		t.Fatalf("queue: %+v %v", items, err)
	}
	sub, err := st.Entities.Queued(ctx, items[0])
	if err != nil || sub == nil {
		t.Fatalf("queued: %+v %v", sub, err)
	}
	op := haven.EntityOp{Dataset: "households", UUID: entityUUID(i), Create: true, Label: fmt.Sprintf("ENTMARK-%d", i), HasLabel: true,
		Values: map[string]string{"name": fmt.Sprintf("ENTMARK-%d", i)}}
	out, err := st.Entities.ApplySubmission(ctx, items[0], sub, []haven.EntityOp{op}, func(storage.Outcome) *haven.AuditEvent { return nil })
	if err != nil || len(out) != 1 || out[0].Action != "create" {
		t.Fatalf("apply: %+v %v", out, err)
	}
}

// Erasing the submission that made an entity erases the entity: its
// versions go, a tombstone stays, and its key is zeroed, so no copy of
// its ciphertext left in old pages opens. Destroying the project then
// removes every entity row (tombstones too) and counts them on the
// certificate.
func TestEntityErasureAndDestruction(t *testing.T) {
	dir := t.TempDir()
	st := open(t, dir)
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	st.DB.Now = func() time.Time { return now }
	pr, f := filled(t, st, 0, "ENT", now.Add(24*time.Hour))
	if err := st.Entities.Declare(ctx, pr.ID, f.CurrentVersionID, []storage.ListDecl{{Name: "households", Create: true, LabelTier: haven.Level2,
		Properties: []haven.EntityProperty{{Name: "name", Purpose: "Find it again", Sensitivity: haven.Level2}}}}); err != nil {
		t.Fatal(err)
	}
	list, err := st.Entities.List(ctx, pr.ID, "households")
	if err != nil {
		t.Fatal(err)
	}
	registered(t, st, pr, f, 1)
	registered(t, st, pr, f, 2)
	label := "API-MADE"
	if _, err := st.Entities.CreateEntities(ctx, list, []storage.APIChange{{UUID: entityUUID(3), Label: &label, Data: map[string]string{"name": "ENTMARK-3"}}},
		1, func(*haven.Entity) *haven.AuditEvent { return nil }); err != nil {
		t.Fatal(err)
	}
	one, err := st.Entities.Get(ctx, list, entityUUID(1), false)
	if err != nil || one.Current.Data["name"] != "ENTMARK-1" || one.Current.Label != "ENTMARK-1" {
		t.Fatalf("entity 1: %+v %v", one, err)
	}
	var sealed []byte
	if err := st.DB.QueryRow(ctx, `SELECT v.sealed FROM entity_versions v JOIN entities e ON e.id = v.entity_id WHERE e.uuid = ?`, entityUUID(1)).Scan(&sealed); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("ENTMARK")) {
		t.Fatal("an entity's values are stored in the clear")
	}

	if err := st.Submissions.Delete(ctx, st.Blobs, f.ID, "uuid:reg-1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Entities.Get(ctx, list, entityUUID(1), false); haven.ErrorCode(err) != haven.ENOTFOUND {
		t.Fatalf("the erased submission's entity: %v", err)
	}
	gone, err := st.Entities.Deleted(ctx, list, []string{entityUUID(1), entityUUID(2)})
	if err != nil || !gone[entityUUID(1)] || gone[entityUUID(2)] {
		t.Fatalf("tombstones: %v %v", gone, err)
	}
	pk, err := st.Keys.ProjectKey(ctx, pr.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Keys.SubmissionKey(pk, one.KeySlot); err == nil {
		t.Fatal("the erased entity's key is still in its slot")
	}
	if pgtest.Backend() == "sqlite" {
		// Copies of the ciphertext may remain in WAL frames; none opens.
		probe := sealed[len(sealed)-24:]
		for _, name := range []string{"haven.db", "haven.db-wal"} {
			b, _ := os.ReadFile(filepath.Join(dir, name))
			if i := bytes.Index(b, probe); i >= 0 && i+len(probe) >= len(sealed) {
				copyOf := b[i+len(probe)-len(sealed) : i+len(probe)]
				for slot := int64(0); slot < 20; slot++ {
					if sk, err := st.Keys.SubmissionKey(pk, slot); err == nil {
						if _, err := sk.Open(copyOf, fmt.Sprintf("entity %d %s %d", list.ID, entityUUID(1), 1)); err == nil {
							t.Fatalf("a copy of the erased entity opens with slot %d", slot)
						}
					}
				}
			}
		}
	}
	// A resend of the erased registration does not make it again.
	if res, err := st.Submissions.Ingest(ctx, &storage.Incoming{ProjectID: pr.ID, FormID: f.ID, FormVersionID: f.CurrentVersionID,
		InstanceID: "uuid:reg-1", XML: []byte(`<d id="d" version="1"><name>ENTMARK-1</name><meta><instanceID>uuid:reg-1</instanceID></meta></d>`),
		SubmitterID: 1, Entities: true}); err == nil && res.EntitiesQueued {
		items, _ := st.Entities.Queue(ctx, now, 10)
		sub, _ := st.Entities.Queued(ctx, items[0])
		out, err := st.Entities.ApplySubmission(ctx, items[0], sub, []haven.EntityOp{{Dataset: "households", UUID: entityUUID(1), Create: true,
			Label: "again", HasLabel: true}}, func(storage.Outcome) *haven.AuditEvent { return nil })
		if err != nil || out[0].Action != "error" {
			t.Fatalf("the erased entity was made again: %+v %v", out, err)
		}
	}

	if hits := scanStore(t, st, dir, entityUUID(2)); len(hits) == 0 {
		t.Fatal("the scan finds no entity before the destruction: it cannot be trusted")
	}
	now = now.AddDate(0, 0, 60)
	if _, err := st.Reap(ctx, false, "schedule"); err != nil {
		t.Fatal(err)
	}
	var n int
	st.DB.QueryRow(ctx, `SELECT count(*) FROM entities WHERE list_id = ?`, list.ID).Scan(&n)
	if n != 0 {
		t.Fatalf("%d entity rows left", n)
	}
	for i := 1; i <= 3; i++ {
		if hits := scanStore(t, st, dir, entityUUID(i)); len(hits) > 0 {
			t.Fatalf("entity %d found after destruction in %v", i, hits)
		}
	}
	cert, err := st.Certificate(ctx, pr.ID)
	if err != nil {
		t.Fatal(err)
	}
	var c storage.Certificate
	json.Unmarshal(cert.Body, &c)
	// Entity 2 went with its submission, 3 (made over the API) on its own;
	// entity 1 was erased before.
	if c.Destroyed["entities"] != 2 {
		t.Fatalf("certificate: %s", cert.Body)
	}
}
