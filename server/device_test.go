package server_test

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-org/haven/clients/collect"
	"github.com/haven-org/haven/formspec/xlsform/xlsxtest"
)

var ctx = context.Background()

// TestWalkthrough is the README's walk-through: publish a form with media,
// make an app user, and use it from a device.
func TestWalkthrough(t *testing.T) {
	e := newEnv(t)
	var pr struct {
		ID   int64
		Name string
	}
	e.admin("POST", "/v1/projects", map[string]string{"name": "Flood response"}, &pr)
	base := fmt.Sprintf("/v1/projects/%d/forms", pr.ID)

	var form struct{ XMLFormID, State, Version string }
	e.admin("POST", base, householdXML(t), &form)
	if form.XMLFormID != "household" {
		t.Fatalf("form: %+v", form)
	}
	var expected []struct {
		Name   string
		Exists bool
	}
	e.admin("GET", base+"/household/draft/attachments", nil, &expected)
	if len(expected) != 2 || expected[0].Name != "prices.csv" || expected[0].Exists {
		t.Fatalf("draft attachments: %+v", expected)
	}
	if st := e.call("POST", base+"/household/draft/attachments/other.csv", e.token, []byte("x"), nil); st != 404 {
		t.Fatalf("uploading a file the form does not use: %d, want 404", st)
	}
	e.admin("POST", base+"/household/draft/attachments/prices.csv", pricesCSV, nil)
	e.admin("POST", base+"/household/draft/attachments/shelter.png", shelterPNG, nil)

	// Not published yet: devices see nothing.
	var au struct {
		ID              int64
		Token           string
		ServerURL       string
		CollectSettings string
	}
	e.admin("POST", fmt.Sprintf("/v1/projects/%d/app-users", pr.ID), map[string]string{"displayName": "Tablet 1"}, &au)
	dev := collect.New(au.ServerURL)
	if forms, err := dev.FormList(ctx); err != nil || len(forms) != 0 {
		t.Fatalf("form list before publishing: %v %v", forms, err)
	}
	var published map[string]bool
	e.admin("POST", base+"/household/draft/publish?version=1", nil, &published)
	e.admin("GET", base+"/household", nil, &form)
	if !published["success"] || form.Version != "1" || form.State != "open" {
		t.Fatalf("published: %v %+v", published, form)
	}
	// App users see only the forms assigned to them, as in ODK Central.
	if forms, err := dev.FormList(ctx); err != nil || len(forms) != 0 {
		t.Fatalf("form list before the form is assigned: %v %v", forms, err)
	}
	e.admin("POST", fmt.Sprintf("%s/household/assignments/app-user/%d", base, au.ID), nil, nil)

	// The QR payload is Collect's settings JSON, deflated and base64'd.
	if !strings.HasSuffix(au.ServerURL, fmt.Sprintf("/v1/key/%s/projects/%d", au.Token, pr.ID)) {
		t.Fatalf("server URL %q", au.ServerURL)
	}
	raw, err := base64.StdEncoding.DecodeString(au.CollectSettings)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zlib.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	var settings struct {
		General map[string]string
		Admin   map[string]any
	}
	if err := json.NewDecoder(zr).Decode(&settings); err != nil {
		t.Fatal(err)
	}
	if settings.General["server_url"] != au.ServerURL || settings.Admin == nil {
		t.Fatalf("settings: %+v", settings)
	}

	forms, err := dev.FormList(ctx)
	if err != nil || len(forms) != 1 {
		t.Fatalf("form list: %v %v", forms, err)
	}
	f := forms[0]
	if f.FormID != "household" || f.Name != "Household survey" || f.Version != "1" || f.ManifestURL == "" {
		t.Fatalf("entry: %+v", f)
	}
	xform, err := dev.Download(ctx, f.DownloadURL, f.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(xform, []byte(`version="1"`)) {
		t.Fatal("the served form does not carry the published version")
	}
	media, err := dev.Manifest(ctx, f.ManifestURL)
	if err != nil || len(media) != 2 {
		t.Fatalf("manifest: %+v %v", media, err)
	}
	for _, m := range media {
		b, err := dev.Download(ctx, m.DownloadURL, m.Hash)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string][]byte{"prices.csv": pricesCSV, "shelter.png": shelterPNG}[m.Filename]; !bytes.Equal(b, want) {
			t.Fatalf("%s: got %q", m.Filename, b)
		}
	}

	// Submit with a photo; version "1" is what the served form says.
	photo := bytes.Repeat([]byte("jpeg"), 5000)
	doc := bytes.Replace(instance("uuid:w-1", "Amina", "1700000000.jpg"), []byte(`version="2026110101"`), []byte(`version="1"`), 1)
	res, err := dev.Submit(ctx, doc, []collect.File{collect.BytesFile("1700000000.jpg", photo)})
	if err != nil || res.Status != 201 || !strings.Contains(res.Message, "received") {
		t.Fatalf("submit: %+v %v", res, err)
	}

	// The administrator sees it, its XML and its photo.
	sb := base + "/household/submissions"
	resp := e.request("GET", sb, e.token, "", nil)
	var subs []struct {
		InstanceID     string
		SubmitterID    int64
		DeviceID       string
		CurrentVersion struct {
			InstanceName       string
			AttachmentsPresent int
		}
	}
	json.NewDecoder(resp.Body).Decode(&subs)
	resp.Body.Close()
	if resp.Header.Get("X-Total-Count") != "1" || len(subs) != 1 {
		t.Fatalf("list: %+v total %s", subs, resp.Header.Get("X-Total-Count"))
	}
	s := subs[0]
	if s.InstanceID != "uuid:w-1" || s.SubmitterID != au.ID || s.DeviceID != dev.DeviceID || s.CurrentVersion.InstanceName != "HH Amina" || s.CurrentVersion.AttachmentsPresent != 1 {
		t.Fatalf("submission: %+v", s)
	}
	resp = e.request("GET", sb+"/uuid:w-1.xml", e.token, "", nil)
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, doc) {
		t.Fatalf("XML differs:\n%s", got)
	}
	resp = e.request("GET", sb+"/uuid:w-1/attachments/1700000000.jpg", e.token, "", nil)
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, photo) {
		t.Fatalf("photo: %d, %d bytes", resp.StatusCode, len(got))
	}
}

