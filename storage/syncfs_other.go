//go:build !linux

package storage

import "os"

// haveSyncfs: elsewhere, files and folders are flushed one by one.
const haveSyncfs = false

func syncfs(dir string) error { return nil }

// datasync flushes a file (fsync where fdatasync is not offered).
func datasync(f *os.File) error { return f.Sync() }
