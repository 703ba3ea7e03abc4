package storage

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/haven-org/haven"
)

// Submissions reads and writes submissions, their versions and attachments.
type Submissions struct {
	DB    *DB
	Keys  *Keyring
	Audit *Audit
}

// Incoming is one submission POST after validation: the XML and the files
// that came with it (already encrypted into the blob store, not yet recorded).
type Incoming struct {
	ProjectID     int64
	FormID        int64
	FormVersionID int64
	InstanceID    string
	DeprecatedID  string
	InstanceName  string
	XML           []byte
	SubmitterID   int64
	DeviceID      string
	// Expected lists the files the XML names; Files holds those that came.
	Expected []string
	Files    map[string]*Blob
	// Consent is the consent evidence recorded with a new submission.
	Consent *haven.ConsentRecord
	// Audit, when set, is written in the same transaction as the submission.
	Audit *haven.AuditEvent
	// Subject is the value of the form's subject identifier field, if any:
	// indexed by keyed hash, and refused when the person objected.
	Subject string
	// EditReason is why a correction was made on the server ("" for devices).
	EditReason string
	// Entities says the form saves to entity lists. A new submission's
	// EntityOps are applied in the transaction that stores it (EntityEvent
	// gives each outcome's audit event); an edit's are queued.
	Entities    bool
	EntityOps   []haven.EntityOp
	EntityEvent func(EntityOutcome) *haven.AuditEvent
}

// EntityOutcome is what became of one entity op.
type EntityOutcome = Outcome

// IngestResult says what Ingest did.
type IngestResult struct {
	Created   bool     // a new submission or a new version (edit) was stored
	Duplicate bool     // the same XML was already stored: a resend
	Missing   []string // files the XML names that have still not arrived
	// Unused are blobs of files that were already stored: the caller deletes them.
	Unused []*Blob
	// Withdrawn is true when consent to this instance was withdrawn, Erased
	// when its subject asked for erasure: nothing was stored.
	Withdrawn, Erased bool
	// EntitiesQueued says the version's entity blocks wait to be applied.
	EntitiesQueued bool
}

func xmlAAD(formID int64, instanceID string) string {
	return fmt.Sprintf("submission %d %s", formID, instanceID)
}

func deviceAAD(formID int64, instanceID string) string {
	return fmt.Sprintf("device id %d %s", formID, instanceID)
}

// openString opens a sealed text column.
func openString(pk sealer, raw []byte, aad string) (string, error) {
	if len(raw) == 0 {
		return "", nil
	}
	b, err := pk.Open(raw, aad)
	return string(b), err
}

func nameAAD(formID int64, instanceID string) string {
	return fmt.Sprintf("instance name %d %s", formID, instanceID)
}

// Ingest stores an incoming submission in one transaction: a new submission,
// an edit of an existing one (DeprecatedID), or a resend of one already
// stored, in which case only files still missing are recorded. A resend whose
// XML differs from what is stored is refused with ECONFLICT.
func (s *Submissions) Ingest(ctx context.Context, in *Incoming) (*IngestResult, error) {
	pk, err := s.Keys.ProjectKey(ctx, in.ProjectID)
	if err != nil {
		return nil, err
	}
	mac := pk.MAC(in.XML)
	// Sealed ahead, as for a new submission (the most common case), with
	// a key of its own; an edit or a resend uses its submission's key.
	fresh, err := s.Keys.makeKey(pk)
	if err != nil {
		return nil, err
	}
	sealed := sealVersion(fresh, in)
	var res *IngestResult
	// The same instance sent to two nodes at once: both find nothing, and
	// the database's unique key lets one insert; the other's write fails
	// whole and runs again, finding what won (a resend, or a conflict).
	for attempt := 0; ; attempt++ {
		res, err = s.ingest(ctx, in, pk, mac, fresh, sealed)
		if attempt > 0 || !isUniqueViolation(err) {
			return res, err
		}
	}
}

