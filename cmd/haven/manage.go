package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/haven-org/haven/clients/rest"
	"github.com/haven-org/haven/formspec/xlsform"
	"rsc.io/qr"
)

// The management commands: what a person does in the console, from a
// terminal, through the REST API of the server `haven login` signed in
// to. Projects, users and app users go by name as well as by id; --json
// prints the server's answer for scripts.

const manageUsage = `Managing a server you logged in to (haven login):
  haven project list | create NAME | show P | set P [--end-date 2027-03-31] [--retention DAYS] [--yes]
  haven project hold P --reason R --reference REF | unhold P --reason R
  haven form list -p P | upload -p P FILE.xlsx|.xml [--publish] | attach -p P FORM FILE...
  haven form fields -p P FORM [--draft] | publish -p P FORM [--version V] | versions -p P FORM
  haven appuser list -p P | create -p P NAME [--forms a,b] [--qr FILE.png] | qr -p P NAME [--qr FILE.png] | revoke -p P NAME
  haven user list | create EMAIL [--name N] [--admin] | disable USER
  haven role grant|revoke -p P USER ROLE      haven clearance set -p P USER TIER
  haven submission list -p P FORM [--limit N] | show -p P FORM ID | erase -p P FORM ID --yes
  haven subject show -p P ID | erase -p P ID --yes | object -p P ID
  haven audit list [-p P] [--action A] [--limit N]     haven certificate get -p P [-o FILE]
P is a project's id or name, USER an id or email, NAME an app user's id or name.
Every command takes --json (the server's answer as JSON) and -h.
`

// remote is one management command's connection and output.
type remote struct {
	c              *rest.Client
	stdout, stderr io.Writer
	json           bool
	fs             *flag.FlagSet
	project        *string
	creds          *string
}

// newRemote makes a command's flag set with the flags every management
// command shares.
func newRemote(name string, stdout, stderr io.Writer) *remote {
	fs := remoteFlags(name, stderr)
	r := &remote{stdout: stdout, stderr: stderr, fs: fs}
	fs.BoolVar(&r.json, "json", false, "print the server's answer as JSON")
	r.creds = fs.String("credentials", "", "the session file from haven login; HAVEN_CREDENTIALS")
	r.project = fs.String("p", "", "the project: its id or its name")
	fs.StringVar(r.project, "project", "", "the project: its id or its name")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage of haven %s:\n", name)
		fs.PrintDefaults()
	}
	return r
}

// parse reads the flags (before or after the arguments) and connects.
func (r *remote) parse(args []string, want int, usage string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(r.fs, args); err != nil {
			return nil, err
		}
		if r.fs.NArg() == 0 {
			break
		}
		pos = append(pos, r.fs.Arg(0))
		args = r.fs.Args()[1:]
	}
	if want >= 0 && len(pos) != want {
		return nil, haven.Errorf(haven.EINVALID, "usage: haven %s", usage)
	}
	path, s, err := savedSession(*r.creds)
	if err != nil {
		return nil, err
	}
	r.c = rest.Resume(s, func(next *rest.Session) {
		if err := saveSession(path, next); err != nil {
			fmt.Fprintln(r.stderr, "haven: the refreshed session could not be saved:", err)
		}
	})
	return pos, nil
}

func (r *remote) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	if err := r.c.Do(ctx, method, path, ct, body, out); err != nil {
		return remoteError(err)
	}
	return nil
}

