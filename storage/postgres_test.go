package storage_test

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/migrations"
	"github.com/haven-org/haven/storage"
	"github.com/haven-org/haven/storage/pgtest"
)

// The PostgreSQL schema holds what SQLite's migrations build, column by
// column (type, NOT NULL), with the same primary keys and the same unique
// keys (partial ones too): those are what make a resend a duplicate and a
// live key one per project. A SQLite migration without its PostgreSQL
// twin fails here.
func TestPostgresSchemaMatchesSQLite(t *testing.T) {
	onFirstPass(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "haven.db")
	db, err := storage.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	lite, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer lite.Close()
	want := sqliteSchema(t, lite)

	pg := pgtest.Start(t)
	pdb, err := storage.OpenPostgres(ctx, pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer pdb.Close()
	got := postgresSchema(t, pdb)

	if len(want) < 25 {
		t.Fatalf("only %d tables read from SQLite", len(want))
	}
	for table, w := range want {
		g, ok := got[table]
		if !ok {
			t.Errorf("PostgreSQL has no table %s", table)
			continue
		}
		if !slices.Equal(w, g) {
			t.Errorf("table %s differs:\nSQLite     %q\nPostgreSQL %q", table, w, g)
		}
	}
	for table := range got {
		if _, ok := want[table]; !ok && !postgresOnly[table] {
			t.Errorf("PostgreSQL has a table %s that SQLite does not", table)
		}
	}

	// The audit trail is append-only on PostgreSQL too.
	if _, err := pdb.Exec(`INSERT INTO audits (at, action, outcome, hash) VALUES (1, 'x', 'ok', '\x00')`); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`UPDATE audits SET action = 'y'`, `DELETE FROM audits`, `TRUNCATE audits`} {
		if _, err := pdb.Exec(q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: %v, want it refused", q, err)
		}
	}
	// Emails are unique whatever their case, as SQLite's NOCASE makes them.
	pdb.Exec(`INSERT INTO actors (id, type, display_name, created_at, updated_at) VALUES (1, 'user', 'A', 0, 0), (2, 'user', 'B', 0, 0)`)
	if _, err := pdb.Exec(`INSERT INTO users (actor_id, email, password_hash, digest_ha1) VALUES (1, 'Ana@example.org', '', '\x00')`); err != nil {
		t.Fatal(err)
	}
	if _, err := pdb.Exec(`INSERT INTO users (actor_id, email, password_hash, digest_ha1) VALUES (2, 'ana@EXAMPLE.org', '', '\x00')`); err == nil {
		t.Error("two users with one email in different cases")
	}
}

