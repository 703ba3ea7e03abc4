// Package storage is Haven's persistence: the SQLite database (through the
// pure-Go modernc.org/sqlite driver), the blob store for attachments and form
// media, and the envelope encryption that keeps collected data unreadable at
// rest.
package storage

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/migrations"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// DB is Haven's SQLite database. Writes go through one connection (SQLite has
// one writer at a time; queueing them in Go is cheaper than busy retries),
// reads through a pool that WAL mode lets run beside the writer.
type DB struct {
	Path string
	// Dir is the data directory (export spools are made there).
	Dir   string
	write *sql.DB
	read  *reader
	// pg: the database is PostgreSQL (OpenPostgresDB), not SQLite. Queries
	// are written once, in SQLite's spelling; dialect rewrites them for
	// PostgreSQL once per query text.
	pg bool

	// Prepared statements of the write connection, by query. A query first
	// seen inside a batch runs unprepared and is prepared after the batch,
	// when the connection is free.
	wstmts   gosync.Map
	wmu      gosync.Mutex
	wpending map[string]bool

	ckpt    *sql.DB
	writes  chan writeReq
	closed  chan struct{}
	stopped chan struct{}

	ckptStopped chan struct{}

	rewritten gosync.Map // query text -> its PostgreSQL spelling

	// caches: what a change notification names, and how this node
	// forgets it (PostgreSQL: nodes tell each other, see listen).
	cacheMu   gosync.Mutex
	caches    map[string]func()
	listening chan struct{} // closed when the listener has stopped

	nonceUses  atomic.Int64 // Digest nonce uses recorded (UseNonce sweeps every 1000th)
	strikePuts atomic.Int64 // failed-login counters written (PutStrike sweeps every 1000th)

	leaderMu gosync.Mutex
	leader   *sql.Conn // PostgreSQL: the session holding the leader's lock

	closeOnce gosync.Once
	closeErr  error
	// Now is the clock; tests replace it.
	Now func() time.Time
	// BeforeCommit runs before committing a batch that recorded stored files:
	// the blob store makes them durable (one flush for the whole batch).
	BeforeCommit func(ctx context.Context) error

	// walCeiling is the WAL size past which the committer checkpoints and
	// restarts it itself (see boundWAL); walTried is when it last tried.
	walCeiling int64
	walTried   time.Time
	walStats   WALStats
	walMu      gosync.Mutex
	// ckptMu keeps the background checkpoint and the committer's from
	// running at once: SQLite refuses a second checkpoint at once, without
	// waiting, which left the WAL to grow past its ceiling until the next try.
	ckptMu gosync.Mutex
}

// DefaultWALCeiling is the WAL size Haven keeps under by default.
const DefaultWALCeiling = 64 << 20

// WALStats says what bounding the WAL has cost.
type WALStats struct {
	Ceiling  int64         `json:"ceiling"`
	Restarts int           `json:"restarts"` // checkpoints that emptied the WAL
	Busy     int           `json:"busy"`     // tries a long read held off, to be tried again
	Stalled  time.Duration `json:"stalled"`  // time the commit path spent on them, in total
	Longest  time.Duration `json:"longest"`  // the longest single one
	Largest  int64         `json:"largest"`  // the largest WAL seen after a commit, in bytes
}

// SetWALCeiling sets the WAL's ceiling in bytes (at least 4 MiB).
func (db *DB) SetWALCeiling(n int64) error {
	if db.pg {
		return nil // PostgreSQL manages its own WAL (max_wal_size)
	}
	n = max(n, 4<<20)
	if _, err := db.write.Exec(fmt.Sprintf("PRAGMA journal_size_limit = %d", n)); err != nil {
		return err
	}
	db.walMu.Lock()
	db.walCeiling = n
	db.walMu.Unlock()
	return nil
}

// WALStats returns what bounding the WAL has cost so far.
func (db *DB) WALStats() WALStats {
	db.walMu.Lock()
	defer db.walMu.Unlock()
	s := db.walStats
	s.Ceiling = db.walCeiling
	return s
}