func TestRepublishNeedsNewVersion(t *testing.T) {
	e := newEnv(t)
	pid, dev := e.project()
	base := fmt.Sprintf("/v1/projects/%d/forms/household", pid)
	before, _ := dev.FormList(ctx)

	e.admin("POST", base+"/draft", nil, nil) // a draft from the published version, media carried over
	var body struct{ Message string }
	if st := e.call("POST", base+"/draft/publish", e.token, nil, &body); st != 409 || !strings.Contains(body.Message, "new version") {
		t.Fatalf("republishing the same version: %d %q", st, body.Message)
	}
	e.admin("POST", base+"/draft/publish?version=2026120101", nil, nil)
	var versions []struct{ Version string }
	e.admin("GET", base+"/versions", nil, &versions)
	if len(versions) != 2 || versions[0].Version != "2026120101" || versions[1].Version != "2026110101" {
		t.Fatalf("versions: %+v", versions)
	}
	after, _ := dev.FormList(ctx)
	if after[0].Hash == before[0].Hash || after[0].Version != "2026120101" {
		t.Fatalf("the form list must show a new hash: %+v -> %+v", before, after)
	}
	media, err := dev.Manifest(ctx, after[0].ManifestURL)
	if err != nil || len(media) != 2 {
		t.Fatalf("media must carry over to the new version: %+v %v", media, err)
	}
	// Devices that still have the old version can send it: old versions stay.
	if res, err := dev.Submit(ctx, instance("uuid:old-version", "Old"), nil); err != nil || res.Status != 201 {
		t.Fatalf("submitting the old version: %+v %v", res, err)
	}
}

