package main

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-org/haven/app"
	"github.com/haven-org/haven/clients/collect"
	"github.com/haven-org/haven/clients/rest"
	"github.com/haven-org/haven/server"
	"github.com/haven-org/haven/storage"
)

// haven login, export and logout against a real server over loopback.
func TestLoginExportLogout(t *testing.T) {
	ctx := context.Background()
	st, err := storage.OpenDir(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Users.Create(ctx, "lead@example.org", "a long enough password", "", true); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(server.New(server.Config{}, app.New(st, app.Options{}), slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer srv.Close()

	// A project with a form and two submissions, set up through the API.
	api, err := rest.Login(ctx, srv.URL, "lead@example.org", "a long enough password")
	if err != nil {
		t.Fatal(err)
	}
	pr, err := api.CreateProject(ctx, "Flood")
	if err != nil {
		t.Fatal(err)
	}
	xform, err := os.ReadFile("../../formspec/testdata/household.xml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.CreateForm(ctx, pr.ID, xform, false); err != nil {
		t.Fatal(err)
	}
	api.UploadDraftAttachment(ctx, pr.ID, "household", "prices.csv", []byte("item,price\nrice,10\n"))
	api.UploadDraftAttachment(ctx, pr.ID, "household", "shelter.png", []byte("png"))
	if _, err := api.PublishDraft(ctx, pr.ID, "household", ""); err != nil {
		t.Fatal(err)
	}
	au, err := api.CreateAppUser(ctx, pr.ID, "Tablet")
	if err != nil {
		t.Fatal(err)
	}
	if err := api.AssignForm(ctx, pr.ID, "household", au.ID); err != nil {
		t.Fatal(err)
	}
	dev := collect.New(au.ServerURL)
	for i := 0; i < 2; i++ {
		doc := fmt.Sprintf(`<household xmlns:orx="http://openrosa.org/xforms" id="household" version="2026110101"><district>north</district><head_name>Head %d</head_name><members>3</members><needs>food water</needs><shelter><roof>tarp</roof><photo/></shelter><orx:meta><orx:instanceID>uuid:cli-%d</orx:instanceID></orx:meta></household>`, i, i)
		if _, err := dev.Submit(ctx, []byte(doc), nil); err != nil {
			t.Fatalf("submit: %v", err)
		}
	}

	dir := t.TempDir()
	creds := filepath.Join(dir, "creds", "credentials.json")
	var out, errs bytes.Buffer
	if err := run(ctx, []string{"export", "--credentials", creds, "--project", "1", "--form", "household"}, nil, &out, &errs); err == nil || !strings.Contains(err.Error(), "haven login") {
		t.Fatalf("export before login: %v", err)
	}
	if err := run(ctx, []string{"login", "--credentials", creds, "--server", srv.URL, "--email", "lead@example.org"}, strings.NewReader("wrong password\n"), &out, &errs); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong password: %v", err)
	}
	if err := run(ctx, []string{"login", "--credentials", creds, "--server", srv.URL, "--email", "lead@example.org"}, strings.NewReader("a long enough password\n"), &out, &errs); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(creds); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v %v", fi, err)
	}

	// The access token has expired: export refreshes it and saves the new one.
	var s rest.Session
	b, _ := os.ReadFile(creds)
	json.Unmarshal(b, &s)
	oldRefresh := s.RefreshToken
	s.ExpiresAt = time.Now().Add(-time.Minute)
	b, _ = json.Marshal(s)
	os.WriteFile(creds, b, 0o600)

	zipPath := filepath.Join(dir, "out.zip")
	args := []string{"export", "--credentials", creds, "--project", fmt.Sprint(pr.ID), "--form", "household", "--labels", "-o", zipPath}
	if err := run(ctx, args, nil, &out, &errs); err != nil {
		t.Fatalf("export: %v (%s)", err, errs.String())
	}
	z, err := zip.OpenReader(zipPath)
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	rc, err := z.Open("household.csv")
	if err != nil {
		t.Fatal(err)
	}
	rows, _ := csv.NewReader(rc).ReadAll()
	rc.Close()
	if len(rows) != 3 || !strings.Contains(strings.Join(rows[1], ","), "Food; Water") {
		t.Fatalf("exported rows: %v", rows)
	}
	b, _ = os.ReadFile(creds)
	json.Unmarshal(b, &s)
	if s.RefreshToken == oldRefresh || time.Until(s.ExpiresAt) < 10*time.Minute {
		t.Fatal("the refreshed session was not saved")
	}

	// An aggregate on two submissions is refused, and the message says why; no file is left.
	aggPath := filepath.Join(dir, "agg.json")
	err = run(ctx, []string{"export", "--credentials", creds, "--project", fmt.Sprint(pr.ID), "--form", "household", "--aggregate", "by=district", "-o", aggPath}, nil, &out, &errs)
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("small aggregate: %v", err)
	}
	if _, err := os.Stat(aggPath); !os.IsNotExist(err) {
		t.Fatal("a refused export left a file")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".haven-export-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}

	out.Reset()
	if err := run(ctx, []string{"logout", "--credentials", creds}, nil, &out, &errs); err != nil || !strings.Contains(out.String(), "Logged out") {
		t.Fatalf("logout: %v", err)
	}
	if _, err := os.Stat(creds); !os.IsNotExist(err) {
		t.Fatal("the credentials file outlived logout")
	}
	// The session ended on the server too.
	if _, err := rest.Resume(&s, nil).Get(ctx, "/v1/users/current"); err == nil {
		t.Fatal("the session still works after logout")
	}
}
