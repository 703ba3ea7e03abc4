package storage

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/haven-org/haven"
)

// Certificate is the record a destruction leaves: what was destroyed (counts
// per kind), which key, when and on whose authority, and the anonymous counts
// that stay. It is signed with the server's Ed25519 key and its hash is
// written into the audit trail.
type Certificate struct {
	ProjectID     int64            `json:"projectId"`
	ProjectName   string           `json:"projectName"`
	EndDate       *time.Time       `json:"endDate"`
	RetentionDays int              `json:"retentionDays"`
	StartedAt     time.Time        `json:"startedAt"`
	CompletedAt   time.Time        `json:"completedAt"`
	By            string           `json:"by"` // "schedule", or the user who ran it
	KeyIDs        []int64          `json:"destroyedKeyIds"`
	Destroyed     map[string]int64 `json:"destroyed"`
	Kept          map[string]int64 `json:"kept"` // anonymous counts: submissions and refusals per form
	PublicKey     string           `json:"publicKey"`
}

// SignedCertificate is a certificate as issued: the exact JSON that was
// signed, its signature, and the audit event that chains it.
type SignedCertificate struct {
	Body      json.RawMessage `json:"certificate"`
	Signature []byte          `json:"signature"`
	SHA256    string          `json:"sha256"`
}

func (s *Store) signingKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(DeriveSecret(s.MasterKey, "certificate signing")[:ed25519.SeedSize])
}

// PublicKey is the key that verifies this server's destruction certificates.
func (s *Store) PublicKey() ed25519.PublicKey { return s.signingKey().Public().(ed25519.PublicKey) }

// destroyBatch is how many submissions one destruction transaction erases.
const destroyBatch = 200

func addCount(tx *Tx, projectID int64, kind string, n int64) error {
	if n == 0 {
		return nil
	}
	_, err := tx.Exec(`INSERT INTO destruction_counts (project_id, kind, count) VALUES (?, ?, ?)
		ON CONFLICT (project_id, kind) DO UPDATE SET count = destruction_counts.count + excluded.count`, projectID, kind, n)
	return err
}

// Destroy destroys a project's collected data for good: submissions, their
// versions, consent records and attachments, withdrawal records, form media,
// device tokens and any other stored file of the project, then its data key
// (database row and key store file), so whatever copy survives (a backup,
// a replica, an object a store failed to delete) cannot be decrypted; then
// it makes the database forget (secure_delete is always on; an incremental
// vacuum and a truncating WAL checkpoint follow). The project's name and
// dates, its form definitions, anonymous counts and the signed certificate
// stay.
//
// Destruction goes in transactions of destroyBatch submissions and counts
// as it goes: interrupted at any point, it resumes where it stopped when run
// again, and the certificate covers the whole.
func (s *Store) Destroy(ctx context.Context, projectID int64, by string) (*SignedCertificate, error) {
	pr, err := s.Projects.Get(ctx, projectID)
	if err != nil {
		return nil, err
	}
	if pr.DestroyedAt != nil {
		return s.Certificate(ctx, projectID)
	}
	// The hold is checked in the transaction that starts destruction, as
	// PlaceHold checks the start in its own: one of the two wins, never both.
	err = s.Projects.write(ctx, func(tx *Tx) error {
		var reason, reference string
		err := tx.QueryRow(`SELECT reason, reference FROM legal_holds WHERE project_id = ? AND lifted_at IS NULL`, projectID).Scan(&reason, &reference)
		if err == nil {
			return haven.Errorf(haven.ECONFLICT, "Project %d is on legal hold (%s, %s): its data is kept until the hold is lifted.", projectID, reason, reference)
		} else if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		_, err = tx.Exec(`UPDATE projects SET destruction_started_at = ? WHERE id = ? AND destruction_started_at IS NULL`, ms(tx.Now()), projectID)
		return err
	})
	if err != nil {
		return nil, err
	}
	for {
		n, err := s.destroySubmissions(ctx, projectID)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
	}
	var objects []*Blob
	err = s.Projects.write(ctx, func(tx *Tx) error {
		objects = nil
		objs, err := destroyRest(tx, projectID)
		if err != nil {
			return err
		}
		objects = objs
		keyID, err := s.Keys.destroyProjectKey(tx, projectID)
		if err != nil {
			return err
		}
		return s.certify(tx, projectID, keyID, by)
	})
	if err != nil {
		return nil, err
	}
	s.Blobs.Discard(ctx, objects...)
	if err := s.Forget(ctx); err != nil {
		return nil, err
	}
	return s.Certificate(ctx, projectID)
}

