package storage

import (
	"os"

	"golang.org/x/sys/unix"
)

// haveSyncfs: Linux flushes a whole file system in one call.
const haveSyncfs = true

func syncfs(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

// datasync flushes a file's data, and its metadata only where reading the
// data back needs it (fdatasync): for a file overwritten in place, no
// journal commit.
func datasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