func TestSubmissionRefusals(t *testing.T) {
	e := newEnv(t)
	pid, dev := e.project()
	good := instance("uuid:r-1", "Amina")
	cases := []struct {
		name   string
		xml    []byte
		files  []collect.File
		status int
		says   string
	}{
		{"undefined field", bytes.Replace(good, []byte("<price>"), []byte("<phone>0700</phone><price>"), 1), nil, 400, "/household/phone"},
		{"wrong type", bytes.Replace(good, []byte("<members>3</members>"), []byte("<members>many</members>"), 1), nil, 400, "/household/members"},
		{"choice not in form", bytes.Replace(good, []byte("<roof>tarp</roof>"), []byte("<roof>straw</roof>"), 1), nil, 400, "/household/shelter/roof"},
		{"unknown form", bytes.Replace(good, []byte(`id="household"`), []byte(`id="census"`), 1), nil, 404, "census"},
		{"unknown version", bytes.Replace(good, []byte(`version="2026110101"`), []byte(`version="9"`), 1), nil, 404, "Version"},
		{"file no question names", good, []collect.File{collect.BytesFile("extra.jpg", []byte("x"))}, 400, "extra.jpg"},
		{"doctype", append([]byte(`<!DOCTYPE household [<!ENTITY x "y">]>`), good[21:]...), nil, 400, "DOCTYPE"},
		{"not xml", []byte("this is not xml"), nil, 400, "XML"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := dev.Submit(ctx, c.xml, c.files)
			if collect.StatusOf(err) != c.status || !strings.Contains(res.Message, c.says) {
				t.Fatalf("got %v (%+v), want %d mentioning %q", err, res, c.status, c.says)
			}
		})
	}
	if n := e.submissionCount(pid); n != 0 {
		t.Fatalf("%d submissions stored after refusals", n)
	}
	if rows, files := e.blobRows(), e.blobFiles(); rows != 2 || len(files) != 0 { // the form's two (small) media files
		t.Fatalf("after refusals: %d stored objects, files %v", rows, files)
	}

	// A closed form refuses with 409; a closing one still takes submissions.
	base := fmt.Sprintf("/v1/projects/%d/forms/household", pid)
	e.admin("PATCH", base, map[string]string{"state": "closing"}, nil)
	if forms, _ := dev.FormList(ctx); len(forms) != 0 {
		t.Fatal("a closing form must not be listed")
	}
	if _, err := dev.Submit(ctx, instance("uuid:r-2", "A"), nil); err != nil {
		t.Fatalf("closing form refused a submission: %v", err)
	}
	e.admin("PATCH", base, map[string]string{"state": "closed"}, nil)
	if res, err := dev.Submit(ctx, instance("uuid:r-3", "B"), nil); collect.StatusOf(err) != 409 || !strings.Contains(res.Message, "closed") {
		t.Fatalf("closed form: %v %+v", err, res)
	}
}

// post sends a raw multipart submission body to the app user's URL.
func post(t *testing.T, url, contentType string, body io.Reader) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/submission", body)
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("X-OpenRosa-Version", "1.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestMalformedRequests(t *testing.T) {
	e := newEnv(t)
	pid, dev := e.project()
	url := dev.ServerURL
	good := instance("uuid:m-1", "Amina")
	part := func(name, filename, content string) string {
		return fmt.Sprintf("--B\r\nContent-Disposition: form-data; name=%q; filename=%q\r\n\r\n%s\r\n", name, filename, content)
	}
	cases := []struct {
		name, ct, body string
		status         int
		says           string
	}{
		{"not multipart", "text/xml", string(good), 400, "multipart"},
		{"no xml part", "multipart/form-data; boundary=B", part("a.jpg", "a.jpg", "x") + "--B--\r\n", 400, "xml_submission_file"},
		{"two xml parts", "multipart/form-data; boundary=B", part("xml_submission_file", "s.xml", string(good)) + part("xml_submission_file", "s.xml", string(good)) + "--B--\r\n", 400, "more than one"},
		{"truncated", "multipart/form-data; boundary=B", part("xml_submission_file", "s.xml", string(good))[:200], 400, ""},
		{"wrong boundary", "multipart/form-data; boundary=C", part("xml_submission_file", "s.xml", string(good)) + "--B--\r\n", 400, ""},
		{"path traversal", "multipart/form-data; boundary=B", part("xml_submission_file", "s.xml", string(good)) + part("../../x.jpg", "../../x.jpg", "x") + "--B--\r\n", 400, "cannot be used"},
		{"same file twice", "multipart/form-data; boundary=B", part("xml_submission_file", "s.xml", string(instance("uuid:m-2", "A", "p.jpg"))) + part("p.jpg", "p.jpg", "x") + part("p.jpg", "p.jpg", "x") + "--B--\r\n", 400, "twice"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, body, h := post(t, url, c.ct, strings.NewReader(c.body))
			if st != c.status || !strings.Contains(body, c.says) || !strings.Contains(body, "OpenRosaResponse") {
				t.Fatalf("%d %s", st, body)
			}
			if h.Get("X-OpenRosa-Version") != "1.0" {
				t.Fatal("error without X-OpenRosa-Version")
			}
		})
	}
	if n := e.submissionCount(pid); n != 0 {
		t.Fatalf("%d submissions stored", n)
	}
}

