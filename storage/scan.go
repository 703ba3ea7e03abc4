package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/haven-org/haven"
)

// A scan walks a form's submissions by their metadata, in an order and
// from a cursor, without reading a byte of collected data: OData pages and
// filters on it and decrypts only the rows it answers with.

// ScanOrder is one key of a scan's order, by name: instanceId, createdAt,
// updatedAt, submitterId or reviewState.
type ScanOrder struct {
	Field string
	Desc  bool
}

var scanColumns = map[string]string{
	"instanceId": "s.instance_id", "createdAt": "s.created_at", "updatedAt": "s.updated_at",
	"submitterId": "s.submitter_id", "reviewState": "s.review_state",
}

// Cursor is where a scan in the default order (newest first) resumes:
// after the submission created at CreatedAt (Unix ms) with row ID.
type Cursor struct {
	CreatedAt int64 `json:"c"`
	ID        int64 `json:"i"`
}

// ScanQuery says how to walk.
type ScanQuery struct {
	// Order is the order; empty: newest first, as ODK Central's OData.
	Order []ScanOrder
	// After resumes a walk in the default order after this submission.
	After *Cursor
	// Light reads only the submission's own columns (for counting): no
	// version, files, submitter name or device id.
	Light bool
}

// Scanned is a submission as a scan reads it.
type Scanned struct {
	*haven.Submission
	Cursor        Cursor
	SubmitterName string
	Edits         int    // versions after the first
	FirstVersion  string // the form version the submission was first filled in with
}

// CursorOf returns the cursor of a submission by its instanceId, for a
// walk that resumes after it.
func (s *Submissions) CursorOf(ctx context.Context, formID int64, instanceID string) (*Cursor, error) {
	var c Cursor
	err := s.DB.read.QueryRowContext(ctx, `SELECT s.created_at, s.id FROM submissions s WHERE `+firstInstanceID, formID, instanceID, instanceID).Scan(&c.CreatedAt, &c.ID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(fmt.Sprintf("Submission %s", instanceID))
	}
	return &c, err
}

// Scan calls fn for each submission of a form in the query's order; fn
// returning ErrStop ends the walk early without error.
func (s *Submissions) Scan(ctx context.Context, projectID, formID int64, q ScanQuery, fn func(*Scanned) error) error {
	pk, err := s.Keys.ProjectKey(ctx, projectID)
	if err != nil {
		return err
	}
	cols := `s.id, s.instance_id, s.submitter_id, s.review_state, s.created_at, s.updated_at`
	if !q.Light {
		cols += `, s.device_id, v.id, v.instance_id, v.form_version_id, fv.version,
		(SELECT count(*) FROM submission_attachments a WHERE a.version_id = v.id),
		(SELECT count(*) FROM submission_attachments a WHERE a.version_id = v.id AND a.blob_id IS NOT NULL),
		(SELECT group_concat(DISTINCT x.form_version_id) FROM submission_versions x WHERE x.submission_id = s.id),
		(SELECT count(*) - 1 FROM submission_versions x WHERE x.submission_id = s.id),
		(SELECT f1.version FROM submission_versions x JOIN form_versions f1 ON f1.id = x.form_version_id WHERE x.submission_id = s.id ORDER BY x.id LIMIT 1),
		coalesce((SELECT a.display_name FROM actors a WHERE a.id = s.submitter_id), ''), coalesce(s.key_slot, 0)`
	}
	from := ` FROM submissions s`
	if !q.Light {
		from = submissionJoins
	}
	order := ` ORDER BY s.created_at DESC, s.id DESC`
	if len(q.Order) > 0 {
		var keys []string
		for _, k := range q.Order {
			if k.Field == "deletedAt" {
				continue // never set: Haven erases for good
			}
			col, ok := scanColumns[k.Field]
			if !ok {
				return haven.Errorf(haven.EINVALID, "Submissions cannot be ordered by %q.", k.Field)
			}
			keys = append(keys, col+direction(k.Desc))
		}
		order = ` ORDER BY ` + strings.Join(append(keys, `s.id`+direction(q.Order[0].Desc)), ", ")
	}
	// In chunks, each in a short snapshot handed over after it ends (see
	// Each): the default order resumes after the chunk's last row, another
	// order at its offset.
	offset, after := 0, q.After
	for {
		where, args := ` WHERE s.form_id = ?`, []any{formID}
		if after != nil {
			where += ` AND (s.created_at, s.id) < (?, ?)` // a row value: the index seeks to it (see Each)
			args = append(args, after.CreatedAt, after.ID)
		}
		chunk, read, err := s.scanChunk(ctx, pk, formID, q.Light, `SELECT `+cols+from+where+order+` LIMIT ? OFFSET ?`, append(args, scanChunk, offset)...)
		if err != nil {
			return err
		}
		for _, sc := range chunk {
			if err := fn(sc); err != nil {
				if errors.Is(err, ErrStop) {
					return nil
				}
				return err
			}
		}
		if read < scanChunk {
			return nil
		}
		if len(q.Order) == 0 {
			if len(chunk) == 0 {
				continue // every row of the chunk was erased meanwhile: they are gone now, read again
			}
			c := chunk[len(chunk)-1].Cursor
			after = &c
		} else {
			offset += len(chunk) // rows erased meanwhile no longer count
		}
	}
}

// scanChunk is how many submissions a scan reads per snapshot.
const scanChunk = 256

// scanChunk reads one chunk of a scan.
func (s *Submissions) scanChunk(ctx context.Context, pk *ProjectKey, formID int64, light bool, query string, args ...any) ([]*Scanned, int, error) {
	rows, err := s.DB.read.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var out []*Scanned
	read := 0
	for rows.Next() {
		read++
		sub := &haven.Submission{FormID: formID}
		sc := &Scanned{Submission: sub}
		var review sql.NullString
		var updated sql.NullInt64
		dest := []any{&sub.ID, &sub.InstanceID, &sub.SubmitterID, &review, &sc.Cursor.CreatedAt, &updated}
		var device []byte
		var versionIDs string
		var slot int64
		v := &sub.Current
		if !light {
			dest = append(dest, &device, &v.ID, &v.InstanceID, &v.FormVersionID, &v.FormVersion, &v.AttachmentsExpected, &v.AttachmentsPresent,
				&versionIDs, &sc.Edits, &sc.FirstVersion, &sc.SubmitterName, &slot)
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, read, err
		}
		sc.Cursor.ID = sub.ID
		sub.CreatedAt, sub.UpdatedAt = fromMS(sc.Cursor.CreatedAt), fromNullMS(updated)
		if review.Valid {
			sub.ReviewState = &review.String
		}
		if !light {
			for _, id := range strings.Split(versionIDs, ",") {
				if n, err := strconv.ParseInt(id, 10, 64); err == nil {
					sub.FormVersionIDs = append(sub.FormVersionIDs, n)
				}
			}
			sk, err := s.Keys.sealerFor(pk, slot)
			if errors.Is(err, errKeyDestroyed) {
				continue // erased since this read began: it is gone
			} else if err != nil {
				return nil, read, err
			}
			if sub.DeviceID, err = openString(sk, device, deviceAAD(formID, sub.InstanceID)); err != nil {
				return nil, read, err
			}
			v.SubmissionID, v.Current = sub.ID, true
		}
		out = append(out, sc)
	}
	return out, read, rows.Err()
}

// ErrStop ends a scan early.
var ErrStop = errors.New("stop")

func direction(desc bool) string {
	if desc {
		return " DESC"
	}
	return " ASC"
}