// destroySubmissions erases up to destroyBatch of a project's submissions
// in one transaction and returns how many it erased.
func (s *Store) destroySubmissions(ctx context.Context, projectID int64) (int, error) {
	var objects []*Blob
	n := 0
	err := s.DB.Write(ctx, func(tx *Tx) error {
		objects, n = nil, 0
		rows, err := tx.Query(`SELECT s.form_id, s.instance_id, f.xml_form_id FROM submissions s JOIN forms f ON f.id = s.form_id
			WHERE f.project_id = ? LIMIT ?`, projectID, destroyBatch)
		if err != nil {
			return err
		}
		type sub struct {
			formID    int64
			instance  string
			xmlFormID string
		}
		var subs []sub
		for rows.Next() {
			var x sub
			if err := rows.Scan(&x.formID, &x.instance, &x.xmlFormID); err != nil {
				rows.Close()
				return err
			}
			subs = append(subs, x)
		}
		rows.Close()
		counts := map[string]int64{}
		for _, x := range subs {
			gone, err := eraseSubmission(tx, x.formID, x.instance)
			if err != nil {
				return err
			}
			objects = append(objects, gone.objects...)
			counts["submissions"]++
			counts["submission versions"] += gone.versions
			counts["consent records"] += gone.consents
			counts["comments"] += gone.comments
			counts["attachments"] += gone.files
			counts["entities"] += int64(len(gone.entitySlots))
			counts["kept:submissions of form "+x.xmlFormID]++
		}
		for kind, c := range counts {
			if err := addCount(tx, projectID, kind, c); err != nil {
				return err
			}
		}
		n = len(subs)
		return nil
	})
	if err != nil {
		return 0, err
	}
	s.Blobs.Discard(ctx, objects...)
	return n, nil
}

// destroyRest removes what is left of a project's personal data after its
// submissions: withdrawal records, form media, device tokens and any other
// stored object, counting each kind.
func destroyRest(tx *Tx, projectID int64) ([]*Blob, error) {
	count := func(q string) (int64, error) {
		var n int64
		err := tx.QueryRow(q, projectID).Scan(&n)
		return n, err
	}
	exec := func(kind, countQ, q string) error {
		n, err := count(countQ)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(q, projectID); err != nil {
			return err
		}
		return addCount(tx, projectID, kind, n)
	}
	if err := exec("consent withdrawal records",
		`SELECT count(*) FROM consent_withdrawals WHERE form_id IN (SELECT id FROM forms WHERE project_id = ?)`,
		`DELETE FROM consent_withdrawals WHERE form_id IN (SELECT id FROM forms WHERE project_id = ?)`); err != nil {
		return nil, err
	}
	if err := exec("erased instance records",
		`SELECT count(*) FROM erased_instances WHERE form_id IN (SELECT id FROM forms WHERE project_id = ?)`,
		`DELETE FROM erased_instances WHERE form_id IN (SELECT id FROM forms WHERE project_id = ?)`); err != nil {
		return nil, err
	}
	if err := exec("subject objections", `SELECT count(*) FROM subject_objections WHERE project_id = ?`,
		`DELETE FROM subject_objections WHERE project_id = ?`); err != nil {
		return nil, err
	}
	if err := exec("subject erasure records", `SELECT count(*) FROM subject_erasures WHERE project_id = ?`,
		`DELETE FROM subject_erasures WHERE project_id = ?`); err != nil {
		return nil, err
	}
	if err := exec("form media files",
		`SELECT count(*) FROM form_attachments WHERE blob_id IS NOT NULL AND form_version_id IN
			(SELECT v.id FROM form_versions v JOIN forms f ON f.id = v.form_id WHERE f.project_id = ?)`,
		`UPDATE form_attachments SET blob_id = NULL WHERE form_version_id IN
			(SELECT v.id FROM form_versions v JOIN forms f ON f.id = v.form_id WHERE f.project_id = ?)`); err != nil {
		return nil, err
	}
	// Entities no submission made (created over the API), then every
	// version, tombstone and queued block left; the lists' definitions
	// stay, as the forms' do.
	if err := exec("entities", `SELECT count(*) FROM entities WHERE deleted_at IS NULL AND list_id IN (SELECT id FROM entity_lists WHERE project_id = ?)`,
		`DELETE FROM entity_versions WHERE entity_id IN (SELECT e.id FROM entities e JOIN entity_lists l ON l.id = e.list_id WHERE l.project_id = ?)`); err != nil {
		return nil, err
	}
	if _, err := tx.Exec(`DELETE FROM entities WHERE list_id IN (SELECT id FROM entity_lists WHERE project_id = ?)`, projectID); err != nil {
		return nil, err
	}
	if _, err := tx.Exec(`DELETE FROM entity_queue WHERE project_id = ?`, projectID); err != nil {
		return nil, err
	}
	if _, err := tx.Exec(`UPDATE entity_lists SET changes = changes + 1 WHERE project_id = ?`, projectID); err != nil {
		return nil, err
	}
	if err := exec("device tokens", `SELECT count(*) FROM field_keys WHERE project_id = ?`, `DELETE FROM field_keys WHERE project_id = ?`); err != nil {
		return nil, err
	}
	// Background exports of the project, then every object of the
	// project left (their files, form media, anything else).
	if _, err := tx.Exec(`DELETE FROM export_jobs WHERE project_id = ?`, projectID); err != nil {
		return nil, err
	}
	ids, objects, err := tx.selectBlobs(`SELECT id, store, object, data IS NOT NULL FROM blobs WHERE project_id = ?`, projectID)
	if err != nil {
		return nil, err
	}
	return objects, tx.deleteBlobRows(ids)
}

