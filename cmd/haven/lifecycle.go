package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/haven-org/haven/storage"
)

// reapLoop runs the reaper at start and every hour until ctx ends, and
// logs a warning for every project 30 and 7 days (or less) before its
// destruction date.
func reapLoop(ctx context.Context, st *storage.Store, log *slog.Logger) {
	for {
		if !st.DB.Leader(ctx) { // another node sharing the database runs it
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Minute):
			}
			continue
		}
		due, err := st.Reap(ctx, false, "schedule")
		if err != nil {
			log.Error("destroying the data of ended projects", "err", err)
		}
		for _, d := range due {
			if d.Due {
				log.Info("project data destroyed; certificate at GET /v1/projects/{id}/destruction-certificate", "project", d.Project.ID, "name", d.Project.Name)
			} else if w := app.Warning(d.Project, st.DB.Now()); w != "" {
				log.Warn(w, "project", d.Project.ID, "name", d.Project.Name, "days_left", d.DaysLeft)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Hour):
		}
	}
}

// reapCmd runs `haven reap [--dry-run]`.
func reapCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, data := flags("reap", stderr)
	dry := fs.Bool("dry-run", false, "say what would be destroyed, destroy nothing")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	st, err := data.openExisting(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	due, err := st.Reap(ctx, *dry, "haven reap")
	for _, d := range due {
		switch {
		case d.Due && *dry:
			fmt.Fprintf(stdout, "project %d %q: due, would be destroyed\n", d.Project.ID, d.Project.Name)
		case d.Due:
			fmt.Fprintf(stdout, "project %d %q: destroyed\n", d.Project.ID, d.Project.Name)
		case d.Project.Hold != nil:
			fmt.Fprintf(stdout, "project %d %q: on legal hold (%s)\n", d.Project.ID, d.Project.Name, d.Project.Hold.Reference)
		default:
			fmt.Fprintf(stdout, "project %d %q: %d days left\n", d.Project.ID, d.Project.Name, d.DaysLeft)
		}
	}
	return err
}

// backupCmd runs `haven backup --to DIR`.
func backupCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, data := flags("backup", stderr)
	to := fs.String("to", "", "an empty or new folder for the backup")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *to == "" {
		return haven.Errorf(haven.EINVALID, "say where the backup goes: --to DIR (a new or empty folder).")
	}
	st, err := data.openExisting(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	line := newStatusLine(stderr)
	n, err := st.BackupWithProgress(ctx, *to, func(files int, bytes int64) {
		line.set("backing up: the database and %d files, %s", files, bytesHuman(bytes))
	})
	line.done()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Backed up the database and %d stored files to %s.\nThe master key and the key store (keys/) are not in it: keep them apart. Restore a backup beside the live keys/ folder.\n", n, *to)
	return nil
}

// certificateCmd runs `haven certificate verify FILE`.
func certificateCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) < 1 || args[0] != "verify" {
		return haven.Errorf(haven.EINVALID, "usage: haven certificate verify FILE [--data DIR] (FILE as GET .../destruction-certificate answered it), or haven certificate get -p P")
	}
	fs, data := flags("certificate verify", stderr)
	// The file may come before or after the flags; -h is help.
	var files []string
	rest := args[1:]
	for {
		if err := parseFlags(fs, rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(files) != 1 {
		return haven.Errorf(haven.EINVALID, "usage: haven certificate verify FILE [--data DIR]")
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		return haven.Errorf(haven.EINVALID, "reading %s: %v", files[0], err)
	}
	var sc storage.SignedCertificate
	if err := json.Unmarshal(b, &sc); err != nil || len(sc.Body) == 0 {
		return haven.Errorf(haven.EINVALID, "%s is not a destruction certificate as Haven issues them.", files[0])
	}
	st, err := data.openExisting(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.VerifyCertificate(ctx, &sc); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "The certificate is signed by this server and recorded in its audit trail, which verifies.\n")
	return nil
}

// applyEntities applies the entity queue at start (what a crash left) and
// every minute (offline updates held for their predecessor are applied
// anyway after app.BacklogWait), until ctx ends. Submissions apply their
// own at once; this is the safety net.
func applyEntities(ctx context.Context, svc *app.Service, log *slog.Logger) {
	for {
		if err := svc.ApplyEntities(ctx); err != nil && ctx.Err() == nil {
			log.Error("applying submissions' entities", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Minute):
		}
	}
}

// sweepExports erases, every minute until ctx ends, the background exports
// not downloaded within their hour and those whose node died; every node
// sweeps (a job is removed once, whichever node gets there).
func sweepExports(ctx context.Context, svc *app.Service, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Minute):
		}
		if _, err := svc.SweepExportJobs(ctx); err != nil && ctx.Err() == nil {
			log.Error("erasing expired exports", "err", err)
		}
	}
}