func (s *Submissions) ingest(ctx context.Context, in *Incoming, pk *ProjectKey, mac []byte, fresh *freshKey, sealed *sealedVersion) (*IngestResult, error) {
	var res *IngestResult
	err := s.DB.Write(ctx, func(tx *Tx) error {
		res = &IngestResult{}
		var versionID, submissionID int64
		var sk sealer // the submission's key
		have, err := tx.lookup(pk, in.FormID, in.InstanceID)
		if err != nil {
			return err
		}
		switch {
		case have.versionID != 0:
			if !bytes.Equal(have.mac, mac) {
				return haven.Errorf(haven.ECONFLICT, "A different submission with the same instanceID (%s) was already received. It was not saved. If you edited a sent form, finalize it again so it gets a new instanceID.", in.InstanceID)
			}
			versionID, submissionID = have.versionID, have.submissionID
			res.Duplicate = true
			if sk, err = tx.sealerOf(s.Keys, pk, submissionID); err != nil {
				return err
			}
		case in.DeprecatedID != "":
			prev, err := tx.lookup(pk, in.FormID, in.DeprecatedID)
			switch {
			case err != nil:
				return err
			case prev.versionID == 0 && prev.gone != "":
				return s.notKept(tx, res, prev.gone, in) // an edit of a submission erased on request is not kept either
			case prev.versionID == 0:
				return haven.Errorf(haven.ENOTFOUND, "This is an edit of submission %s, which this server does not have. Send the original first.", in.DeprecatedID)
			}
			if !prev.current {
				return haven.Errorf(haven.ECONFLICT, "This is an edit of %s, but that version was already replaced by a later edit. Download the latest version and edit that.", in.DeprecatedID)
			}
			if err := tx.checkObjection(pk, in); err != nil {
				return err
			}
			prevID := prev.versionID
			submissionID = prev.submissionID
			if _, err := tx.Exec(`UPDATE submission_versions SET current = 0 WHERE id = ?`, prevID); err != nil {
				return err
			}
			// An edit is marked for review again, as ODK Central marks it.
			if _, err := tx.Exec(`UPDATE submissions SET updated_at = ?, review_state = 'edited' WHERE id = ?`, ms(tx.Now()), submissionID); err != nil {
				return err
			}
			// An edit is sealed under the key of the submission it edits.
			if sk, err = tx.sealerOf(s.Keys, pk, submissionID); err != nil {
				return err
			}
			if versionID, err = tx.insertVersion(sealVersion(sk, in), in, submissionID, mac); err != nil {
				return err
			}
			// Files the edit does not resend carry over from the version it replaces, by name.
			if _, err := tx.Exec(`UPDATE submission_attachments SET blob_id = (
					SELECT p.blob_id FROM submission_attachments p WHERE p.version_id = ? AND p.name = submission_attachments.name)
				WHERE version_id = ?`, prevID, versionID); err != nil {
				return err
			}
			res.Created = true
		case have.gone != "":
			return s.notKept(tx, res, have.gone, in)
		default:
			if err := tx.checkObjection(pk, in); err != nil {
				return err
			}
			if err := s.Keys.store(tx, pk, fresh); err != nil {
				return err
			}
			sk = fresh.SubmissionKey
			if err := tx.Insert(&submissionID, `INSERT INTO submissions (form_id, instance_id, submitter_id, device_id, created_at, key_slot) VALUES (?, ?, ?, ?, ?, ?)`,
				in.FormID, in.InstanceID, in.SubmitterID, sealed.device, ms(tx.Now()), fresh.Slot); err != nil {
				return err
			}
			if versionID, err = tx.insertVersion(sealed, in, submissionID, mac); err != nil {
				return err
			}
			if err := insertConsent(tx, submissionID, in, sealed.device); err != nil {
				return err
			}
			res.Created = true
		}
		if res.Created {
			if err := tx.indexSubject(pk, in, submissionID); err != nil {
				return err
			}
		}
		outcome := "duplicate"
		if res.Created {
			outcome = "ok"
		}
		if err := s.audit(tx, in.Audit, outcome); err != nil {
			return err
		}
		// The entities it makes or changes, after the submission's own
		// event in the audit chain.
		if res.Created {
			switch {
			case in.Entities && in.DeprecatedID == "" && in.EntityOps != nil:
				if err := tx.applyIngested(s, pk, in, submissionID, versionID); err != nil {
					return err
				}
			case in.Entities:
				// An edit (a correction) changes the entities its
				// submission made or changed; it makes none. Queued, as
				// is a submission whose ops were not read.
				trigger := "submission"
				if in.DeprecatedID != "" {
					trigger = "edit"
				}
				if err := tx.queueSubmission(in.ProjectID, versionID, in.SubmitterID, trigger); err != nil {
					return err
				}
				res.EntitiesQueued = true
			}
		}
		// Record the files that came, where the version still lacks them.
		for _, name := range in.Expected {
			blob := in.Files[name]
			if blob == nil {
				continue
			}
			var have sql.NullInt64
			if err := tx.QueryRow(`SELECT blob_id FROM submission_attachments WHERE version_id = ? AND name = ?`, versionID, name).Scan(&have); err != nil {
				return err
			}
			if have.Valid {
				res.Unused = append(res.Unused, blob)
				continue
			}
			if err := rewrap(pk, sk, blob); err != nil {
				return err
			}
			if err := tx.RecordBlob(blob); err != nil {
				return err
			}
			if _, err := tx.Exec(`UPDATE submission_attachments SET blob_id = ? WHERE version_id = ? AND name = ?`, blob.ID, versionID, name); err != nil {
				return err
			}
		}
		if len(in.Expected) == 0 {
			return nil // the XML names no file: nothing can be missing
		}
		rows, err := tx.Query(`SELECT name FROM submission_attachments WHERE version_id = ? AND blob_id IS NULL ORDER BY name`, versionID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var n string
			rows.Scan(&n)
			res.Missing = append(res.Missing, n)
		}
		return rows.Err()
	})
	return res, err
}

// audit writes e, when there is one, with the outcome.
func (s *Submissions) audit(tx *Tx, e *haven.AuditEvent, outcome string) error {
	if e == nil || s.Audit == nil {
		return nil
	}
	e.Outcome = outcome
	return s.Audit.Append(tx, e)
}

func withdrawalMAC(pk *ProjectKey, instanceID string) []byte {
	return pk.MAC([]byte("consent withdrawn " + instanceID))
}