// certify marks the project destroyed and writes its signed certificate,
// chained into the audit trail, within tx.
func (s *Store) certify(tx *Tx, projectID, keyID int64, by string) error {
	var name string
	var end, started sql.NullInt64
	var retention int
	if err := tx.QueryRow(`SELECT name, end_date, retention_days, destruction_started_at FROM projects WHERE id = ?`, projectID).
		Scan(&name, &end, &retention, &started); err != nil {
		return err
	}
	c := Certificate{ProjectID: projectID, ProjectName: name, EndDate: fromNullMS(end), RetentionDays: retention,
		StartedAt: fromMS(started.Int64), CompletedAt: tx.Now(), By: by, KeyIDs: []int64{keyID},
		Destroyed: map[string]int64{}, Kept: map[string]int64{}, PublicKey: hex.EncodeToString(s.PublicKey())}
	rows, err := tx.Query(`SELECT kind, count FROM destruction_counts WHERE project_id = ?`, projectID)
	if err != nil {
		return err
	}
	for rows.Next() {
		var kind string
		var n int64
		if err := rows.Scan(&kind, &n); err != nil {
			rows.Close()
			return err
		}
		if k, ok := strings.CutPrefix(kind, "kept:"); ok {
			c.Kept[k] = n
		} else {
			c.Destroyed[kind] = n
		}
	}
	rows.Close()
	rows, err = tx.Query(`SELECT f.xml_form_id, sum(r.count) FROM consent_refusals r JOIN forms f ON f.id = r.form_id
		WHERE f.project_id = ? GROUP BY f.xml_form_id`, projectID)
	if err != nil {
		return err
	}
	for rows.Next() {
		var form string
		var n int64
		if err := rows.Scan(&form, &n); err != nil {
			rows.Close()
			return err
		}
		c.Kept["submissions not kept for want of consent, form "+form] = n
	}
	rows.Close()
	body, err := json.Marshal(c)
	if err != nil {
		return err
	}
	sig := ed25519.Sign(s.signingKey(), body)
	sum := sha256.Sum256(body)
	if _, err := tx.Exec(`INSERT INTO destruction_certificates (project_id, body, signature) VALUES (?, ?, ?)`, projectID, string(body), sig); err != nil {
		return err
	}
	if _, err := tx.Exec(`UPDATE projects SET destroyed_at = ? WHERE id = ?`, ms(tx.Now()), projectID); err != nil {
		return err
	}
	return s.Audit.Append(tx, &haven.AuditEvent{Actor: by, Action: "project.destroy", ProjectID: projectID,
		Object: fmt.Sprintf("project/%d", projectID), Details: map[string]any{"certificateSha256": hex.EncodeToString(sum[:])}})
}

