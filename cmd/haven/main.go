// Command haven is the Haven server and its administration commands.
//
//	haven serve            run the server
//	haven migrate          apply database migrations and exit
//	haven admin create     add an administrator
//	haven form convert     convert an XLSForm into an XForm
//	haven storage          move stored files between stores, collect garbage
//	haven loadgen          simulate many devices syncing at once
//	haven login, export    export data from a running server through its API
//
// Every command finds its data directory with --data or HAVEN_DATA
// (default ./haven-data).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/haven-org/haven/server"
	"github.com/haven-org/haven/storage"
	"golang.org/x/term"
)

const usage = `Haven: an OpenRosa server for ODK Collect and KoboCollect, built to protect the people whose data it holds.

Usage:
  haven serve [--listen 127.0.0.1:8080] [--data DIR] [--public-url URL] [--behind-tls]
              [--api-allow CIDRS] [--device-allow CIDRS] [--trusted-proxies ADDRS]
              [--s3-endpoint HOST:PORT --s3-bucket B --s3-access-key K --s3-secret-key S [--s3-tls]]
  haven migrate [--data DIR]
  haven admin create --email EMAIL [--data DIR]   (password from stdin when piped, else generated)
  haven form convert FORM.xlsx [-o out.xml] [--form-id ID] [--root-name NAME] [--json]
  haven storage migrate --to s3|local | haven storage gc   (see haven storage)
  haven audit verify [--data DIR]   (check the audit trail's hash chain and its signed head)
  haven key move-out [--data DIR] [--to PATH]   (move an older data directory's master key out of it)
  haven reap [--dry-run] [--data DIR]   (destroy the data of projects past their destruction date)
  haven backup --to DIR [--data DIR]    (an online copy of the database and files, without keys)
  haven certificate verify FILE [--data DIR]
  haven login --server URL --email EMAIL   (password asked, or from stdin or HAVEN_PASSWORD)
  haven export --project P --form F [--format csv|xlsx|geojson] [-o FILE] [--labels] [--since D --until D --version V]
               [--aggregate by=district,sex --measure count|sum:x|mean:x]   (against the server you logged in to)
  haven logout
  haven project|form|appuser|user|role|clearance|submission|subject|audit list|certificate get ...
               (managing the server you logged in to: see haven help manage)
  haven loadgen --spawn|--server URL|--url URL [--devices N --duration D --photo BYTES --flaky F --mode submit|formlist --json]
  haven soak [--duration 30m --interval 15s --devices 16 --out soak.csv --plot soak.svg]   (a long mixed load, recording what must stay flat)

The data directory defaults to ./haven-data, or HAVEN_DATA when set.
`

func main() {
	err := run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return // -h: the flags were printed
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "haven:", haven.ErrorMessage(err))
		if haven.ErrorCode(err) == haven.EINTERNAL {
			fmt.Fprintln(os.Stderr, "  cause:", err)
		}
		os.Exit(1)
	}
}