// print writes v as JSON with --json, else calls table.
func (r *remote) print(v any, table func(w *tabwriter.Writer)) error {
	if r.json {
		enc := json.NewEncoder(r.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	w := tabwriter.NewWriter(r.stdout, 0, 4, 2, ' ', 0)
	table(w)
	return w.Flush()
}

// say prints a sentence, or {"ok":true,...} with --json.
func (r *remote) say(format string, args ...any) {
	if r.json {
		json.NewEncoder(r.stdout).Encode(map[string]any{"ok": true, "message": fmt.Sprintf(format, args...)})
		return
	}
	fmt.Fprintf(r.stdout, format+"\n", args...)
}

// projectID resolves -p: an id, or the name of a project the user sees.
func (r *remote) projectID(ctx context.Context) (int64, error) {
	ref := strings.TrimSpace(*r.project)
	if ref == "" {
		return 0, haven.Errorf(haven.EINVALID, "name the project with -p: its id or its name (haven project list shows them).")
	}
	return r.findProject(ctx, ref)
}

func (r *remote) findProject(ctx context.Context, ref string) (int64, error) {
	if id, err := strconv.ParseInt(ref, 10, 64); err == nil && id > 0 {
		return id, nil
	}
	var list []struct {
		ID   int64
		Name string
	}
	if err := r.do(ctx, "GET", "/v1/projects", nil, &list); err != nil {
		return 0, err
	}
	var found []int64
	for _, p := range list {
		if strings.EqualFold(p.Name, ref) {
			found = append(found, p.ID)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return 0, haven.Errorf(haven.ENOTFOUND, "no project you can see is named %q: haven project list shows them.", ref)
	}
	return 0, haven.Errorf(haven.EINVALID, "%d projects are named %q: give the id instead (haven project list).", len(found), ref)
}

// userID resolves a user: an id, or an email.
func (r *remote) userID(ctx context.Context, ref string) (int64, error) {
	if id, err := strconv.ParseInt(ref, 10, 64); err == nil && id > 0 {
		return id, nil
	}
	var users []struct {
		ID    int64
		Email string
	}
	if err := r.do(ctx, "GET", "/v1/users", nil, &users); err != nil {
		return 0, err
	}
	for _, u := range users {
		if strings.EqualFold(u.Email, ref) {
			return u.ID, nil
		}
	}
	return 0, haven.Errorf(haven.ENOTFOUND, "no user has the email %q: haven user list shows them.", ref)
}

// appUser resolves an app user of a project: an id, or a display name
// (revoked ones only by id).
func (r *remote) appUser(ctx context.Context, pid int64, ref string) (*haven.AppUser, error) {
	var list []*haven.AppUser
	if err := r.do(ctx, "GET", fmt.Sprintf("/v1/projects/%d/app-users", pid), nil, &list); err != nil {
		return nil, err
	}
	id, _ := strconv.ParseInt(ref, 10, 64)
	var found []*haven.AppUser
	for _, au := range list {
		if au.ID == id || (au.RevokedAt == nil && strings.EqualFold(au.DisplayName, ref)) {
			found = append(found, au)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, haven.Errorf(haven.ENOTFOUND, "project %d has no app user %q: haven appuser list -p %d shows them.", pid, ref, pid)
	}
	return nil, haven.Errorf(haven.EINVALID, "%d app users are named %q: give the id instead (haven appuser list).", len(found), ref)
}

func day(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Local().Format("2006-01-02")
}

func when(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04")
}

// --- projects ---

func projectCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, manageUsage)
		return haven.Errorf(haven.EINVALID, "usage: haven project list|create|show|set|hold|unhold")
	}
	r := newRemote("project "+args[0], stdout, stderr)
	switch args[0] {
	case "list":
		if _, err := r.parse(args[1:], 0, "project list"); err != nil {
			return err
		}
		var list []app.ProjectView
		if err := r.do(ctx, "GET", "/v1/projects", nil, &list); err != nil {
			return err
		}
		return r.print(list, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "ID\tNAME\tEND DATE\tDESTRUCTION\tDAYS LEFT\tSTATUS")
			for _, p := range list {
				left := "-"
				if p.DaysLeft != nil {
					left = strconv.Itoa(*p.DaysLeft)
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", p.ID, p.Name, day(p.EndDate), day(p.DestructionDate), left, projectStatus(&p))
			}
		})
	case "create":
		pos, err := r.parse(args[1:], 1, "project create NAME")
		if err != nil {
			return err
		}
		var p app.ProjectView
		if err := r.do(ctx, "POST", "/v1/projects", map[string]string{"name": pos[0]}, &p); err != nil {
			return err
		}
		if r.json {
			return r.print(p, nil)
		}
		r.say("Created project %d, %s.", p.ID, p.Name)
		return nil
	case "show":
		pos, err := r.parse(args[1:], 1, "project show P")
		if err != nil {
			return err
		}
		pid, err := r.findProject(ctx, pos[0])
		if err != nil {
			return err
		}
		var p app.ProjectView
		if err := r.do(ctx, "GET", fmt.Sprintf("/v1/projects/%d", pid), nil, &p); err != nil {
			return err
		}
		return r.print(p, func(w *tabwriter.Writer) {
			fmt.Fprintf(w, "Project\t%d, %s\n", p.ID, p.Name)
			fmt.Fprintf(w, "Status\t%s\n", projectStatus(&p))
			fmt.Fprintf(w, "End date\t%s\n", day(p.EndDate))
			fmt.Fprintf(w, "Retention\t%d days after the end\n", p.RetentionDays)
			fmt.Fprintf(w, "Destruction\t%s\n", day(p.DestructionDate))
			if p.Hold != nil {
				fmt.Fprintf(w, "Legal hold\t%s (%s), since %s\n", p.Hold.Reason, p.Hold.Reference, when(&p.Hold.PlacedAt))
			}
			if p.Warning != "" {
				fmt.Fprintf(w, "Warning\t%s\n", p.Warning)
			}
		})
	case "set":
		end := r.fs.String("end-date", "", "the day collection ends (2027-03-31); \"none\" clears it")
		retention := r.fs.Int("retention", -1, "days the data is kept after the end")
		yes := r.fs.Bool("yes", false, "confirm an end date in the past (the project closes at once)")
		pos, err := r.parse(args[1:], 1, "project set P [--end-date D] [--retention DAYS] [--yes]")
		if err != nil {
			return err
		}
		pid, err := r.findProject(ctx, pos[0])
		if err != nil {
			return err
		}
		body := map[string]any{}
		if *end != "" {
			v := *end
			if v == "none" {
				v = ""
			}
			body["endDate"] = v
		}
		if *retention >= 0 {
			body["retentionDays"] = *retention
		}
		if len(body) == 0 {
			return haven.Errorf(haven.EINVALID, "say what to set: --end-date 2027-03-31 and/or --retention 90.")
		}
		if v, _ := body["endDate"].(string); v != "" {
			t, err := app.ParseWhen("end-date", v)
			if err != nil {
				return err
			}
			if t.Before(time.Now()) && !*yes {
				var p app.ProjectView
				if err := r.do(ctx, "GET", fmt.Sprintf("/v1/projects/%d", pid), nil, &p); err != nil {
					return err
				}
				days := p.RetentionDays
				if *retention >= 0 {
					days = *retention
				}
				destroy := t.AddDate(0, 0, days)
				fmt.Fprintf(stderr, "%s is in the past: project %s closes at once (devices can no longer send), and its data is destroyed for good on %s, at the next haven reap after that day.\n",
					v, p.Name, destroy.Local().Format("2006-01-02"))
				if !confirm(stdin, stderr, "Set it anyway? [y/N] ") {
					return haven.Errorf(haven.EINVALID, "nothing was changed (give --yes to confirm without a prompt).")
				}
			}
			body["confirmPastEndDate"] = true
		}
		var p app.ProjectView
		if err := r.do(ctx, "PATCH", fmt.Sprintf("/v1/projects/%d", pid), body, &p); err != nil {
			return err
		}
		if r.json {
			return r.print(p, nil)
		}
		r.say("Project %s: end date %s, %d days kept after it, destruction %s.", p.Name, day(p.EndDate), p.RetentionDays, day(p.DestructionDate))
		return nil
	case "hold":
		reason := r.fs.String("reason", "", "why the data must be kept")
		ref := r.fs.String("reference", "", "the case, request or order")
		pos, err := r.parse(args[1:], 1, "project hold P --reason R --reference REF")
		if err != nil {
			return err
		}
		pid, err := r.findProject(ctx, pos[0])
		if err != nil {
			return err
		}
		if err := r.do(ctx, "POST", fmt.Sprintf("/v1/projects/%d/legal-hold", pid), map[string]string{"reason": *reason, "reference": *ref}, nil); err != nil {
			return err
		}
		r.say("Legal hold placed on project %d: nothing of it is destroyed while it stands.", pid)
		return nil
	case "unhold":
		reason := r.fs.String("reason", "", "why the hold ends")
		pos, err := r.parse(args[1:], 1, "project unhold P --reason R")
		if err != nil {
			return err
		}
		pid, err := r.findProject(ctx, pos[0])
		if err != nil {
			return err
		}
		if err := r.do(ctx, "DELETE", fmt.Sprintf("/v1/projects/%d/legal-hold", pid), map[string]string{"reason": *reason}, nil); err != nil {
			return err
		}
		r.say("Legal hold lifted on project %d.", pid)
		return nil
	}
	fmt.Fprint(stderr, manageUsage)
	return haven.Errorf(haven.EINVALID, "unknown command haven project %s.", args[0])
}

