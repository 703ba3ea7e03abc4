package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/clients/rest"
	"golang.org/x/term"
)

// Commands that talk to a running server through its REST API: login keeps
// the session in a credentials file (mode 0600) that export and logout use.

// credentialsPath is where the session is kept: --credentials,
// HAVEN_CREDENTIALS, or haven/credentials.json in the user's config directory.
func credentialsPath(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if v := os.Getenv("HAVEN_CREDENTIALS"); v != "" {
		return v, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", haven.Errorf(haven.EINVALID, "There is no config directory to keep the session in (%v): give --credentials FILE or set HAVEN_CREDENTIALS.", err)
	}
	return filepath.Join(dir, "haven", "credentials.json"), nil
}

func saveSession(path string, s *rest.Session) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(s, "", "  ")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func loadSession(path string) (*rest.Session, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, haven.Errorf(haven.EUNAUTHORIZED, "You are not logged in: run haven login --server URL --email EMAIL first.")
	} else if err != nil {
		return nil, err
	}
	var s rest.Session
	if err := json.Unmarshal(b, &s); err != nil || s.Server == "" {
		return nil, haven.Errorf(haven.EINVALID, "%s is not a Haven credentials file: run haven login again.", path)
	}
	return &s, nil
}

// savedSession finds the credentials file and reads the session in it.
func savedSession(flagValue string) (string, *rest.Session, error) {
	path, err := credentialsPath(flagValue)
	if err != nil {
		return "", nil, err
	}
	s, err := loadSession(path)
	return path, s, err
}