// parseFlags parses a command's flags. A flag it does not know, or a bad
// value, is the user's mistake: the flag package has already said which
// and printed the flags.
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return haven.Errorf(haven.EINVALID, "%v: see the flags of haven %s above.", err, fs.Name())
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return haven.Errorf(haven.EINVALID, "name a command: serve, migrate or admin.")
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "migrate":
		fs, data := flags("migrate", stderr)
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		st, err := data.open(ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		fmt.Fprintf(stdout, "The database in %s is up to date.\n", *data.dir)
		return nil
	case "admin":
		if len(args) < 2 || args[1] != "create" {
			return haven.Errorf(haven.EINVALID, "usage: haven admin create --email EMAIL [--data DIR]")
		}
		return adminCreate(ctx, args[2:], stdin, stdout, stderr)
	case "form":
		return formCmd(ctx, args[1:], stdout, stderr)
	case "storage":
		return storageCmd(ctx, args[1:], stdout, stderr)
	case "loadgen":
		return loadgenCmd(ctx, args[1:], stdout, stderr)
	case "soak":
		return soakCmd(ctx, args[1:], stdout, stderr)
	case "audit":
		if len(args) > 1 && args[1] == "list" {
			return auditList(ctx, args[2:], stdout, stderr)
		}
		return auditCmd(ctx, args[1:], stdout, stderr)
	case "project":
		return projectCmd(ctx, args[1:], stdin, stdout, stderr)
	case "appuser", "app-user":
		return appUserCmd(ctx, args[1:], stdout, stderr)
	case "user":
		return userCmd(ctx, args[1:], stdout, stderr)
	case "role":
		return roleCmd(ctx, args[1:], stdout, stderr)
	case "clearance":
		return clearanceCmd(ctx, args[1:], stdout, stderr)
	case "submission":
		return submissionCmd(ctx, args[1:], stdout, stderr)
	case "subject":
		return subjectCmd(ctx, args[1:], stdout, stderr)
	case "key":
		return keyCmd(args[1:], stdout, stderr)
	case "reap":
		return reapCmd(ctx, args[1:], stdout, stderr)
	case "backup":
		return backupCmd(ctx, args[1:], stdout, stderr)
	case "certificate":
		if len(args) > 1 && args[1] == "get" {
			return certificateGet(ctx, args[2:], stdout, stderr)
		}
		return certificateCmd(ctx, args[1:], stdout, stderr)
	case "login":
		return login(ctx, args[1:], stdin, stdout, stderr)
	case "logout":
		return logout(ctx, args[1:], stdout, stderr)
	case "export":
		return export(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		if len(args) > 1 && args[1] == "manage" {
			fmt.Fprint(stdout, manageUsage)
			return nil
		}
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return haven.Errorf(haven.EINVALID, "unknown command %q.", args[0])
}

// dataFlags are the flags of a command that opens the data directory:
// where it is, and where its master key comes from.
type dataFlags struct {
	dir      *string
	database *string
	keyFile  *string
	ask      *bool
	stderr   io.Writer
}

func flags(name string, stderr io.Writer) (*flag.FlagSet, *dataFlags) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	d := &dataFlags{stderr: stderr}
	d.dir = fs.String("data", envOr("HAVEN_DATA", "./haven-data"), "data directory (database, key store, attachments); HAVEN_DATA")
	d.keyFile = fs.String("master-key-file", os.Getenv("HAVEN_MASTER_KEY_FILE"),
		"the master key's file, outside the data directory (default: haven/master-ID.key in your configuration folder); HAVEN_MASTER_KEY_FILE, or the key itself in HAVEN_MASTER_KEY")
	d.ask = fs.Bool("passphrase", false, "derive the master key from a passphrase, asked at start (or HAVEN_MASTER_PASSPHRASE)")
	d.database = fs.String("database", os.Getenv("HAVEN_DATABASE"), "keep the records in PostgreSQL (postgres://user:password@host/db) instead of the data directory's SQLite file; with --s3-endpoint, nodes on several machines share it; HAVEN_DATABASE")
	return fs, d
}

// openExisting opens a data directory that must exist already: commands
// that read one (verify, reap, backup) never create an empty one where a
// mistyped path points, and say where they looked.
func (d *dataFlags) openExisting(ctx context.Context, opts ...storage.Options) (*storage.Store, error) {
	need, what := filepath.Join(*d.dir, "haven.db"), "no haven.db in it"
	if *d.database != "" {
		// The records are in the database, which knows which data directory
		// or key bucket it belongs to (it refuses another); the directory
		// must exist all the same.
		need, what = *d.dir, "it does not exist"
	}
	if _, err := os.Stat(need); err != nil {
		abs, _ := filepath.Abs(*d.dir)
		return nil, haven.Errorf(haven.ENOTFOUND, "There is no Haven data directory at %s (%s). Give the right one with --data DIR or HAVEN_DATA; nothing was created.", abs, what)
	}
	return d.open(ctx, opts...)
}

// open opens the data directory with its master key.
func (d *dataFlags) open(ctx context.Context, opts ...storage.Options) (*storage.Store, error) {
	var o storage.Options
	if len(opts) > 0 {
		o = opts[0]
	}
	o.Key = storage.KeySourceFromEnv()
	o.Database = *d.database
	if o.S3 == nil {
		o.S3 = s3FromEnv()
	}
	if *d.keyFile != "" {
		o.Key.File = *d.keyFile
	}
	if *d.ask && o.Key.Passphrase == "" {
		p, err := readPassphrase(d.stderr)
		if err != nil {
			return nil, err
		}
		o.Key.Passphrase = p
	}
	st, err := storage.OpenDir(ctx, *d.dir, o)
	if err == nil {
		announceKey(st, d.stderr)
	}
	return st, err
}

