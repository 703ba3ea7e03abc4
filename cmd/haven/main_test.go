package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
)

func TestAdminCreate(t *testing.T) {
	data := t.TempDir()
	ctx := context.Background()
	var out bytes.Buffer
	if err := run(ctx, []string{"migrate", "--data", data}, nil, &out, io.Discard); err != nil || !strings.Contains(out.String(), "up to date") {
		t.Fatalf("migrate: %v %q", err, out.String())
	}
	// A piped password is used as given and never printed.
	out.Reset()
	if err := run(ctx, []string{"admin", "create", "--email", "a@example.org", "--data", data}, strings.NewReader("piped password 1\n"), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "piped password") {
		t.Fatal("the piped password was printed")
	}
	// An empty stdin gets a generated password, shown once.
	out.Reset()
	if err := run(ctx, []string{"admin", "create", "--email", "b@example.org", "--data", data}, strings.NewReader(""), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	generated := strings.Fields(strings.SplitN(out.String(), "password ", 2)[1])[0]
	st, err := storage.OpenDir(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if u, err := st.Users.Authenticate(ctx, "a@example.org", "piped password 1"); err != nil || !u.Admin {
		t.Fatalf("piped: %v", err)
	}
	if _, err := st.Users.Authenticate(ctx, "b@example.org", generated); err != nil {
		t.Fatalf("generated %q: %v", generated, err)
	}
	// Refusals say what is wrong.
	for _, c := range []struct {
		args []string
		in   string
		says string
	}{
		{[]string{"admin", "create", "--email", "a@example.org", "--data", data}, "another password\n", "already exists"},
		{[]string{"admin", "create", "--data", data}, "", "--email"},
		{[]string{"admin", "create", "--email", "not an email", "--data", data}, "long enough password\n", "not an email"},
		{[]string{"admin", "create", "--email", "c@example.org", "--data", data}, "short\n", "too short"},
		{[]string{"frobnicate"}, "", "unknown command"},
	} {
		err := run(ctx, c.args, strings.NewReader(c.in), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%v: %v, want %q", c.args, err, c.says)
		}
	}
}

func TestFirstAdminOnce(t *testing.T) {
	st, err := storage.OpenDir(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var out bytes.Buffer
	if err := firstAdmin(context.Background(), st, &out); err != nil {
		t.Fatal(err)
	}
	password := strings.Fields(strings.SplitN(out.String(), "password ", 2)[1])[0]
	if _, err := st.Users.Authenticate(context.Background(), "admin@haven.local", password); err != nil {
		t.Fatalf("printed password does not log in: %v", err)
	}
	out.Reset()
	firstAdmin(context.Background(), st, &out)
	if out.Len() != 0 {
		t.Fatal("a second start must not create another administrator")
	}
}

// A flag Haven does not know is the user's mistake, named as such; -h
// prints the flags and is no error at all.
func TestFlagMistakes(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"export", "--bogus"}, strings.NewReader(""), &out, &errOut)
	if haven.ErrorCode(err) != haven.EINVALID || !strings.Contains(haven.ErrorMessage(err), "-bogus") {
		t.Fatalf("unknown flag: %v (code %s)", err, haven.ErrorCode(err))
	}
	if !strings.Contains(errOut.String(), "-form") {
		t.Fatalf("the flags were not printed: %q", errOut.String())
	}
	if err := run(context.Background(), []string{"loadgen", "-h"}, strings.NewReader(""), &out, &errOut); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
}

// The first start on the defaults says, once and loudly, where it put the
// master key, outside the data directory. A directory an older Haven left
// with its key inside is refused until `haven key move-out` moves it out.
func TestMasterKeyCommands(t *testing.T) {
	ctx := context.Background()
	data := filepath.Join(t.TempDir(), "data")
	var out, errs bytes.Buffer
	if err := run(ctx, []string{"migrate", "--data", data}, nil, &out, &errs); err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(strings.SplitN(strings.SplitN(errs.String(), " is in ", 2)[1], "\n", 2)[0])
	if !strings.Contains(errs.String(), "Keep it apart") || strings.HasPrefix(key, data) {
		t.Fatalf("first start: key at %q; said %q", key, errs.String())
	}
	errs.Reset()
	if err := run(ctx, []string{"migrate", "--data", data}, nil, io.Discard, &errs); err != nil || errs.Len() > 0 {
		t.Fatalf("second start: %v %q", err, errs.String())
	}
	// As an older Haven left it: the key inside, no key.json.
	raw, _ := os.ReadFile(key)
	os.WriteFile(filepath.Join(data, "master.key"), raw, 0o600)
	os.Remove(filepath.Join(data, "key.json"))
	os.Remove(key)
	err := run(ctx, []string{"migrate", "--data", data}, nil, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "haven key move-out") {
		t.Fatalf("start with the key inside: %v", err)
	}
	moved := filepath.Join(t.TempDir(), "haven.key")
	out.Reset()
	if err := run(ctx, []string{"key", "move-out", "--data", data, "--to", moved}, nil, &out, io.Discard); err != nil || !strings.Contains(out.String(), moved) {
		t.Fatalf("move-out: %v %q", err, out.String())
	}
	if _, err := os.Stat(filepath.Join(data, "master.key")); !os.IsNotExist(err) {
		t.Fatalf("the key is still inside: %v", err)
	}
	if err := run(ctx, []string{"migrate", "--data", data}, nil, io.Discard, io.Discard); err == nil {
		t.Fatal("started without saying where the moved key is")
	}
	if err := run(ctx, []string{"migrate", "--data", data, "--master-key-file", moved}, nil, io.Discard, io.Discard); err != nil {
		t.Fatalf("with the moved key: %v", err)
	}
	if err := run(ctx, []string{"migrate", "--data", data, "--master-key-file", filepath.Join(data, "k")}, nil, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "inside the data directory") {
		t.Fatalf("a key file inside the data directory: %v", err)
	}
}

// A second haven serve on a data directory whose records are in SQLite is
// refused, saying why: two servers there would number submission keys apart.
func TestOneServerPerSQLiteDirectory(t *testing.T) {
	data := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &lockedBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--data", data, "--listen", "127.0.0.1:0"}, nil, out, io.Discard)
	}()
	for i := 0; !strings.Contains(out.String(), "listening"); i++ {
		if i == 600 {
			t.Fatalf("the first server did not start: %s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	err := run(context.Background(), []string{"serve", "--data", data, "--listen", "127.0.0.1:0"}, nil, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "Another haven serve is already using the data directory") {
		t.Fatalf("a second server on the same directory: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("the first server: %v", err)
	}
}

// lockedBuffer is a bytes.Buffer safe for a server writing while a test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