func TestTooLarge(t *testing.T) {
	lim := testLimits()
	lim.MaxBody = 50_000
	e := newEnv(t, lim)
	pid, dev := e.project()
	// One file larger than the accept length goes alone, as Collect sends it, and is refused.
	big := collect.BytesFile("big.jpg", bytes.Repeat([]byte("x"), 2<<20))
	res, err := dev.Submit(ctx, instance("uuid:big", "A", "big.jpg"), []collect.File{big})
	if collect.StatusOf(err) != 413 || !strings.Contains(res.Message, "larger") {
		t.Fatalf("%v %+v", err, res)
	}
	if n := e.submissionCount(pid); n != 0 || e.blobRows() != 2 || len(e.blobFiles()) != 0 {
		t.Fatalf("after 413: %d submissions, %d objects, files %v", n, e.blobRows(), e.blobFiles())
	}
}

// TestXLSFormUpload: an XLSForm uploaded to the API is converted, stored as
// its XForm and served to devices; a broken one is refused whole.
func TestXLSFormUpload(t *testing.T) {
	e := newEnv(t)
	pr := e.emptyProject()
	good, _ := xlsxtest.FromMarkdown(`
| survey   |             |         |          |         |             |
|          | type        | name    | label    | purpose | sensitivity |
|          | integer     | members | Members  | Ration  | level_1     |
|          | select_one yn | ok    | All well? | Triage | level_2     |
| choices  |             |         |          |         |             |
|          | list_name   | name    | label    |         |             |
|          | yn          | yes     | Yes      |         |             |
|          | yn          | no      | No       |         |             |
| settings |             |         |          |         |             |
|          | form_id     | version | legal_basis |      |             |
|          | visit       | 3       | vital_interest |   |             |
`)
	base := fmt.Sprintf("/v1/projects/%d/forms", pr.ID)
	e.publishXLSX(pr.ID, good)
	dev := e.device(pr.ID, "T")
	forms, err := dev.FormList(ctx)
	if err != nil || len(forms) != 1 || forms[0].FormID != "visit" || forms[0].Version != "3" {
		t.Fatalf("form list: %+v %v", forms, err)
	}
	doc := []byte(`<data id="visit" version="3"><members>4</members><ok>maybe</ok><meta><instanceID>uuid:x1</instanceID></meta></data>`)
	if _, err := dev.Submit(ctx, doc, nil); collect.StatusOf(err) != 400 {
		t.Fatalf("a value outside the converted form's choices: %v", err)
	}

	bad, _ := xlsxtest.FromMarkdown("| survey | | | |\n| | type | name | label |\n| | begin group | g | G |\n| | text | q | Q |")
	var body struct {
		Message string
		Details struct{ Errors []struct{ Row int } }
	}
	if st := e.call("POST", base, e.token, nil, nil); st != 400 {
		t.Fatalf("empty upload: %d", st)
	}
	r2 := e.request("POST", base, e.token, xlsxType, bytes.NewReader(bad))
	json.NewDecoder(r2.Body).Decode(&body)
	r2.Body.Close()
	if r2.StatusCode != 400 || !strings.Contains(body.Message, "never ended") || len(body.Details.Errors) != 1 || body.Details.Errors[0].Row != 2 {
		t.Fatalf("broken XLSForm: %d %+v", r2.StatusCode, body)
	}
	// A form id is any text, as in Central and pyxform (here with a space
	// and an accent): it publishes and is reached at its escaped URL.
	spaced, _ := xlsxtest.FromMarkdown("| survey | | | | | |\n| | type | name | label | purpose | sensitivity |\n| | text | q | Q | Why | level_1 |\n| settings | | |\n| | form_id | legal_basis |\n| | My Formé | vital_interest |")
	r3 := e.request("POST", base+"?publish=true", e.token, xlsxType, bytes.NewReader(spaced))
	r3.Body.Close()
	if r3.StatusCode != 200 {
		t.Fatalf("form id with a space: %d", r3.StatusCode)
	}
	var got struct{ XMLFormID string }
	if st := e.call("GET", base+"/My%20Form%C3%A9", e.token, nil, &got); st != 200 || got.XMLFormID != "My Formé" {
		t.Fatalf("the form at its escaped URL: %d %+v", st, got)
	}
	var list []struct{ XMLFormID string }
	e.admin("GET", base, nil, &list)
	if len(list) != 2 {
		t.Fatalf("a refused XLSForm left a form behind: %+v", list)
	}
}