// readPassword reads a password without echo on a terminal, else one line of stdin.
func readPassword(stdin io.Reader, stderr io.Writer) (string, error) {
	if f, ok := stdin.(*os.File); ok && isTerminal(f) {
		fmt.Fprint(stderr, "Password: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		return string(b), err
	}
	return readLine(stdin)
}

// readLine reads one line of piped input, without its line ending ("" for none).
func readLine(stdin io.Reader) (string, error) {
	if stdin == nil {
		return "", nil
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func login(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := remoteFlags("login", stderr)
	server := fs.String("server", os.Getenv("HAVEN_SERVER"), "the server's URL, such as https://haven.example.org; HAVEN_SERVER")
	email := fs.String("email", "", "your login")
	creds := fs.String("credentials", "", "file to keep the session in; HAVEN_CREDENTIALS")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *server == "" || *email == "" {
		return haven.Errorf(haven.EINVALID, "give the server and your login: haven login --server https://haven.example.org --email you@example.org (the password is asked, or read from stdin).")
	}
	path, err := credentialsPath(*creds)
	if err != nil {
		return err
	}
	password := os.Getenv("HAVEN_PASSWORD")
	if password == "" {
		if password, err = readPassword(stdin, stderr); err != nil {
			return err
		}
	}
	c, err := rest.Login(ctx, *server, *email, password)
	if err != nil {
		return remoteError(err)
	}
	if err := saveSession(path, c.Session); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Logged in to %s as %s until %s (session kept in %s).\n", c.BaseURL, *email, c.Session.SessionExpiresAt.Local().Format("2006-01-02 15:04"), path)
	return nil
}

func logout(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := remoteFlags("logout", stderr)
	creds := fs.String("credentials", "", "the session file; HAVEN_CREDENTIALS")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	path, s, err := savedSession(*creds)
	if err != nil {
		return err
	}
	err = rest.Resume(s, nil).Logout(ctx)
	var re *rest.Error
	if err != nil && !(errors.As(err, &re) && re.Status == 401) {
		return remoteError(err)
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "Logged out.")
	return nil
}

// export downloads a raw export or an aggregate through the REST API.
func export(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := remoteFlags("export", stderr)
	creds := fs.String("credentials", "", "the session file from haven login; HAVEN_CREDENTIALS")
	project := fs.Int64("project", 0, "the project's id")
	form := fs.String("form", "", "the form's id (xmlFormId)")
	format := fs.String("format", "csv", "csv (a zip), xlsx or geojson; for --aggregate: json, csv or xlsx")
	out := fs.String("o", "", "file to write (default: named after the form; - for stdout)")
	since := fs.String("since", "", "only submissions received on or after this date or time")
	until := fs.String("until", "", "only submissions received before this date or time")
	version := fs.String("version", "", "one form version only")
	labels := fs.Bool("labels", false, "choices' labels instead of their values")
	headerLabels := fs.Bool("header-labels", false, "name columns by their questions' labels")
	geoCombined := fs.Bool("geo-combined", false, "keep each geopoint in one column (default: latitude, longitude, altitude, accuracy)")
	language := fs.String("language", "", "the labels' language (default: the form's)")
	split := fs.Bool("split-select-multiples", false, "a 0/1 column per choice of a select_multiple")
	attachments := fs.Bool("attachments", false, "add the files (csv only)")
	aggregate := fs.String("aggregate", "", "aggregated figures instead of raw data: by=district,sex")
	force := fs.Bool("force", false, "replace the file if it exists")
	background := fs.Bool("background", false, "run the export on the server in the background, show its progress, then download it (for large exports)")
	measure := fs.String("measure", "count", "with --aggregate: count, sum:FIELD or mean:FIELD")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *project <= 0 || *form == "" {
		return haven.Errorf(haven.EINVALID, "name the project and the form: haven export --project 1 --form household --format csv.")
	}
	path, s, err := savedSession(*creds)
	if err != nil {
		return err
	}
	c := rest.Resume(s, func(next *rest.Session) {
		if err := saveSession(path, next); err != nil {
			fmt.Fprintln(stderr, "haven: the refreshed session could not be saved:", err)
		}
	})
	q := url.Values{}
	endpoint, name := "export", *form+"-submissions" // never the XLSForm's own name
	if *aggregate != "" {
		by, ok := strings.CutPrefix(*aggregate, "by=")
		if !ok {
			by = *aggregate
		}
		if *format == "csv" && !flagSet(fs, "format") {
			*format = "json"
		}
		endpoint, name = "aggregate", *form+"-aggregate"
		q.Set("by", by)
		q.Set("measure", *measure)
		if *labels {
			q.Set("labels", "true")
		}
		if *language != "" {
			q.Set("language", *language)
		}
	} else {
		for k, v := range map[string]string{"since": *since, "until": *until, "version": *version, "language": *language} {
			if v != "" {
				q.Set(k, v)
			}
		}
		for k, v := range map[string]bool{"labels": *labels, "splitSelectMultiples": *split, "attachments": *attachments, "headerLabels": *headerLabels, "geoCombined": *geoCombined} {
			if v {
				q.Set(k, "true")
			}
		}
	}
	q.Set("format", *format)
	ext := map[string]string{"csv": ".csv", "xlsx": ".xlsx", "geojson": ".geojson", "json": ".json"}[*format]
	if endpoint == "export" && *format == "csv" {
		ext = ".csv.zip"
	}
	target := *out
	if target == "" {
		target = name + ext
	}
	var w io.Writer = stdout
	var f *os.File
	if _, err := os.Stat(target); err == nil && target != "-" && !*force {
		return haven.Errorf(haven.EDUPLICATE, "%s already exists: give another file with -o, or --force to replace it.", target)
	}
	if target != "-" {
		// Written beside the target and renamed at the end: a cut download leaves no half file.
		if f, err = os.CreateTemp(filepath.Dir(target), ".haven-export-*"); err != nil {
			return err
		}
		defer os.Remove(f.Name())
		defer f.Close()
		w = f
	}
	pw, done := w, func() {}
	if f != nil {
		pw, done = progressWriter(w, "downloading "+target, stderr)
	}
	address := fmt.Sprintf("/v1/projects/%d/forms/%s/%s?%s", *project, url.PathEscape(*form), endpoint, q.Encode())
	if *background && endpoint == "export" {
		if address, err = waitForJob(ctx, c, *project, *form, q, stderr); err != nil {
			return err
		}
	}
	h, err := c.Stream(ctx, address, pw)
	done()
	if err != nil {
		return remoteError(err)
	}
	if f != nil {
		if err := f.Sync(); err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		if err := os.Rename(f.Name(), target); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Wrote %s.\n", target)
	}
	if omitted := h.Get("X-Haven-Omitted-Fields"); omitted != "" && omitted != "0" {
		fmt.Fprintf(stderr, "%s fields above your clearance were left out; the export lists them.\n", omitted)
	}
	return nil
}

func remoteFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// flagSet reports whether a flag was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

// remoteError turns the server's answer into the command's error.
func remoteError(err error) error {
	var re *rest.Error
	if errors.As(err, &re) {
		code := haven.EINVALID
		switch re.Status {
		case 401:
			code = haven.EUNAUTHORIZED
		case 403:
			code = haven.EFORBIDDEN
		case 404:
			code = haven.ENOTFOUND
		}
		return haven.Errorf(code, "the server answered %d: %s", re.Status, re.Message)
	}
	return haven.Errorf(haven.EUNAVAILABLE, "the server could not be reached: %v", err)
}

// waitForJob starts a background export, shows how far it has got (on a
// terminal), and returns the address of the finished file.
func waitForJob(ctx context.Context, c *rest.Client, project int64, form string, q url.Values, stderr io.Writer) (string, error) {
	var job struct {
		ID          string
		State       string
		Submissions int64
		Total       int
		Error       string
	}
	if err := c.Do(ctx, "POST", fmt.Sprintf("/v1/projects/%d/forms/%s/export-jobs?%s", project, url.PathEscape(form), q.Encode()), "", nil, &job); err != nil {
		return "", remoteError(err)
	}
	p := newProgress(stderr, "exporting "+form, 0)
	for job.State == "running" {
		if p != nil {
			fmt.Fprintf(stderr, "\rexporting %s: %d of %d submissions\033[K", form, job.Submissions, job.Total)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Second):
		}
		if err := c.Do(ctx, "GET", fmt.Sprintf("/v1/projects/%d/export-jobs/%s", project, job.ID), "", nil, &job); err != nil {
			return "", remoteError(err)
		}
	}
	if p != nil {
		fmt.Fprintf(stderr, "\rexporting %s: %d of %d submissions, done\033[K\n", form, job.Submissions, job.Total)
	}
	if job.State != "done" {
		return "", haven.Errorf(haven.EUNAVAILABLE, "the export failed on the server: %s", job.Error)
	}
	return fmt.Sprintf("/v1/projects/%d/export-jobs/%s/file", project, job.ID), nil
}
