package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
)

// s3Flags adds the object storage flags to fs; the returned function gives
// the configuration, or nil when no endpoint is set.
func s3Flags(fs *flag.FlagSet) func() *storage.S3Config {
	var c storage.S3Config
	fs.StringVar(&c.Endpoint, "s3-endpoint", os.Getenv("HAVEN_S3_ENDPOINT"), "object storage (MinIO, S3) host:port; HAVEN_S3_ENDPOINT")
	fs.StringVar(&c.Bucket, "s3-bucket", envOr("HAVEN_S3_BUCKET", "haven"), "bucket, created if missing; HAVEN_S3_BUCKET")
	fs.StringVar(&c.AccessKey, "s3-access-key", os.Getenv("HAVEN_S3_ACCESS_KEY"), "access key; HAVEN_S3_ACCESS_KEY")
	fs.StringVar(&c.SecretKey, "s3-secret-key", os.Getenv("HAVEN_S3_SECRET_KEY"), "secret key; HAVEN_S3_SECRET_KEY")
	fs.BoolVar(&c.TLS, "s3-tls", os.Getenv("HAVEN_S3_TLS") == "true", "use TLS to reach the object storage; HAVEN_S3_TLS=true")
	fs.StringVar(&c.Region, "s3-region", os.Getenv("HAVEN_S3_REGION"), "region, if the object storage needs one; HAVEN_S3_REGION")
	fs.StringVar(&c.KeyBucket, "s3-key-bucket", os.Getenv("HAVEN_S3_KEY_BUCKET"),
		"with --database: the bucket of the key store all nodes share, never backed up with the files (default: the bucket's name and -keys); HAVEN_S3_KEY_BUCKET")
	return func() *storage.S3Config {
		if c.Endpoint == "" {
			return nil
		}
		return &c
	}
}

// s3FromEnv is the object store the environment names (HAVEN_S3_*), for
// commands without the flags: on a deployment of several nodes, admin
// commands must reach the key store the nodes share.
func s3FromEnv() *storage.S3Config {
	return s3Flags(flag.NewFlagSet("env", flag.ContinueOnError))()
}

// gcGrace is how old an unrecorded object must be before the garbage
// collector removes it: longer than any upload can take.
const gcGrace = 24 * time.Hour

// collectGarbage runs the blob garbage collector every hour until ctx ends.
func collectGarbage(ctx context.Context, st *storage.Store, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Hour):
		}
		if !st.DB.Leader(ctx) {
			continue // another node sharing the database collects
		}
		n, err := st.Blobs.CollectGarbage(ctx, gcGrace)
		if err != nil {
			log.Warn("garbage collection of stored files", "err", err)
		} else if n > 0 {
			log.Info("garbage collection removed files no record refers to", "removed", n)
		}
	}
}

const storageUsage = `haven storage: the blob store (attachments and form media).

  haven storage migrate --to s3|local [--s3-endpoint ... flags] [--data DIR]
      move every stored file to the object store, or back to the data directory;
      safe to stop and run again
  haven storage migrate --to postgres://user:password@host/db [--data DIR]
      copy every record from the data directory's SQLite database into an empty
      PostgreSQL database (ids kept, each table checked by count and hash); safe
      to stop and run again; stop Haven first, then start it with --database
  haven storage migrate --to sqlite --database postgres://... [--data DIR] [--s3-... flags]
      and back: copy the records from PostgreSQL into a new haven.db in the data
      directory, checked the same way (keys kept on the object store by several
      nodes come into the data directory too: give its settings); then start
      Haven without --database
  haven storage gc [--grace 24h] [--s3-endpoint ... flags] [--data DIR]
      remove stored files that no record refers to (left by crashes), older than --grace
`

func storageCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "migrate" && args[0] != "gc") {
		fmt.Fprint(stderr, storageUsage)
		return haven.Errorf(haven.EINVALID, "name a storage command: migrate or gc.")
	}
	fs, data := flags("storage "+args[0], stderr)
	s3 := s3Flags(fs)
	to := fs.String("to", "", "where to move the files: s3 or local")
	grace := fs.Duration("grace", gcGrace, "how old an unrecorded file must be to be removed")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if args[0] == "migrate" && (strings.HasPrefix(*to, "postgres://") || strings.HasPrefix(*to, "postgresql://")) {
		return moveRecords(ctx, *data.dir, *to, stdout, stderr)
	}
	if args[0] == "migrate" && *to == "sqlite" {
		return moveRecordsBack(ctx, *data.dir, *data.database, s3(), stdout, stderr)
	}
	st, err := data.openExisting(ctx, storage.Options{S3: s3()})
	if err != nil {
		return err
	}
	defer st.Close()
	if args[0] == "gc" {
		n, err := st.Blobs.CollectGarbage(ctx, *grace)
		fmt.Fprintf(stdout, "Removed %d stored files no record refers to.\n", n)
		return err
	}
	if *to != storage.StoreS3 && *to != storage.StoreLocal {
		return haven.Errorf(haven.EINVALID, "say where to move the files (--to s3 or --to local) or the records (--to postgres://..., or --to sqlite with --database).")
	}
	if *to == storage.StoreS3 && s3() == nil {
		return haven.Errorf(haven.EINVALID, "moving files to object storage needs its settings: --s3-endpoint, --s3-bucket, --s3-access-key, --s3-secret-key.")
	}
	// A bar on a terminal; a line every hundred files in a log.
	line := newStatusLine(stderr)
	moved, err := st.Blobs.Migrate(ctx, *to, func(n, total int) {
		if line != nil {
			line.set("moving files to %s: %d of %d (%.0f%%)", *to, n, total, 100*float64(n)/float64(max(total, 1)))
		} else if n%100 == 0 || n == total {
			fmt.Fprintf(stdout, "moved %d of %d\n", n, total)
		}
	})
	line.done()
	if err != nil {
		return fmt.Errorf("after moving %d files (run the command again to go on): %w", moved, err)
	}
	fmt.Fprintf(stdout, "Done: %d files moved to %s.\n", moved, *to)
	return nil
}

// moveRecords copies the data directory's records into PostgreSQL.
func moveRecords(ctx context.Context, dir, dsn string, stdout, stderr io.Writer) error {
	db := filepath.Join(dir, "haven.db")
	if _, err := os.Stat(db); err != nil {
		abs, _ := filepath.Abs(dir)
		return haven.Errorf(haven.ENOTFOUND, "There is no Haven database at %s (no haven.db in it): give the data directory with --data DIR.", abs)
	}
	line := newStatusLine(stderr)
	moved, err := storage.MoveRecords(ctx, db, dsn, func(table string, n, total int64) {
		if line != nil {
			line.set("copying %s: %d of %d", table, n, total)
		}
	})
	line.done()
	if err != nil {
		return fmt.Errorf("%w (what was copied stays: run the command again to go on)", err)
	}
	var rows, copied int64
	for _, m := range moved {
		rows, copied = rows+m.Rows, copied+m.Copied
		fmt.Fprintf(stdout, "%-26s %8d rows  sha256 %.16s\n", m.Table, m.Rows, m.SHA256)
	}
	fmt.Fprintf(stdout, "Done: %d records in %d tables, the same in PostgreSQL (%d copied by this run).\n", rows, len(moved), copied)
	fmt.Fprintf(stdout, "Start Haven with --database (or HAVEN_DATABASE) and the same --data: the key store and files stay there.\n")
	return nil
}

// moveRecordsBack copies the records from PostgreSQL into the data
// directory's SQLite file.
func moveRecordsBack(ctx context.Context, dir, dsn string, s3 *storage.S3Config, stdout, stderr io.Writer) error {
	if dsn == "" {
		return haven.Errorf(haven.EINVALID, "say which PostgreSQL database to move the records from: --database postgres://... (or HAVEN_DATABASE).")
	}
	if _, err := os.Stat(filepath.Join(dir, "keys")); err != nil {
		abs, _ := filepath.Abs(dir)
		return haven.Errorf(haven.ENOTFOUND, "There is no Haven data directory at %s (no key store in it): give the one Haven runs with, --data DIR.", abs)
	}
	db := filepath.Join(dir, "haven.db")
	if _, err := os.Stat(db); err == nil {
		return haven.Errorf(haven.ECONFLICT, "%s already exists: move it away first (the records go into a new file), then run this again.", db)
	}
	// Keys kept on the object store (several nodes) come into the folder
	// first: records without their keys would open nothing.
	keys, err := storage.CopyKeysDown(ctx, dsn, s3, dir)
	if err != nil {
		return err
	}
	if keys > 0 {
		fmt.Fprintf(stdout, "Copied %d project keys and their submission keys from the key bucket into %s.\n", keys, filepath.Join(dir, "keys"))
	}
	line := newStatusLine(stderr)
	moved, err := storage.MoveRecordsBack(ctx, dsn, db, func(table string, n, total int64) {
		if line != nil {
			line.set("copying %s: %d of %d", table, n, total)
		}
	})
	line.done()
	if err != nil {
		return fmt.Errorf("%w (what was copied stays: run the command again to go on)", err)
	}
	var rows int64
	for _, m := range moved {
		rows += m.Rows
		fmt.Fprintf(stdout, "%-26s %8d rows  sha256 %.16s\n", m.Table, m.Rows, m.SHA256)
	}
	fmt.Fprintf(stdout, "Done: %d records in %d tables, the same in %s. Start Haven without --database.\n", rows, len(moved), db)
	return nil
}