// Nodes that start together migrate once: the others wait for the lock
// and find the work done.
func TestPostgresMigratesOnceFromManyNodes(t *testing.T) {
	onFirstPass(t)
	ctx := context.Background()
	pg := pgtest.Start(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := storage.OpenPostgres(ctx, pg.DSN())
			if err == nil {
				db.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	db, err := storage.OpenPostgres(ctx, pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	files, err := fs.Glob(migrations.Postgres, "*.sql")
	if err != nil || len(files) < 2 {
		t.Fatalf("PostgreSQL's migrations: %v %v", files, err)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil || n != len(files) {
		t.Fatalf("%d migrations recorded (%v), want %d", n, err, len(files))
	}
}

// onFirstPass runs a test that starts its own cluster once, on the first
// (SQLite) pass.
func onFirstPass(t *testing.T) {
	if pgtest.Backend() == "postgres" {
		t.Skip("ran on the first pass: it starts its own cluster")
	}
}

// postgresOnly are PostgreSQL's own tables: the data directory a database
// belongs to (on SQLite the database is in the directory), and what nodes
// share that SQLite's one process keeps in memory (slot counters, Digest
// nonce uses, failed logins).
var postgresOnly = map[string]bool{"deployment": true, "key_slot_counters": true, "digest_nonces": true, "login_strikes": true, "login_known": true, "nodes": true}

// sealedInText are the columns SQLite declares TEXT that hold sealed bytes
// (SQLite keeps whatever it is given); PostgreSQL declares them BYTEA.
var sealedInText = map[string]bool{"submissions.device_id": true, "submission_versions.device_id": true, "consent_records.device_id": true}

// A column as both schemas are compared: name, type (integer, text or
// bytes), NOT NULL; then the table's keys.
func sqliteSchema(t *testing.T, db *sql.DB) map[string][]string {
	t.Helper()
	tables := strings.Fields(queryStrings(t, db, `SELECT group_concat(name, ' ') FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name != 'schema_migrations'`)[0])
	out := map[string][]string{}
	for _, table := range tables {
		var cols []string
		var pk []string
		rows, err := db.Query(`SELECT name, type, "notnull", pk FROM pragma_table_info(?) ORDER BY cid`, table)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var name, typ string
			var notNull, pkPos int
			rows.Scan(&name, &typ, &notNull, &pkPos)
			class := map[string]string{"INTEGER": "int", "TEXT": "text", "BLOB": "bytes"}[strings.ToUpper(typ)]
			if sealedInText[table+"."+name] {
				class = "bytes"
			}
			if pkPos > 0 {
				notNull = 1 // a primary key is never NULL (SQLite's INTEGER PRIMARY KEY says 0)
				pk = append(pk, name)
			}
			cols = append(cols, fmt.Sprintf("%s %s null=%v", name, class, notNull == 0))
		}
		rows.Close()
		slices.Sort(cols)
		keys := []string{"pk(" + strings.Join(pk, ",") + ")"}
		// Unique keys: constraints (autoindexes) and unique indexes, with
		// their WHERE for partial ones.
		idx, err := db.Query(`SELECT il.name, il.origin, il.partial, coalesce(m.sql, '') FROM pragma_index_list(?) il LEFT JOIN sqlite_master m ON m.name = il.name WHERE il."unique" = 1`, table)
		if err != nil {
			t.Fatal(err)
		}
		type index struct{ name, origin, def string }
		var list []index
		for idx.Next() {
			var ix index
			var partial int
			idx.Scan(&ix.name, &ix.origin, &partial, &ix.def)
			list = append(list, ix)
		}
		idx.Close()
		for _, ix := range list {
			if ix.origin == "pk" {
				continue
			}
			cols := strings.Join(queryStrings(t, db, `SELECT name FROM pragma_index_info(?) ORDER BY seqno`, ix.name), ",")
			keys = append(keys, "unique("+cols+")"+whereOf(ix.def))
		}
		slices.Sort(keys[1:])
		out[table] = append(cols, keys...)
	}
	return out
}

func postgresSchema(t *testing.T, db *sql.DB) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	rows, err := db.Query(`SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns
		WHERE table_schema = 'public' AND table_name != 'schema_migrations'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var table, name, typ, nullable string
		rows.Scan(&table, &name, &typ, &nullable)
		class := map[string]string{"bigint": "int", "integer": "int", "text": "text", "bytea": "bytes"}[typ]
		out[table] = append(out[table], fmt.Sprintf("%s %s null=%v", name, class, nullable == "YES"))
	}
	rows.Close()
	for table := range out {
		slices.Sort(out[table])
		pk := queryStrings(t, db, `SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
			WHERE i.indrelid = $1::regclass AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)`, table)
		keys := []string{"pk(" + strings.Join(pk, ",") + ")"}
		for _, def := range queryStrings(t, db, `SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = $1::regclass AND i.indisunique AND NOT i.indisprimary`, table) {
			m := indexCols.FindStringSubmatch(def)
			if m == nil {
				t.Fatalf("cannot read index %s", def)
			}
			cols := strings.ReplaceAll(strings.ReplaceAll(m[1], " ", ""), "lower(email)", "email")
			keys = append(keys, "unique("+cols+")"+whereOf(def))
		}
		slices.Sort(keys[1:])
		out[table] = append(out[table], keys...)
	}
	return out
}

var (
	indexCols = regexp.MustCompile(`USING \w+ \((.*?)\)(?: WHERE|$)`)
	whereRe   = regexp.MustCompile(`(?i)\bWHERE\s+\(?(.*?)\)?$`)
)

// whereOf is a partial index's condition, spelled the same for both.
func whereOf(def string) string {
	m := whereRe.FindStringSubmatch(strings.TrimSpace(def))
	if m == nil {
		return ""
	}
	return " where " + strings.ToLower(strings.Join(strings.Fields(m[1]), " "))
}

func queryStrings(t *testing.T, db *sql.DB, q string, args ...any) []string {
	t.Helper()
	rows, err := db.Query(q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// Without an object store, the keys are one data directory's, so a
// database belongs to that directory: it opens it again (an admin command
// beside the server); another directory is refused before it writes
// anything, and so is a node with another master key.
func TestPostgresBelongsToOneDataDirectory(t *testing.T) {
	onFirstPass(t)
	ctx := context.Background()
	pg := pgtest.Start(t)
	a, b := t.TempDir(), t.TempDir()
	key := storage.KeySource{Value: strings.Repeat("5a", 32)}
	st, err := storage.OpenDir(ctx, a, storage.Options{Database: pg.DSN(), Key: key})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Projects.Create(ctx, "Flood response", ""); err != nil {
		t.Fatal(err)
	}
	again, err := storage.OpenDir(ctx, a, storage.Options{Database: pg.DSN(), Key: key})
	if err != nil {
		t.Fatalf("the same directory again: %v", err)
	}
	if ps, err := again.Projects.List(ctx, func(int64) bool { return true }); err != nil || len(ps) != 1 {
		t.Fatalf("projects seen by the second opening: %d %v", len(ps), err)
	}
	again.Close()
	if other, err := storage.OpenDir(ctx, b, storage.Options{Database: pg.DSN(), Key: key}); err == nil || !strings.Contains(err.Error(), "keeps its keys in another node's data directory") {
		if other != nil {
			other.Close()
		}
		t.Fatalf("another data directory on the same database: %v", err)
	}
	if other, err := storage.OpenDir(ctx, t.TempDir(), storage.Options{Database: pg.DSN()}); err == nil || !strings.Contains(err.Error(), "same master key") {
		if other != nil {
			other.Close()
		}
		t.Fatalf("another master key on the same database: %v", err)
	}
}

// Two nodes on one database (here two stores in one process, sharing the
// data directory's key store as nodes will share theirs): the same
// instance sent to both at once is stored once, a different one under the
// same instanceID is refused as a conflict, submissions arriving on both
// each get a key of their own (every one opens), and the audit trail stays
// one chain with no fork and no gap.
func TestPostgresTwoNodes(t *testing.T) {
	onFirstPass(t)
	pg := pgtest.Start(t)
	dir := t.TempDir()
	var nodes [2]*storage.Store
	for i := range nodes {
		st, err := storage.OpenDir(ctx, dir, storage.Options{Database: pg.DSN()})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		nodes[i] = st
	}
	pr, f := filled(t, nodes[0], 0, "NODES", time.Now().AddDate(1, 0, 0))
	u, err := nodes[0].Users.Create(ctx, "nodes@example.org", "a long enough password", "", false)
	if err != nil {
		t.Fatal(err)
	}
	incoming := func(id, name string) *storage.Incoming {
		xml := fmt.Sprintf(`<d id="d" version="1"><name>%s</name><meta><instanceID>%s</instanceID></meta></d>`, name, id)
		return &storage.Incoming{ProjectID: pr.ID, FormID: f.ID, FormVersionID: f.CurrentVersionID, InstanceID: id, XML: []byte(xml),
			SubmitterID: u.ID, DeviceID: "collect:nodes", Audit: &haven.AuditEvent{Action: "submission.create", ActorID: u.ID, ProjectID: pr.ID, Object: id}}
	}
	const same, own = 30, 40
	var wg sync.WaitGroup
	type outcome struct {
		res *storage.IngestResult
		err error
	}
	both := make([][2]outcome, same)
	conflicts := make([][2]outcome, same)
	for i := range same {
		for n := range nodes {
			wg.Add(2)
			go func() {
				defer wg.Done()
				r, err := nodes[n].Submissions.Ingest(ctx, incoming(fmt.Sprintf("uuid:same-%d", i), "Same"))
				both[i][n] = outcome{r, err}
			}()
			go func() {
				defer wg.Done()
				r, err := nodes[n].Submissions.Ingest(ctx, incoming(fmt.Sprintf("uuid:clash-%d", i), fmt.Sprintf("From node %d", n)))
				conflicts[i][n] = outcome{r, err}
			}()
		}
	}
	for n := range nodes {
		for i := range own {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := nodes[n].Submissions.Ingest(ctx, incoming(fmt.Sprintf("uuid:own-%d-%d", n, i), fmt.Sprintf("Own %d %d", n, i))); err != nil {
					t.Errorf("node %d, submission %d: %v", n, i, err)
				}
			}()
		}
	}
	wg.Wait()
	for i := range same {
		a, b := both[i][0], both[i][1]
		if a.err != nil || b.err != nil || a.res.Created == b.res.Created || a.res.Duplicate == b.res.Duplicate {
			t.Fatalf("the same instance on both nodes: %+v %v / %+v %v", a.res, a.err, b.res, b.err)
		}
		a, b = conflicts[i][0], conflicts[i][1]
		if (a.err == nil) == (b.err == nil) {
			t.Fatalf("two different submissions under one instanceID: %v / %v", a.err, b.err)
		}
		if err := cmp.Or(a.err, b.err); haven.ErrorCode(err) != haven.ECONFLICT {
			t.Fatalf("the second of two different submissions: %v, want a conflict", err)
		}
	}
	subs, total, err := nodes[1].Submissions.List(ctx, pr.ID, f.ID, -1, 0)
	if err != nil || total != 2*same+2*own || len(subs) != total {
		t.Fatalf("%d submissions listed of %d (%v), want %d, each opening with its own key", len(subs), total, err, 2*same+2*own)
	}
	for _, sub := range subs {
		x, err := nodes[0].Submissions.XML(ctx, pr.ID, &sub.Current)
		if err != nil || !strings.Contains(string(x), sub.InstanceID) {
			t.Fatalf("%s does not open: %v", sub.InstanceID, err)
		}
	}
	var slots, distinct int
	nodes[0].DB.QueryRow(ctx, `SELECT count(key_slot), count(DISTINCT key_slot) FROM submissions`).Scan(&slots, &distinct)
	if slots != total || distinct != slots {
		t.Fatalf("%d submission keys in %d slots, want each in its own", slots, distinct)
	}
	// A token revoked on one node stops working on the other at once, not
	// when the other's cached answer expires (5 s).
	au, err := nodes[0].Users.CreateAppUser(ctx, pr.ID, "Tablet")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[1].Users.AppUserPrincipal(ctx, *au.Token); err != nil {
		t.Fatal(err)
	}
	if err := nodes[0].Users.RevokeAppUser(ctx, pr.ID, au.ID); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	for {
		if _, err := nodes[1].Users.AppUserPrincipal(ctx, *au.Token); err != nil {
			break
		}
		if time.Since(revoked) > 2*time.Second {
			t.Fatal("the other node still accepts a revoked token after 2 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A Digest nonce used on one node cannot be replayed on the other: the
	// same count, or another address, is refused; the next count from the
	// same device holds.
	issued, forget := time.Now(), time.Now().Add(-5*time.Minute)
	for _, c := range []struct {
		node int
		nc   uint64
		addr string
		want bool
	}{{0, 1, "10.0.0.7", true}, {1, 1, "10.0.0.7", false}, {1, 2, "10.0.0.9", false}, {1, 2, "10.0.0.7", true}, {0, 2, "10.0.0.7", false}} {
		if ok, err := nodes[c.node].DB.UseNonce(ctx, "nonce-1", issued, c.nc, c.addr, forget); err != nil || ok != c.want {
			t.Fatalf("nonce use nc=%d from %s on node %d: %v %v, want %v", c.nc, c.addr, c.node, ok, err, c.want)
		}
	}
	// Audited writes from both nodes at once chain one after another.
	for n := range nodes {
		for i := range own {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := nodes[n].DB.Write(ctx, func(tx *storage.Tx) error {
					return nodes[n].Audit.Append(tx, &haven.AuditEvent{Action: "user.login", Object: fmt.Sprintf("node %d, %d", n, i)})
				}); err != nil {
					t.Errorf("an audited write on node %d: %v", n, err)
				}
			}()
		}
	}
	wg.Wait()
	v, err := nodes[0].VerifyAudit(ctx)
	if err != nil || !v.OK {
		t.Fatalf("the audit chain after two nodes wrote it: %+v %v", v, err)
	}
	if want := int64(2*same + same + 4*own); v.Events < want { // a resend is audited; a refused conflict rolls back whole
		t.Fatalf("%d audit events, want at least %d", v.Events, want)
	}
}

// One node runs the background work; when it goes, the next to ask takes
// over.
func TestPostgresOneLeader(t *testing.T) {
	onFirstPass(t)
	pg := pgtest.Start(t)
	dir := t.TempDir()
	a, err := storage.OpenDir(ctx, dir, storage.Options{Database: pg.DSN()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := storage.OpenDir(ctx, dir, storage.Options{Database: pg.DSN()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !a.DB.Leader(ctx) {
		t.Fatal("the first node to ask does not lead")
	}
	if !a.DB.Leader(ctx) {
		t.Fatal("the leader, asking again, no longer leads")
	}
	if b.DB.Leader(ctx) {
		t.Fatal("two leaders")
	}
	a.Close() // as a node that stops or dies: its session ends
	// PostgreSQL ends the session (and frees its lock) a moment after the
	// client goes: the next node to ask within a few seconds leads, as the
	// leader loop asks again.
	took := false
	for i := 0; i < 50 && !took; i++ {
		if took = b.DB.Leader(ctx); !took {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !took {
		t.Fatal("no node took over from the one that left")
	}
}

// A deployment moves from SQLite to PostgreSQL: every record, ids kept,
// checked table by table; stopped halfway and run again it finishes; the
// moved store opens with the same data directory and reads as before.
func TestMoveRecordsToPostgres(t *testing.T) {
	onFirstPass(t)
	dir := t.TempDir()
	st, err := storage.OpenDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	pr, f := filled(t, st, 12, "MOVED", time.Now().AddDate(1, 0, 0))
	if _, err := st.Users.Create(ctx, "lead@example.org", "a long enough password", "Lead", false); err != nil {
		t.Fatal(err)
	}
	before, _, err := st.Submissions.List(ctx, pr.ID, f.ID, -1, 0)
	if err != nil || len(before) != 12 {
		t.Fatalf("%d submissions before (%v)", len(before), err)
	}
	// An entity list and an entity move with them.
	if err := st.Entities.Declare(ctx, pr.ID, f.CurrentVersionID, []storage.ListDecl{{Name: "households", Create: true, LabelTier: haven.Level1,
		Properties: []haven.EntityProperty{{Name: "size", Purpose: "Rations", Sensitivity: haven.Public}}}}); err != nil {
		t.Fatal(err)
	}
	list, err := st.Entities.List(ctx, pr.ID, "households")
	if err != nil {
		t.Fatal(err)
	}
	label := "MOVED-ENTITY"
	noEvent := func(*haven.Entity) *haven.AuditEvent { return nil }
	if _, err := st.Entities.CreateEntities(ctx, list, []storage.APIChange{{UUID: entityUUID(7), Label: &label, Data: map[string]string{"size": "5"}}}, 1, noEvent); err != nil {
		t.Fatal(err)
	}
	st.Close()

	pg := pgtest.Start(t)
	stop, cancel := context.WithCancel(ctx)
	tables := 0
	_, err = storage.MoveRecords(stop, filepath.Join(dir, "haven.db"), pg.DSN(), func(table string, n, total int64) {
		if n == total {
			if tables++; tables == 10 {
				cancel() // stopped halfway through
			}
		}
	})
	if err == nil {
		t.Fatal("a move cut short reported no error")
	}
	moved, err := storage.MoveRecords(ctx, filepath.Join(dir, "haven.db"), pg.DSN(), nil)
	if err != nil {
		t.Fatalf("running the move again: %v", err)
	}
	var copied, rows int64
	for _, m := range moved {
		copied, rows = copied+m.Copied, rows+m.Rows
	}
	if copied == 0 || copied == rows || rows < 60 {
		t.Fatalf("the second run copied %d of %d rows: it should finish what the first began", copied, rows)
	}

	pst, err := storage.OpenDir(ctx, dir, storage.Options{Database: pg.DSN()})
	if err != nil {
		t.Fatal(err)
	}
	defer pst.Close()
	after, _, err := pst.Submissions.List(ctx, pr.ID, f.ID, -1, 0)
	if err != nil || len(after) != len(before) {
		t.Fatalf("%d submissions after the move (%v), want %d", len(after), err, len(before))
	}
	for i, sub := range after {
		x, err := pst.Submissions.XML(ctx, pr.ID, &sub.Current)
		if err != nil || !strings.Contains(string(x), "MOVED-NAME") || sub.InstanceID != before[i].InstanceID || sub.DeviceID != before[i].DeviceID {
			t.Fatalf("submission %s after the move: %v", sub.InstanceID, err)
		}
	}
	if _, err := pst.Users.Authenticate(ctx, "lead@example.org", "a long enough password"); err != nil {
		t.Fatalf("signing in after the move: %v", err)
	}
	if v, err := pst.VerifyAudit(ctx); err != nil || !v.OK {
		t.Fatalf("the audit chain after the move: %+v %v", v, err)
	}
	// New rows take ids after the moved ones.
	p2, err := pst.Projects.Create(ctx, "After the move", "")
	if err != nil || p2.ID <= pr.ID {
		t.Fatalf("a new project after the move: %+v %v", p2, err)
	}
	if e, err := pst.Entities.Get(ctx, list, entityUUID(7), false); err != nil || e.Current.Label != label || e.Current.Data["size"] != "5" {
		t.Fatalf("the entity after the move: %+v %v", e, err)
	}
	if _, err := pst.Entities.CreateEntities(ctx, list, []storage.APIChange{{UUID: entityUUID(8), Label: &label}}, 1, noEvent); err != nil {
		t.Fatalf("a new entity after the move: %v", err)
	}
	pst.Close()

	// And back: the records return to a SQLite file in the same directory
	// (beside the same key store), the new project with them.
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Rename(filepath.Join(dir, "haven.db"+suffix), filepath.Join(dir, "before-the-move.db"+suffix))
	}
	if _, err := storage.MoveRecordsBack(ctx, pg.DSN(), filepath.Join(dir, "haven.db"), nil); err != nil {
		t.Fatalf("moving back to SQLite: %v", err)
	}
	back, err := storage.OpenDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	again, _, err := back.Submissions.List(ctx, pr.ID, f.ID, -1, 0)
	if err != nil || len(again) != len(before) {
		t.Fatalf("%d submissions after moving back (%v), want %d", len(again), err, len(before))
	}
	if x, err := back.Submissions.XML(ctx, pr.ID, &again[0].Current); err != nil || !strings.Contains(string(x), "MOVED-NAME") {
		t.Fatalf("a submission after moving back: %v", err)
	}
	if got, err := back.Projects.Get(ctx, p2.ID); err != nil || got.Name != "After the move" {
		t.Fatalf("the project made on PostgreSQL, back on SQLite: %+v %v", got, err)
	}
	if v, err := back.VerifyAudit(ctx); err != nil || !v.OK {
		t.Fatalf("the audit chain back on SQLite: %+v %v", v, err)
	}
}
