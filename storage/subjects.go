package storage

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/haven-org/haven"
)

// Data subject requests. A form may name the field that identifies the
// person a submission is about. Haven indexes a keyed hash of its value
// (HMAC under the project's key), never the value: the index finds a
// person's submissions when asked by someone who already knows the
// identifier, and becomes meaningless once the project's key is destroyed.

// SubjectMAC is the keyed hash a subject identifier is indexed under.
// Surrounding spaces are ignored; case is not, as identifiers are codes.
func subjectMAC(pk *ProjectKey, id string) []byte {
	return pk.MAC([]byte("subject " + strings.TrimSpace(id)))
}

func erasedMAC(pk *ProjectKey, instanceID string) []byte {
	return pk.MAC([]byte("erased " + instanceID))
}

// stored is what a form holds under an instanceID.
type stored struct {
	versionID    int64 // 0: no version has the instanceID
	submissionID int64
	mac          []byte // HMAC of the version's XML
	current      bool   // the version is its submission's latest
	// gone is "withdrawn" (consent withdrawn) or "erased" (its subject's
	// erasure) when the instance was removed on request and must not come
	// back; "" otherwise.
	gone string
}

// lookup reads what the form holds under instanceID, in one statement:
// statements are most of the committer's time.
func (tx *Tx) lookup(pk *ProjectKey, formID int64, instanceID string) (*stored, error) {
	var id, submission sql.NullInt64
	var current sql.NullBool
	var withdrawn, erased bool
	st := &stored{}
	err := tx.QueryRow(`SELECT v.id, v.submission_id, v.xml_mac, v.current,
			EXISTS (SELECT 1 FROM consent_withdrawals WHERE form_id = ?1 AND instance_mac = ?3),
			EXISTS (SELECT 1 FROM erased_instances WHERE form_id = ?1 AND instance_mac = ?4)
		FROM (SELECT 1) AS one LEFT JOIN submission_versions v ON v.form_id = ?1 AND v.instance_id = ?2`,
		formID, instanceID, withdrawalMAC(pk, instanceID), erasedMAC(pk, instanceID)).Scan(&id, &submission, &st.mac, &current, &withdrawn, &erased)
	if err != nil {
		return nil, err
	}
	st.versionID, st.submissionID, st.current = id.Int64, submission.Int64, current.Bool
	switch {
	case withdrawn:
		st.gone = "withdrawn"
	case erased:
		st.gone = "erased"
	}
	return st, nil
}

// notKept answers an ingestion whose instance was removed on request:
// nothing is stored and every file that came is returned unused.
func (s *Submissions) notKept(tx *Tx, res *IngestResult, gone string, in *Incoming) error {
	res.Withdrawn, res.Erased = gone == "withdrawn", gone == "erased"
	res.Unused = res.Unused[:0]
	for _, b := range in.Files {
		res.Unused = append(res.Unused, b)
	}
	return s.audit(tx, in.Audit, gone)
}

// checkObjection refuses a submission from a device about a person who
// objected. Corrections made on the server (with a reason) are allowed: the
// person may ask for their data to be put right.
func (tx *Tx) checkObjection(pk *ProjectKey, in *Incoming) error {
	if strings.TrimSpace(in.Subject) == "" || in.EditReason != "" {
		return nil
	}
	var objected bool
	if err := tx.QueryRow(`SELECT EXISTS (SELECT 1 FROM subject_objections WHERE project_id = ? AND subject_mac = ?)`,
		in.ProjectID, subjectMAC(pk, in.Subject)).Scan(&objected); err != nil {
		return err
	}
	if objected {
		return haven.Errorf(haven.EFORBIDDEN, "The person this form is about has objected to their data being collected, so the server refused it and saved nothing. Delete this form from the device and do not collect it again; ask your supervisor if in doubt.")
	}
	return nil
}

// indexSubject records (or, after an edit, updates) the keyed hash of the
// submission's subject identifier.
func (tx *Tx) indexSubject(pk *ProjectKey, in *Incoming, submissionID int64) error {
	if strings.TrimSpace(in.Subject) == "" {
		if in.DeprecatedID == "" {
			return nil // a new submission without an identifier: nothing to index or drop
		}
		_, err := tx.Exec(`DELETE FROM subject_index WHERE submission_id = ?`, submissionID)
		return err
	}
	_, err := tx.Exec(`INSERT INTO subject_index (submission_id, project_id, subject_mac) VALUES (?, ?, ?)
		ON CONFLICT (submission_id) DO UPDATE SET subject_mac = excluded.subject_mac`,
		submissionID, in.ProjectID, subjectMAC(pk, in.Subject))
	return err
}

