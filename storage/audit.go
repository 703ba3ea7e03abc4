package storage

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/haven-org/haven"
)

// Audit is the audit trail. Events are only ever appended (the database
// refuses updates and deletes), and each carries an HMAC over its content
// and the previous event's HMAC, keyed by a secret derived from the master
// key: changing, removing or inserting a row breaks the chain at that row,
// and only someone holding the master key could forge a new one.
type Audit struct {
	DB  *DB
	key []byte
}

// NewAudit returns the audit trail of db, chained under master.
func NewAudit(db *DB, master []byte) *Audit {
	return &Audit{DB: db, key: DeriveSecret(master, "audit chain")}
}

func (a *Audit) link(prev []byte, id int64, at int64, actorID sql.NullInt64, actor, action string, projectID sql.NullInt64, object, address, outcome, details string) []byte {
	m := hmac.New(sha256.New, a.key)
	m.Write(prev)
	var n [8]byte
	for _, v := range []int64{id, at, actorID.Int64, projectID.Int64} {
		binary.BigEndian.PutUint64(n[:], uint64(v))
		m.Write(n[:])
	}
	for _, s := range []string{actor, action, object, address, outcome, details} {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		m.Write(n[:])
		m.Write([]byte(s))
	}
	return m.Sum(nil)
}

// auditLock serialises appends to the one audit chain across the nodes
// sharing a PostgreSQL database: a batch takes it before reading the tail
// and holds it to its commit, so no two nodes chain to the same event.
const auditLock = 0x6861_7665_6e03

func (tx *Tx) lockAudit() error {
	if !tx.db.pg {
		return nil // one process writes SQLite
	}
	_, err := tx.Exec(`SELECT pg_advisory_xact_lock(?)`, int64(auditLock))
	return err
}

func nullID(v int64) sql.NullInt64 { return sql.NullInt64{Int64: v, Valid: v != 0} }

// Append writes e within tx, chained to the last event, and sets its id and time.
//
// On PostgreSQL the batch's events are held until just before its commit
// and written there, under the chain's lock (flushAudit): the lock is then
// held for those inserts and the commit, not for the whole batch, so the
// nodes' batches wait for each other that long only.
func (a *Audit) Append(tx *Tx, e *haven.AuditEvent) error {
	if tx.db.pg {
		if e.Outcome == "" {
			e.Outcome = "ok"
		}
		e.At = tx.Now().Truncate(time.Millisecond)
		tx.batch.audits = append(tx.batch.audits, pendingAudit{a: a, e: e})
		e.Recorded = true
		return nil
	}
	return a.insert(tx, e)
}

// flushAudit writes a batch's held events, in order, chained to the tail.
func (tx *Tx) flushAudit() error {
	if len(tx.batch.audits) == 0 {
		return nil
	}
	for _, p := range tx.batch.audits {
		if err := p.a.insert(tx, p.e); err != nil {
			return err
		}
	}
	tx.batch.audits = nil
	return nil
}

// pendingAudit is an event a batch holds until its commit.
type pendingAudit struct {
	a *Audit
	e *haven.AuditEvent
}