// boundWAL keeps the WAL under its ceiling. The background checkpointer's
// PASSIVE checkpoints never block anyone, so under a load without pause
// they never catch up and the log is never restarted: it grew by 33 MB a
// second at 2,400 submissions a second. Past the ceiling, the committer
// (the only writer, between batches, so no frame is being added) runs a
// TRUNCATE checkpoint itself: it copies what remains, waits for the reads
// that began before it to end (new ones read the database file and do not
// hold it up), and empties the log. A read that holds a snapshot longer
// than a quarter second makes it give up and try again 100 ms later, so
// the commit path seldom waits long (walks over many rows, such as
// exports, take fresh snapshots as they go for this reason); past a
// quarter over the ceiling it waits up to 2 s, past twice 10 s.
func (db *DB) boundWAL() {
	db.walMu.Lock()
	ceiling := db.walCeiling
	db.walMu.Unlock()
	if ceiling <= 0 {
		return
	}
	fi, err := os.Stat(db.Path + "-wal")
	if err != nil {
		return
	}
	db.walMu.Lock()
	db.walStats.Largest = max(db.walStats.Largest, fi.Size())
	db.walMu.Unlock()
	// It acts at seven eighths of the ceiling, so the batches that commit
	// while it tries (a batch of photos can be several MB) stay under it.
	// Below the ceiling, a try a long read held off is repeated 100 ms
	// later; past it, after every batch.
	if fi.Size() <= ceiling*7/8 || fi.Size() <= ceiling && time.Since(db.walTried) < 100*time.Millisecond {
		return
	}
	start := time.Now()
	db.walTried = start
	var busy, frames, done int
	// Reads that began before the checkpoint get a quarter second to end;
	// if they keep it waiting while the WAL grows well past its ceiling,
	// longer, so the ceiling holds even against reads that linger.
	wait := 250
	switch {
	case fi.Size() > 2*ceiling:
		wait = 10000
	case fi.Size() > ceiling*5/4:
		wait = 2000
	}
	db.ckptMu.Lock()
	db.write.Exec(fmt.Sprintf(`PRAGMA busy_timeout = %d`, wait))
	err = db.write.QueryRow(`PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &frames, &done)
	db.write.Exec(`PRAGMA busy_timeout = 10000`)
	db.ckptMu.Unlock()
	took := time.Since(start)
	db.walMu.Lock()
	defer db.walMu.Unlock()
	if err == nil && busy == 0 {
		db.walStats.Restarts++
	} else {
		db.walStats.Busy++
	}
	db.walStats.Stalled += took
	db.walStats.Longest = max(db.walStats.Longest, took)
}

// Open opens (creating if needed) the database at path and applies every
// embedded migration it has not seen.
func Open(ctx context.Context, path string) (*DB, error) {
	pragmas := []string{
		"busy_timeout(10000)",
		"journal_mode(WAL)",
		"synchronous(FULL)", // a commit is on disk before it returns: nothing acknowledged is lost
		"foreign_keys(1)",
		"secure_delete(1)",   // deleted rows are overwritten, not left in free pages
		"temp_store(MEMORY)", // savepoint journals and temporary tables never touch the disk
	}
	if err := create(ctx, path); err != nil {
		return nil, fmt.Errorf("creating %s: %w", path, err)
	}
	q := url.Values{}
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	dsn := "file:" + path + "?" + q.Encode()

	// The write connection never checkpoints itself: that would stall the
	// commit path. A background checkpointer does it on its own connection.
	write, err := sql.Open("sqlite", dsn+"&_txlock=immediate&_pragma=wal_autocheckpoint(0)")
	if err != nil {
		return nil, err
	}
	write.SetMaxOpenConns(1)
	write.SetConnMaxIdleTime(0)
	readPool, err := sql.Open("sqlite", dsn+"&mode=ro")
	if err != nil {
		write.Close()
		return nil, err
	}
	readPool.SetMaxOpenConns(8)
	readPool.SetMaxIdleConns(8)
	db := &DB{Path: path, Dir: filepath.Dir(path), write: write, read: &reader{db: readPool}, Now: time.Now, wpending: map[string]bool{},
		writes: make(chan writeReq), closed: make(chan struct{}), stopped: make(chan struct{}), ckptStopped: make(chan struct{})}
	ckpt, err := sql.Open("sqlite", dsn)
	if err != nil {
		write.Close()
		readPool.Close()
		return nil, err
	}
	ckpt.SetMaxOpenConns(1)
	db.ckpt = ckpt
	go db.committer()
	go db.checkpointer()
	if err := db.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrating %s: %w", path, err)
	}
	if err := db.SetWALCeiling(DefaultWALCeiling); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// create makes a new database file with the setting that can only be chosen
// before its first page is written: incremental vacuum, so the pages of
// destroyed data can be given back to the file system. (Larger pages were
// measured: they do not speed up photos and slow small submissions down.)
// An existing file is left alone.
//
// The file is made readable by its owner alone (SQLite gives its WAL and
// shared-memory files the same mode); a database an older Haven made with
// wider permissions is narrowed.
func create(ctx context.Context, path string) error {
	if _, err := os.Stat(path); err == nil {
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		return err
	}
	defer db.Close()
	for _, p := range []string{"auto_vacuum = INCREMENTAL", "journal_mode = WAL"} {
		if _, err := db.ExecContext(ctx, "PRAGMA "+p); err != nil {
			return err
		}
	}
	return nil
}

// Close stops the committer after the batch in progress and closes both
// connection pools. Closing twice is harmless.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		close(db.closed)
		<-db.stopped
		<-db.ckptStopped
		db.wstmts.Range(func(_, st any) bool { st.(*sql.Stmt).Close(); return true })
		if db.pg {
			if db.listening != nil {
				<-db.listening
			}
			db.leaderMu.Lock()
			if db.leader != nil {
				db.leader.Raw(func(c any) error { return driver.ErrBadConn }) // end the session: the lock goes with it
				db.leader.Close()
			}
			db.leaderMu.Unlock()
			db.closeErr = errors.Join(db.read.Close(), db.write.Close())
			return
		}
		// Fold the WAL into the database and empty it.
		db.write.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
		db.closeErr = errors.Join(db.read.Close(), db.ckpt.Close(), db.write.Close())
	})
	return db.closeErr
}

func (db *DB) migrate(ctx context.Context) error {
	if _, err := db.write.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`); err != nil {
		return err
	}
	files, err := migrationFiles(migrations.FS)
	if err != nil {
		return err
	}
	for _, m := range files {
		n, name := m.version, m.name
		var seen int
		if err := db.write.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, n).Scan(&seen); err != nil {
			return err
		}
		if seen > 0 {
			continue
		}
		if migrationsUpTo > 0 && n > migrationsUpTo {
			break
		}
		body, err := migrations.FS.ReadFile(name)
		if err != nil {
			return err
		}
		if err := db.applyMigration(ctx, n, name, string(body)); err != nil {
			return err
		}
	}
	return nil
}

