package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	gosync "sync"
	"time"
)

// BlobStore keeps opaque objects by name. The objects it is given are already
// encrypted; it never sees a plaintext byte. An object Put is durable once
// Sync has returned after it (a store whose Put is durable by itself, like an
// object store, has nothing to do in Sync).
type BlobStore interface {
	Put(ctx context.Context, name string, r io.Reader) (int64, error)
	Sync(ctx context.Context) error
	Open(ctx context.Context, name string) (io.ReadCloser, error)
	Delete(ctx context.Context, name string) error
	// List calls fn with every object's name and time of writing.
	List(ctx context.Context, fn func(name string, written time.Time) error) error
}

// LocalStore is the embedded default BlobStore: one file per object below a
// directory. Put writes a file without waiting for the disk; Sync makes every
// file written so far durable at once (one syncfs on Linux), so a batch of
// submissions costs one flush, not two per file. Large files are flushed as
// they stream, so Sync never has much left to write.
type LocalStore struct {
	Dir string

	mu      gosync.Mutex
	pending map[string]bool // folders with files written since the last Sync (where syncfs is unavailable: the files too)
}

// syncEvery is how much of a large file is written before it is flushed.
const syncEvery = 8 << 20

// NewLocalStore prepares dir and removes temporary files a crash left behind.
func NewLocalStore(dir string) (*LocalStore, error) {
	if err := os.MkdirAll(filepath.Join(dir, ".tmp"), 0o700); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(dir, ".tmp"))
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		os.Remove(filepath.Join(dir, ".tmp", e.Name()))
	}
	return &LocalStore{Dir: dir, pending: map[string]bool{}}, nil
}

func (s *LocalStore) path(name string) (string, error) {
	// Names are made by Haven (hex), but check anyway: nothing may escape Dir.
	if len(name) < 3 || name != filepath.Base(name) || strings.HasPrefix(name, ".") {
		return "", fmt.Errorf("invalid object name %q", name)
	}
	return filepath.Join(s.Dir, name[:2], name), nil
}

// Put writes r to a new object. The name is random and unknown to anyone
// until the database records it, so the file is written in place: a crash
// leaves at most an unrecorded file, never a recorded partial one.
func (s *LocalStore) Put(ctx context.Context, name string, r io.Reader) (int64, error) {
	final, err := s.path(name)
	if err != nil {
		return 0, err
	}
	dir := filepath.Dir(final)
	f, err := os.OpenFile(final, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrNotExist) {
		if err = os.MkdirAll(dir, 0o700); err == nil {
			s.mark(filepath.Dir(dir))
			f, err = os.OpenFile(final, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		}
	}
	if err != nil {
		return 0, err
	}
	n, err := copyFlushing(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(final)
		return 0, err
	}
	s.mark(dir)
	if !haveSyncfs {
		s.mark(final)
	}
	return n, nil
}

// copyFlushing copies r to f, flushing f to disk every syncEvery bytes and at
// the end of a large file.
func copyFlushing(f *os.File, r io.Reader) (int64, error) {
	var total int64
	for {
		n, err := io.Copy(f, io.LimitReader(r, syncEvery))
		total += n
		if err != nil {
			return total, err
		}
		if n < syncEvery {
			if total >= syncEvery {
				return total, f.Sync()
			}
			return total, nil
		}
		if err := f.Sync(); err != nil {
			return total, err
		}
	}
}

func (s *LocalStore) mark(path string) {
	s.mu.Lock()
	s.pending[path] = true
	s.mu.Unlock()
}

// Sync makes every object written so far durable, with its folder entry.
func (s *LocalStore) Sync(ctx context.Context) error {
	s.mu.Lock()
	pending := s.pending
	s.pending = map[string]bool{}
	s.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	err := func() error {
		if haveSyncfs {
			return syncfs(s.Dir)
		}
		for p := range pending {
			if err := syncDir(p); err != nil {
				return err
			}
		}
		return nil
	}()
	if err != nil {
		// Keep them pending: the next Sync tries again.
		s.mu.Lock()
		for p := range pending {
			s.pending[p] = true
		}
		s.mu.Unlock()
	}
	return err
}

// Open opens the object name for reading.
func (s *LocalStore) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	p, err := s.path(name)
	if err != nil {
		return nil, err
	}
	return os.Open(p)
}

// List calls fn with every object's name and time of writing.
func (s *LocalStore) List(ctx context.Context, fn func(name string, written time.Time) error) error {
	return filepath.WalkDir(s.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".tmp" {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		return fn(d.Name(), fi.ModTime())
	})
}

// Delete removes the object name; a missing object is not an error.
func (s *LocalStore) Delete(ctx context.Context, name string) error {
	p, err := s.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