func projectStatus(p *app.ProjectView) string {
	switch {
	case p.DestroyedAt != nil:
		return "destroyed"
	case p.Hold != nil:
		return "on legal hold"
	case p.Closed:
		return "closed"
	}
	return "open"
}

// confirm asks a yes/no question on a terminal; piped input answers it.
func confirm(stdin io.Reader, stderr io.Writer, question string) bool {
	fmt.Fprint(stderr, question)
	line, _ := readLine(stdin)
	line = strings.ToLower(strings.TrimSpace(line))
	return line == "y" || line == "yes"
}

// --- app users ---

func appUserCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, manageUsage)
		return haven.Errorf(haven.EINVALID, "usage: haven appuser list|create|qr|revoke -p P")
	}
	r := newRemote("appuser "+args[0], stdout, stderr)
	switch args[0] {
	case "list":
		if _, err := r.parse(args[1:], 0, "appuser list -p P"); err != nil {
			return err
		}
		pid, err := r.projectID(ctx)
		if err != nil {
			return err
		}
		var list []*haven.AppUser
		if err := r.do(ctx, "GET", fmt.Sprintf("/v1/projects/%d/app-users", pid), nil, &list); err != nil {
			return err
		}
		return r.print(list, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "ID\tNAME\tCREATED\tSTATUS")
			for _, au := range list {
				st := "active"
				if au.RevokedAt != nil {
					st = "revoked " + when(au.RevokedAt)
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\n", au.ID, au.DisplayName, when(&au.CreatedAt), st)
			}
		})
	case "create":
		forms := r.fs.String("forms", "", "the forms its tablet may fill, comma-separated (default: every published form)")
		png := r.fs.String("qr", "", "also save the QR code as this PNG file (default: NAME.png)")
		pos, err := r.parse(args[1:], 1, "appuser create -p P NAME [--forms a,b] [--qr FILE.png]")
		if err != nil {
			return err
		}
		pid, err := r.projectID(ctx)
		if err != nil {
			return err
		}
		var au rest.AppUser
		if err := r.do(ctx, "POST", fmt.Sprintf("/v1/projects/%d/app-users", pid), map[string]string{"displayName": pos[0]}, &au); err != nil {
			return err
		}
		var ids []string
		if *forms != "" {
			ids = strings.Split(*forms, ",")
		} else {
			var list []haven.Form
			if err := r.do(ctx, "GET", fmt.Sprintf("/v1/projects/%d/forms", pid), nil, &list); err != nil {
				return err
			}
			for _, f := range list {
				if f.PublishedAt != nil {
					ids = append(ids, f.XMLFormID)
				}
			}
		}
		for _, id := range ids {
			id = strings.TrimSpace(id)
			if err := r.do(ctx, "POST", fmt.Sprintf("/v1/projects/%d/forms/%s/assignments/app-user/%d", pid, url.PathEscape(id), au.ID), nil, nil); err != nil {
				return err
			}
		}
		if *png == "" {
			*png = fileName(pos[0]) + ".png"
		}
		return r.showQR(au.CollectSettings, *png, fmt.Sprintf("App user %d, %s, may fill: %s.", au.ID, au.DisplayName, strings.Join(ids, ", ")), au)
	case "qr":
		png := r.fs.String("qr", "", "also save the QR code as this PNG file (default: NAME.png)")
		pos, err := r.parse(args[1:], 1, "appuser qr -p P NAME")
		if err != nil {
			return err
		}
		pid, err := r.projectID(ctx)
		if err != nil {
			return err
		}
		au, err := r.appUser(ctx, pid, pos[0])
		if err != nil {
			return err
		}
		if au.Token == nil {
			return haven.Errorf(haven.ENOTFOUND, "app user %s has no QR code: it was revoked, or made before tokens were kept. Create a new one.", au.DisplayName)
		}
		var p app.ProjectView
		if err := r.do(ctx, "GET", fmt.Sprintf("/v1/projects/%d", pid), nil, &p); err != nil {
			return err
		}
		settings, err := app.CollectSettings(fmt.Sprintf("%s/v1/key/%s/projects/%d", r.c.BaseURL, *au.Token, pid), p.Name)
		if err != nil {
			return err
		}
		if *png == "" {
			*png = fileName(au.DisplayName) + ".png"
		}
		return r.showQR(settings, *png, fmt.Sprintf("App user %d, %s.", au.ID, au.DisplayName), au)
	case "revoke":
		pos, err := r.parse(args[1:], 1, "appuser revoke -p P NAME")
		if err != nil {
			return err
		}
		pid, err := r.projectID(ctx)
		if err != nil {
			return err
		}
		au, err := r.appUser(ctx, pid, pos[0])
		if err != nil {
			return err
		}
		if err := r.do(ctx, "DELETE", fmt.Sprintf("/v1/projects/%d/app-users/%d", pid, au.ID), nil, nil); err != nil {
			return err
		}
		r.say("App user %d, %s, is revoked: its tablet can no longer list forms or send.", au.ID, au.DisplayName)
		return nil
	}
	fmt.Fprint(stderr, manageUsage)
	return haven.Errorf(haven.EINVALID, "unknown command haven appuser %s.", args[0])
}

