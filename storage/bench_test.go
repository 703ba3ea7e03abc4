package storage_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
)

// BenchmarkSeal seals a 2 KB submission under a project key (AES-256-GCM).
func BenchmarkSeal(b *testing.B) {
	st, _ := storage.OpenDir(ctx, b.TempDir())
	defer st.Close()
	pr, _ := st.Projects.Create(ctx, "P", "")
	pk, _ := st.Keys.ProjectKey(ctx, pr.ID)
	doc := bytes.Repeat([]byte("x"), 2048)
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		pk.Seal(doc, "submission 1 uuid:x")
	}
}

// BenchmarkBlobPut encrypts (DARE) and stores objects of 10 KB (kept in the
// database row) and 100 KB and 1 MB (files), without the commit.
func BenchmarkBlobPut(b *testing.B) {
	for _, size := range []int{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			st, _ := storage.OpenDir(ctx, b.TempDir())
			defer st.Close()
			pr, _ := st.Projects.Create(ctx, "P", "")
			content := bytes.Repeat([]byte("j"), size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := st.Blobs.Put(ctx, pr.ID, bytes.NewReader(content), storage.PutOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkIngest stores 2 KB submissions (sealed XML, keyed hash, rows,
// durable commit). serial: one writer at a time, so each pays a whole
// commit; parallel: many writers, sharing commits (group commit).
func BenchmarkIngest(b *testing.B) {
	run := func(b *testing.B, parallel bool) {
		st, _ := storage.OpenDir(ctx, b.TempDir())
		defer st.Close()
		pr, _ := st.Projects.Create(ctx, "P", "")
		var formID, versionID int64
		st.DB.Write(ctx, func(tx *storage.Tx) error {
			r, _ := tx.Exec(`INSERT INTO forms (project_id, xml_form_id, created_at, updated_at) VALUES (?, 'f', 0, 0)`, pr.ID)
			formID, _ = r.LastInsertId()
			r, _ = tx.Exec(`INSERT INTO form_versions (form_id, version, name, xml, md5, created_at, published_at) VALUES (?, '1', 'f', x'00', '', 0, 0)`, formID)
			versionID, _ = r.LastInsertId()
			return nil
		})
		doc := bytes.Repeat([]byte("x"), 2048)
		ingest := func() {
			// As the server does: a random instanceID (so indexes take
			// random leaves, as they do with real devices), a consent record
			// and an audit event.
			in := &storage.Incoming{ProjectID: pr.ID, FormID: formID, FormVersionID: versionID,
				InstanceID: "uuid:" + rand.Text(), XML: doc, SubmitterID: 1, DeviceID: "collect:bench",
				Consent: &haven.ConsentRecord{Outcome: "given", LegalBasis: haven.BasisConsent, DeviceUserID: 1},
				Audit:   &haven.AuditEvent{ActorID: 1, Actor: "bench", Action: "submission.create", ProjectID: pr.ID, Object: "f"}}
			if _, err := st.Submissions.Ingest(ctx, in); err != nil {
				b.Error(err)
			}
		}
		st.DB.Write(ctx, func(tx *storage.Tx) error {
			_, err := tx.Exec(`INSERT INTO actors (id, type, display_name, created_at, updated_at) VALUES (1, 'field_key', 't', 0, 0)`)
			return err
		})
		b.ReportAllocs()
		b.ResetTimer()
		if parallel {
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					ingest()
				}
			})
		} else {
			for b.Loop() {
				ingest()
			}
		}
	}
	b.Run("serial", func(b *testing.B) { run(b, false) })
	b.Run("parallel", func(b *testing.B) { run(b, true) })
}
