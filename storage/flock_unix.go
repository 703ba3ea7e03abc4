//go:build unix

package storage

import (
	"os"
	"syscall"
)

// lockFile holds an exclusive lock on f against other processes (and other
// open descriptions of the file in this one) until unlock is called.
func lockFile(f *os.File) (unlock func(), err error) {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return nil, err
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }, nil
}
