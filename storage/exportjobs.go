package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"
)

// ExportJobs keeps background exports in the database, so that any node
// answers for a job another started: its state and progress, and the
// finished file (a blob of the project). Who may see a job is the
// application layer's to decide.
type ExportJobs struct {
	DB    *DB
	Blobs *Blobs
}

// ExportJobRow is a background export as recorded.
type ExportJobRow struct {
	ID          string
	OwnerID     int64
	ProjectID   int64
	XMLFormID   string
	State       string // running, done, failed, downloading
	Total       int
	Submissions int64
	Bytes       int64
	FileName    string
	ContentType string
	Omitted     []string
	Error       string
	StartedAt   time.Time
	SeenAt      time.Time // progress last written by the node running it
	FinishedAt  *time.Time
	ExpiresAt   *time.Time
	BlobID      int64
}

// Create records a job that is starting.
func (j *ExportJobs) Create(ctx context.Context, r *ExportJobRow) error {
	omitted, _ := json.Marshal(r.Omitted)
	return j.DB.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`INSERT INTO export_jobs (id, owner_id, project_id, xml_form_id, state, total, file_name, content_type, omitted, started_at, seen_at)
			VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)`, r.ID, r.OwnerID, r.ProjectID, r.XMLFormID, r.Total, r.FileName, r.ContentType, string(omitted),
			ms(r.StartedAt), ms(tx.Now()))
		return err
	})
}

// Progress records how far a running job is, and that its node lives.
func (j *ExportJobs) Progress(ctx context.Context, id string, submissions, bytes int64) error {
	return j.DB.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`UPDATE export_jobs SET submissions = ?, bytes = ?, seen_at = ? WHERE id = ? AND state = 'running'`, submissions, bytes, ms(tx.Now()), id)
		return err
	})
}

// errJobGone is Finish's answer for a job removed while it ran.
var errJobGone = errors.New("the export job was removed while it ran")

// Finish records a job's file (put, not yet recorded) and marks it done;
// the caller discards the file when this fails.
func (j *ExportJobs) Finish(ctx context.Context, id string, file *Blob, submissions, bytes int64, expires time.Time) error {
	return j.DB.Write(ctx, func(tx *Tx) error {
		if err := tx.RecordBlob(file); err != nil {
			return err
		}
		res, err := tx.Exec(`UPDATE export_jobs SET state = 'done', blob_id = ?, submissions = ?, bytes = ?, seen_at = ?, finished_at = ?, expires_at = ?
			WHERE id = ? AND state = 'running'`, file.ID, submissions, bytes, ms(tx.Now()), ms(tx.Now()), ms(expires), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errJobGone
		}
		return nil
	})
}

// Fail records why a job failed.
func (j *ExportJobs) Fail(ctx context.Context, id, message string, expires time.Time) error {
	return j.DB.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`UPDATE export_jobs SET state = 'failed', error = ?, seen_at = ?, finished_at = ?, expires_at = ? WHERE id = ? AND state = 'running'`,
			message, ms(tx.Now()), ms(tx.Now()), ms(expires), id)
		return err
	})
}

// Get reads a job; nil when there is none.
func (j *ExportJobs) Get(ctx context.Context, id string) (*ExportJobRow, error) {
	r := &ExportJobRow{ID: id}
	var omitted string
	var started, seen int64
	var finished, expires, blob sql.NullInt64
	err := j.DB.read.QueryRowContext(ctx, `SELECT owner_id, project_id, xml_form_id, state, total, submissions, bytes, file_name, content_type, omitted, error,
		started_at, seen_at, finished_at, expires_at, blob_id FROM export_jobs WHERE id = ?`, id).Scan(&r.OwnerID, &r.ProjectID, &r.XMLFormID, &r.State,
		&r.Total, &r.Submissions, &r.Bytes, &r.FileName, &r.ContentType, &omitted, &r.Error, &started, &seen, &finished, &expires, &blob)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	json.Unmarshal([]byte(omitted), &r.Omitted)
	r.StartedAt, r.SeenAt, r.FinishedAt, r.ExpiresAt, r.BlobID = fromMS(started), fromMS(seen), fromNullMS(finished), fromNullMS(expires), blob.Int64
	return r, nil
}

// Running counts the jobs running, the owner's and everyone's, among
// those seen since (the others died with their node).
func (j *ExportJobs) Running(ctx context.Context, owner int64, since time.Time) (mine, all int, err error) {
	err = j.DB.read.QueryRowContext(ctx, `SELECT coalesce(sum(CASE WHEN owner_id = ? THEN 1 ELSE 0 END), 0), count(*) FROM export_jobs
		WHERE state = 'running' AND seen_at >= ?`, owner, ms(since)).Scan(&mine, &all)
	return mine, all, err
}

// Take claims a finished job's file for one download, which has until
// expires to finish: false when another download took it first.
func (j *ExportJobs) Take(ctx context.Context, id string, expires time.Time) (bool, error) {
	var took bool
	err := j.DB.Write(ctx, func(tx *Tx) error {
		res, err := tx.Exec(`UPDATE export_jobs SET state = 'downloading', expires_at = ? WHERE id = ? AND state = 'done'`, ms(expires), id)
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		took = n == 1
		return nil
	})
	return took, err
}

// Remove forgets a job and erases its file.
func (j *ExportJobs) Remove(ctx context.Context, id string) error {
	var objects []*Blob
	err := j.DB.Write(ctx, func(tx *Tx) error {
		var ids []int64
		var err error
		ids, objects, err = tx.selectBlobs(`SELECT b.id, b.store, b.object, b.data IS NOT NULL FROM blobs b JOIN export_jobs x ON x.blob_id = b.id WHERE x.id = ?`, id)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(`DELETE FROM export_jobs WHERE id = ?`, id); err != nil {
			return err
		}
		return tx.deleteBlobRows(ids)
	})
	if err == nil {
		j.Blobs.Discard(ctx, objects...)
	}
	return err
}

// Sweep removes the jobs whose time is up (finished and not downloaded in
// time, or a download begun that long ago) and those whose node died
// (not seen since deadBefore), with their files. Any node may run it.
func (j *ExportJobs) Sweep(ctx context.Context, now, deadBefore time.Time) (int, error) {
	rows, err := j.DB.read.QueryContext(ctx, `SELECT id FROM export_jobs WHERE (expires_at IS NOT NULL AND expires_at < ?) OR (state = 'running' AND seen_at < ?)`,
		ms(now), ms(deadBefore))
	if err != nil {
		return 0, err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	for _, id := range ids {
		if err := j.Remove(ctx, id); err != nil {
			return 0, err
		}
	}
	return len(ids), nil
}
