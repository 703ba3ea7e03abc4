// Package miniotest runs a real MinIO server for Haven's tests: it finds the
// server binary (HAVEN_MINIO_BIN, or the user's cache, installing the pinned
// version with `go install` when it is missing), starts it on a free
// loopback port with a temporary directory, and stops it after the test.
// If the binary cannot be had, the tests fail: they never skip silently.
package miniotest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	gosync "sync"
	"syscall"
	"testing"
	"time"

	"github.com/haven-org/haven/storage"
)

// Version is the MinIO server release the tests run against (known to build
// and serve on the project's machines).
const Version = "github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c"

const (
	AccessKey = "haven-test"
	SecretKey = "haven-test-secret"
)

var (
	binOnce gosync.Once
	binPath string
	binErr  error
)

// Binary returns the path of the MinIO server, installing it the first time
// (about ten minutes: MinIO is large). A lock file keeps test binaries of
// several packages from building it at once.
func Binary() (string, error) {
	binOnce.Do(func() { binPath, binErr = binary() })
	return binPath, binErr
}

func binary() (string, error) {
	if p := os.Getenv("HAVEN_MINIO_BIN"); p != "" {
		return p, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "haven-tools")
	bin := filepath.Join(dir, "minio")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".install.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, nil // another package's tests installed it while we waited
	}
	Announce(fmt.Sprintf("installing the MinIO server (%s) into %s; the first time takes about ten minutes", Version, dir))
	cmd := exec.Command("go", "install", Version)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("installing the MinIO server with go install %s failed: %w (set HAVEN_MINIO_BIN to a minio binary to use one you have)", Version, err)
	}
	return bin, nil
}

// Server is a running MinIO server.
type Server struct {
	Addr    string // host:port
	DataDir string // where MinIO keeps objects: tests scan it for plaintext
	bin     string
	cmd     *exec.Cmd
	drives  []string // a distributed server's endpoints (all nodes' drives); nil for one server
}

// Start runs a MinIO server for the test and stops it when the test ends.
// The test fails if MinIO cannot be had.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatalf("MinIO is required for this test and could not be had: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: l.Addr().String(), DataDir: t.TempDir(), bin: bin}
	l.Close()
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Config is the storage configuration for this server and bucket.
func (s *Server) Config(bucket string) storage.S3Config {
	return storage.S3Config{Endpoint: s.Addr, Bucket: bucket, AccessKey: AccessKey, SecretKey: SecretKey}
}

// Stop kills the server (as a crash would); Restart brings it back.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// Restart starts the server (again) on the same address and data, and waits
// until it answers.
func (s *Server) Restart() error {
	s.Stop()
	drives := []string{s.DataDir}
	if s.drives != nil {
		drives = s.drives
	}
	cmd := exec.Command(s.bin, append(append([]string{"server"}, drives...), "--address", s.Addr, "--console-address", "127.0.0.1:0", "--quiet")...)
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+AccessKey, "MINIO_ROOT_PASSWORD="+SecretKey, "MINIO_BROWSER=off", "MINIO_UPDATE=off")
	if s.drives != nil {
		// Test drives share the machine's root disk, which a distributed
		// MinIO otherwise refuses to use.
		cmd.Env = append(cmd.Env, "MINIO_CI_CD=1")
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd = cmd
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		resp, err := http.Get("http://" + s.Addr + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.Stop()
	return fmt.Errorf("MinIO did not become ready on %s within 60 s", s.Addr)
}

// Cluster is a distributed MinIO: several server processes, one drive
// each, with objects erasure-coded across them, as a deployment spreads
// MinIO over machines.
type Cluster struct {
	Nodes []*Server
}

// StartCluster runs n MinIO servers as one distributed store (n of 4 or
// more loses no write when one server is gone) and stops them when the
// test ends. The servers listen on this machine's first address that is
// not loopback when it has one: MinIO refuses loopback endpoints when it
// finds itself in a container.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatalf("MinIO is required for this test and could not be had: %v", err)
	}
	host := hostAddress()
	c := &Cluster{}
	var drives []string
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		s := &Server{Addr: l.Addr().String(), DataDir: t.TempDir(), bin: bin}
		l.Close()
		drives = append(drives, "http://"+s.Addr+s.DataDir)
		c.Nodes = append(c.Nodes, s)
	}
	t.Cleanup(c.Stop)
	for _, s := range c.Nodes {
		s.drives = drives
	}
	// The servers wait for each other: start them all, then wait for each.
	errs := make(chan error, n)
	for _, s := range c.Nodes {
		go func() { errs <- s.Restart() }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("starting distributed MinIO: %v", err)
		}
	}
	// Ready servers can still be short of a write quorum for a moment.
	for range 600 {
		if resp, err := http.Get("http://" + c.Nodes[0].Addr + "/minio/health/cluster"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("distributed MinIO never reached its write quorum")
	return nil
}

// Config is the storage configuration for the cluster's first server.
func (c *Cluster) Config(bucket string) storage.S3Config { return c.Nodes[0].Config(bucket) }

// Stop kills every server.
func (c *Cluster) Stop() {
	for _, s := range c.Nodes {
		s.Stop()
	}
}

// hostAddress is this machine's first IPv4 address that is not loopback,
// or 127.0.0.1 when it has none.
func hostAddress() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ip, ok := a.(*net.IPNet); ok && ip.IP.To4() != nil && !ip.IP.IsLoopback() {
			return ip.IP.String()
		}
	}
	return "127.0.0.1"
}

// Announce says what a test is installing where the person running the
// tests sees it: go test ./... shows a passing package's output only at
// its end, so a long install would look stuck. It writes to the terminal
// (/dev/tty) when there is one, and to stderr as well.
func Announce(msg string) {
	fmt.Fprintln(os.Stderr, "haven tests:", msg)
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		fmt.Fprintln(tty, "haven tests:", msg)
		tty.Close()
	}
}

// NPMInstall installs npm packages into dir/node_modules, for tests that
// run JavaScript (the web forms engine, axe-core). npm runs in dir, made a
// package of its own, rather than with --prefix dir: --prefix also moves
// where npm reads its global configuration (to dir/etc/npmrc), so a
// machine's registry, proxy or certificate authority set there would be
// ignored.
func NPMInstall(dir string, packages ...string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	manifest := filepath.Join(dir, "package.json")
	if _, err := os.Stat(manifest); err != nil {
		if err := os.WriteFile(manifest, []byte(`{"private": true}`+"\n"), 0o644); err != nil {
			return err
		}
	}
	cmd := exec.Command("npm", append([]string{"install", "--no-audit", "--no-fund"}, packages...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v\n%s", err, out)
	}
	return nil
}
