// Package migrations holds Haven's numbered SQL migrations, embedded in the
// binary, one set per database: storage applies the ones a database has not
// seen, in order, each in its own transaction.
package migrations

import (
	"embed"
	"io/fs"
)

// FS holds SQLite's migrations, named NNNN_what.sql.
//
//go:embed *.sql
var FS embed.FS

//go:embed postgres/*.sql
var postgres embed.FS

// Postgres holds PostgreSQL's migrations, named as FS's (their numbers are
// their own: 0001 there builds what SQLite's 0001-0012 built).
var Postgres = must(fs.Sub(postgres, "postgres"))

func must(f fs.FS, err error) fs.FS {
	if err != nil {
		panic(err)
	}
	return f
}