// fileName makes a display name safe as a file name.
func fileName(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == ':' || r < ' ' {
			return '-'
		}
		return r
	}, strings.TrimSpace(s))
	if s == "" || s == "." || s == ".." {
		return "app-user"
	}
	return s
}

// showQR draws Collect's settings as a QR code in the terminal (two
// modules a character cell, dark on light) and saves it as a PNG.
func (r *remote) showQR(settings, pngPath, caption string, v any) error {
	code, err := qr.Encode(settings, qr.L)
	if err != nil {
		return err
	}
	code.Scale = 8
	if err := writeNew(pngPath, code.PNG()); err != nil {
		return err
	}
	if r.json {
		return r.print(map[string]any{"appUser": v, "collectSettings": settings, "qrPNG": pngPath}, nil)
	}
	fmt.Fprintln(r.stdout, caption)
	fmt.Fprintln(r.stdout, "Scan it in ODK Collect (Settings, Project management, Add project):")
	fmt.Fprint(r.stdout, terminalQR(code))
	fmt.Fprintf(r.stdout, "Saved as %s.\n", pngPath)
	return nil
}

// terminalQR draws a QR code with half blocks, with the quiet zone
// scanners need, light modules as blocks so it scans on dark terminals too.
func terminalQR(code *qr.Code) string {
	const quiet = 2
	n := code.Size
	dark := func(x, y int) bool {
		return x >= 0 && y >= 0 && x < n && y < n && code.Black(x, y)
	}
	var b strings.Builder
	for y := -quiet; y < n+quiet; y += 2 {
		for x := -quiet; x < n+quiet; x++ {
			top, bottom := !dark(x, y), !dark(x, y+1)
			switch {
			case top && bottom:
				b.WriteString("█")
			case top:
				b.WriteString("▀")
			case bottom:
				b.WriteString("▄")
			default:
				b.WriteString(" ")
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// writeNew writes a file that must not exist yet: the CLI never overwrites
// a file silently.
func writeNew(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if os.IsExist(err) {
		return haven.Errorf(haven.EDUPLICATE, "%s already exists: give another file name, or move it away first.", path)
	} else if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// --- users, roles, clearances ---

func userCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, manageUsage)
		return haven.Errorf(haven.EINVALID, "usage: haven user list|create|disable")
	}
	r := newRemote("user "+args[0], stdout, stderr)
	switch args[0] {
	case "list":
		if _, err := r.parse(args[1:], 0, "user list"); err != nil {
			return err
		}
		var list []*haven.User
		if err := r.do(ctx, "GET", "/v1/users", nil, &list); err != nil {
			return err
		}
		return r.print(list, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "ID\tEMAIL\tNAME\tCREATED\tSTATUS")
			for _, u := range list {
				st := "active"
				if u.DeletedAt != nil {
					st = "disabled"
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", u.ID, u.Email, u.DisplayName, when(&u.CreatedAt), st)
			}
		})
	case "create":
		name := r.fs.String("name", "", "the user's display name")
		admin := r.fs.Bool("admin", false, "a site administrator")
		pos, err := r.parse(args[1:], 1, "user create EMAIL [--name N] [--admin]")
		if err != nil {
			return err
		}
		var u struct {
			haven.User
			Password string `json:"password"`
		}
		if err := r.do(ctx, "POST", "/v1/users", map[string]any{"email": pos[0], "displayName": *name, "admin": *admin}, &u); err != nil {
			return err
		}
		if r.json {
			return r.print(u, nil)
		}
		r.say("Created user %d, %s.", u.ID, u.Email)
		if u.Password != "" {
			r.say("Their password, shown only now: %s", u.Password)
		}
		return nil
	case "disable":
		pos, err := r.parse(args[1:], 1, "user disable USER")
		if err != nil {
			return err
		}
		id, err := r.userID(ctx, pos[0])
		if err != nil {
			return err
		}
		if err := r.do(ctx, "DELETE", fmt.Sprintf("/v1/users/%d", id), nil, nil); err != nil {
			return err
		}
		r.say("User %s is disabled: their sessions ended.", pos[0])
		return nil
	}
	fmt.Fprint(stderr, manageUsage)
	return haven.Errorf(haven.EINVALID, "unknown command haven user %s.", args[0])
}

func roleCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "grant" && args[0] != "revoke") {
		fmt.Fprint(stderr, manageUsage)
		return haven.Errorf(haven.EINVALID, "usage: haven role grant|revoke -p P USER ROLE (roles: %s)", strings.Join(haven.Roles, ", "))
	}
	r := newRemote("role "+args[0], stdout, stderr)
	pos, err := r.parse(args[1:], 2, "role "+args[0]+" -p P USER ROLE")
	if err != nil {
		return err
	}
	pid, err := r.projectID(ctx)
	if err != nil {
		return err
	}
	id, err := r.userID(ctx, pos[0])
	if err != nil {
		return err
	}
	method, done := "POST", "now holds"
	if args[0] == "revoke" {
		method, done = "DELETE", "no longer holds"
	}
	if err := r.do(ctx, method, fmt.Sprintf("/v1/projects/%d/assignments/%s/%d", pid, url.PathEscape(pos[1]), id), nil, nil); err != nil {
		return err
	}
	r.say("%s %s the role %s in project %d.", pos[0], done, pos[1], pid)
	return nil
}

func clearanceCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "set" {
		fmt.Fprint(stderr, manageUsage)
		return haven.Errorf(haven.EINVALID, "usage: haven clearance set -p P USER TIER (tiers: public, level_1, level_2, level_3)")
	}
	r := newRemote("clearance set", stdout, stderr)
	pos, err := r.parse(args[1:], 2, "clearance set -p P USER TIER")
	if err != nil {
		return err
	}
	pid, err := r.projectID(ctx)
	if err != nil {
		return err
	}
	id, err := r.userID(ctx, pos[0])
	if err != nil {
		return err
	}
	if err := r.do(ctx, "PUT", fmt.Sprintf("/v1/projects/%d/clearances/%d", pid, id), map[string]string{"clearance": pos[1]}, nil); err != nil {
		return err
	}
	r.say("%s is cleared for %s in project %d.", pos[0], pos[1], pid)
	return nil
}

// --- submissions, subjects, audit, certificates ---

func submissionCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, manageUsage)
		return haven.Errorf(haven.EINVALID, "usage: haven submission list|show|erase -p P FORM")
	}
	r := newRemote("submission "+args[0], stdout, stderr)
	switch args[0] {
	case "list":
		limit := r.fs.Int("limit", 50, "how many")
		pos, err := r.parse(args[1:], 1, "submission list -p P FORM [--limit N]")
		if err != nil {
			return err
		}
		pid, err := r.projectID(ctx)
		if err != nil {
			return err
		}
		var list []haven.Submission
		if err := r.do(ctx, "GET", fmt.Sprintf("/v1/projects/%d/forms/%s/submissions?limit=%d", pid, url.PathEscape(pos[0]), *limit), nil, &list); err != nil {
			return err
		}
		return r.print(list, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "INSTANCE\tRECEIVED\tFORM VERSION\tNAME")
			for _, s := range list {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.InstanceID, when(&s.CreatedAt), s.Current.FormVersion, s.Current.InstanceName)
			}
		})
	case "show":
		pos, err := r.parse(args[1:], 2, "submission show -p P FORM INSTANCE")
		if err != nil {
			return err
		}
		pid, err := r.projectID(ctx)
		if err != nil {
			return err
		}
		var sv struct {
			haven.Submission
			Consent *haven.ConsentRecord `json:"consent"`
			Data    map[string]any       `json:"data"`
			Omitted []string             `json:"omittedFields"`
		}
		if err := r.do(ctx, "GET", fmt.Sprintf("/v1/projects/%d/forms/%s/submissions/%s", pid, url.PathEscape(pos[0]), url.PathEscape(pos[1])), nil, &sv); err != nil {
			return err
		}
		return r.print(sv, func(w *tabwriter.Writer) {
			fmt.Fprintf(w, "Instance\t%s\nReceived\t%s\nForm version\t%s\n", sv.InstanceID, when(&sv.CreatedAt), sv.Current.FormVersion)
			if sv.Consent != nil {
				fmt.Fprintf(w, "Consent\t%s (%s)\n", sv.Consent.Outcome, sv.Consent.LegalBasis)
			}
			flat := map[string]string{}
			flattenData(flat, "", sv.Data)
			for _, k := range sortedStrings(flat) {
				fmt.Fprintf(w, "%s\t%s\n", k, flat[k])
			}
			if len(sv.Omitted) > 0 {
				fmt.Fprintf(w, "Left out\t%d field(s) above your clearance: %s\n", len(sv.Omitted), strings.Join(sv.Omitted, ", "))
			}
		})
	case "erase":
		yes := r.fs.Bool("yes", false, "confirm: the submission and its files are erased for good")
		pos, err := r.parse(args[1:], 2, "submission erase -p P FORM INSTANCE --yes")
		if err != nil {
			return err
		}
		if !*yes {
			return haven.Errorf(haven.EINVALID, "erasing a submission cannot be undone: add --yes to confirm.")
		}
		pid, err := r.projectID(ctx)
		if err != nil {
			return err
		}
		if err := r.do(ctx, "DELETE", fmt.Sprintf("/v1/projects/%d/forms/%s/submissions/%s", pid, url.PathEscape(pos[0]), url.PathEscape(pos[1])), nil, nil); err != nil {
			return err
		}
		r.say("Submission %s is erased, with its files and its key.", pos[1])
		return nil
	}
	fmt.Fprint(stderr, manageUsage)
	return haven.Errorf(haven.EINVALID, "unknown command haven submission %s.", args[0])
}