func insertConsent(tx *Tx, submissionID int64, in *Incoming, sealedDevice []byte) error {
	c := in.Consent
	if c == nil {
		return nil
	}
	c.ReceivedAt = tx.Now().Truncate(1e6).UTC()
	var start, end sql.NullInt64
	if c.DeviceStart != nil {
		start = sql.NullInt64{Int64: ms(*c.DeviceStart), Valid: true}
	}
	if c.DeviceEnd != nil {
		end = sql.NullInt64{Int64: ms(*c.DeviceEnd), Valid: true}
	}
	_, err := tx.Exec(`INSERT INTO consent_records (submission_id, form_version_id, outcome, legal_basis, field, statement_version,
		language, device_start, device_end, received_at, device_user_id, device_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		submissionID, in.FormVersionID, c.Outcome, c.LegalBasis, c.Field, c.StatementVersion, c.Language, start, end,
		ms(c.ReceivedAt), c.DeviceUserID, sealedDevice)
	return err
}

// Consent returns the consent record of a submission; nil for submissions
// stored before Haven kept them.
func (s *Submissions) Consent(ctx context.Context, projectID int64, sub *haven.Submission) (*haven.ConsentRecord, error) {
	pk, err := s.Keys.ProjectKey(ctx, projectID)
	if err != nil {
		return nil, err
	}
	c := &haven.ConsentRecord{}
	var start, end sql.NullInt64
	var received int64
	var device []byte
	err = s.DB.read.QueryRowContext(ctx, `SELECT outcome, legal_basis, field, statement_version, language, device_start, device_end,
		received_at, device_user_id, device_id FROM consent_records WHERE submission_id = ?`, sub.ID).Scan(
		&c.Outcome, &c.LegalBasis, &c.Field, &c.StatementVersion, &c.Language, &start, &end, &received, &c.DeviceUserID, &device)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	sk, err := s.sealerOf(ctx, pk, sub.ID)
	if err != nil {
		return nil, err
	}
	if c.DeviceID, err = openString(sk, device, deviceAAD(sub.FormID, sub.InstanceID)); err != nil {
		return nil, err
	}
	c.DeviceStart, c.DeviceEnd, c.ReceivedAt = fromNullMS(start), fromNullMS(end), fromMS(received)
	return c, nil
}

// RecordRefusal counts a submission not kept for want of consent, in the
// form's tally for the day; nothing else about it is written.
func (s *Submissions) RecordRefusal(ctx context.Context, formID int64, e *haven.AuditEvent) error {
	return s.DB.Write(ctx, func(tx *Tx) error {
		day := tx.Now().UTC().Format("2006-01-02")
		if _, err := tx.Exec(`INSERT INTO consent_refusals (form_id, day, count) VALUES (?, ?, 1)
			ON CONFLICT (form_id, day) DO UPDATE SET count = consent_refusals.count + 1`, formID, day); err != nil {
			return err
		}
		return s.audit(tx, e, "consent_not_given")
	})
}

// Refusals returns a form's tally of submissions not kept, by day.
func (s *Submissions) Refusals(ctx context.Context, formID int64) (map[string]int, error) {
	rows, err := s.DB.read.QueryContext(ctx, `SELECT day, count FROM consent_refusals WHERE form_id = ? ORDER BY day`, formID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var day string
		var n int
		if err := rows.Scan(&day, &n); err != nil {
			return nil, err
		}
		out[day] = n
	}
	return out, rows.Err()
}

// Withdrawal is the record kept when consent to a submission is withdrawn.
type Withdrawal struct {
	SubmittedOn string    `json:"submittedOn"` // the day the submission arrived
	WithdrawnAt time.Time `json:"withdrawnAt"`
	RecordedBy  int64     `json:"recordedBy"`
}

// Withdrawals lists a form's withdrawal records.
func (s *Submissions) Withdrawals(ctx context.Context, formID int64) ([]Withdrawal, error) {
	rows, err := s.DB.read.QueryContext(ctx, `SELECT submitted_on, withdrawn_at, recorded_by FROM consent_withdrawals WHERE form_id = ? ORDER BY id`, formID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Withdrawal{}
	for rows.Next() {
		var w Withdrawal
		var at int64
		if err := rows.Scan(&w.SubmittedOn, &at, &w.RecordedBy); err != nil {
			return nil, err
		}
		w.WithdrawnAt = fromMS(at)
		out = append(out, w)
	}
	return out, rows.Err()
}

func reasonAAD(formID int64, instanceID string) string {
	return fmt.Sprintf("edit reason %d %s", formID, instanceID)
}

// sealedVersion is a version's values sealed under its submission's key.
type sealedVersion struct {
	xml, name, device, reason []byte
}

// sealVersion seals what a version stores; the device id too: with its
// times it tells who collected what.
func sealVersion(sk sealer, in *Incoming) *sealedVersion {
	v := &sealedVersion{xml: sk.Seal(in.XML, xmlAAD(in.FormID, in.InstanceID)),
		device: sk.Seal([]byte(in.DeviceID), deviceAAD(in.FormID, in.InstanceID))}
	if in.InstanceName != "" {
		v.name = sk.Seal([]byte(in.InstanceName), nameAAD(in.FormID, in.InstanceID))
	}
	if in.EditReason != "" {
		v.reason = sk.Seal([]byte(in.EditReason), reasonAAD(in.FormID, in.InstanceID))
	}
	return v
}

// insertVersion stores a version of a submission.
func (tx *Tx) insertVersion(v *sealedVersion, in *Incoming, submissionID int64, mac []byte) (int64, error) {
	sealedXML, sealedName, sealedDevice, reason := v.xml, v.name, v.device, v.reason
	var id int64
	if err := tx.Insert(&id, `INSERT INTO submission_versions (submission_id, form_id, form_version_id, instance_id, deprecated_id,
		instance_name, xml, xml_mac, submitter_id, device_id, current, created_at, edit_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)`,
		submissionID, in.FormID, in.FormVersionID, in.InstanceID, in.DeprecatedID, sealedName, sealedXML, mac,
		in.SubmitterID, sealedDevice, ms(tx.Now()), reason); err != nil {
		return 0, err
	}
	for _, name := range in.Expected {
		if _, err := tx.Exec(`INSERT INTO submission_attachments (version_id, name) VALUES (?, ?)`, id, name); err != nil {
			return 0, err
		}
	}
	return id, nil
}

// Delete erases a submission: every version, every attachment record, its
// consent record and the encrypted objects they alone use. The rows go in one
// transaction (overwritten on disk: secure_delete); the objects are deleted
// from their stores after it commits, and any a store fails to delete are
// left to the garbage collector, since nothing records them any more.
func (s *Submissions) Delete(ctx context.Context, blobs *Blobs, formID int64, instanceID string, e *haven.AuditEvent) error {
	var gone *erased
	err := s.DB.Write(ctx, func(tx *Tx) error {
		var err error
		if gone, err = eraseSubmission(tx, formID, instanceID); err != nil {
			return err
		}
		return s.audit(tx, e, "ok")
	})
	if err != nil {
		return err
	}
	return s.forget(ctx, blobs, gone)
}

// forget finishes an erasure once its transaction has committed: the
// submission's key is destroyed (whatever copy of its ciphertext survives
// opens with nothing any more), then its stored objects are deleted.
func (s *Submissions) forget(ctx context.Context, blobs *Blobs, gone ...*erased) error {
	var errs []error
	for _, g := range gone {
		if slots := append([]int64{g.slot}, g.entitySlots...); g.slot != 0 || len(g.entitySlots) > 0 {
			pk, err := s.Keys.ProjectKey(ctx, g.project)
			if err == nil {
				err = s.Keys.DestroySubmissionKeys(pk, slots...)
			}
			errs = append(errs, err) // a slot left behind is zeroed when the store next opens
		}
		blobs.Discard(ctx, g.objects...)
	}
	return errors.Join(errs...)
}

// WithdrawConsent erases a submission as Delete does and records, without
// any personal data, that consent was withdrawn: the day it had arrived, when
// it was withdrawn and who recorded it. A later resend of the same instance
// is not stored again.
func (s *Submissions) WithdrawConsent(ctx context.Context, blobs *Blobs, projectID, formID int64, instanceID string, by int64, e *haven.AuditEvent) error {
	pk, err := s.Keys.ProjectKey(ctx, projectID)
	if err != nil {
		return err
	}
	var gone *erased
	err = s.DB.Write(ctx, func(tx *Tx) error {
		var err error
		if gone, err = eraseSubmission(tx, formID, instanceID); err != nil {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO consent_withdrawals (form_id, instance_mac, submitted_on, withdrawn_at, recorded_by) VALUES (?, ?, ?, ?, ?)`,
			formID, withdrawalMAC(pk, instanceID), gone.created.UTC().Format("2006-01-02"), ms(tx.Now()), by); err != nil {
			return err
		}
		return s.audit(tx, e, "ok")
	})
	if err != nil {
		return err
	}
	return s.forget(ctx, blobs, gone)
}

