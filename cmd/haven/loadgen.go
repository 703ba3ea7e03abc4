package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/clients/loadgen"
	"github.com/haven-org/haven/clients/rest"
	"github.com/haven-org/haven/storage"
)

const loadgenUsage = `haven loadgen: simulate many ODK Collect devices syncing at once.

Where the devices go (one of):
  --url URL        a device server URL ({origin}/v1/key/{token}/projects/{id}) with a published form
  --server URL     a running Haven: log in with --email and --password, create a project,
                   publish the benchmark form and an app user, then load them
  --spawn          start a fresh Haven on a temporary data directory, load it, report its
                   peak memory, stop it and delete the directory

What they do:
  --mode submit|formlist  --devices N  --duration D  --count N  --think D
  --photo BYTES  --flaky FRACTION  --form ID  --json
`

func loadgenCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, _ := flags("loadgen", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, loadgenUsage) }
	url := fs.String("url", "", "device server URL")
	serverURL := fs.String("server", "", "Haven base URL to set up and load")
	email := fs.String("email", "", "administrator email, with --server")
	password := fs.String("password", os.Getenv("HAVEN_PASSWORD"), "administrator password, with --server; HAVEN_PASSWORD")
	spawn := fs.Bool("spawn", false, "start a fresh Haven to load")
	var cfg loadgen.Config
	fs.StringVar(&cfg.Mode, "mode", loadgen.ModeSubmit, "submit or formlist")
	fs.StringVar(&cfg.FormID, "form", "", "form id to fill in (default: the first listed)")
	fs.IntVar(&cfg.Devices, "devices", 32, "concurrent devices")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to run")
	fs.IntVar(&cfg.Count, "count", 0, "stop after this many operations (0: run for --duration)")
	fs.DurationVar(&cfg.Think, "think", 0, "pause between a device's operations")
	fs.IntVar(&cfg.Photo, "photo", 0, "bytes of a photo sent with each submission")
	fs.Float64Var(&cfg.Flaky, "flaky", 0, "fraction of uploads cut half way and retried")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}

	var stop func() float64
	switch {
	case *spawn:
		sp, err := spawnHaven(ctx, stderr)
		if err != nil {
			return err
		}
		base, pw := sp.Base, sp.Password
		stop = sp.Stop
		defer func() {
			if stop != nil {
				stop()
			}
		}()
		if cfg.FormID == "" {
			cfg.FormID = "bench"
		}
		if *url, err = setupLoad(ctx, base, "loadgen@haven.local", pw); err != nil {
			return err
		}
	case *serverURL != "":
		if *email == "" || *password == "" {
			return haven.Errorf(haven.EINVALID, "--server needs --email and --password (or HAVEN_PASSWORD).")
		}
		if cfg.FormID == "" {
			cfg.FormID = "bench"
		}
		var err error
		if *url, err = setupLoad(ctx, *serverURL, *email, *password); err != nil {
			return err
		}
	case *url == "":
		fmt.Fprint(stderr, loadgenUsage)
		return haven.Errorf(haven.EINVALID, "say where the devices go: --url, --server or --spawn.")
	}

	cfg.ServerURL = *url
	// The load generator shares the machine with the server it measures:
	// collecting garbage rarely, as the server does, leaves the cores to
	// the server (under a form-list load it was a tenth of its CPU).
	if os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(400))
	}
	// The load generator's own profile (HAVEN_CPUPROFILE is the server's).
	stopProfile, err := cpuProfile("HAVEN_LOADGEN_CPUPROFILE")
	if err != nil {
		return err
	}
	defer stopProfile()
	rep, err := loadgen.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if stop != nil {
		rep.ServerPeakRSSMB = stop()
		stop = nil
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	fmt.Fprint(stdout, rep.Summary())
	return nil
}

// setupLoad publishes the benchmark form (with its media) in a new project
// and returns an app user's device URL.
func setupLoad(ctx context.Context, base, email, password string) (string, error) {
	c, err := rest.Login(ctx, base, email, password)
	if err != nil {
		return "", fmt.Errorf("logging in to %s: %w", base, err)
	}
	pr, err := c.CreateProject(ctx, "loadgen "+time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		return "", err
	}
	if _, err := c.CreateForm(ctx, pr.ID, loadgen.BenchForm("1"), false); err != nil {
		return "", err
	}
	if err := c.UploadDraftAttachment(ctx, pr.ID, "bench", "prices.csv", loadgen.BenchMedia); err != nil {
		return "", err
	}
	if _, err := c.PublishDraft(ctx, pr.ID, "bench", "1"); err != nil {
		return "", err
	}
	au, err := c.CreateAppUser(ctx, pr.ID, "loadgen")
	if err != nil {
		return "", err
	}
	if err := c.AssignForm(ctx, pr.ID, "bench", au.ID); err != nil {
		return "", err
	}
	return au.ServerURL, nil
}

// spawnHaven starts this binary's `serve` on a fresh data directory. stop
// ends it, deletes the directory and returns the server's peak RSS in MB.
// spawned is a Haven this binary started on a fresh data directory.
type spawned struct {
	Base, Password, Dir string
	PID                 int
	// Stop ends it, deletes the directory and returns its peak RSS in MB.
	Stop func() float64
}

func spawnHaven(ctx context.Context, stderr io.Writer, serveArgs ...string) (*spawned, error) {
	top, err := os.MkdirTemp("", "haven-loadgen-*")
	if err != nil {
		return nil, err
	}
	// The data directory, and its master key beside it (never inside).
	dir, key := filepath.Join(top, "data"), filepath.Join(top, "master.key")
	password := storage.GeneratePassword()
	if err := run(ctx, []string{"admin", "create", "--email", "loadgen@haven.local", "--data", dir, "--master-key-file", key}, strings.NewReader(password+"\n"), io.Discard, io.Discard); err != nil {
		os.RemoveAll(top)
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(top)
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	exe, err := os.Executable()
	if err != nil {
		os.RemoveAll(top)
		return nil, err
	}
	logf, _ := os.Create(filepath.Join(dir, "serve.log"))
	cmd := exec.Command(exe, append([]string{"serve", "--data", dir, "--master-key-file", key, "--listen", addr}, serveArgs...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		os.RemoveAll(top)
		return nil, err
	}
	stop := func() float64 {
		rss := peakRSSMB(cmd.Process.Pid)
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		logf.Close()
		os.RemoveAll(top)
		return rss
	}
	base := "http://" + addr
	for i := 0; i < 400; i++ {
		if resp, err := http.Get(base + "/"); err == nil {
			resp.Body.Close()
			return &spawned{Base: base, Password: password, Dir: dir, PID: cmd.Process.Pid, Stop: stop}, nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	stop()
	return nil, fmt.Errorf("the spawned server did not start")
}

// peakRSSMB reads a process's peak resident set size (VmHWM) from /proc.
func peakRSSMB(pid int) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
