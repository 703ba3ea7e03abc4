package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/url"
	"time"

	"github.com/haven-org/haven/migrations"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
)

// OpenPostgres opens the PostgreSQL database at dsn (postgres://...) and
// applies every migration it has not seen.
func OpenPostgres(ctx context.Context, dsn string) (*sql.DB, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, err
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	if err := MigratePostgres(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// postgresMigrationLock is the advisory lock nodes hold while migrating: nodes
// started together apply each migration once, the others waiting for it.
const postgresMigrationLock = 0x6861_7665_6e01 // "haven" 1

// MigratePostgres applies PostgreSQL's migrations that db has not seen, in
// order, each with its record in one transaction.
func MigratePostgres(ctx context.Context, db *sql.DB) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, postgresMigrationLock); err != nil {
		return fmt.Errorf("waiting for other nodes' migrations: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, postgresMigrationLock)
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`); err != nil {
		return err
	}
	files, err := migrationFiles(migrations.Postgres)
	if err != nil {
		return err
	}
	for _, m := range files {
		n, name := m.version, m.name
		var seen int
		if err := conn.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, n).Scan(&seen); err != nil {
			return err
		}
		if seen > 0 {
			continue
		}
		body, err := fs.ReadFile(migrations.Postgres, name)
		if err != nil {
			return err
		}
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %s: %w", name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, (extract(epoch from clock_timestamp()) * 1000)::bigint)`, n, name); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %s: %w", name, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %s: %w", name, err)
		}
	}
	return nil
}

// OpenPostgresDB opens Haven's database on PostgreSQL: the same group
// commit as on SQLite (one writing connection per node, batches of writes
// in one transaction, each in its own savepoint), a pool of readers, and
// PostgreSQL's migrations applied first.
func OpenPostgresDB(ctx context.Context, dsn string) (*DB, error) {
	readPool, err := OpenPostgres(ctx, dsn)
	if err != nil {
		return nil, err
	}
	readPool.SetMaxOpenConns(8)
	readPool.SetMaxIdleConns(8)
	write, err := sql.Open("pgx", dsn)
	if err != nil {
		readPool.Close()
		return nil, err
	}
	write.SetMaxOpenConns(1)
	write.SetConnMaxIdleTime(0)
	db := &DB{Path: redactDSN(dsn), write: write, pg: true, Now: time.Now, wpending: map[string]bool{},
		writes: make(chan writeReq), closed: make(chan struct{}), stopped: make(chan struct{}), ckptStopped: make(chan struct{})}
	db.read = &reader{db: readPool, owner: db}
	close(db.ckptStopped) // no checkpointer: PostgreSQL checkpoints itself
	go db.committer()
	return db, nil
}

// redactDSN is a connection URL without its password, fit for messages.
func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "postgres"
	}
	if u.User != nil {
		u.User = url.User(u.User.Username())
	}
	return u.String()
}

// isUniqueViolation reports whether err is PostgreSQL refusing a row that a
// unique key already holds (another node's write committed first).
func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// isDeadlock reports whether PostgreSQL failed a write to break a circle of
// waits (or a serialization conflict): running it again succeeds.
func isDeadlock(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

// leaderLock is held, on a connection of its own, by the one node that runs
// the background work (the reaper, destruction, the garbage collector).
const leaderLock = 0x6861_7665_6e04

// Leader reports whether this node runs the background work. On SQLite it
// always does (one process writes the file). On PostgreSQL the first node
// to take an advisory lock keeps it on a connection of its own for as long
// as it lives; when it dies its connection closes, the lock is freed, and
// the next node to ask becomes the leader (and resumes a destruction the
// dead one left half done: destruction is resumable by design).
func (db *DB) Leader(ctx context.Context) bool {
	if !db.pg {
		return true
	}
	db.leaderMu.Lock()
	defer db.leaderMu.Unlock()
	if db.leader != nil {
		if db.leader.PingContext(ctx) == nil {
			return true
		}
		db.leader.Close() // the session, and the lock with it, is gone
		db.leader = nil
	}
	conn, err := db.read.db.Conn(ctx)
	if err != nil {
		return false
	}
	var got bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, int64(leaderLock)).Scan(&got); err != nil || !got {
		conn.Close()
		return false
	}
	db.leader = conn
	return true
}

// UseNonce records a use of a Digest nonce with count nc from addr, and
// reports whether it holds: the first use binds the nonce to its address,
// each later one must come from there with a higher count, on whichever
// node it arrives. Uses of nonces issued before forgetBefore are dropped
// now and then.
func (db *DB) UseNonce(ctx context.Context, nonce string, issued time.Time, nc uint64, addr string, forgetBefore time.Time) (bool, error) {
	if nc > math.MaxInt64 {
		return false, nil
	}
	var one int
	err := db.read.QueryRowContext(ctx, `INSERT INTO digest_nonces (nonce, addr, nc, issued) VALUES (?, ?, ?, ?)
		ON CONFLICT (nonce) DO UPDATE SET nc = excluded.nc
		WHERE digest_nonces.addr = excluded.addr AND digest_nonces.nc < excluded.nc
		RETURNING 1`, nonce, addr, int64(nc), ms(issued)).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil // another address, or a count not higher: a replay
	}
	if err != nil {
		return false, err
	}
	if db.nonceUses.Add(1)%1000 == 0 {
		db.read.db.ExecContext(ctx, `DELETE FROM digest_nonces WHERE issued < $1`, ms(forgetBefore))
	}
	return true, nil
}