// readPassphrase asks for the master key's passphrase on the terminal
// (without echo), or reads a line of standard input.
func readPassphrase(stderr io.Writer) (string, error) {
	if isTerminal(os.Stdin) {
		fmt.Fprint(stderr, "Master key passphrase: ")
		b, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		return string(b), nil
	}
	p, err := readLine(os.Stdin)
	if err != nil || p == "" {
		return "", haven.Errorf(haven.EINVALID, "--passphrase needs the passphrase on standard input (or HAVEN_MASTER_PASSPHRASE).")
	}
	return p, nil
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, data := flags("serve", stderr)
	listen := fs.String("listen", envOr("HAVEN_LISTEN", "127.0.0.1:8080"), "address to listen on; HAVEN_LISTEN")
	publicURL := fs.String("public-url", os.Getenv("HAVEN_PUBLIC_URL"), "URL devices reach Haven at, e.g. https://haven.example.org; HAVEN_PUBLIC_URL")
	behindTLS := fs.Bool("behind-tls", os.Getenv("HAVEN_BEHIND_TLS") == "true", "a proxy in front terminates TLS (allows Basic auth); HAVEN_BEHIND_TLS")
	apiAllow := fs.String("api-allow", os.Getenv("HAVEN_API_ALLOW"), "comma-separated CIDR ranges that may reach the API and console (empty: any); HAVEN_API_ALLOW")
	deviceAllow := fs.String("device-allow", os.Getenv("HAVEN_DEVICE_ALLOW"), "comma-separated CIDR ranges that may reach device endpoints (empty: any); HAVEN_DEVICE_ALLOW")
	proxies := fs.String("trusted-proxies", os.Getenv("HAVEN_TRUSTED_PROXIES"), "comma-separated addresses of proxies whose X-Forwarded-For is believed; HAVEN_TRUSTED_PROXIES")
	walCeiling := fs.Int("wal-ceiling-mb", envInt("HAVEN_WAL_CEILING_MB", storage.DefaultWALCeiling>>20), "the most the database's write-ahead log may grow to, in MiB, however busy the server (at least 4); HAVEN_WAL_CEILING_MB")
	sessionLife := fs.Duration("session-lifetime", envDuration("HAVEN_SESSION_LIFETIME", app.SessionLifetime), "how long a login lasts, as in ODK Central; HAVEN_SESSION_LIFETIME")
	accessLife := fs.Duration("access-lifetime", envDuration("HAVEN_ACCESS_LIFETIME", 0), "how long an access token lives within its session (0: as long as the session, which Central clients such as pyodk need); HAVEN_ACCESS_LIFETIME")
	tiles := fs.String("tile-url", os.Getenv("HAVEN_TILE_URL"), "map tile server for the console's maps, e.g. https://tiles.example.org/{z}/{x}/{y}.png (empty: points on a plain background, no internet needed); HAVEN_TILE_URL")
	s3 := s3Flags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *sessionLife < time.Minute || (*accessLife != 0 && *accessLife < time.Minute) {
		return haven.Errorf(haven.EINVALID, "--session-lifetime and --access-lifetime must be at least a minute (e.g. 24h, 15m).")
	}
	cfg := server.Config{PublicURL: *publicURL, BehindTLS: *behindTLS, AccessLifetime: *accessLife, TileURL: *tiles}
	for _, l := range []struct {
		flag string
		in   string
		out  *haven.Allowlist
	}{{"--api-allow", *apiAllow, &cfg.APIAllow}, {"--device-allow", *deviceAllow, &cfg.DeviceAllow}, {"--trusted-proxies", *proxies, &cfg.TrustedProxies}} {
		var err error
		if *l.out, err = haven.ParseAllowlist(l.in); err != nil {
			return haven.Errorf(haven.EINVALID, "%s: %s", l.flag, haven.ErrorMessage(err))
		}
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	tuneGC()
	stopProfile, err := cpuProfile("HAVEN_CPUPROFILE")
	if err != nil {
		return err
	}
	defer stopProfile()
	st, err := data.open(ctx, storage.Options{S3: s3(), WALCeiling: int64(*walCeiling) << 20})
	if err != nil {
		return err
	}
	defer st.Close()
	if *data.database == "" {
		release, err := serveLock(*data.dir)
		if err != nil {
			return err
		}
		defer release()
	} else {
		// Several nodes on one database: every file must be where all of
		// them read it (the object store).
		host, _ := os.Hostname()
		node, err := st.DB.JoinNodes(ctx, host, s3() != nil)
		if err != nil {
			return err
		}
		defer node.Leave()
	}
	if err := firstAdmin(ctx, st, stdout); err != nil {
		return err
	}
	// Submissions stored before each had its own key get one now, before
	// anything is served; interrupted, this resumes at the next start.
	last := time.Now()
	if n, err := st.Submissions.SealLegacy(ctx, func(done, left int) {
		if time.Since(last) > 5*time.Second || done == 0 {
			log.Info("giving each stored submission its own key", "done", done, "left", left)
			last = time.Now()
		}
	}); err != nil {
		return fmt.Errorf("giving stored submissions their own keys (it resumes at the next start): %w", err)
	} else if n > 0 {
		log.Info("every stored submission has its own key", "resealed", n)
	}
	svc := app.New(st, app.Options{Log: log, SessionLifetime: *sessionLife})
	srv := server.New(cfg, svc, log)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *listen, err)
	}
	hs := srv.HTTPServer(*listen)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	go collectGarbage(ctx, st, log)
	go reapLoop(ctx, st, log)
	go logAuditHead(ctx, st, log)
	go applyEntities(ctx, svc, log)
	go sweepExports(ctx, svc, log)
	fmt.Fprintf(stdout, "Haven is listening on http://%s (data in %s)\n", ln.Addr(), *data.dir)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing requests in progress")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// logAuditHead writes the audit trail's signed head to the log every ten
