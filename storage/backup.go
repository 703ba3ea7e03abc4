package storage

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/haven-org/haven"
)

// Backup writes a consistent copy of the data directory into dir (which
// must not exist or be empty): the database as of one moment (VACUUM INTO,
// while Haven keeps running) and the local blob store's objects. Objects in
// an object store are not copied: back the bucket up with its own tools.
//
// The master key and the key store (keys/) are left out on purpose. A
// backup is restored beside the live key store, so a project destroyed after
// the backup was taken stays unreadable in it: its key no longer exists.
// key.json is copied: it opens nothing (it names the master key's file and
// holds a passphrase's salt and a check value), and a restore needs it.
func (s *Store) Backup(ctx context.Context, dir string) (objects int, err error) {
	return s.BackupWithProgress(ctx, dir, nil)
}

// BackupWithProgress is Backup telling progress of each file copied: how
// many files, and their bytes (the database counts as the first).
func (s *Store) BackupWithProgress(ctx context.Context, dir string, progress func(files int, bytes int64)) (objects int, err error) {
	if s.DB.pg {
		return 0, haven.Errorf(haven.EINVALID, "This Haven keeps its records in PostgreSQL: back them up with PostgreSQL's tools (pg_dump, or pgBackRest for point-in-time recovery) and the files with the object store's, as the README's deployment section says.")
	}
	var copied int64
	tell := func(p string) {
		if progress != nil {
			if fi, err := os.Stat(p); err == nil {
				copied += fi.Size()
			}
			progress(objects, copied)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		return 0, fmt.Errorf("the backup folder %s is not empty: give a new or empty folder", dir)
	}
	// The database first: every object its copy records was written before
	// the copy was taken, so the folder walk below finds it (unless it was
	// erased meanwhile, and then it should not be in a backup anyway).
	dbPath := filepath.Join(dir, "haven.db")
	if _, err := s.DB.ckpt.ExecContext(ctx, `VACUUM INTO ?`, dbPath); err != nil {
		return 0, fmt.Errorf("copying the database: %w", err)
	}
	tell(dbPath)
	if err := copyFile(filepath.Join(s.Dir, "key.json"), filepath.Join(dir, "key.json")); err != nil && !os.IsNotExist(err) {
		return 0, err
	}
	src := filepath.Join(s.Dir, "blobs")
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(src, p)
		dst := filepath.Join(dir, "blobs", rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		if err := copyFile(p, dst); err != nil {
			if os.IsNotExist(err) {
				return nil // deleted meanwhile: nothing recorded it any more
			}
			return err
		}
		objects++
		tell(dst)
		return nil
	})
	return objects, err
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
