// Package migrations holds Haven's numbered SQL migrations, embedded in the
// binary. storage.Open applies the ones a database has not seen, in order,
// each in its own transaction.
package migrations

import "embed"

// FS holds the migrations, named NNNN_what.sql.
//
//go:embed *.sql
var FS embed.FS