// destroyedTables are the tables whose rows a destruction or an erasure
// deletes: the ones forgetPostgres rewrites.
var destroyedTables = []string{"submissions", "submission_versions", "submission_attachments", "submission_comments",
	"consent_records", "subject_index", "subject_objections", "blobs", "form_attachments", "form_versions", "forms",
	"entities", "entity_versions", "entity_queue"}

// forgetPostgres makes PostgreSQL drop the bytes of deleted rows from its
// files, as secure_delete and a truncated WAL do on SQLite. Deleted rows
// stay in their pages until the space is reused, so the tables a
// destruction touches are rewritten (VACUUM FULL writes new files and
// removes the old); the WAL that recorded the rows is then switched and
// checkpointed past, so its segments are no longer needed and are removed
// (with wal_recycle off, as the deployment notes set it; recycled segments
// would keep their old bytes until overwritten). What the rows held was
// sealed by keys that are destroyed; this removes the few identifiers kept
// in the clear (instance ids). It needs the rights of the database's owner
// and pg_checkpoint (or a superuser); without them it says so.
func (db *DB) forgetPostgres(ctx context.Context) error {
	for _, t := range destroyedTables {
		if _, err := db.read.db.ExecContext(ctx, `VACUUM FULL `+t); err != nil {
			return fmt.Errorf("rewriting %s after a destruction: %w", t, err)
		}
	}
	for _, q := range []string{`CHECKPOINT`, `SELECT pg_switch_wal()`, `CHECKPOINT`} {
		if _, err := db.read.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("moving the WAL past a destruction (%s; the role needs pg_checkpoint): %w", q, err)
		}
	}
	return nil
}

// Shared reports whether this node shares its database with others
// (PostgreSQL): what SQLite's one process keeps in memory (Digest nonce
// uses, failed logins) is then kept in the database.
func (db *DB) Shared() bool { return db.pg }

// Strike reads a failed-login counter.
func (db *DB) Strike(ctx context.Context, key string) (n int, last, until time.Time, ok bool, err error) {
	var l, u int64
	err = db.read.QueryRowContext(ctx, `SELECT n, last, until FROM login_strikes WHERE key = ?`, key).Scan(&n, &l, &u)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, time.Time{}, time.Time{}, false, nil
	}
	return n, fromMS(l), fromMS(u), err == nil, err
}

// PutStrike writes a failed-login counter; now and then it drops the
// counters nobody touched for a day.
func (db *DB) PutStrike(ctx context.Context, key string, n int, last, until time.Time) error {
	_, err := db.read.db.ExecContext(ctx, `INSERT INTO login_strikes (key, n, last, until) VALUES ($1, $2, $3, $4)
		ON CONFLICT (key) DO UPDATE SET n = excluded.n, last = excluded.last, until = excluded.until`, key, n, ms(last), ms(until))
	if err == nil && db.strikePuts.Add(1)%1000 == 0 {
		old := ms(last.Add(-24 * time.Hour))
		db.read.db.ExecContext(ctx, `DELETE FROM login_strikes WHERE last < $1 AND until < $1`, old)
	}
	return err
}

// DropStrike forgets a failed-login counter.
func (db *DB) DropStrike(ctx context.Context, key string) error {
	_, err := db.read.db.ExecContext(ctx, `DELETE FROM login_strikes WHERE key = $1`, key)
	return err
}

// Known is when an account last signed in from an address (zero if never).
func (db *DB) Known(ctx context.Context, pair string) (time.Time, error) {
	var at int64
	err := db.read.QueryRowContext(ctx, `SELECT at FROM login_known WHERE pair = ?`, pair).Scan(&at)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, nil
	}
	return fromMS(at), err
}

// MarkKnown records that an account signed in from an address.
func (db *DB) MarkKnown(ctx context.Context, pair string, at time.Time) error {
	_, err := db.read.db.ExecContext(ctx, `INSERT INTO login_known (pair, at) VALUES ($1, $2)
		ON CONFLICT (pair) DO UPDATE SET at = excluded.at`, pair, ms(at))
	return err
}

// withLock runs fn holding a PostgreSQL advisory lock, on a connection of
// its own (outside any batch), so that nodes doing the same thing wait for
// each other. On SQLite, one process, it runs fn.
func (db *DB) withLock(ctx context.Context, key int64, fn func() error) error {
	if !db.pg {
		return fn()
	}
	conn, err := db.read.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		return err
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key)
	return fn()
}