// migrationFile is a numbered migration of one database's set.
type migrationFile struct {
	version int
	name    string
}

// migrationFiles lists a set's migrations (NNNN_what.sql) in order.
func migrationFiles(fsys fs.FS) ([]migrationFile, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	out := make([]migrationFile, 0, len(names))
	for _, name := range names {
		n, err := strconv.Atoi(strings.SplitN(name, "_", 2)[0])
		if err != nil {
			return nil, fmt.Errorf("migration %s: name must start with a number", name)
		}
		out = append(out, migrationFile{n, name})
	}
	return out, nil
}

// migrationsUpTo stops migrate after that version when above zero: tests
// build a database as an older Haven left it, then open it with this one.
var migrationsUpTo int

// fkOffMarker opens a migration that rebuilds a table other tables refer to.
const fkOffMarker = "-- haven: foreign keys off\n"

// applyMigration runs one migration and records it, in one transaction. A
// migration that rebuilds a referenced table runs with foreign keys off, as
// SQLite requires (they can only be switched outside a transaction), and
// commits only if every reference still holds afterwards.
func (db *DB) applyMigration(ctx context.Context, n int, name, body string) (err error) {
	fkOff := strings.HasPrefix(body, fkOffMarker)
	if fkOff {
		if _, err := db.write.ExecContext(ctx, `PRAGMA foreign_keys = OFF`); err != nil {
			return fmt.Errorf("migration %s: %w", name, err)
		}
		defer func() {
			// Not ctx: they must come back on even when it was cancelled.
			if _, onErr := db.write.ExecContext(context.Background(), `PRAGMA foreign_keys = ON`); onErr != nil {
				err = errors.Join(err, fmt.Errorf("migration %s: switching foreign keys back on: %w", name, onErr))
			}
		}()
	}
	return db.Write(ctx, func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, body); err != nil {
			return fmt.Errorf("migration %s: %w", name, err)
		}
		if fkOff {
			var table string
			var rowid sql.NullInt64
			err := tx.QueryRowContext(ctx, `SELECT "table", rowid FROM pragma_foreign_key_check`).Scan(&table, &rowid)
			if err == nil {
				return fmt.Errorf("migration %s: row %d of %s refers to a row that is no longer there; nothing was changed", name, rowid.Int64, table)
			} else if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("migration %s: checking references: %w", name, err)
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`, n, name, tx.Now().UnixMilli())
		return err
	})
}

// Tx is a write transaction.
type Tx struct {
	*sql.Tx
	db    *DB
	now   time.Time
	batch *batchState
}

// batchState is what the writes of one batch ask of its commit.
type batchState struct {
	needSync bool // a write recorded a blob that must be durable before the commit
	// auditTail is the last audit event this transaction wrote, so the next
	// one chains to it without reading it back. A rolled-back write forgets it.
	auditTail *auditLink
	// audits are, on PostgreSQL, the events the batch's writes appended,
	// written just before its commit (a rolled-back write's are dropped).
	audits []pendingAudit
}

type auditLink struct {
	id   int64
	hash []byte
}

// Now is the transaction's time: every row it writes carries the same instant.
func (tx *Tx) Now() time.Time { return tx.now }

// maxBatch bounds how many writes share one commit.
const maxBatch = 256

type writeReq struct {
	ctx  context.Context
	fn   func(tx *Tx) error
	done chan error
}

// Write runs fn in a write transaction and returns once its changes are
// durably committed (synchronous=FULL), or rolled back when fn fails.
//
// Writes share commits (group commit): one goroutine owns the write
// connection; while it waits for a commit's fsync, further writes queue,
// and the next transaction runs them all, each inside its own savepoint, so
// a failing write rolls back alone. Nobody is answered before the commit
// that holds their write is on disk, and one fsync serves many writers.
func (db *DB) Write(ctx context.Context, fn func(tx *Tx) error) error {
	// On PostgreSQL, nodes' writes can wait on each other in a circle (one
	// holds the audit chain, another a row the first needs): the database
	// breaks the circle by failing one write, which rolls back alone and
	// runs again.
	for attempt := 1; ; attempt++ {
		err := db.write1(ctx, fn)
		if !db.pg || attempt == 5 || !isDeadlock(err) {
			return err
		}
	}
}

func (db *DB) write1(ctx context.Context, fn func(tx *Tx) error) error {
	req := writeReq{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case db.writes <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-db.closed:
		return errors.New("the database is closed")
	}
	return <-req.done
}

// committer runs batches of writes until the database closes.
func (db *DB) committer() {
	defer close(db.stopped)
	batch := make([]writeReq, 0, maxBatch)
	for {
		select {
		case req := <-db.writes:
			batch = append(batch[:0], req)
		case <-db.closed:
			return
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case req := <-db.writes:
				batch = append(batch, req)
			default:
				break fill
			}
		}
		db.runBatch(batch)
		db.preparePending()
		db.boundWAL()
	}
}

// checkpointInterval is how often committed pages are copied from the WAL
// into the database file.
const checkpointInterval = 250 * time.Millisecond

// checkpointer copies the WAL into the database in the background (PASSIVE:
// it never blocks writers or readers), so the WAL stays small without the
// commit path ever doing it.
func (db *DB) checkpointer() {
	defer close(db.ckptStopped)
	t := time.NewTicker(checkpointInterval)
	defer t.Stop()
	for {
		select {
		case <-db.closed:
			return
		case <-t.C:
			db.ckptMu.Lock()
			db.ckpt.Exec(`PRAGMA wal_checkpoint(PASSIVE)`)
			db.ckptMu.Unlock()
		}
	}
}

// preparePending prepares the queries batches ran unprepared, now that the
// write connection is free.
func (db *DB) preparePending() {
	db.wmu.Lock()
	pending := db.wpending
	if len(pending) > 0 {
		db.wpending = map[string]bool{}
	}
	db.wmu.Unlock()
	for q := range pending {
		if st, err := db.write.Prepare(q); err == nil {
			db.wstmts.Store(q, st)
		}
	}
}

func (tx *Tx) stmt(q string) *sql.Stmt {
	if st, ok := tx.db.wstmts.Load(q); ok {
		return tx.Tx.Stmt(st.(*sql.Stmt))
	}
	tx.db.wmu.Lock()
	tx.db.wpending[q] = true
	tx.db.wmu.Unlock()
	return nil
}

// Exec runs a statement in the transaction, prepared once per query.
func (tx *Tx) Exec(q string, args ...any) (sql.Result, error) {
	q, args = tx.db.dialect(q), tx.db.values(args)
	if st := tx.stmt(q); st != nil {
		return st.Exec(args...)
	}
	return tx.Tx.Exec(q, args...)
}

// Query runs a query in the transaction, prepared once per query.
func (tx *Tx) Query(q string, args ...any) (*sql.Rows, error) {
	q, args = tx.db.dialect(q), tx.db.values(args)
	if st := tx.stmt(q); st != nil {
		return st.Query(args...)
	}
	return tx.Tx.Query(q, args...)
}

// QueryRow runs a one-row query in the transaction, prepared once per query.
func (tx *Tx) QueryRow(q string, args ...any) *sql.Row {
	q, args = tx.db.dialect(q), tx.db.values(args)
	if st := tx.stmt(q); st != nil {
		return st.QueryRow(args...)
	}
	return tx.Tx.QueryRow(q, args...)
}

// Insert runs an INSERT and sets *id to the new row's id: SQLite reports
// it with the result, PostgreSQL with RETURNING (a query, which costs more
// on SQLite's commit path).
func (tx *Tx) Insert(id *int64, q string, args ...any) error {
	if tx.db.pg {
		return tx.QueryRow(q+" RETURNING id", args...).Scan(id)
	}
	res, err := tx.Exec(q, args...)
	if err != nil {
		return err
	}
	*id, err = res.LastInsertId()
	return err
}

// QueryContext and QueryRowContext let a Tx serve where reads are written
// against the queryer interface.
func (tx *Tx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return tx.Query(q, args...)
}

func (tx *Tx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return tx.QueryRow(q, args...)
}

// reader is the read pool, with statements prepared once per query.
type reader struct {
	db    *sql.DB
	stmts gosync.Map
	owner *DB
}

func (r *reader) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if r.owner != nil {
		q = r.owner.dialect(q)
	}
	if st, ok := r.stmts.Load(q); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := r.db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	if prev, loaded := r.stmts.LoadOrStore(q, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

func (r *reader) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if r.owner != nil {
		args = r.owner.values(args)
	}
	st, err := r.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func (r *reader) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	if r.owner != nil {
		args = r.owner.values(args)
	}
	st, err := r.stmt(ctx, q)
	if err != nil {
		return r.db.QueryRowContext(ctx, q, args...) // carries the error to Scan (and needs no rewriting)
	}
	return st.QueryRowContext(ctx, args...)
}

func (r *reader) Close() error { return r.db.Close() }

func (db *DB) runBatch(batch []writeReq) {
	ctx := context.Background()
	sqlTx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		for _, r := range batch {
			r.done <- fmt.Errorf("begin: %w", err)
		}
		return
	}
	tx := &Tx{Tx: sqlTx, db: db, now: db.Now().UTC().Truncate(time.Millisecond), batch: &batchState{}}
	results := make([]error, len(batch))
	ran := 0
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		if _, err := tx.Exec(`SAVEPOINT w`); err != nil {
			results[i] = err
			continue
		}
		held := len(tx.batch.audits)
		if err := runWrite(r.fn, tx); err != nil {
			results[i] = err
			tx.batch.auditTail = nil // it may have been the rolled-back write's
			for _, p := range tx.batch.audits[held:] {
				p.e.Recorded = false // not written: its caller may record the failure
			}
			tx.batch.audits = tx.batch.audits[:held]
			if _, rerr := tx.Exec(`ROLLBACK TO w`); rerr != nil {
				results[i] = errors.Join(err, rerr)
			}
		} else {
			ran++
		}
		tx.Exec(`RELEASE w`)
	}
	err = nil
	if ran > 0 {
		if err = tx.flushAudit(); err != nil {
			err = fmt.Errorf("writing the audit trail: %w", err)
		}
	}
	if err == nil && ran > 0 && tx.batch.needSync && db.BeforeCommit != nil {
		if err = db.BeforeCommit(ctx); err != nil {
			err = fmt.Errorf("making stored files durable: %w", err)
		}
	}
	if ran == 0 || err != nil {
		sqlTx.Rollback()
	} else if err = sqlTx.Commit(); err != nil {
		err = fmt.Errorf("commit: %w", err)
	}
	if err != nil {
		for i := range results {
			if results[i] == nil {
				results[i] = err
			}
		}
	}
	for i, r := range batch {
		r.done <- results[i]
	}
}

// runWrite runs one write, turning a panic into an error for its caller alone.
func runWrite(fn func(tx *Tx) error, tx *Tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in write: %v", r)
		}
	}()
	return fn(tx)
}

// QueryRow runs a read-only query: for administration commands and tests
// that inspect the database.
func (db *DB) QueryRow(ctx context.Context, q string, args ...any) *sql.Row {
	return db.read.QueryRowContext(ctx, q, args...)
}

// Sizes are the database's bytes on disk and its write-ahead log's (SQLite's
// WAL file; 0 on PostgreSQL, which manages its own).
func (db *DB) Sizes(ctx context.Context) (database, wal int64, err error) {
	if db.pg {
		err = db.read.db.QueryRowContext(ctx, `SELECT pg_database_size(current_database())`).Scan(&database)
		return database, 0, err
	}
	if fi, err := os.Stat(db.Path); err == nil {
		database = fi.Size()
	}
	if fi, err := os.Stat(db.Path + "-wal"); err == nil {
		wal = fi.Size()
	}
	return database, wal, nil
}

// IntegrityCheck runs SQLite's integrity check and returns its verdict ("ok" when sound).
func (db *DB) IntegrityCheck(ctx context.Context) (string, error) {
	if db.pg {
		// PostgreSQL checks its pages as it reads them (with data
		// checksums on); a full check is its own tools' work (amcheck).
		return "ok", db.read.db.PingContext(ctx)
	}
	var s string
	err := db.read.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&s)
	return s, err
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func ms(t time.Time) int64 { return t.UnixMilli() }

func fromMS(v int64) time.Time { return time.UnixMilli(v).UTC() }

func fromNullMS(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMS(v.Int64)
	return &t
}

func notFound(what string) error {
	return haven.Errorf(haven.ENOTFOUND, "%s could not be found.", what)
}

// Checkpoint folds the whole WAL into the database and truncates it to
// zero bytes, so no old page image survives in it. Readers in flight can
// delay it; it retries for a few seconds before giving up.
func (db *DB) Checkpoint(ctx context.Context) error {
	if db.pg {
		return nil // no SQLite WAL to fold: what PostgreSQL keeps is sealed data
	}
	for attempt := 0; ; attempt++ {
		var busy, logFrames, done int
		err := db.ckpt.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logFrames, &done)
		if err == nil && busy == 0 {
			return nil
		}
		if attempt == 100 {
			if err == nil {
				err = errors.New("readers kept the WAL busy")
			}
			return fmt.Errorf("truncating the WAL: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Analyze refreshes PostgreSQL's planner statistics, as its autovacuum
// does within a minute or so of a bulk load: until then, plans made for
// empty tables (sorting every submission to page through them) are slow.
// On SQLite it does nothing.
func (db *DB) Analyze(ctx context.Context) error {
	if !db.pg {
		return nil
	}
	_, err := db.read.db.ExecContext(ctx, `ANALYZE`)
	return err
}

// dialect rewrites a query written for SQLite for the database: for
// PostgreSQL, ? and ?N placeholders become $N (quoted text left alone) and
// group_concat(DISTINCT x) becomes string_agg. Each query text is
// rewritten once.
func (db *DB) dialect(q string) string {
	if !db.pg {
		return q
	}
	if v, ok := db.rewritten.Load(q); ok {
		return v.(string)
	}
	out := groupConcat.ReplaceAllString(toDollar(q), "string_agg(DISTINCT ($1)::text, ',')")
	db.rewritten.Store(q, out)
	return out
}

// values gives PostgreSQL yes/no arguments as the integers its columns
// hold (SQLite's driver does so itself).
func (db *DB) values(args []any) []any {
	if !db.pg || !slices.ContainsFunc(args, func(a any) bool { _, ok := a.(bool); return ok }) {
		return args
	}
	out := slices.Clone(args)
	for i, a := range out {
		if b, ok := a.(bool); ok {
			out[i] = boolInt(b)
		}
	}
	return out
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

var groupConcat = regexp.MustCompile(`group_concat\(DISTINCT ([^()]+)\)`)

// toDollar writes SQLite's placeholders as PostgreSQL's.
func toDollar(q string) string {
	var b strings.Builder
	n, quoted := 0, false
	for i := 0; i < len(q); i++ {
		c := q[i]
		if c == '\'' {
			quoted = !quoted
		}
		if c != '?' || quoted {
			b.WriteByte(c)
			continue
		}
		j := i + 1
		for j < len(q) && q[j] >= '0' && q[j] <= '9' {
			j++
		}
		if j > i+1 {
			b.WriteString("$" + q[i+1:j]) // ?N
			i = j - 1
			continue
		}
		n++
		b.WriteString("$" + strconv.Itoa(n))
	}
	return b.String()
}