// Certificate returns a destroyed project's certificate.
func (s *Store) Certificate(ctx context.Context, projectID int64) (*SignedCertificate, error) {
	var body string
	var sig []byte
	err := s.DB.read.QueryRowContext(ctx, `SELECT body, signature FROM destruction_certificates WHERE project_id = ?`, projectID).Scan(&body, &sig)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, haven.Errorf(haven.ENOTFOUND, "Project %d has not been destroyed, so it has no destruction certificate.", projectID)
	} else if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(body))
	return &SignedCertificate{Body: json.RawMessage(body), Signature: sig, SHA256: hex.EncodeToString(sum[:])}, nil
}

// VerifyCertificate checks a certificate's signature against this server's
// key and finds the audit event that chains it; with the audit chain
// verified, the certificate is what this server issued.
func (s *Store) VerifyCertificate(ctx context.Context, sc *SignedCertificate) error {
	if !ed25519.Verify(s.PublicKey(), sc.Body, sc.Signature) {
		return haven.Errorf(haven.EINVALID, "The certificate's signature does not verify with this server's key: it was changed, or another server issued it.")
	}
	sum := sha256.Sum256(sc.Body)
	var c Certificate
	if err := json.Unmarshal(sc.Body, &c); err != nil {
		return haven.Errorf(haven.EINVALID, "The certificate is not valid JSON.")
	}
	events, err := s.Audit.List(ctx, AuditFilter{Action: "project.destroy", ProjectID: c.ProjectID})
	if err != nil {
		return err
	}
	for _, e := range events {
		if e.Details["certificateSha256"] == hex.EncodeToString(sum[:]) {
			v, err := s.Audit.Verify(ctx)
			if err != nil {
				return err
			}
			if !v.OK {
				return haven.Errorf(haven.ECONFLICT, "The certificate is signed, but the audit trail that chains it does not verify: %s.", v.Reason)
			}
			return nil
		}
	}
	return haven.Errorf(haven.EINVALID, "The certificate is signed, but no audit event records it.")
}

// Forget makes the database give back freed pages and drop old page images:
// an incremental vacuum, then a checkpoint that truncates the WAL. Deleted
// rows were already overwritten (secure_delete). On PostgreSQL see
// forgetPostgres.
func (s *Store) Forget(ctx context.Context) error {
	if s.DB.pg {
		if err := s.DB.forgetPostgres(ctx); err != nil {
			return err
		}
		_, err := s.Keys.ShredKeyFiles(ctx)
		return err
	}
	if err := s.DB.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`PRAGMA incremental_vacuum`)
		return err
	}); err != nil {
		return err
	}
	if _, err := s.Keys.ShredKeyFiles(ctx); err != nil {
		return err
	}
	return s.DB.Checkpoint(ctx)
}

// Due is a project the reaper looked at.
type Due struct {
	Project  *haven.Project
	DaysLeft int  // until destruction; 0 when due
	Due      bool // past its date and not on hold
}

// Reap destroys every project past its destruction date and not on legal
// hold (unless dryRun), and reports the projects with a destruction date.
func (s *Store) Reap(ctx context.Context, dryRun bool, by string) ([]Due, error) {
	projects, err := s.Projects.List(ctx, nil)
	if err != nil {
		return nil, err
	}
	now := s.DB.Now()
	var out []Due
	for _, p := range projects {
		d := p.DestructionDate()
		if p.DestroyedAt != nil || (d == nil && p.DestructionStartedAt == nil) {
			continue
		}
		due := Due{Project: p, Due: p.DueForDestruction(now)}
		if left := p.DaysLeft(now); left != nil && !due.Due {
			due.DaysLeft = *left
		}
		if due.Due && !dryRun {
			if _, err := s.Destroy(ctx, p.ID, by); err != nil {
				return out, fmt.Errorf("destroying project %d: %w", p.ID, err)
			}
		}
		out = append(out, due)
	}
	if !dryRun {
		// Finish what an interrupted run left: key files, the WAL.
		if _, err := s.Keys.ShredKeyFiles(ctx); err != nil {
			return out, err
		}
	}
	return out, nil
}
