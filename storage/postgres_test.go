package storage_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

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
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d migrations recorded (%v), want 2", n, err)
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
// belongs to (on SQLite the database is in the directory).
var postgresOnly = map[string]bool{"deployment": true}

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

// While key stores are a node's own, a database belongs to one data
// directory: that directory opens it again (an admin command beside the
// server), another is refused before it writes anything.
func TestPostgresBelongsToOneDataDirectory(t *testing.T) {
	onFirstPass(t)
	ctx := context.Background()
	pg := pgtest.Start(t)
	a, b := t.TempDir(), t.TempDir()
	st, err := storage.OpenDir(ctx, a, storage.Options{Database: pg.DSN()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Projects.Create(ctx, "Flood response", ""); err != nil {
		t.Fatal(err)
	}
	again, err := storage.OpenDir(ctx, a, storage.Options{Database: pg.DSN()})
	if err != nil {
		t.Fatalf("the same directory again: %v", err)
	}
	if ps, err := again.Projects.List(ctx, func(int64) bool { return true }); err != nil || len(ps) != 1 {
		t.Fatalf("projects seen by the second opening: %d %v", len(ps), err)
	}
	again.Close()
	if other, err := storage.OpenDir(ctx, b, storage.Options{Database: pg.DSN()}); err == nil || !strings.Contains(err.Error(), "belongs to another Haven data directory") {
		if other != nil {
			other.Close()
		}
		t.Fatalf("another data directory on the same database: %v", err)
	}
}
