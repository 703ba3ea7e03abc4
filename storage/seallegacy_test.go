package storage

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/haven-org/haven"
)

// Submissions stored before submissions had keys (sealed under their
// project's key, as migration 0011's Haven wrote them) get keys of their
// own on start: every sealed value moves, the files' keys too, everything
// still reads, and erasing one then destroys its key.
func TestSealLegacy(t *testing.T) {
	ctx := context.Background()
	st := openAsOf(t, t.TempDir(), 0)
	defer st.Close()
	pr, err := st.Projects.Create(ctx, "Old", "")
	if err != nil {
		t.Fatal(err)
	}
	f, err := st.Forms.CreateForm(ctx, pr.ID, NewFormVersion{XMLFormID: "d", Name: "D", Version: "1", XML: []byte("<x/>"), MD5: "x"}, true)
	if err != nil {
		t.Fatal(err)
	}
	u, err := st.Users.Create(ctx, "old@example.org", "a long enough password", "", false)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := st.Keys.ProjectKey(ctx, pr.ID)
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{"uuid:old-0", "uuid:old-1", "uuid:old-2"}
	for i, id := range ids {
		blob, err := st.Blobs.Put(ctx, pr.ID, strings.NewReader(strings.Repeat("OLD-PHOTO ", 5000+i)), PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		xml := "<d><name>OLD-NAME-" + id + "</name><photo>p.jpg</photo></d>"
		err = st.DB.Write(ctx, func(tx *Tx) error {
			device := pk.Seal([]byte("collect:old"), deviceAAD(f.ID, id))
			r, err := tx.Exec(`INSERT INTO submissions (form_id, instance_id, submitter_id, device_id, created_at) VALUES (?, ?, ?, ?, ?)`, f.ID, id, u.ID, device, i)
			if err != nil {
				return err
			}
			sid, _ := r.LastInsertId()
			r, err = tx.Exec(`INSERT INTO submission_versions (submission_id, form_id, form_version_id, instance_id, deprecated_id, instance_name, xml, xml_mac,
				submitter_id, device_id, current, created_at, edit_reason) VALUES (?, ?, ?, ?, '', ?, ?, ?, ?, ?, 1, ?, ?)`,
				sid, f.ID, f.CurrentVersionID, id, pk.Seal([]byte("OLD-INSTANCE-NAME"), nameAAD(f.ID, id)), pk.Seal([]byte(xml), xmlAAD(f.ID, id)),
				pk.MAC([]byte(xml)), u.ID, device, i, pk.Seal([]byte("OLD-REASON"), reasonAAD(f.ID, id)))
			if err != nil {
				return err
			}
			vid, _ := r.LastInsertId()
			if err := tx.RecordBlob(blob); err != nil {
				return err
			}
			if _, err := tx.Exec(`INSERT INTO submission_attachments (version_id, name, blob_id) VALUES (?, 'p.jpg', ?)`, vid, blob.ID); err != nil {
				return err
			}
			if _, err := tx.Exec(`INSERT INTO consent_records (submission_id, form_version_id, outcome, legal_basis, received_at, device_user_id, device_id)
				VALUES (?, ?, 'given', 'consent', 0, ?, ?)`, sid, f.CurrentVersionID, u.ID, device); err != nil {
				return err
			}
			_, err = tx.Exec(`INSERT INTO submission_comments (submission_id, actor_id, tier, body, created_at) VALUES (?, ?, 'public', ?, 0)`,
				sid, u.ID, pk.Seal([]byte("OLD-COMMENT"), commentAAD(f.ID, id)))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	n, err := st.Submissions.SealLegacy(ctx, nil)
	if err != nil || n != 3 {
		t.Fatalf("resealed %d: %v", n, err)
	}
	if n, _ := st.Submissions.SealLegacy(ctx, nil); n != 0 {
		t.Fatalf("a second start resealed %d again", n)
	}
	var legacy int
	st.DB.QueryRow(ctx, `SELECT (SELECT count(*) FROM submissions WHERE key_slot IS NULL) + (SELECT count(*) FROM blobs WHERE key_slot IS NULL)`).Scan(&legacy)
	if legacy != 0 {
		t.Fatalf("%d rows still under the project key", legacy)
	}
	for _, id := range ids {
		sub, err := st.Submissions.Get(ctx, pr.ID, f.ID, id)
		if err != nil {
			t.Fatal(err)
		}
		xml, err := st.Submissions.XML(ctx, pr.ID, &sub.Current)
		if err != nil || !bytes.Contains(xml, []byte("OLD-NAME-"+id)) || sub.DeviceID != "collect:old" || sub.Current.InstanceName != "OLD-INSTANCE-NAME" {
			t.Fatalf("%s after resealing: %s %+v %v", id, xml, sub, err)
		}
		vs, err := st.Submissions.Versions(ctx, pr.ID, sub)
		if err != nil || vs[0].EditReason != "OLD-REASON" {
			t.Fatalf("versions: %+v %v", vs, err)
		}
		c, err := st.Submissions.Consent(ctx, pr.ID, sub)
		if err != nil || c.DeviceID != "collect:old" {
			t.Fatalf("consent: %+v %v", c, err)
		}
		cs, err := st.Submissions.Comments(ctx, pr.ID, sub)
		if err != nil || cs[0].Body != "OLD-COMMENT" {
			t.Fatalf("comments: %+v %v", cs, err)
		}
		as, _ := st.Submissions.Attachments(ctx, sub.Current.ID)
		rc, _, err := st.Blobs.Open(ctx, as[0].BlobID)
		if err != nil {
			t.Fatal(err)
		}
		photo, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.HasPrefix(photo, []byte("OLD-PHOTO ")) {
			t.Fatalf("photo after resealing: %.20q", photo)
		}
		// No value opens with the project key any more.
		var sealed []byte
		st.DB.QueryRow(ctx, `SELECT xml FROM submission_versions WHERE id = ?`, sub.Current.ID).Scan(&sealed)
		if _, err := pk.Open(sealed, xmlAAD(f.ID, id)); err == nil {
			t.Fatal("the XML still opens with the project key")
		}
	}
	// Erasing a resealed submission destroys its key.
	var slot int64
	st.DB.QueryRow(ctx, `SELECT key_slot FROM submissions WHERE instance_id = 'uuid:old-1'`).Scan(&slot)
	if err := st.Submissions.Delete(ctx, st.Blobs, f.ID, "uuid:old-1", &haven.AuditEvent{Action: "t"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Keys.SubmissionKey(pk, slot); err == nil {
		t.Fatal("the erased submission's key is still there")
	}
}