// insert writes e now, chained to the last event.
func (a *Audit) insert(tx *Tx, e *haven.AuditEvent) error {
	var prevID int64
	var prev []byte
	if t := tx.batch.auditTail; t != nil {
		prevID, prev = t.id, t.hash
	} else if err := tx.lockAudit(); err != nil {
		return err
	} else if err := tx.QueryRow(`SELECT id, hash FROM audits ORDER BY id DESC LIMIT 1`).Scan(&prevID, &prev); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	details := ""
	if len(e.Details) > 0 {
		b, err := json.Marshal(e.Details)
		if err != nil {
			return err
		}
		details = string(b)
	}
	if e.Outcome == "" {
		e.Outcome = "ok"
	}
	e.ID, e.At = prevID+1, tx.Now().Truncate(time.Millisecond)
	h := a.link(prev, e.ID, ms(e.At), nullID(e.ActorID), e.Actor, e.Action, nullID(e.ProjectID), e.Object, e.Address, e.Outcome, details)
	if _, err := tx.Exec(`INSERT INTO audits (id, at, actor_id, actor, action, project_id, object, address, outcome, details, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, e.ID, ms(e.At), nullID(e.ActorID), e.Actor, e.Action, nullID(e.ProjectID),
		e.Object, e.Address, e.Outcome, details, h); err != nil {
		return err // the statement left nothing: the tail still holds
	}
	tx.batch.auditTail = &auditLink{id: e.ID, hash: h}
	e.Recorded = true
	return nil
}

// Log writes e in a transaction of its own.
func (a *Audit) Log(ctx context.Context, e *haven.AuditEvent) error {
	return a.DB.Write(ctx, func(tx *Tx) error { return a.Append(tx, e) })
}

// AuditFilter selects events; zero fields select everything.
type AuditFilter struct {
	ActorID   int64
	Action    string // an action, or a prefix ending in "." (submission.)
	ProjectID int64
	Object    string // exactly this object
	Since     time.Time
	Until     time.Time
	Limit     int
	Offset    int
}

// List returns events matching f, newest first.
func (a *Audit) List(ctx context.Context, f AuditFilter) ([]haven.AuditEvent, error) {
	var where []string
	var args []any
	if f.ActorID != 0 {
		where, args = append(where, "actor_id = ?"), append(args, f.ActorID)
	}
	if f.Action != "" {
		if strings.HasSuffix(f.Action, ".") {
			where, args = append(where, "substr(action, 1, ?) = ?"), append(args, len(f.Action), f.Action)
		} else {
			where, args = append(where, "action = ?"), append(args, f.Action)
		}
	}
	if f.ProjectID != 0 {
		where, args = append(where, "project_id = ?"), append(args, f.ProjectID)
	}
	if f.Object != "" {
		where, args = append(where, "object = ?"), append(args, f.Object)
	}
	if !f.Since.IsZero() {
		where, args = append(where, "at >= ?"), append(args, ms(f.Since))
	}
	if !f.Until.IsZero() {
		where, args = append(where, "at < ?"), append(args, ms(f.Until))
	}
	q := `SELECT id, at, actor_id, actor, action, project_id, object, address, outcome, details FROM audits`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	q += " ORDER BY id DESC LIMIT ? OFFSET ?"
	args = append(args, limit, max(f.Offset, 0))
	rows, err := a.DB.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []haven.AuditEvent{}
	for rows.Next() {
		var e haven.AuditEvent
		var at int64
		var actorID, projectID sql.NullInt64
		var details string
		if err := rows.Scan(&e.ID, &at, &actorID, &e.Actor, &e.Action, &projectID, &e.Object, &e.Address, &e.Outcome, &details); err != nil {
			return nil, err
		}
		e.At, e.ActorID, e.ProjectID = fromMS(at), actorID.Int64, projectID.Int64
		if details != "" {
			json.Unmarshal([]byte(details), &e.Details)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// Verification is the result of checking the audit chain.
type Verification struct {
	OK     bool   `json:"ok"`
	Events int64  `json:"events"`
	Broken int64  `json:"brokenAt,omitempty"` // id of the first event that does not verify
	Reason string `json:"reason,omitempty"`
	// Head is the signed head the trail was checked against.
	Head *AuditHead `json:"head,omitempty"`
}

// Verify recomputes the chain from the first event and names the first
// event whose hash, id sequence or content does not hold.
func (a *Audit) Verify(ctx context.Context) (*Verification, error) {
	rows, err := a.DB.read.QueryContext(ctx, `SELECT id, at, actor_id, actor, action, project_id, object, address, outcome, details, hash FROM audits ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	v := &Verification{OK: true}
	var prev []byte
	var want int64 = 1
	for rows.Next() {
		var id, at int64
		var actorID, projectID sql.NullInt64
		var actor, action, object, address, outcome, details string
		var h []byte
		if err := rows.Scan(&id, &at, &actorID, &actor, &action, &projectID, &object, &address, &outcome, &details, &h); err != nil {
			return nil, err
		}
		switch {
		case id != want:
			return &Verification{Events: v.Events, Broken: want, Reason: fmt.Sprintf("event %d is missing (the next event is %d)", want, id)}, nil
		case !hmac.Equal(h, a.link(prev, id, at, actorID, actor, action, projectID, object, address, outcome, details)):
			return &Verification{Events: v.Events, Broken: id, Reason: fmt.Sprintf("event %d does not match its hash: it, or an event before it, was changed", id)}, nil
		}
		prev, want = h, want+1
		v.Events++
	}
	return v, rows.Err()
}