// erased is what eraseSubmission removed.
type erased struct {
	project  int64
	slot     int64     // the submission's key slot: zero it once tx commits
	created  time.Time // when the submission had arrived
	versions int64
	consents int64
	comments int64
	files    int64   // attachment blobs, inline or in a store
	objects  []*Blob // the blobs kept in a store: delete them once tx commits
	// entitySlots are the keys of the entities it made or changed, erased
	// with it: zero them once tx commits.
	entitySlots []int64
}

// eraseSubmission deletes a submission's rows: versions, attachment
// records, consent record and blobs.
func eraseSubmission(tx *Tx, formID int64, instanceID string) (*erased, error) {
	var id, created, project int64
	var slot sql.NullInt64
	err := tx.QueryRow(`SELECT s.id, s.created_at, s.key_slot, (SELECT f.project_id FROM forms f WHERE f.id = s.form_id) FROM submissions s WHERE `+firstInstanceID,
		formID, instanceID, instanceID).Scan(&id, &created, &slot, &project)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(fmt.Sprintf("Submission %s", instanceID))
	} else if err != nil {
		return nil, err
	}
	ids, objects, err := tx.selectBlobs(`SELECT DISTINCT b.id, b.store, b.object, b.data IS NOT NULL FROM blobs b
		JOIN submission_attachments a ON a.blob_id = b.id JOIN submission_versions v ON v.id = a.version_id
		WHERE v.submission_id = ?`, id)
	if err != nil {
		return nil, err
	}
	e := &erased{project: project, slot: slot.Int64, created: fromMS(created), files: int64(len(ids)), objects: objects}
	if e.slot != 0 {
		if _, err := tx.Exec(`INSERT INTO key_slot_erasures (project_key_id, slot)
			SELECT id, ? FROM project_keys WHERE project_id = ? AND destroyed_at IS NULL ON CONFLICT DO NOTHING`, e.slot, project); err != nil {
			return nil, err
		}
	}
	if e.entitySlots, err = tx.eraseEntitiesOf(project, id); err != nil {
		return nil, err
	}
	for _, q := range []struct {
		sql   string
		count *int64
	}{
		{`DELETE FROM submission_attachments WHERE version_id IN (SELECT id FROM submission_versions WHERE submission_id = ?)`, nil},
		{`DELETE FROM submission_versions WHERE submission_id = ?`, &e.versions},
		{`DELETE FROM consent_records WHERE submission_id = ?`, &e.consents},
		{`DELETE FROM submission_comments WHERE submission_id = ?`, &e.comments},
		{`DELETE FROM subject_index WHERE submission_id = ?`, nil},
		{`DELETE FROM submissions WHERE id = ?`, nil},
	} {
		r, err := tx.Exec(q.sql, id)
		if err != nil {
			return nil, err
		}
		if q.count != nil {
			*q.count, _ = r.RowsAffected()
		}
	}
	return e, tx.deleteBlobRows(ids)
}

