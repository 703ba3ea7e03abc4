//go:build unix

package main

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"

	"github.com/haven-org/haven"
)

// serveLock keeps a second `haven serve` off a data directory whose records
// are in its SQLite file: two servers would count submission-key slots
// apart. (On PostgreSQL several nodes share a directory: they count in the
// database.) The lock goes with the process, however it ends.
func serveLock(dir string) (release func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, "serve.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			abs, _ := filepath.Abs(dir)
			return nil, haven.Errorf(haven.ECONFLICT, "Another haven serve is already using the data directory %s: stop it first, or give this one another --data. (Several servers on one directory need --database postgres://...)", abs)
		}
		return nil, err
	}
	return func() { f.Close() }, nil
}