// SubjectSubmissions returns every submission of the project about the
// person with the identifier id, across its forms, oldest first, each with
// its form's xmlFormId.
func (s *Submissions) SubjectSubmissions(ctx context.Context, projectID int64, id string) ([]SubjectSubmission, error) {
	pk, err := s.Keys.ProjectKey(ctx, projectID)
	if err != nil {
		return nil, err
	}
	rows, err := s.DB.read.QueryContext(ctx, `SELECT `+submissionColumns+`, f.xml_form_id`+submissionJoins+`
		JOIN subject_index si ON si.submission_id = s.id JOIN forms f ON f.id = s.form_id
		WHERE si.project_id = ? AND si.subject_mac = ? ORDER BY s.created_at, s.id`, projectID, subjectMAC(pk, id))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []SubjectSubmission{}
	for rows.Next() {
		var xmlFormID string
		sub, err := s.scan(scanExtra{rows, []any{&xmlFormID}}, pk)
		if errors.Is(err, errKeyDestroyed) {
			continue // erased since this read began
		} else if err != nil {
			return nil, err
		}
		out = append(out, SubjectSubmission{XMLFormID: xmlFormID, Submission: sub})
	}
	return out, rows.Err()
}

// SubjectSubmission is a submission found by its subject.
type SubjectSubmission struct {
	XMLFormID string
	*haven.Submission
}

// scanExtra scans the submission columns and then extra trailing ones.
type scanExtra struct {
	row   interface{ Scan(...any) error }
	extra []any
}

func (x scanExtra) Scan(dest ...any) error { return x.row.Scan(append(dest, x.extra...)...) }

// Objection is the record that a person objected to the processing of
// their data; it holds no personal data.
type Objection struct {
	RecordedAt time.Time `json:"recordedAt"`
	RecordedBy int64     `json:"recordedBy"`
}

