// Package pgtest runs a real, throwaway PostgreSQL cluster for Haven's
// tests: it finds Debian's PostgreSQL binaries (HAVEN_PG_BIN, or
// /usr/lib/postgresql/*/bin, installing the postgresql package with apt-get
// when they are missing), makes a cluster with initdb in a temporary
// directory, starts it on a Unix socket there (no TCP port, nothing shared
// with other runs) and removes it after the test. If PostgreSQL cannot be
// had, the tests fail: they never skip.
package pgtest

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/haven-org/haven/storage/miniotest"
)

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// BinDir returns the folder holding initdb, pg_ctl and postgres, installing
// Debian's postgresql package the first time if needed.
func BinDir() (string, error) {
	binOnce.Do(func() { binDir, binErr = findBin() })
	return binDir, binErr
}

func findBin() (string, error) {
	if d := os.Getenv("HAVEN_PG_BIN"); d != "" {
		return d, nil
	}
	if d := newest(); d != "" {
		return d, nil
	}
	miniotest.Announce("PostgreSQL is missing: installing Debian's postgresql package with apt-get, once (a minute or two)")
	install := exec.Command("apt-get", "install", "-y", "--no-install-recommends", "postgresql")
	if os.Getuid() != 0 {
		install = exec.Command("sudo", "-n", "apt-get", "install", "-y", "--no-install-recommends", "postgresql")
	}
	install.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := install.CombinedOutput(); err != nil {
		return "", fmt.Errorf("the PostgreSQL tests need PostgreSQL, and installing it failed (%v): apt-get install postgresql, or set HAVEN_PG_BIN to a folder holding initdb and pg_ctl\n%s", err, out)
	}
	if d := newest(); d != "" {
		return d, nil
	}
	return "", errors.New("the postgresql package installed no initdb under /usr/lib/postgresql: set HAVEN_PG_BIN")
}

// newest is the bin folder of the newest PostgreSQL Debian installed.
func newest() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(dirs[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(dirs[j]))))
		return vi > vj
	})
	if len(dirs) == 0 {
		return ""
	}
	return filepath.Dir(dirs[0])
}

// Cluster is a running throwaway cluster.
type Cluster struct {
	Dir    string // the cluster's data and socket folder
	Socket string // the folder holding the Unix socket
	Port   int    // the socket's number (its file is .s.PGSQL.PORT)
	bin    string
	asUser string // the user the server runs as ("" for the current one)
}

// Start makes and starts a cluster for the test, stopped and removed when
// the test ends. Each call is a new cluster.
func Start(tb testing.TB) *Cluster {
	tb.Helper()
	c, err := start(tb.TempDir())
	if err != nil {
		tb.Fatalf("starting PostgreSQL: %v", err)
	}
	tb.Cleanup(c.stop)
	return c
}

// runAs is the user PostgreSQL runs as: it refuses to run as root, so
// under root it runs as Debian's postgres user.
func runAs() (string, error) {
	if os.Getuid() != 0 {
		return "", nil
	}
	if _, err := user.Lookup("postgres"); err != nil {
		return "", errors.New("the tests run as root and there is no postgres user to run PostgreSQL as (Debian's postgresql package makes one)")
	}
	return "postgres", nil
}

func start(tmp string) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	as, err := runAs()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(tmp, "pg")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if as != "" {
		u, _ := user.Lookup(as)
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		// The server's user must reach its folder through the test's
		// temporary folders (made for the owner alone).
		for d := filepath.Dir(dir); len(d) > len(os.TempDir()); d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o711); err != nil {
				return nil, err
			}
		}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	c := &Cluster{Dir: dir, Socket: dir, Port: 5432, bin: bin, asUser: as}
	data := filepath.Join(dir, "data")
	if out, err := c.run("initdb", "-D", data, "-U", "haven", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"); err != nil {
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	// Only the socket: no TCP port to collide with another run. fsync is
	// on: the tests check what survives a crash.
	opts := fmt.Sprintf("-c listen_addresses='' -c unix_socket_directories=%s -c port=%d -c max_connections=200 -c shared_buffers=32MB -c wal_recycle=off -c min_wal_size=32MB", dir, c.Port)
	if out, err := c.run("pg_ctl", "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		return nil, fmt.Errorf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	if out, err := c.run("createdb", "-h", dir, "-p", strconv.Itoa(c.Port), "-U", "haven", "haven"); err != nil {
		c.stop()
		return nil, fmt.Errorf("createdb: %v\n%s", err, out)
	}
	return c, nil
}

