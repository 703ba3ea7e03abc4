package storage

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"strings"
)

// recordTables are the tables a move copies, parents before the tables that
// refer to them (PostgreSQL checks references as rows arrive).
var recordTables = []string{"actors", "users", "sessions", "projects", "project_keys", "assignments", "field_keys",
	"blobs", "forms", "form_versions", "form_attachments", "form_assignments", "submissions", "submission_versions",
	"submission_attachments", "submission_comments", "consent_records", "consent_refusals", "consent_withdrawals",
	"audits", "legal_holds", "destruction_counts", "destruction_certificates", "subject_index", "subject_objections",
	"subject_erasures", "erased_instances", "clearances", "key_slot_erasures",
	"entity_lists", "entity_properties", "entity_list_forms", "entities", "entity_versions", "entity_queue", "entity_filters"}

// MovedTable is what a move did with one table.
type MovedTable struct {
	Table  string `json:"table"`
	Rows   int64  `json:"rows"`
	Copied int64  `json:"copied"` // by this run; the others were there from an earlier one
	SHA256 string `json:"sha256"` // of every row, in key order, the same on both sides
}

// MoveRecords copies every record of the SQLite database at from into the
// PostgreSQL database at dsn (migrated first), keeping ids, then checks
// that each table holds the same rows on both sides (counts and a hash of
// every value, in key order). It can be stopped and run again: rows
// already copied are left as they are, and the check says whether the two
// agree. Haven must not be running on either while it moves.
func MoveRecords(ctx context.Context, from, dsn string, progress func(table string, n, total int64)) ([]MovedTable, error) {
	src, err := sql.Open("sqlite", "file:"+from+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		return nil, err
	}
	defer src.Close()
	dst, err := OpenPostgres(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer dst.Close()
	moved, err := moveAll(ctx, side{src, false}, side{dst, true}, progress)
	if err == nil {
		// Planner statistics for what was just loaded, before Haven starts
		// on it (autovacuum would take a minute or so).
		_, err = dst.ExecContext(ctx, `ANALYZE`)
	}
	return moved, err
}

// MoveRecordsBack copies every record of the PostgreSQL database at dsn
// into a SQLite database made at to (with Haven's migrations), as
// MoveRecords does the other way: ids kept, each table checked, and a
// stopped move goes on when run again.
func MoveRecordsBack(ctx context.Context, dsn, to string, progress func(table string, n, total int64)) ([]MovedTable, error) {
	made, err := Open(ctx, to) // the schema, by SQLite's own migrations
	if err != nil {
		return nil, err
	}
	made.Close()
	dst, err := sql.Open("sqlite", "file:"+to+"?_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=secure_delete(1)")
	if err != nil {
		return nil, err
	}
	defer dst.Close()
	dst.SetMaxOpenConns(1)
	src, err := OpenPostgres(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	return moveAll(ctx, side{src, true}, side{dst, false}, progress)
}

// side is one database of a move.
type side struct {
	db *sql.DB
	pg bool
}

func moveAll(ctx context.Context, src, dst side, progress func(string, int64, int64)) ([]MovedTable, error) {
	var out []MovedTable
	for _, t := range recordTables {
		m, err := moveTable(ctx, src, dst, t, progress)
		if err != nil {
			return out, fmt.Errorf("moving %s: %w", t, err)
		}
		out = append(out, *m)
	}
	return out, nil
}

// tableColumns are a table's columns in the database moved into, and its
// key columns.
func tableColumns(ctx context.Context, d side, table string) (cols, key []string, err error) {
	if !d.pg {
		rows, err := d.db.QueryContext(ctx, `SELECT name, pk FROM pragma_table_info(?) ORDER BY cid`, table)
		if err != nil {
			return nil, nil, err
		}
		defer rows.Close()
		keyAt := map[int]string{}
		for rows.Next() {
			var c string
			var pk int
			rows.Scan(&c, &pk)
			cols = append(cols, c)
			if pk > 0 {
				keyAt[pk] = c
			}
		}
		for i := 1; i <= len(keyAt); i++ {
			key = append(key, keyAt[i])
		}
		return cols, key, rows.Err()
	}
	if cols, err = queryTexts(ctx, d.db, `SELECT column_name FROM information_schema.columns
		WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position`, table); err != nil {
		return nil, nil, err
	}
	key, err = queryTexts(ctx, d.db, `SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
		WHERE i.indrelid = $1::regclass AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)`, table)
	return cols, key, err
}

// queryTexts is a query's one text column, every row.
func queryTexts(ctx context.Context, db *sql.DB, q string, args ...any) ([]string, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func moveTable(ctx context.Context, src, dst side, table string, progress func(string, int64, int64)) (*MovedTable, error) {
	cols, key, err := tableColumns(ctx, dst, table)
	if err != nil {
		return nil, err
	}
	if len(cols) == 0 || len(key) == 0 {
		return nil, fmt.Errorf("the database moved into has no table %s with a primary key: is its schema Haven's?", table)
	}
	m := &MovedTable{Table: table}
	if err := src.db.QueryRowContext(ctx, `SELECT count(*) FROM `+quote(table)).Scan(&m.Rows); err != nil {
		return nil, err
	}
	list := make([]string, len(cols))
	marks := make([]string, len(cols))
	for i, c := range cols {
		list[i], marks[i] = quote(c), "?"
		if dst.pg {
			marks[i] = fmt.Sprintf("$%d", i+1)
		}
	}
	order := make([]string, len(key))
	for i, k := range key {
		order[i] = quote(k)
	}
	sel := `SELECT ` + strings.Join(list, ", ") + ` FROM ` + quote(table) + ` ORDER BY ` + strings.Join(order, ", ")
	ins := `INSERT INTO ` + quote(table) + ` (` + strings.Join(list, ", ") + `) VALUES (` + strings.Join(marks, ", ") + `) ON CONFLICT DO NOTHING`

	// Copy, a thousand rows to a transaction.
	rows, err := src.db.QueryContext(ctx, sel)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var tx *sql.Tx
	var stmt *sql.Stmt
	var n int64
	commit := func() error {
		if tx == nil {
			return nil
		}
		err := tx.Commit()
		tx, stmt = nil, nil
		return err
	}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		if tx == nil {
			if tx, err = dst.db.BeginTx(ctx, nil); err != nil {
				return nil, err
			}
			if stmt, err = tx.PrepareContext(ctx, ins); err != nil {
				tx.Rollback()
				return nil, err
			}
		}
		res, err := stmt.ExecContext(ctx, vals...)
		if err != nil {
			tx.Rollback()
			return nil, err
		}
		if k, _ := res.RowsAffected(); k > 0 {
			m.Copied++
		}
		if n++; n%1000 == 0 {
			if err := commit(); err != nil {
				return nil, err
			}
			if progress != nil {
				progress(table, n, m.Rows)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	if err := commit(); err != nil {
		return nil, err
	}
	if progress != nil {
		progress(table, n, m.Rows)
	}
	// PostgreSQL's ids go on after the copied ones (SQLite's do by themselves).
	if dst.pg && len(key) == 1 && key[0] == "id" {
		var seq sql.NullString
		if err := dst.db.QueryRowContext(ctx, `SELECT pg_get_serial_sequence($1, 'id')`, table).Scan(&seq); err != nil {
			return nil, err
		}
		if seq.Valid { // an identity (sessions are keyed by their token's id)
			if _, err := dst.db.ExecContext(ctx, `SELECT setval($1, greatest((SELECT max(id) FROM `+quote(table)+`), 1))`, seq.String); err != nil {
				return nil, err
			}
		}
	}
	// The same rows on both sides.
	a, na, err := tableHash(ctx, src.db, sel)
	if err != nil {
		return nil, err
	}
	b, nb, err := tableHash(ctx, dst.db, sel)
	if err != nil {
		return nil, err
	}
	if na != nb || a != b {
		return nil, fmt.Errorf("after the copy, the source has %d rows and the destination %d, and they differ (hashes %.12s, %.12s): the destination held other rows before; move into an empty database", na, nb, a, b)
	}
	m.SHA256 = a
	return m, nil
}

// tableHash hashes every value of every row of a query, typed the same
// whichever database gave it (numbers as integers, text and bytes as bytes).
func tableHash(ctx context.Context, db *sql.DB, q string) (string, int64, error) {
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return "", 0, err
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	h := sha256.New()
	var n int64
	var buf [8]byte
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return "", 0, err
		}
		for _, v := range vals {
			switch v := v.(type) {
			case nil:
				h.Write([]byte{0})
			case int64:
				h.Write([]byte{1})
				binary.BigEndian.PutUint64(buf[:], uint64(v))
				h.Write(buf[:])
			case int32:
				h.Write([]byte{1})
				binary.BigEndian.PutUint64(buf[:], uint64(int64(v)))
				h.Write(buf[:])
			case float64:
				h.Write([]byte{1})
				binary.BigEndian.PutUint64(buf[:], uint64(int64(math.Round(v))))
				h.Write(buf[:])
			case string:
				writeBytes(h, []byte(v), buf[:])
			case []byte:
				writeBytes(h, v, buf[:])
			default:
				return "", 0, fmt.Errorf("a value of type %T", v)
			}
		}
		n++
	}
	return hex.EncodeToString(h.Sum(nil)), n, rows.Err()
}

func writeBytes(h interface{ Write([]byte) (int, error) }, b, buf []byte) {
	h.Write([]byte{2})
	binary.BigEndian.PutUint64(buf, uint64(len(b)))
	h.Write(buf)
	h.Write(b)
}

func quote(name string) string { return `"` + strings.ReplaceAll(name, `"`, `""`) + `"` }