func flattenData(out map[string]string, prefix string, data map[string]any) {
	for k, v := range data {
		p := strings.TrimPrefix(prefix+"/"+k, "/")
		switch v := v.(type) {
		case map[string]any:
			flattenData(out, p, v)
		case []any:
			for i, e := range v {
				if m, ok := e.(map[string]any); ok {
					flattenData(out, fmt.Sprintf("%s[%d]", p, i+1), m)
				}
			}
		default:
			out[p] = fmt.Sprint(v)
		}
	}
}

func sortedStrings(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func subjectCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, manageUsage)
		return haven.Errorf(haven.EINVALID, "usage: haven subject show|erase|object -p P ID")
	}
	r := newRemote("subject "+args[0], stdout, stderr)
	yes := r.fs.Bool("yes", false, "confirm an erasure")
	pos, err := r.parse(args[1:], 1, "subject "+args[0]+" -p P ID")
	if err != nil {
		return err
	}
	pid, err := r.projectID(ctx)
	if err != nil {
		return err
	}
	path := fmt.Sprintf("/v1/projects/%d/subjects/%s", pid, url.PathEscape(pos[0]))
	switch args[0] {
	case "show":
		var rep app.SubjectReport
		if err := r.do(ctx, "GET", path, nil, &rep); err != nil {
			return err
		}
		return r.print(rep, func(w *tabwriter.Writer) {
			fmt.Fprintf(w, "%d submission(s) about %s\n", len(rep.Submissions), pos[0])
			if rep.Objection != nil {
				fmt.Fprintln(w, "An objection stands: new submissions about this person are refused.")
			}
			for _, s := range rep.Submissions {
				fmt.Fprintf(w, "\n%s\t%s\n", s.FormID, s.InstanceID)
				flat := map[string]string{}
				flattenData(flat, "", s.Data)
				for _, k := range sortedStrings(flat) {
					fmt.Fprintf(w, "  %s\t%s\n", k, flat[k])
				}
			}
		})
	case "erase":
		if !*yes {
			return haven.Errorf(haven.EINVALID, "erasing everything about a person cannot be undone: add --yes to confirm.")
		}
		var answer struct {
			Erasure app.Erasure `json:"erasure"`
		}
		if err := r.do(ctx, "DELETE", path, nil, &answer); err != nil {
			return err
		}
		if r.json {
			return r.print(answer, nil)
		}
		r.say("Erased %d submission(s) and %d file(s) about %s.", answer.Erasure.Submissions, answer.Erasure.Files, pos[0])
		return nil
	case "object":
		if err := r.do(ctx, "POST", path+"/objection", nil, nil); err != nil {
			return err
		}
		r.say("The objection is recorded: new submissions about %s are refused.", pos[0])
		return nil
	}
	fmt.Fprint(stderr, manageUsage)
	return haven.Errorf(haven.EINVALID, "unknown command haven subject %s.", args[0])
}

// auditList answers haven audit list (the server's trail, over the API).
func auditList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	r := newRemote("audit list", stdout, stderr)
	action := r.fs.String("action", "", "an action, or a prefix ending in a dot (submission.)")
	limit := r.fs.Int("limit", 50, "how many events, newest first")
	if _, err := r.parse(args, 0, "audit list [-p P] [--action A] [--limit N]"); err != nil {
		return err
	}
	q := url.Values{"limit": {strconv.Itoa(*limit)}}
	if *action != "" {
		q.Set("action", *action)
	}
	if *r.project != "" {
		pid, err := r.projectID(ctx)
		if err != nil {
			return err
		}
		q.Set("projectId", strconv.FormatInt(pid, 10))
	}
	var events []haven.AuditEvent
	if err := r.do(ctx, "GET", "/v1/audit?"+q.Encode(), nil, &events); err != nil {
		return err
	}
	return r.print(events, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tWHEN\tWHO\tACTION\tOBJECT\tOUTCOME")
		for _, e := range events {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", e.ID, when(&e.At), e.Actor, e.Action, e.Object, e.Outcome)
		}
	})
}