func (c *Cluster) run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	if c.asUser != "" {
		cmd = exec.Command("runuser", append([]string{"-u", c.asUser, "--", filepath.Join(c.bin, name)}, args...)...)
	}
	cmd.Dir = c.Dir
	return cmd.CombinedOutput()
}

// DSN is the URL of the cluster's database for the user haven.
func (c *Cluster) DSN() string { return c.dsn("haven") }

func (c *Cluster) dsn(database string) string {
	q := url.Values{"host": {c.Socket}, "port": {strconv.Itoa(c.Port)}, "sslmode": {"disable"}}
	return "postgres://haven@/" + database + "?" + q.Encode()
}

func (c *Cluster) stop() {
	done := make(chan struct{})
	go func() {
		c.run("pg_ctl", "-D", filepath.Join(c.Dir, "data"), "-m", "fast", "-w", "stop")
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
	}
}

// Backend is the database the tests of this run use: "postgres" when
// HAVEN_TEST_BACKEND says so (RunBoth sets it for the second pass), else
// "sqlite".
func Backend() string {
	if os.Getenv("HAVEN_TEST_BACKEND") == "postgres" {
		return "postgres"
	}
	return "sqlite"
}

// SQLiteOnly skips a test in the PostgreSQL pass, saying why: it checks
// something only the embedded store has (its file, its WAL, its backups).
func SQLiteOnly(tb testing.TB, why string) {
	tb.Helper()
	if Backend() == "postgres" {
		tb.Skip("SQLite only: " + why)
	}
}

var (
	sharedOnce sync.Once
	shared     *Cluster
	sharedErr  error
	dbMu       sync.Mutex
	byDir      = map[string]string{}
)

// Database returns "" on the SQLite pass; on the PostgreSQL pass, the URL
// of a database on the package's cluster (started on first use, stopped by
// RunBoth) for the data directory dir: new and empty the first time, the
// same one when the test opens dir again.
func Database(tb testing.TB, dir string) string {
	tb.Helper()
	if Backend() != "postgres" {
		return ""
	}
	sharedOnce.Do(func() {
		tmp, err := os.MkdirTemp("", "haven-pg-")
		if err != nil {
			sharedErr = err
			return
		}
		shared, sharedErr = start(tmp)
	})
	if sharedErr != nil {
		tb.Fatalf("starting PostgreSQL: %v", sharedErr)
	}
	dbMu.Lock()
	defer dbMu.Unlock()
	if dsn, ok := byDir[dir]; ok {
		return dsn
	}
	name := fmt.Sprintf("t%d", len(byDir)+1)
	if out, err := shared.run("createdb", "-h", shared.Socket, "-p", strconv.Itoa(shared.Port), "-U", "haven", name); err != nil {
		tb.Fatalf("createdb: %v\n%s", err, out)
	}
	byDir[dir] = shared.dsn(name)
	return byDir[dir]
}

// RunBoth runs the package's tests on SQLite, then, when they pass, runs
// the test binary again with HAVEN_TEST_BACKEND=postgres, so one go test
// covers both stores. Use it as TestMain's body: os.Exit(pgtest.RunBoth(m)).
func RunBoth(m *testing.M) int {
	code := m.Run()
	if Backend() == "postgres" {
		if shared != nil {
			shared.stop()
			os.RemoveAll(filepath.Dir(shared.Dir))
		}
		return code
	}
	if code != 0 || os.Getenv("HAVEN_TEST_SQLITE_ONLY") != "" || benchOrFuzz() {
		return code
	}
	cmd := exec.Command(os.Args[0], os.Args[1:]...)
	cmd.Env = append(os.Environ(), "HAVEN_TEST_BACKEND=postgres")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if testing.Verbose() {
		fmt.Println("=== the same tests on PostgreSQL")
	}
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "the tests failed on PostgreSQL (HAVEN_TEST_BACKEND=postgres): %v\n", err)
		return 1
	}
	return 0
}

// benchOrFuzz: the run measures or fuzzes, which the second pass would
// only repeat on the same store.
func benchOrFuzz() bool {
	for _, name := range []string{"test.bench", "test.fuzz", "test.fuzzworker"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" && f.Value.String() != "false" {
			return true
		}
	}
	return false
}

// DataDir is the data folder of the package's shared cluster (its base/
// holds each database's files, pg_wal its write-ahead log), for tests that
// scan what is on disk.
func DataDir(tb testing.TB) string {
	tb.Helper()
	if shared == nil {
		tb.Fatal("no PostgreSQL cluster started: open a store with pgtest.Database first")
	}
	return filepath.Join(shared.Dir, "data")
}