// Objection returns the standing objection of the person with identifier
// id, or nil.
func (s *Submissions) Objection(ctx context.Context, projectID int64, id string) (*Objection, error) {
	pk, err := s.Keys.ProjectKey(ctx, projectID)
	if err != nil {
		return nil, err
	}
	var o Objection
	var at int64
	err = s.DB.read.QueryRowContext(ctx, `SELECT recorded_at, recorded_by FROM subject_objections WHERE project_id = ? AND subject_mac = ?`,
		projectID, subjectMAC(pk, id)).Scan(&at, &o.RecordedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	o.RecordedAt = fromMS(at)
	return &o, nil
}

// Object records that the person with identifier id objected: from now on
// devices' submissions carrying that identifier are refused. Recording it
// twice keeps the first record.
func (s *Submissions) Object(ctx context.Context, projectID int64, id string, by int64, e *haven.AuditEvent) error {
	pk, err := s.Keys.ProjectKey(ctx, projectID)
	if err != nil {
		return err
	}
	if strings.TrimSpace(id) == "" {
		return haven.Errorf(haven.EINVALID, "The subject identifier is empty. Give the identifier the form records for the person.")
	}
	return s.DB.Write(ctx, func(tx *Tx) error {
		if _, err := tx.Exec(`INSERT INTO subject_objections (project_id, subject_mac, recorded_at, recorded_by) VALUES (?, ?, ?, ?)
			ON CONFLICT DO NOTHING`, projectID, subjectMAC(pk, id), ms(tx.Now()), by); err != nil {
			return err
		}
		// The person's entities stop going to devices: their lists change.
		if _, err := tx.Exec(`UPDATE entity_lists SET changes = changes + 1 WHERE project_id = ?`, projectID); err != nil {
			return err
		}
		return s.audit(tx, e, "ok")
	})
}

// LiftObjection removes a person's objection (they changed their mind).
func (s *Submissions) LiftObjection(ctx context.Context, projectID int64, id string, e *haven.AuditEvent) error {
	pk, err := s.Keys.ProjectKey(ctx, projectID)
	if err != nil {
		return err
	}
	return s.DB.Write(ctx, func(tx *Tx) error {
		r, err := tx.Exec(`DELETE FROM subject_objections WHERE project_id = ? AND subject_mac = ?`, projectID, subjectMAC(pk, id))
		if err != nil {
			return err
		}
		if n, _ := r.RowsAffected(); n == 0 {
			return notFound("An objection for this identifier")
		}
		if _, err := tx.Exec(`UPDATE entity_lists SET changes = changes + 1 WHERE project_id = ?`, projectID); err != nil {
			return err
		}
		return s.audit(tx, e, "ok")
	})
}

// Erasure is the record kept of a subject's erasure: no personal data.
type Erasure struct {
	ID          int64     `json:"id"`
	ErasedAt    time.Time `json:"erasedAt"`
	RecordedBy  int64     `json:"recordedBy"`
	Submissions int64     `json:"submissions"`
	Files       int64     `json:"files"`
	// Entities made or changed by the erased submissions, erased with them.
	Entities int64 `json:"entities"`
}

// EraseSubject erases every submission about the person with identifier
// id (every version, attachment and consent record) in one transaction, and
// records that an erasure happened with counts only. The erased instances
// are remembered by keyed hash, so a device resending one does not bring it
// back. The encrypted objects are deleted from their stores after commit.
func (s *Submissions) EraseSubject(ctx context.Context, blobs *Blobs, projectID int64, id string, by int64, e *haven.AuditEvent) (*Erasure, error) {
	pk, err := s.Keys.ProjectKey(ctx, projectID)
	if err != nil {
		return nil, err
	}
	var goneAll []*erased
	var out *Erasure
	err = s.DB.Write(ctx, func(tx *Tx) error {
		goneAll = nil
		type inst struct {
			formID  int64
			id      string
			subject int64
		}
		var found []inst
		rows, err := tx.Query(`SELECT s.form_id, s.instance_id, s.id FROM subject_index si JOIN submissions s ON s.id = si.submission_id
			WHERE si.project_id = ? AND si.subject_mac = ? ORDER BY s.id`, projectID, subjectMAC(pk, id))
		if err != nil {
			return err
		}
		for rows.Next() {
			var i inst
			if err := rows.Scan(&i.formID, &i.id, &i.subject); err != nil {
				rows.Close()
				return err
			}
			found = append(found, i)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(found) == 0 {
			return notFound("Data about this identifier")
		}
		out = &Erasure{ErasedAt: tx.Now().Truncate(time.Millisecond).UTC(), RecordedBy: by}
		for _, i := range found {
			// Every version's instanceID: a device may resend any of them.
			var versions []string
			vrows, err := tx.Query(`SELECT instance_id FROM submission_versions WHERE submission_id = ?`, i.subject)
			if err != nil {
				return err
			}
			for vrows.Next() {
				var v string
				vrows.Scan(&v)
				versions = append(versions, v)
			}
			vrows.Close()
			gone, err := eraseSubmission(tx, i.formID, i.id)
			if err != nil {
				return err
			}
			goneAll = append(goneAll, gone)
			out.Submissions++
			out.Files += gone.files
			out.Entities += int64(len(gone.entitySlots))
			for _, v := range versions {
				if _, err := tx.Exec(`INSERT INTO erased_instances (form_id, instance_mac) VALUES (?, ?) ON CONFLICT DO NOTHING`,
					i.formID, erasedMAC(pk, v)); err != nil {
					return err
				}
			}
		}
		if err := tx.Insert(&out.ID, `INSERT INTO subject_erasures (project_id, erased_at, recorded_by, submissions, files, entities) VALUES (?, ?, ?, ?, ?, ?)`,
			projectID, ms(out.ErasedAt), by, out.Submissions, out.Files, out.Entities); err != nil {
			return err
		}
		if e != nil {
			if e.Details == nil {
				e.Details = map[string]any{}
			}
			e.Details["submissions"], e.Details["files"], e.Details["erasure"] = out.Submissions, out.Files, out.ID
		}
		return s.audit(tx, e, "ok")
	})
	if err != nil {
		return nil, err
	}
	return out, s.forget(ctx, blobs, goneAll...)
}

// Erasures lists a project's erasure records.
func (s *Submissions) Erasures(ctx context.Context, projectID int64) ([]Erasure, error) {
	rows, err := s.DB.read.QueryContext(ctx, `SELECT id, erased_at, recorded_by, submissions, files, entities FROM subject_erasures
		WHERE project_id = ? ORDER BY id`, projectID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Erasure{}
	for rows.Next() {
		var e Erasure
		var at int64
		if err := rows.Scan(&e.ID, &at, &e.RecordedBy, &e.Submissions, &e.Files, &e.Entities); err != nil {
			return nil, err
		}
		e.ErasedAt = fromMS(at)
		out = append(out, e)
	}
	return out, rows.Err()
}