// certificateGet answers haven certificate get: a destroyed project's
// certificate, saved as issued.
func certificateGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	r := newRemote("certificate get", stdout, stderr)
	out := r.fs.String("o", "", "file to write (default: destruction-certificate-project-ID.json)")
	if _, err := r.parse(args, 0, "certificate get -p P [-o FILE]"); err != nil {
		return err
	}
	pid, err := r.projectID(ctx)
	if err != nil {
		return err
	}
	b, err := r.c.Get(ctx, fmt.Sprintf("/v1/projects/%d/destruction-certificate", pid))
	if err != nil {
		return remoteError(err)
	}
	if *out == "" {
		*out = fmt.Sprintf("destruction-certificate-project-%d.json", pid)
	}
	if err := writeNew(*out, b); err != nil {
		return err
	}
	r.say("Saved the certificate as %s. Check it with: haven certificate verify %s", *out, filepath.Base(*out))
	return nil
}

// printProblems lists a refusal's problems one a line (survey row, field,
// what to do), and the message's closing hint once.
func printProblems(w io.Writer, err error) {
	var he *haven.Error
	if !errors.As(err, &he) || he.Details["problems"] == nil {
		fmt.Fprintln(w, "error:", haven.ErrorMessage(err))
		return
	}
	b, _ := json.Marshal(he.Details["problems"])
	var list []struct {
		Path, Message string
		Row           int
	}
	json.Unmarshal(b, &list)
	// An explanation in brackets that several problems share is said once,
	// after them.
	hints := regexp.MustCompile(`\s*\(([^()]+)\)`)
	seen := map[string]int{}
	for _, p := range list {
		for _, m := range hints.FindAllStringSubmatch(p.Message, -1) {
			seen[m[1]]++
		}
	}
	var shared []string
	for _, p := range list {
		msg := hints.ReplaceAllStringFunc(p.Message, func(m string) string {
			inner := hints.FindStringSubmatch(m)[1]
			if seen[inner] < 2 {
				return m
			}
			if !slices.Contains(shared, inner) {
				shared = append(shared, inner)
			}
			return ""
		})
		where := p.Path
		if p.Row > 0 {
			where = fmt.Sprintf("survey row %d, %s", p.Row, p.Path)
		}
		fmt.Fprintf(w, "error: %s: %s\n", where, msg)
	}
	for _, h := range shared {
		fmt.Fprintf(w, "  (%s)\n", h)
	}
	if i := strings.LastIndex(he.Message, "(In an XForm"); i > 0 {
		fmt.Fprintln(w, strings.TrimSuffix(strings.TrimPrefix(he.Message[i:], "("), ")"))
	}
}