// minutes: where the log is shipped off the machine, it is a copy of the
// head that whoever can change the data directory cannot reach.
func logAuditHead(ctx context.Context, st *storage.Store, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Minute):
		}
		if h, err := st.ReadAuditHead(""); err == nil {
			b, _ := json.Marshal(h) // saved to a file, it is what haven audit verify --head reads
			log.Info("audit head", "id", h.ID, "head", string(b))
		}
	}
}

// cpuProfile starts, for benchmarking, a CPU profile of the whole run into
// the file the environment variable names (none when it is unset); stop
// writes it.
func cpuProfile(env string) (stop func(), err error) {
	path := os.Getenv(env)
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// tuneGC sets the server's garbage collector, unless GOGC or GOMEMLIMIT say
// otherwise: collect rarely (GOGC 400: the live heap is small, ~20 MB) but
// more often as the process nears 128 MiB (a soft limit). Measured with haven
// loadgen: about 12% more submissions per second than Go's default, with
// peak RSS under 120 MB.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(128 << 20)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// announceKey says, once and loudly, where a first start put the master key.
func announceKey(st *storage.Store, w io.Writer) {
	if st.KeyCreated == "" {
		return
	}
	fmt.Fprintf(w, `
******************************************************************************
The master key of %s is in %s
Keep it apart from the data directory and from its backups, and keep a copy
somewhere safe: without it nothing Haven stored can be read, and the data
directory together with it can be. To keep it elsewhere, start Haven with
--master-key-file PATH (or HAVEN_MASTER_KEY_FILE) after moving it there.
******************************************************************************

`, st.Dir, st.KeyCreated)
}

// firstAdmin creates an administrator on a first start, and shows its
// password once: only the hash is kept.
func firstAdmin(ctx context.Context, st *storage.Store, stdout io.Writer) error {
	n, err := st.Users.CountAdmins(ctx)
	if err != nil || n > 0 {
		return err
	}
	password := storage.GeneratePassword()
	u, err := st.Users.Create(ctx, "admin@haven.local", password, "Administrator", true)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "First start: created the administrator %s with the password %s\n"+
		"It is shown only now; keep it safe. Add more administrators with: haven admin create --email EMAIL\n", u.Email, password)
	return nil
}

func adminCreate(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs, data := flags("admin create", stderr)
	email := fs.String("email", "", "the administrator's email (their login)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *email == "" {
		return haven.Errorf(haven.EINVALID, "give the new administrator's email with --email.")
	}
	password, generated := "", false
	if f, ok := stdin.(*os.File); ok && isTerminal(f) || stdin == nil {
		password, generated = storage.GeneratePassword(), true
	} else {
		var err error
		if password, err = readLine(stdin); err != nil {
			return err
		}
		if password == "" {
			password, generated = storage.GeneratePassword(), true
		}
	}
	st, err := data.open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	u, err := st.Users.Create(ctx, *email, password, "", true)
	if err != nil {
		return err
	}
	if generated {
		fmt.Fprintf(stdout, "Created administrator %s with the password %s (shown only now).\n", u.Email, password)
	} else {
		fmt.Fprintf(stdout, "Created administrator %s.\n", u.Email)
	}
	return nil
}

// isTerminal reports whether f is a terminal (then nobody piped a password in).
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// envDuration reads a duration from the environment, or def.
func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return d
	}
	return def
}

// envInt reads a whole number from the environment, or def.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return n
	}
	return def
}
