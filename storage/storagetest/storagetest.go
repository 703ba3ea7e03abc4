// Package storagetest helps tests that open data directories.
package storagetest

import (
	"os"
	"testing"

	"github.com/haven-org/haven/storage/pgtest"
)

// Main runs a package's tests with a configuration folder of their own
// (XDG_CONFIG_HOME), so that the master key files a first start makes
// there stay apart from the user's and are removed afterwards.
func Main(m *testing.M) {
	os.Exit(withConfig(m.Run))
}

// MainBoth is Main for packages whose tests run on both stores: on SQLite,
// then again on PostgreSQL (pgtest.RunBoth), each pass opening its data
// directories with pgtest.Database.
func MainBoth(m *testing.M) {
	os.Exit(withConfig(func() int { return pgtest.RunBoth(m) }))
}

func withConfig(run func() int) int {
	dir, err := os.MkdirTemp("", "haven-config-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CONFIG_HOME", dir)
	code := run()
	os.RemoveAll(dir)
	return code
}