// formRemote runs the form commands that talk to the server.
func formRemote(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	r := newRemote("form "+args[0], stdout, stderr)
	switch args[0] {
	case "list":
		if _, err := r.parse(args[1:], 0, "form list -p P"); err != nil {
			return err
		}
		pid, err := r.projectID(ctx)
		if err != nil {
			return err
		}
		var list []haven.Form
		if err := r.do(ctx, "GET", fmt.Sprintf("/v1/projects/%d/forms", pid), nil, &list); err != nil {
			return err
		}
		return r.print(list, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "FORM ID\tNAME\tVERSION\tSTATE\tPUBLISHED")
			for _, f := range list {
				v := f.Version
				if f.PublishedAt == nil {
					v = "(draft)"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", f.XMLFormID, f.Name, v, f.State, when(f.PublishedAt))
			}
		})
	case "upload":
		publish := r.fs.Bool("publish", false, "publish at once (default: a draft)")
		pos, err := r.parse(args[1:], 1, "form upload -p P FILE.xlsx|FILE.xml [--publish]")
		if err != nil {
			return err
		}
		pid, err := r.projectID(ctx)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(pos[0])
		if err != nil {
			return haven.Errorf(haven.EINVALID, "cannot read %s: %v", pos[0], err)
		}
		ct := "application/xml"
		switch strings.ToLower(filepath.Ext(pos[0])) {
		case ".xlsx":
			ct = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
		case ".xls":
			ct = "application/vnd.ms-excel"
		case ".xml":
		default:
			return haven.Errorf(haven.EINVALID, "%s is neither an XLSForm (.xlsx or .xls) nor an XForm (.xml).", pos[0])
		}
		// A form already on the server gets a new draft; a new one is created.
		stem := strings.TrimSuffix(filepath.Base(pos[0]), filepath.Ext(pos[0]))
		formID, err := uploadedFormID(b, ct, stem, stderr)
		if err != nil {
			return err
		}
		var existing []haven.Form
		if err := r.do(ctx, "GET", fmt.Sprintf("/v1/projects/%d/forms", pid), nil, &existing); err != nil {
			return err
		}
		path := fmt.Sprintf("/v1/projects/%d/forms?publish=%v", pid, *publish)
		for _, f := range existing {
			if f.XMLFormID == formID {
				path = fmt.Sprintf("/v1/projects/%d/forms/%s/draft", pid, url.PathEscape(formID))
			}
		}
		r.c.Header = map[string]string{"X-XlsForm-FormId-Fallback": url.PathEscape(stem)}
		var f haven.Form
		err = r.c.Do(ctx, "POST", path, ct, progressReader(bytes.NewReader(b), int64(len(b)), "uploading "+filepath.Base(pos[0]), stderr), &f)
		if err == nil && strings.HasSuffix(path, "/draft") {
			if *publish {
				var pf *haven.Form
				pf, err = r.c.PublishDraft(ctx, pid, formID, "")
				if pf != nil {
					f = *pf
				}
			} else {
				err = r.do(ctx, "GET", fmt.Sprintf("/v1/projects/%d/forms/%s", pid, url.PathEscape(formID)), nil, &f)
			}
		}
		if re := (*rest.Error)(nil); errors.As(err, &re) && re.Details != nil {
			printProblems(stderr, &haven.Error{Code: haven.EINVALID, Message: re.Message, Details: re.Details})
			return haven.Errorf(haven.EINVALID, "the server refused %s: fix the problems above and upload it again.", pos[0])
		} else if err != nil {
			return remoteError(err)
		}
		if r.json {
			return r.print(f, nil)
		}
		state := "as a draft (publish it with haven form publish)"
		if *publish {
			state = "and published as version " + f.Version
		}
		r.say("Uploaded form %s, %s, %s.", f.XMLFormID, f.Name, state)
		return nil
	case "attach":
		pos, err := r.parse(args[1:], -1, "form attach -p P FORM FILE...")
		if err != nil {
			return err
		}
		if len(pos) < 2 {
			return haven.Errorf(haven.EINVALID, "usage: haven form attach -p P FORM FILE... (the media files the draft names)")
		}
		pid, err := r.projectID(ctx)
		if err != nil {
			return err
		}
		for _, file := range pos[1:] {
			b, err := os.ReadFile(file)
			if err != nil {
				return haven.Errorf(haven.EINVALID, "cannot read %s: %v", file, err)
			}
			body := progressReader(bytes.NewReader(b), int64(len(b)), "uploading "+filepath.Base(file), stderr)
			if err := r.c.Do(ctx, "POST", fmt.Sprintf("/v1/projects/%d/forms/%s/draft/attachments/%s", pid, url.PathEscape(pos[0]), url.PathEscape(filepath.Base(file))), "application/octet-stream", body, nil); err != nil {
				return remoteError(err)
			}
			r.say("Attached %s to the draft of %s.", filepath.Base(file), pos[0])
		}
		return nil
	case "fields":
		draft := r.fs.Bool("draft", false, "the draft's fields (default: the published version's)")
		pos, err := r.parse(args[1:], 1, "form fields -p P FORM [--draft]")
		if err != nil {
			return err
		}
		pid, err := r.projectID(ctx)
		if err != nil {
			return err
		}
		path := fmt.Sprintf("/v1/projects/%d/forms/%s/fields", pid, url.PathEscape(pos[0]))
		if *draft {
			path = fmt.Sprintf("/v1/projects/%d/forms/%s/draft/fields", pid, url.PathEscape(pos[0]))
		}
		var fields []app.Field
		if err := r.do(ctx, "GET", path, nil, &fields); err != nil {
			return err
		}
		return r.print(fields, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "FIELD\tTYPE\tPURPOSE\tTIER\tDERIVED\tAPPLIED")
			for _, f := range fields {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Path, f.Type, f.Purpose, f.Sensitivity, f.Derived, f.Effective)
			}
		})
	case "publish":
		version := r.fs.String("version", "", "the version to publish as (default: the draft's)")
		pos, err := r.parse(args[1:], 1, "form publish -p P FORM [--version V]")
		if err != nil {
			return err
		}
		pid, err := r.projectID(ctx)
		if err != nil {
			return err
		}
		f, err := r.c.PublishDraft(ctx, pid, pos[0], *version)
		if re := (*rest.Error)(nil); errors.As(err, &re) && re.Details != nil {
			printProblems(stderr, &haven.Error{Code: haven.EINVALID, Message: re.Message, Details: re.Details})
			return haven.Errorf(haven.EINVALID, "form %s was not published: fix the problems above, upload the form again and publish.", pos[0])
		} else if err != nil {
			return remoteError(err)
		}
		if r.json {
			return r.print(f, nil)
		}
		r.say("Published %s as version %s: devices get it at their next form list.", f.XMLFormID, f.Version)
		return nil
	case "versions":
		pos, err := r.parse(args[1:], 1, "form versions -p P FORM")
		if err != nil {
			return err
		}
		pid, err := r.projectID(ctx)
		if err != nil {
			return err
		}
		var list []haven.FormVersion
		if err := r.do(ctx, "GET", fmt.Sprintf("/v1/projects/%d/forms/%s/versions", pid, url.PathEscape(pos[0])), nil, &list); err != nil {
			return err
		}
		return r.print(list, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "VERSION\tPUBLISHED\tHASH")
			for _, v := range list {
				fmt.Fprintf(w, "%s\t%s\t%s\n", v.Version, when(v.PublishedAt), v.Hash)
			}
		})
	}
	fmt.Fprint(stderr, formUsage)
	return haven.Errorf(haven.EINVALID, "unknown command haven form %s.", args[0])
}

// uploadedFormID reads the form id an upload will have, as the server
// will: from the XLSForm's settings (or the file's name), or the XForm.
func uploadedFormID(b []byte, contentType, stem string, stderr io.Writer) (string, error) {
	id, err := app.FormID(app.Upload{Body: b, ContentType: contentType, FormIDFallback: stem})
	var he *haven.Error
	if errors.As(err, &he) && he.Details["errors"] != nil {
		if list, ok := he.Details["errors"].([]xlsform.Diagnostic); ok {
			for _, e := range list {
				fmt.Fprintln(stderr, "error:", e)
			}
		}
		return "", haven.Errorf(haven.EINVALID, "the XLSForm does not convert: fix the problems above (haven form convert says the same) and upload it again.")
	}
	return id, err
}