// selectBlobs reads the blobs a query selects (id, store, object, inline)
// for deletion: every id, and the blobs whose bytes live in a store.
func (tx *Tx) selectBlobs(q string, args ...any) ([]int64, []*Blob, error) {
	rows, err := tx.Query(q, args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var ids []int64
	var objects []*Blob
	for rows.Next() {
		b := &Blob{}
		var inline bool
		if err := rows.Scan(&b.ID, &b.Store, &b.Object, &inline); err != nil {
			return nil, nil, err
		}
		ids = append(ids, b.ID)
		if !inline {
			objects = append(objects, b)
		}
	}
	return ids, objects, rows.Err()
}

// deleteBlobRows deletes blob rows (overwritten on disk: secure_delete).
func (tx *Tx) deleteBlobRows(ids []int64) error {
	for _, id := range ids {
		if _, err := tx.Exec(`DELETE FROM blobs WHERE id = ?`, id); err != nil {
			return err
		}
	}
	return nil
}

// KnownFiles returns, for an instanceID already stored in a form, the names
// of the files it already has; nil when the instance is unknown. Ingestion
// uses it to skip storing files a resend carries again.
func (s *Submissions) KnownFiles(ctx context.Context, formID int64, instanceID string) (map[string]bool, error) {
	rows, err := s.DB.read.QueryContext(ctx, `SELECT a.name FROM submission_versions v JOIN submission_attachments a ON a.version_id = v.id
		WHERE v.form_id = ? AND v.instance_id = ? AND a.blob_id IS NOT NULL`, formID, instanceID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	known := map[string]bool{}
	for rows.Next() {
		var n string
		rows.Scan(&n)
		known[n] = true
	}
	return known, rows.Err()
}

const submissionColumns = `s.id, s.form_id, s.instance_id, s.submitter_id, s.device_id, s.review_state, s.created_at, s.updated_at,
	v.id, v.form_version_id, v.instance_id, v.deprecated_id, v.instance_name, v.submitter_id, v.device_id, v.created_at, fv.version,
	(SELECT count(*) FROM submission_attachments a WHERE a.version_id = v.id),
	(SELECT count(*) FROM submission_attachments a WHERE a.version_id = v.id AND a.blob_id IS NOT NULL),
	(SELECT group_concat(DISTINCT x.form_version_id) FROM submission_versions x WHERE x.submission_id = s.id), coalesce(s.key_slot, 0)`

// firstInstanceID finds submission s by the instanceID of its first version
// (form, instanceID, instanceID), through the versions' index: the only
// index of instanceIDs (migration 0009).
const firstInstanceID = `s.id = (SELECT sv.submission_id FROM submission_versions sv WHERE sv.form_id = ? AND sv.instance_id = ?) AND s.instance_id = ?`

const submissionJoins = ` FROM submissions s JOIN submission_versions v ON v.submission_id = s.id AND v.current = 1
	JOIN form_versions fv ON fv.id = v.form_version_id`

func (s *Submissions) scan(row interface{ Scan(...any) error }, pk *ProjectKey) (*haven.Submission, error) {
	var sub haven.Submission
	var review sql.NullString
	var created, vcreated int64
	var updated sql.NullInt64
	var sealedName, subDevice, verDevice []byte
	var versionIDs string
	var slot int64
	v := &sub.Current
	err := row.Scan(&sub.ID, &sub.FormID, &sub.InstanceID, &sub.SubmitterID, &subDevice, &review, &created, &updated,
		&v.ID, &v.FormVersionID, &v.InstanceID, &v.DeprecatedID, &sealedName, &v.SubmitterID, &verDevice, &vcreated, &v.FormVersion,
		&v.AttachmentsExpected, &v.AttachmentsPresent, &versionIDs, &slot)
	if err != nil {
		return nil, err
	}
	sk, err := s.Keys.sealerFor(pk, slot)
	if err != nil {
		return nil, err
	}
	for _, id := range strings.Split(versionIDs, ",") {
		if n, err := strconv.ParseInt(id, 10, 64); err == nil {
			sub.FormVersionIDs = append(sub.FormVersionIDs, n)
		}
	}
	if sub.DeviceID, err = openString(sk, subDevice, deviceAAD(sub.FormID, sub.InstanceID)); err != nil {
		return nil, err
	}
	if v.DeviceID, err = openString(sk, verDevice, deviceAAD(sub.FormID, v.InstanceID)); err != nil {
		return nil, err
	}
	if review.Valid {
		sub.ReviewState = &review.String
	}
	sub.CreatedAt, sub.UpdatedAt = fromMS(created), fromNullMS(updated)
	v.SubmissionID, v.CreatedAt, v.Current = sub.ID, fromMS(vcreated), true
	if sealedName != nil {
		name, err := sk.Open(sealedName, nameAAD(sub.FormID, v.InstanceID))
		if err != nil {
			return nil, err
		}
		v.InstanceName = string(name)
	}
	return &sub, nil
}

// List returns a page of a form's submissions, oldest first, and how many
// there are; a negative limit lists them all.
func (s *Submissions) List(ctx context.Context, projectID, formID int64, limit, offset int) ([]*haven.Submission, int, error) {
	limit = noLimit(limit)
	pk, err := s.Keys.ProjectKey(ctx, projectID)
	if err != nil {
		return nil, 0, err
	}
	var total int
	if err := s.DB.read.QueryRowContext(ctx, `SELECT count(*) FROM submissions WHERE form_id = ?`, formID).Scan(&total); err != nil {
		return nil, 0, err
	}
	rows, err := s.DB.read.QueryContext(ctx, `SELECT `+submissionColumns+submissionJoins+` WHERE s.form_id = ? ORDER BY s.created_at, s.id LIMIT ? OFFSET ?`,
		formID, limit, offset)
	if err != nil {
		return nil, 0, err
	}
	out, err := s.scanAll(rows, pk)
	return out, total, err
}

// Get returns a submission by its instanceId (the instanceID of its first version).
func (s *Submissions) Get(ctx context.Context, projectID, formID int64, instanceID string) (*haven.Submission, error) {
	pk, err := s.Keys.ProjectKey(ctx, projectID)
	if err != nil {
		return nil, err
	}
	sub, err := s.scan(s.DB.read.QueryRowContext(ctx, `SELECT `+submissionColumns+submissionJoins+` WHERE `+firstInstanceID, formID, instanceID, instanceID), pk)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(fmt.Sprintf("Submission %s", instanceID))
	}
	return sub, err
}

// Versions lists every version of a submission, newest first.
func (s *Submissions) Versions(ctx context.Context, projectID int64, sub *haven.Submission) ([]haven.SubmissionVersion, error) {
	pk, err := s.Keys.ProjectKey(ctx, projectID)
	if err != nil {
		return nil, err
	}
	sk, err := s.sealerOf(ctx, pk, sub.ID)
	if err != nil {
		return nil, err
	}
	rows, err := s.DB.read.QueryContext(ctx, `SELECT v.id, v.form_version_id, v.instance_id, v.deprecated_id, v.instance_name, v.submitter_id,
		v.device_id, v.current, v.created_at, fv.version,
		(SELECT count(*) FROM submission_attachments a WHERE a.version_id = v.id),
		(SELECT count(*) FROM submission_attachments a WHERE a.version_id = v.id AND a.blob_id IS NOT NULL), v.edit_reason
		FROM submission_versions v JOIN form_versions fv ON fv.id = v.form_version_id WHERE v.submission_id = ? ORDER BY v.id DESC`, sub.ID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []haven.SubmissionVersion{}
	for rows.Next() {
		v := haven.SubmissionVersion{SubmissionID: sub.ID}
		var sealedName, device, reason []byte
		var created int64
		if err := rows.Scan(&v.ID, &v.FormVersionID, &v.InstanceID, &v.DeprecatedID, &sealedName, &v.SubmitterID, &device,
			&v.Current, &created, &v.FormVersion, &v.AttachmentsExpected, &v.AttachmentsPresent, &reason); err != nil {
			return nil, err
		}
		var err error
		if v.DeviceID, err = openString(sk, device, deviceAAD(sub.FormID, v.InstanceID)); err != nil {
			return nil, err
		}
		if v.EditReason, err = openString(sk, reason, reasonAAD(sub.FormID, v.InstanceID)); err != nil {
			return nil, err
		}
		v.CreatedAt = fromMS(created)
		if sealedName != nil {
			name, err := sk.Open(sealedName, nameAAD(sub.FormID, v.InstanceID))
			if err != nil {
				return nil, err
			}
			v.InstanceName = string(name)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// XML returns the decrypted XML of a submission version.
func (s *Submissions) XML(ctx context.Context, projectID int64, v *haven.SubmissionVersion) ([]byte, error) {
	pk, err := s.Keys.ProjectKey(ctx, projectID)
	if err != nil {
		return nil, err
	}
	var formID, slot int64
	var sealed []byte
	if err := s.DB.read.QueryRowContext(ctx, `SELECT v.form_id, v.xml, coalesce(s.key_slot, 0) FROM submission_versions v
		JOIN submissions s ON s.id = v.submission_id WHERE v.id = ?`, v.ID).Scan(&formID, &sealed, &slot); err != nil {
		return nil, err
	}
	sk, err := s.Keys.sealerFor(pk, slot)
	if err != nil {
		return nil, err
	}
	return sk.Open(sealed, xmlAAD(formID, v.InstanceID))
}

// Attachments lists the files a submission version's XML names.
func (s *Submissions) Attachments(ctx context.Context, versionID int64) ([]haven.Attachment, error) {
	rows, err := s.DB.read.QueryContext(ctx, `SELECT a.name, coalesce(a.blob_id, 0), coalesce(b.size, 0)
		FROM submission_attachments a LEFT JOIN blobs b ON b.id = a.blob_id WHERE a.version_id = ? ORDER BY a.name`, versionID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []haven.Attachment{}
	for rows.Next() {
		var a haven.Attachment
		if err := rows.Scan(&a.Name, &a.BlobID, &a.Size); err != nil {
			return nil, err
		}
		a.Exists = a.BlobID != 0
		out = append(out, a)
	}
	return out, rows.Err()
}

// Filter narrows a walk over a form's submissions: by arrival time
// (Since inclusive, Until exclusive) and by form version.
type Filter struct {
	Since, Until *time.Time
	Version      string
}

// SealedXML is a submission's XML as stored. Walks hand it over sealed so
// that decrypting can run beside the reading, on another core.
type SealedXML struct {
	pk         sealer
	data       []byte
	formID     int64
	instanceID string
}

// Open decrypts the XML.
func (s SealedXML) Open() ([]byte, error) {
	return s.pk.Open(s.data, xmlAAD(s.formID, s.instanceID))
}

// Each calls fn for every current submission of a form that the filter
// keeps, oldest first, with its XML. It streams: a chunk of eachChunk
// submissions (still sealed) is in memory at a time, whatever their number.
//
// Each reads only what exports and aggregates use, as few columns as it can
// (every column read costs on a walk of 100,000 rows): of sub it fills ID,
// FormID, InstanceID, SubmitterID, DeviceID, ReviewState, CreatedAt, UpdatedAt, and of
// sub.Current ID, InstanceID, FormVersionID, FormVersion and the attachment counts.
func (s *Submissions) Each(ctx context.Context, projectID, formID int64, f Filter, fn func(sub *haven.Submission, xml SealedXML, consent *haven.ConsentRecord) error) error {
	pk, err := s.Keys.ProjectKey(ctx, projectID)
	if err != nil {
		return err
	}
	q := `SELECT s.id, s.instance_id, s.submitter_id, s.device_id, s.review_state, s.created_at, s.updated_at, v.id, v.instance_id, v.form_version_id, fv.version,
	(SELECT count(*) FROM submission_attachments a WHERE a.version_id = v.id),
	(SELECT count(*) FROM submission_attachments a WHERE a.version_id = v.id AND a.blob_id IS NOT NULL),
	v.xml, c.outcome, c.legal_basis, c.statement_version, c.received_at, coalesce(s.key_slot, 0)` + submissionJoins +
		` LEFT JOIN consent_records c ON c.submission_id = s.id WHERE s.form_id = ?`
	args := []any{formID}
	if f.Since != nil {
		q += ` AND s.created_at >= ?`
		args = append(args, ms(*f.Since))
	}
	if f.Until != nil {
		q += ` AND s.created_at < ?`
		args = append(args, ms(*f.Until))
	}
	if f.Version != "" {
		q += ` AND fv.version = ?`
		args = append(args, f.Version)
	}
	// The walk goes in chunks, each read in its own short snapshot and
	// handed over after it ends: a slow consumer (a client downloading an
	// export) never holds a read open, which would keep the WAL from being
	// restarted (see boundWAL). Rows that arrive during the walk and sort
	// after where it is are included; rows erased during it are not.
	// A row value, not created_at > ? OR (created_at = ? AND id > ?):
	// PostgreSQL seeks the index to it, where the OR made it read every
	// row before each chunk again (an export of 100,000 submissions took
	// 95 s instead of 1 s).
	q += ` AND (s.created_at, s.id) > (?, ?) ORDER BY s.created_at, s.id LIMIT ?`
	type item struct {
		sub     *haven.Submission
		xml     SealedXML
		consent *haven.ConsentRecord
	}
	var lastCreated, lastID int64 = -1 << 62, 0
	for {
		var chunk []item
		read := 0
		rows, err := s.DB.read.QueryContext(ctx, q, append(args, lastCreated, lastID, eachChunk)...)
		if err != nil {
			return err
		}
		for rows.Next() {
			var sealed, device []byte
			var review, outcome, basis, statement sql.NullString
			var created int64
			var received, updated sql.NullInt64
			var slot int64
			sub := &haven.Submission{FormID: formID}
			v := &sub.Current
			if err := rows.Scan(&sub.ID, &sub.InstanceID, &sub.SubmitterID, &device, &review, &created, &updated, &v.ID, &v.InstanceID, &v.FormVersionID, &v.FormVersion,
				&v.AttachmentsExpected, &v.AttachmentsPresent, &sealed, &outcome, &basis, &statement, &received, &slot); err != nil {
				rows.Close()
				return err
			}
			lastCreated, lastID = created, sub.ID
			read++
			sk, err := s.Keys.sealerFor(pk, slot)
			if errors.Is(err, errKeyDestroyed) {
				continue // erased since this read began: it is gone
			} else if err != nil {
				rows.Close()
				return err
			}
			if sub.DeviceID, err = openString(sk, device, deviceAAD(formID, sub.InstanceID)); err != nil {
				rows.Close()
				return err
			}
			if review.Valid {
				sub.ReviewState = &review.String
			}
			sub.CreatedAt, sub.UpdatedAt = fromMS(created), fromNullMS(updated)
			v.SubmissionID, v.Current = sub.ID, true
			var consent *haven.ConsentRecord
			if outcome.Valid {
				consent = &haven.ConsentRecord{Outcome: outcome.String, LegalBasis: basis.String, StatementVersion: statement.String,
					ReceivedAt: fromMS(received.Int64)}
			}
			chunk = append(chunk, item{sub, SealedXML{sk, sealed, formID, v.InstanceID}, consent})
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return err
		}
		for _, it := range chunk {
			if err := fn(it.sub, it.xml, it.consent); err != nil {
				return err
			}
		}
		if read < eachChunk {
			return nil
		}
	}
}

// eachChunk is how many submissions a walk reads per snapshot.
const eachChunk = 256

// ReviewStates are the review states a submission may be given, as in
// ODK Central (received is where every submission starts).
var ReviewStates = []string{"received", "hasIssues", "edited", "approved", "rejected"}

// SetReviewState sets a submission's review state, in the transaction that
// writes its audit event.
func (s *Submissions) SetReviewState(ctx context.Context, sub *haven.Submission, state string, e *haven.AuditEvent) error {
	if !slices.Contains(ReviewStates, state) {
		return haven.Errorf(haven.EINVALID, "%q is not a review state: use one of %s.", state, strings.Join(ReviewStates, ", "))
	}
	return s.DB.Write(ctx, func(tx *Tx) error {
		var v any = state
		if state == "received" {
			v = nil // Central's null: not reviewed yet
		}
		if _, err := tx.Exec(`UPDATE submissions SET review_state = ?, updated_at = ? WHERE id = ?`, v, ms(tx.Now()), sub.ID); err != nil {
			return err
		}
		if state == "approved" {
			// Lists that make entities on approval make them now (when the
			// form saves to any: the queue item finds out).
			if err := tx.queueApproval(sub.ID, actorOf(e)); err != nil {
				return err
			}
		}
		return s.audit(tx, e, "ok")
	})
}

// Comment is a remark on a submission, written by a user.
type Comment struct {
	ID        int64             `json:"id"`
	Body      string            `json:"body"`
	ActorID   int64             `json:"actorId"`
	CreatedAt time.Time         `json:"createdAt"`
	Tier      haven.Sensitivity `json:"-"` // the author's clearance when they wrote it
}

func commentAAD(formID int64, instanceID string) string {
	return fmt.Sprintf("comment %d %s", formID, instanceID)
}

// AddComment stores a comment on a submission, sealed under the project's
// key, in the transaction that writes its audit event.
func (s *Submissions) AddComment(ctx context.Context, projectID int64, sub *haven.Submission, c *Comment, e *haven.AuditEvent) error {
	pk, err := s.Keys.ProjectKey(ctx, projectID)
	if err != nil {
		return err
	}
	sk, err := s.sealerOf(ctx, pk, sub.ID)
	if err != nil {
		return err
	}
	sealed := sk.Seal([]byte(c.Body), commentAAD(sub.FormID, sub.InstanceID))
	return s.DB.Write(ctx, func(tx *Tx) error {
		if err := tx.Insert(&c.ID, `INSERT INTO submission_comments (submission_id, actor_id, tier, body, created_at) VALUES (?, ?, ?, ?, ?)`,
			sub.ID, c.ActorID, string(c.Tier), sealed, ms(tx.Now())); err != nil {
			return err
		}
		c.CreatedAt = tx.Now().UTC()
		return s.audit(tx, e, "ok")
	})
}

// Comments lists a submission's comments, oldest first.
func (s *Submissions) Comments(ctx context.Context, projectID int64, sub *haven.Submission) ([]Comment, error) {
	pk, err := s.Keys.ProjectKey(ctx, projectID)
	if err != nil {
		return nil, err
	}
	sk, err := s.sealerOf(ctx, pk, sub.ID)
	if err != nil {
		return nil, err
	}
	rows, err := s.DB.read.QueryContext(ctx, `SELECT id, actor_id, tier, body, created_at FROM submission_comments WHERE submission_id = ? ORDER BY id`, sub.ID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Comment{}
	for rows.Next() {
		var c Comment
		var sealed []byte
		var at int64
		if err := rows.Scan(&c.ID, &c.ActorID, &c.Tier, &sealed, &at); err != nil {
			return nil, err
		}
		if c.Body, err = openString(sk, sealed, commentAAD(sub.FormID, sub.InstanceID)); err != nil {
			return nil, err
		}
		c.CreatedAt = fromMS(at)
		out = append(out, c)
	}
	return out, rows.Err()
}

// AttachFile records a file that a submission's current version names and
// still lacks (as a device completes a split upload). A file already there
// is refused: a submission's files change only with a new version.
func (s *Submissions) AttachFile(ctx context.Context, sub *haven.Submission, name string, blob *Blob, e *haven.AuditEvent) error {
	pk, err := s.Keys.ProjectKey(ctx, blob.ProjectID)
	if err != nil {
		return err
	}
	sk, err := s.sealerOf(ctx, pk, sub.ID)
	if err != nil {
		return err
	}
	if err := rewrap(pk, sk, blob); err != nil {
		return err
	}
	return s.DB.Write(ctx, func(tx *Tx) error {
		var have sql.NullInt64
		err := tx.QueryRow(`SELECT blob_id FROM submission_attachments WHERE version_id = ? AND name = ?`, sub.Current.ID, name).Scan(&have)
		if errors.Is(err, sql.ErrNoRows) {
			return haven.Errorf(haven.ENOTFOUND, "Submission %s does not name a file %q, so it cannot take one: upload only the files its answers name.", sub.InstanceID, name)
		} else if err != nil {
			return err
		}
		if have.Valid {
			return haven.Errorf(haven.ECONFLICT, "Submission %s already has its file %q. A submission's files change only with a new version of it (an edit).", sub.InstanceID, name)
		}
		if err := tx.RecordBlob(blob); err != nil {
			return err
		}
		if _, err := tx.Exec(`UPDATE submission_attachments SET blob_id = ? WHERE version_id = ? AND name = ?`, blob.ID, sub.Current.ID, name); err != nil {
			return err
		}
		return s.audit(tx, e, "ok")
	})
}

// sealerOf returns what seals a submission's values, by its row id.
func (s *Submissions) sealerOf(ctx context.Context, pk *ProjectKey, submissionID int64) (sealer, error) {
	var slot sql.NullInt64
	err := s.DB.read.QueryRowContext(ctx, `SELECT key_slot FROM submissions WHERE id = ?`, submissionID).Scan(&slot)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("That submission")
	} else if err != nil {
		return nil, err
	}
	return s.Keys.sealerFor(pk, slot.Int64)
}

// sealerOf is Submissions.sealerOf inside a write transaction.
func (tx *Tx) sealerOf(k *Keyring, pk *ProjectKey, submissionID int64) (sealer, error) {
	var slot sql.NullInt64
	if err := tx.QueryRow(`SELECT key_slot FROM submissions WHERE id = ?`, submissionID).Scan(&slot); err != nil {
		return nil, err
	}
	return k.sealerFor(pk, slot.Int64)
}

// PageQuery narrows a page of a form's submissions: received within
// [Since, Until) when set, and whose current version was filled in with
// form version Version when set.
type PageQuery struct {
	Limit, Offset int
	Since, Until  time.Time
	Version       *string
}

// Page returns a page of a form's submissions that match q, oldest first,
// and how many match.
func (s *Submissions) Page(ctx context.Context, projectID, formID int64, q PageQuery) ([]*haven.Submission, int, error) {
	pk, err := s.Keys.ProjectKey(ctx, projectID)
	if err != nil {
		return nil, 0, err
	}
	where, args := ` WHERE s.form_id = ?`, []any{formID}
	if !q.Since.IsZero() {
		where += ` AND s.created_at >= ?`
		args = append(args, q.Since.UnixMilli())
	}
	if !q.Until.IsZero() {
		where += ` AND s.created_at < ?`
		args = append(args, q.Until.UnixMilli())
	}
	if q.Version != nil {
		where += ` AND fv.version = ?`
		args = append(args, *q.Version)
	}
	var total int
	if err := s.DB.read.QueryRowContext(ctx, `SELECT count(*)`+submissionJoins+where, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	rows, err := s.DB.read.QueryContext(ctx, `SELECT `+submissionColumns+submissionJoins+where+` ORDER BY s.created_at DESC, s.id DESC LIMIT ? OFFSET ?`,
		append(args, noLimit(q.Limit), q.Offset)...)
	if err != nil {
		return nil, 0, err
	}
	out, err := s.scanAll(rows, pk)
	return out, total, err
}

// Tally is how many submissions a form holds and when the latest arrived.
type Tally struct {
	Count int
	Last  *time.Time
}

// Tallies counts the submissions of each form of a project.
func (s *Submissions) Tallies(ctx context.Context, projectID int64) (map[int64]Tally, error) {
	rows, err := s.DB.read.QueryContext(ctx, `SELECT s.form_id, count(*), max(s.created_at) FROM submissions s
		JOIN forms f ON f.id = s.form_id WHERE f.project_id = ? GROUP BY s.form_id`, projectID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]Tally{}
	for rows.Next() {
		var id, last int64
		var t Tally
		if err := rows.Scan(&id, &t.Count, &last); err != nil {
			return nil, err
		}
		at := time.UnixMilli(last).UTC()
		t.Last = &at
		out[id] = t
	}
	return out, rows.Err()
}

// Count is how many submissions a form holds.
func (s *Submissions) Count(ctx context.Context, formID int64) (int, error) {
	var n int
	err := s.DB.read.QueryRowContext(ctx, `SELECT count(*) FROM submissions WHERE form_id = ?`, formID).Scan(&n)
	return n, err
}

// scanAll reads the submissions of a query, skipping those erased since
// the read began, and closes the rows.
func (s *Submissions) scanAll(rows *sql.Rows, pk *ProjectKey) ([]*haven.Submission, error) {
	defer rows.Close()
	out := []*haven.Submission{}
	for rows.Next() {
		sub, err := s.scan(rows, pk)
		if errors.Is(err, errKeyDestroyed) {
			continue // erased since this read began
		} else if err != nil {
			return nil, err
		}
		out = append(out, sub)
	}
	return out, rows.Err()
}

// noLimit makes a negative limit (none) one both databases read as none:
// SQLite reads LIMIT -1 as none, PostgreSQL refuses it.
func noLimit(n int) int {
	if n < 0 {
		return math.MaxInt64
	}
	return n
}
