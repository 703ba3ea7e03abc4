package main

import (
	"archive/zip"
	"bytes"
	"compress/zlib"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-org/haven/app"
	"github.com/haven-org/haven/clients/collect"
	"github.com/haven-org/haven/formspec/xlsform/xlsxtest"
	"github.com/haven-org/haven/server"
	"github.com/haven-org/haven/storage"
	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"
)

// cliForm is a household XLSForm; unmapped, two fields lack a purpose.
func cliForm(t *testing.T, mapped bool) []byte {
	t.Helper()
	p := func(s string) string {
		if mapped {
			return s
		}
		return ""
	}
	b, err := xlsxtest.FromMarkdown(fmt.Sprintf(`
| survey   |                     |          |              |           |             |
|          | type                | name     | label        | purpose   | sensitivity |
|          | acknowledge         | consent  | Agrees       | Consent   | public      |
|          | text                | hh_id    | Household ID | Links     | level_2     |
|          | select_one district | district | District     | %s        | public      |
|          | integer             | size     | Size         | %s        | public      |
|          | date                | visited  | Visit date   | Planning  | public      |
|          | geopoint            | loc      | Location     | Map       | level_2     |
| choices  |                     |          |              |           |             |
|          | list_name           | name     | label        |           |             |
|          | district            | north    | North        |           |             |
|          | district            | south    | South        |           |             |
| settings |                     |          |              |           |             |
|          | form_id             | version  | consent      | subject_id |            |
|          | household           | 1        | consent      | hh_id      |            |
`, p("Planning"), p("Targeting")))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A new user goes from an XLSForm on disk to a QR code, 20 submissions and
// an XLSX export with labels using only haven commands; and every
// management command works against a real server, by names as well as ids.
func TestManageCommands(t *testing.T) {
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
	dir := t.TempDir()
	t.Chdir(dir)
	creds := filepath.Join(dir, "credentials.json")
	haven := func(stdin string, args ...string) (string, error) {
		t.Helper()
		var out, errs bytes.Buffer
		args = append(args, "--credentials", creds)
		if args[0] == "form" && args[1] == "convert" {
			args = args[:len(args)-2]
		}
		err := run(ctx, args, strings.NewReader(stdin), &out, &errs)
		return out.String() + errs.String(), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := haven("", args...)
		if err != nil {
			t.Fatalf("haven %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	if _, err := haven("a long enough password\n", "login", "--server", srv.URL, "--email", "lead@example.org"); err != nil {
		t.Fatal(err)
	}

	// convert checks what publishing checks, one line per problem.
	os.WriteFile("unmapped.xlsx", cliForm(t, false), 0o644)
	os.WriteFile("household.xlsx", cliForm(t, true), 0o644)
	out, err := haven("", "form", "convert", "unmapped.xlsx", "-o", "unmapped.xml")
	if _, statErr := os.Stat("unmapped.xml"); statErr != nil {
		t.Error("convert did not write the XForm of a form it converts")
	}
	if err == nil || !strings.Contains(out, "survey row 4, /data/district: has no purpose") || !strings.Contains(out, "survey row 5, /data/size") {
		t.Fatalf("convert of an unmapped form: %v\n%s", err, out)
	}
	if out := must("form", "convert", "household.xlsx", "-o", "household.xml"); !strings.Contains(out, "Haven will publish it") {
		t.Errorf("convert of a mapped form: %s", out)
	}

	// A project by name; the form uploaded, its fields, published.
	must("project", "create", "Flood response")
	if out := must("project", "list"); !strings.Contains(out, "Flood response") || !strings.Contains(out, "open") {
		t.Errorf("project list: %s", out)
	}
	if out, err := haven("", "form", "upload", "-p", "Flood response", "unmapped.xlsx", "--publish"); err == nil || !strings.Contains(out, "survey row 4") {
		t.Errorf("publishing an unmapped form: %v\n%s", err, out)
	}
	broken, _ := xlsxtest.FromMarkdown("| survey |      |      |       |\n|        | type | name | label |\n|        | telepathy | mind | Mind |\n")
	os.WriteFile("broken.xlsx", broken, 0o644)
	if out, err := haven("", "form", "upload", "-p", "Flood response", "broken.xlsx"); err == nil || !strings.Contains(out, "error: ") || !strings.Contains(out, "telepathy") {
		t.Errorf("uploading a workbook that does not convert: %v\n%s", err, out)
	}
	must("form", "upload", "-p", "Flood response", "household.xlsx")
	if out := must("form", "fields", "-p", "Flood response", "household", "--draft"); !strings.Contains(out, "/data/loc") || !strings.Contains(out, "level_2") {
		t.Errorf("form fields: %s", out)
	}
	if out := must("form", "publish", "-p", "Flood response", "household"); !strings.Contains(out, "version 1") {
		t.Errorf("form publish: %s", out)
	}
	if out := must("form", "list", "-p", "1"); !strings.Contains(out, "household") {
		t.Errorf("form list: %s", out)
	}
	must("form", "versions", "-p", "1", "household")

	// An app user: a QR code in the terminal and as a PNG that scans.
	out = must("appuser", "create", "-p", "Flood response", "Tablet 1")
	if !strings.Contains(out, "█") || !strings.Contains(out, "Tablet 1.png") || !strings.Contains(out, "household") {
		t.Errorf("appuser create: %s", out)
	}
	serverURL := scanQR(t, "Tablet 1.png")
	if _, err := haven("", "appuser", "qr", "-p", "Flood response", "Tablet 1"); err == nil {
		t.Error("appuser qr overwrote Tablet 1.png")
	}
	must("appuser", "qr", "-p", "Flood response", "Tablet 1", "--qr", "again.png")
	if scanQR(t, "again.png") != serverURL {
		t.Error("the QR code drawn again names another server URL")
	}
	dev := collect.New(serverURL)
	for i := 0; i < 20; i++ {
		doc := fmt.Sprintf(`<data id="household" version="1"><consent>OK</consent><hh_id>HH-%d</hh_id><district>%s</district><size>%d</size><visited>2026-11-%02d</visited><loc>2.%02d 45.3 10 5</loc><meta><instanceID>uuid:cli-%d</instanceID></meta></data>`,
			i, []string{"north", "south"}[i%2], i+1, i+1, i, i)
		if res, err := dev.Submit(ctx, []byte(doc), nil); err != nil || res.Status != 201 {
			t.Fatalf("submission %d: %+v %v", i, res, err)
		}
	}
	// The XLSX export with labels.
	must("export", "--project", "1", "--form", "household", "--format", "xlsx", "--labels")
	if _, err := os.Stat("household-submissions.xlsx"); err != nil {
		t.Fatal(err)
	}
	if _, err := haven("", "export", "--project", "1", "--form", "household", "--format", "xlsx"); err == nil {
		t.Error("export overwrote household.xlsx silently")
	}
	// The same in the background, watched, then downloaded.
	must("export", "--project", "1", "--form", "household", "--format", "xlsx", "--background", "-o", "background.xlsx")
	if bg := xlsxSheet(t, "background.xlsx"); strings.Count(bg, "<row") != 21 {
		t.Errorf("the background export: %.300s", bg)
	}
	sheet := xlsxSheet(t, "household-submissions.xlsx")
	if !strings.Contains(sheet, "North") || strings.Count(sheet, "<row") != 21 {
		t.Errorf("the export: %.600s", sheet)
	}

	// Submissions and a data subject.
	if out := must("submission", "list", "-p", "Flood response", "household"); strings.Count(out, "uuid:cli-") != 20 {
		t.Errorf("submission list: %s", out)
	}
	if out := must("submission", "show", "-p", "1", "household", "uuid:cli-3"); !strings.Contains(out, "HH-3") || !strings.Contains(out, "consent") {
		t.Errorf("submission show: %s", out)
	}
	if out := must("subject", "show", "-p", "1", "HH-4"); !strings.Contains(out, "1 submission(s)") {
		t.Errorf("subject show: %s", out)
	}
	if _, err := haven("", "subject", "erase", "-p", "1", "HH-4"); err == nil {
		t.Error("subject erase without --yes")
	}
	if out := must("subject", "erase", "-p", "1", "HH-4", "--yes"); !strings.Contains(out, "Erased 1 submission") {
		t.Errorf("subject erase: %s", out)
	}
	must("submission", "erase", "-p", "1", "household", "uuid:cli-5", "--yes")

	// People: a user, a role and a clearance by email.
	out = must("user", "create", "dm@example.org", "--name", "Data manager")
	if !strings.Contains(out, "password, shown only now") {
		t.Errorf("user create: %s", out)
	}
	must("role", "grant", "-p", "Flood response", "dm@example.org", "datamanager")
	must("clearance", "set", "-p", "Flood response", "dm@example.org", "level_1")
	if out := must("user", "list", "--json"); !json.Valid([]byte(out)) || !strings.Contains(out, "dm@example.org") {
		t.Errorf("user list --json: %s", out)
	}
	must("role", "revoke", "-p", "1", "dm@example.org", "datamanager")
	must("user", "disable", "dm@example.org")

	// The end of the project: a past end date needs a confirmation.
	if out, err := haven("n\n", "project", "set", "Flood response", "--end-date", "2020-01-01"); err == nil || !strings.Contains(out, "closes at once") || !strings.Contains(out, "destroyed for good") {
		t.Errorf("a past end date without confirmation: %v\n%s", err, out)
	}
	if out := must("project", "show", "1"); !strings.Contains(out, "open") {
		t.Errorf("a refused end date changed the project: %s", out)
	}
	must("project", "set", "Flood response", "--end-date", "2099-01-01", "--retention", "30")
	must("project", "hold", "1", "--reason", "Inquiry", "--reference", "Case 7")
	if out := must("project", "show", "1"); !strings.Contains(out, "Inquiry") || !strings.Contains(out, "2099-01-31") {
		t.Errorf("project show: %s", out)
	}
	must("project", "unhold", "1", "--reason", "Inquiry closed")
	if out := must("audit", "list", "-p", "1", "--action", "project."); !strings.Contains(out, "project.hold.lift") {
		t.Errorf("audit list: %s", out)
	}

	// A destroyed project's certificate, fetched and checked.
	must("project", "create", "Pilot")
	var pr struct{ ID int64 }
	out = must("project", "list", "--json")
	var list []struct {
		ID   int64
		Name string
	}
	json.Unmarshal([]byte(out), &list)
	for _, p := range list {
		if p.Name == "Pilot" {
			pr.ID = p.ID
		}
	}
	if err := deleteProject(ctx, srv.URL, pr.ID); err != nil {
		t.Fatal(err)
	}
	if out := must("certificate", "get", "-p", "Pilot"); !strings.Contains(out, "haven certificate verify") {
		t.Errorf("certificate get: %s", out)
	}

	// Help is help; a mistake says what to do.
	var sink bytes.Buffer
	if err := run(ctx, []string{"project", "set", "-h"}, nil, &sink, &sink); !errors.Is(err, flag.ErrHelp) || !strings.Contains(sink.String(), "-end-date") {
		t.Errorf("project set -h: %v %s", err, sink.String())
	}
	if out, err := haven("", "appuser", "revoke", "-p", "Flood response", "Nobody"); err == nil || !strings.Contains(out+err.Error(), "appuser list") {
		t.Errorf("revoking an unknown app user: %v", err)
	}
	if out := must("appuser", "revoke", "-p", "Flood response", "Tablet 1"); !strings.Contains(out, "revoked") {
		t.Errorf("appuser revoke: %s", out)
	}
}

func deleteProject(ctx context.Context, base string, id int64) error {
	var s struct{ Token string }
	b, _ := json.Marshal(map[string]string{"email": "lead@example.org", "password": "a long enough password"})
	resp, err := httpDo(ctx, "POST", base+"/v1/sessions", "", b)
	if err != nil {
		return err
	}
	json.Unmarshal(resp, &s)
	_, err = httpDo(ctx, "DELETE", fmt.Sprintf("%s/v1/projects/%d", base, id), s.Token, nil)
	return err
}

// scanQR decodes a QR code PNG as Collect reads it and returns its server URL.
func scanQR(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	bmp, _ := gozxing.NewBinaryBitmapFromImage(img)
	res, err := qrcode.NewQRCodeReader().Decode(bmp, pureCode)
	if err != nil {
		t.Fatalf("%s does not scan: %v", path, err)
	}
	raw, _ := base64.StdEncoding.DecodeString(res.GetText())
	zr, err := zlib.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		General struct {
			ServerURL string `json:"server_url"`
		} `json:"general"`
	}
	json.NewDecoder(zr).Decode(&s)
	if !strings.Contains(s.General.ServerURL, "/v1/key/") {
		t.Fatalf("the QR code's settings: %+v", s)
	}
	return s.General.ServerURL
}

// xlsxSheet returns the first worksheet's XML of a workbook.
func xlsxSheet(t *testing.T, path string) string {
	t.Helper()
	z, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	rc, err := z.Open("xl/worksheets/sheet1.xml")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

func httpDo(ctx context.Context, method, url, token string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	return b, nil
}

// Commands that read a data directory never create one: they say where
// they looked. -h is help, also after verify.
func TestReadersNeedTheirDataDirectory(t *testing.T) {
	ctx := context.Background()
	missing := filepath.Join(t.TempDir(), "typo")
	cert := filepath.Join(t.TempDir(), "cert.json")
	os.WriteFile(cert, []byte(`{"certificate":{"projectId":1},"signature":"AA=="}`), 0o644)
	for _, args := range [][]string{
		{"audit", "verify", "--data", missing},
		{"reap", "--data", missing},
		{"backup", "--to", filepath.Join(t.TempDir(), "b"), "--data", missing},
		{"certificate", "verify", cert, "--data", missing},
	} {
		var out bytes.Buffer
		err := run(ctx, args, nil, &out, &out)
		if err == nil || !strings.Contains(err.Error(), "no Haven data directory at "+missing) {
			t.Errorf("haven %s: %v", strings.Join(args, " "), err)
		}
		if _, statErr := os.Stat(missing); !os.IsNotExist(statErr) {
			t.Fatalf("haven %s created %s", strings.Join(args, " "), missing)
		}
	}
	var help bytes.Buffer
	if err := run(ctx, []string{"certificate", "verify", "--help"}, nil, &help, &help); !errors.Is(err, flag.ErrHelp) || !strings.Contains(help.String(), "-data") {
		t.Errorf("certificate verify --help: %v %s", err, help.String())
	}
}

// pureCode decodes an image that is the code and its quiet zone alone, as
// Haven draws it. zxing's finder-pattern search, made for camera frames,
// misses about one code in a hundred drawn pixel-exact at a fixed scale
// (whichever mask pattern the encoder picks; zbar reads them all), so a
// test that searched would fail at random on a code that is sound.
var pureCode = map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_PURE_BARCODE: true}
