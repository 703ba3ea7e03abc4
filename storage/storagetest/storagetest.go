// Package storagetest helps tests that open data directories.
package storagetest

import (
	"os"
	"testing"
)

// Main runs a package's tests with a configuration folder of their own
// (XDG_CONFIG_HOME), so that the master key files a first start makes
// there stay apart from the user's and are removed afterwards.
func Main(m *testing.M) {
	dir, err := os.MkdirTemp("", "haven-config-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CONFIG_HOME", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