// An Excel 97-2003 workbook (.xls, written by xlwt) publishes as an .xlsx
// does, whatever type the client claims, and is downloaded back as .xls.
func TestXLSUpload(t *testing.T) {
	e := newEnv(t)
	pr := e.emptyProject()
	xls, err := os.ReadFile(filepath.Join("..", "formspec", "xlsform", "testdata", "xls", "household.xls"))
	if err != nil {
		t.Fatal(err)
	}
	resp := e.request("POST", fmt.Sprintf("/v1/projects/%d/forms?publish=true", pr.ID), e.token, xlsxType, bytes.NewReader(xls))
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("publishing an .xls: %d %s", resp.StatusCode, body)
	}
	dl := e.request("GET", fmt.Sprintf("/v1/projects/%d/forms/household_visit.xlsx", pr.ID), e.token, "", nil)
	back, _ := io.ReadAll(dl.Body)
	dl.Body.Close()
	if dl.StatusCode != 200 || !bytes.Equal(back, xls) || dl.Header.Get("Content-Type") != "application/vnd.ms-excel" ||
		!strings.HasSuffix(dl.Header.Get("Content-Disposition"), "household_visit.xls") {
		t.Fatalf("download: %d %q %q, %d bytes", dl.StatusCode, dl.Header.Get("Content-Type"), dl.Header.Get("Content-Disposition"), len(back))
	}
	dev := e.device(pr.ID, "T")
	forms, err := dev.FormList(ctx)
	if err != nil || len(forms) != 1 || forms[0].FormID != "household_visit" || forms[0].Version != "2024031501" {
		t.Fatalf("form list: %+v %v", forms, err)
	}
	x, err := dev.Download(ctx, forms[0].DownloadURL, forms[0].Hash)
	if err != nil || !bytes.Contains(x, []byte("Nom du chef de ménage")) || !bytes.Contains(x, []byte("اسم رب الأسرة")) {
		t.Fatalf("the XForm lost the workbook's French or Arabic: %v\n%.1500s", err, x)
	}
	doc := []byte(`<data id="household_visit" version="2024031501"><start>2024-03-15T09:00:00Z</start><hh_name>Amina</hh_name>` +
		`<members>5</members><income>12.5</income><visit>2024-03-15</visit><district>17</district><needs>food water</needs>` +
		`<generated_note_name_9/><meta><instanceID>uuid:0a1b2c3d-0000-4000-8000-000000000001</instanceID></meta></data>`)
	if _, err := dev.Submit(ctx, doc, nil); err != nil {
		t.Fatalf("a submission to the .xls form: %v", err)
	}
}
