package server_test

import (
	"archive/zip"
	"bytes"
	"compress/zlib"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/haven-org/haven/clients/collect"
	"github.com/haven-org/haven/formspec/xlsform/xlsxtest"
	"github.com/haven-org/haven/server"
	"github.com/haven-org/haven/storage"
	"github.com/haven-org/haven/storage/miniotest"
	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"
)

// The console in a real browser: Debian's Chromium driven over the
// DevTools protocol against a real Haven over loopback HTTP. Every page a
// flow visits is screenshotted at desktop and phone widths (into
// $HAVEN_SCREENSHOTS, or a temporary folder the log names) and checked
// with axe-core for serious or critical accessibility violations.

// chromiumPath finds Chromium, installing Debian's package when it is
// missing (as the tests install MinIO). It fails rather than skips.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	miniotest.Announce("Chromium is missing: installing Debian's chromium package with apt-get, once (a few minutes)")
	install := exec.Command("apt-get", "install", "-y", "--no-install-recommends", "chromium")
	if os.Geteuid() != 0 {
		install = exec.Command("sudo", "-n", "apt-get", "install", "-y", "--no-install-recommends", "chromium")
	}
	install.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("the console's browser tests need Chromium, and installing it failed (%v): install it with apt-get install chromium.\n%s", err, out)
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("Chromium was installed but is not on the PATH")
	}
	return p
}

var axeOnce sync.Once
var axeSource string
var axeErr error

// axe returns axe-core's script, installed with npm into the user's cache
// folder on first use (a pinned version).
func axe(t *testing.T) string {
	t.Helper()
	const version = "4.10.2"
	axeOnce.Do(func() {
		cache, err := os.UserCacheDir()
		if err != nil {
			axeErr = err
			return
		}
		dir := filepath.Join(cache, "haven-test", "axe-core-"+version)
		file := filepath.Join(dir, "node_modules", "axe-core", "axe.min.js")
		if _, err := os.Stat(file); err != nil {
			miniotest.Announce("installing axe-core " + version + " with npm into " + dir + ", once")
			if err := miniotest.NPMInstall(dir, "axe-core@"+version); err != nil {
				axeErr = fmt.Errorf("installing axe-core with npm: %w", err)
				return
			}
		}
		b, err := os.ReadFile(file)
		axeSource, axeErr = string(b), err
	})
	if axeErr != nil {
		t.Fatal(axeErr)
	}
	return axeSource
}

// browser is one headless Chromium with its screenshots folder.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string
	dir  string
	shot int
}

func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromiumPath(t)), chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1280, 900))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(func() { cancelT(); cancel(); cancelA() })
	dir := os.Getenv("HAVEN_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "haven-console-screenshots")
	}
	dir = filepath.Join(dir, t.Name())
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	// Confirmation dialogs are accepted, as a person who means it would.
	chromedp.ListenTarget(ctx, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			go chromedp.Run(ctx, page.HandleJavaScriptDialog(true))
		}
	})
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	return &browser{t: t, ctx: ctx, base: base, dir: dir}
}

// run runs actions, each batch within 30 s; on failure it says where the
// browser was and what the page said.
func (b *browser) run(actions ...chromedp.Action) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		var loc, body string
		chromedp.Run(b.ctx, chromedp.Location(&loc), chromedp.Text("body", &body, chromedp.ByQuery))
		b.t.Fatalf("%v\nat %s:\n%.1500s", err, loc, body)
	}
}

// text is the visible text of the page's main part.
func (b *browser) text() string {
	b.t.Helper()
	var s string
	b.run(chromedp.Text("main", &s, chromedp.ByQuery))
	return s
}

// check screenshots the page at desktop and phone widths, and runs axe-core.
func (b *browser) check(name string) {
	b.t.Helper()
	b.shot++
	for _, w := range []struct {
		label string
		width int64
	}{{"desktop", 1280}, {"phone", 360}} {
		var png []byte
		b.run(chromedp.EmulateViewport(w.width, 800), chromedp.FullScreenshot(&png, 100))
		if err := os.WriteFile(filepath.Join(b.dir, fmt.Sprintf("%02d-%s-%s.png", b.shot, name, w.label)), png, 0o644); err != nil {
			b.t.Fatal(err)
		}
		if w.label == "phone" {
			// Nothing but wide tables (which scroll in their own box) may
			// make a phone scroll sideways.
			var wide bool
			b.run(chromedp.Evaluate(`document.documentElement.scrollWidth > window.innerWidth + 1`, &wide))
			if wide {
				b.t.Errorf("%s: the page is wider than a 360-px phone screen", name)
			}
		}
	}
	b.run(chromedp.EmulateViewport(1280, 900))
	var res string
	script := axe(b.t) + `;axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}).then(r => JSON.stringify(r.violations.filter(v => v.impact === "serious" || v.impact === "critical").map(v => ({id: v.id, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.html)}))))`
	b.run(chromedp.Evaluate(script, &res, func(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }))
	if res != "[]" {
		b.t.Errorf("%s: axe-core finds serious or critical violations: %s", name, res)
	}
}

// get fetches a console address with the browser's session cookie, as
// the browser would download it.
func (b *browser) get(path string) ([]byte, *http.Response) {
	b.t.Helper()
	var cookies []*network.Cookie
	b.run(chromedp.ActionFunc(func(ctx context.Context) (err error) {
		cookies, err = network.GetCookies().Do(ctx)
		return err
	}))
	req, _ := http.NewRequest("GET", b.base+path, nil)
	for _, c := range cookies {
		req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return body, resp
}

func writeTemp(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// consoleForm is a household form; without its purposes it is refused.
func consoleForm(t *testing.T, mapped bool) []byte {
	t.Helper()
	purpose := func(p string) string {
		if mapped {
			return p
		}
		return ""
	}
	b, err := xlsxtest.FromMarkdown(fmt.Sprintf(`
| survey   |                     |          |                   |             |             |
|          | type                | name     | label             | purpose     | sensitivity |
|          | acknowledge         | consent  | The person agrees | Consent     | public      |
|          | text                | hh_id    | Household ID      | Links       | level_2     |
|          | select_one district | district | District          | %s          | public      |
|          | integer             | size     | Household size    | %s          | public      |
|          | geopoint            | loc      | Location          | Map         | level_2     |
|          | text                | name     | Head's name       | Identify    | level_3     |
| choices  |                     |          |                   |             |             |
|          | list_name           | name     | label             |             |             |
|          | district            | north    | North             |             |             |
|          | district            | south    | South             |             |             |
| settings |                     |          |                   |             |             |
|          | form_id             | version  | consent           | subject_id  | form_title  |
|          | household           | 1        | consent           | hh_id       | Household survey |
`, purpose("Planning"), purpose("Targeting")))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestConsoleFlow is the newcomer's way through the console: sign in,
// create a project, upload an XLSForm that is refused and then fixed,
// publish it, make an app user and decode its QR code, submit from the
// Collect client, see the submissions, export, aggregate with a
// suppressed cell, erase a data subject, verify a destruction certificate,
// sign out.
func TestConsoleFlow(t *testing.T) {
	e := newEnv(t)
	b := newBrowser(t, e.srv.URL)

	b.run(chromedp.Navigate(e.srv.URL + "/"))
	b.run(chromedp.WaitVisible("#email", chromedp.ByID))
	b.check("login")
	b.run(chromedp.SendKeys("#email", adminEmail, chromedp.ByID), chromedp.SendKeys("#password", "wrong password", chromedp.ByID), chromedp.Submit("#password", chromedp.ByID))
	b.run(chromedp.WaitVisible(".problem", chromedp.ByQuery))
	if txt := b.text(); !strings.Contains(txt, "password") {
		t.Errorf("a wrong password: %q", txt)
	}
	b.run(chromedp.SendKeys("#password", adminPassword, chromedp.ByID), chromedp.Submit("#password", chromedp.ByID))
	b.run(chromedp.WaitVisible("#name", chromedp.ByID))
	b.check("projects")

	// A project.
	b.run(chromedp.SendKeys("#name", "Flood response", chromedp.ByID), chromedp.Submit("#name", chromedp.ByID))
	b.run(chromedp.WaitVisible(`input[type=file]`, chromedp.ByQuery))
	var loc string
	b.run(chromedp.Location(&loc))
	projectURL := strings.TrimPrefix(strings.SplitN(loc, "?", 2)[0], e.srv.URL)

	// A workbook that does not convert is refused whole: the problems as
	// a table, and nothing stored.
	broken, err := xlsxtest.FromMarkdown(`
| survey |              |      |       |
|        | type         | name | label |
|        | text         | a    | A     |
|        | select_one x | b    | B     |
`)
	if err != nil {
		t.Fatal(err)
	}
	b.run(chromedp.SetUploadFiles("#file", []string{writeTemp(t, "broken.xlsx", broken)}, chromedp.ByID), chromedp.Submit("#file", chromedp.ByID))
	b.run(chromedp.WaitVisible("table.problems", chromedp.ByQuery))
	b.check("refused-upload")
	if n := countForms(t, e, projectURL); n != 0 {
		t.Errorf("a refused upload left %d form(s) behind", n)
	}

	// A form whose fields lack a purpose uploads as a draft that says which
	// rows lack what, and publishing it is refused.
	b.run(chromedp.SetUploadFiles("#file", []string{writeTemp(t, "household.xlsx", consoleForm(t, false))}, chromedp.ByID), chromedp.Submit("#file", chromedp.ByID))
	b.run(chromedp.WaitVisible("table.problems", chromedp.ByQuery))
	var problems string
	b.run(chromedp.Text("table.problems", &problems, chromedp.ByQuery))
	if !strings.Contains(problems, "district") || !strings.Contains(problems, "size") || !strings.Contains(problems, "survey") {
		t.Errorf("the draft does not name the rows without a purpose: %q", problems)
	}
	b.check("draft-unmapped")
	b.run(chromedp.Submit("#version", chromedp.ByID), chromedp.WaitVisible(".problem table.problems", chromedp.ByQuery))
	b.check("publish-refused")

	// Fixed, it uploads as the new draft; published, it gets a version.
	b.run(chromedp.SetUploadFiles("#file", []string{writeTemp(t, "household.xlsx", consoleForm(t, true))}, chromedp.ByID), chromedp.Submit("#file", chromedp.ByID))
	b.run(chromedp.WaitVisible(".notice", chromedp.ByQuery))
	if txt := b.text(); !strings.Contains(txt, "/data/hh_id") || !strings.Contains(txt, "level_3") || strings.Contains(txt, "Before it can be published") {
		t.Errorf("the fixed draft: %q", txt)
	}
	b.check("draft")
	b.run(chromedp.Submit("#version", chromedp.ByID))
	b.run(chromedp.WaitVisible(".notice", chromedp.ByQuery))
	if txt := b.text(); !strings.Contains(txt, "published") {
		t.Errorf("after publishing: %q", txt)
	}
	b.check("published")

	// An app user, and its QR code decoded back to Collect's settings.
	b.run(chromedp.Navigate(e.srv.URL+projectURL), chromedp.WaitVisible("#auname", chromedp.ByID))
	b.run(chromedp.SendKeys("#auname", "Tablet 1", chromedp.ByID), chromedp.Submit("#auname", chromedp.ByID))
	b.run(chromedp.WaitVisible("img.qr", chromedp.ByQuery))
	b.check("app-user")
	var qrSrc string
	var ok bool
	b.run(chromedp.AttributeValue("img.qr", "src", &qrSrc, &ok, chromedp.ByQuery))
	pngBytes, resp := b.get(qrSrc)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("QR code: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	serverURL := decodeCollectQR(t, pngBytes)
	dev := collect.New(serverURL)
	for i := 0; i < 12; i++ {
		district := "north"
		if i == 11 {
			district = "south" // one household alone: a cell to suppress
		}
		xml := fmt.Sprintf(`<data id="household" version="1"><consent>OK</consent><hh_id>HH-%d</hh_id><district>%s</district><size>%d</size><loc>2.%02d 45.3 10 5</loc><name>Name %d</name><meta><instanceID>uuid:c%d</instanceID></meta></data>`, i, district, i+2, i, i, i)
		res, err := dev.Submit(context.Background(), []byte(xml), nil)
		if err != nil || res.Status != 201 {
			t.Fatalf("submission %d from the QR code's settings: %+v %v", i, res, err)
		}
	}

	// The submissions table, one submission.
	formURL := projectURL + "/forms/household"
	b.run(chromedp.Navigate(e.srv.URL+formURL+"/submissions"), chromedp.WaitVisible("table.data", chromedp.ByQuery))
	if txt := b.text(); !strings.Contains(txt, "HH-3") || !strings.Contains(txt, "of 12") {
		t.Errorf("the submissions table: %q", txt)
	}
	b.check("submissions")
	b.run(chromedp.Navigate(e.srv.URL+formURL+"/submissions/uuid:c3"), chromedp.WaitVisible("table.values", chromedp.ByQuery))
	if txt := b.text(); !strings.Contains(txt, "Name 3") || !strings.Contains(txt, "consent") {
		t.Errorf("the submission page: %q", txt)
	}
	b.check("submission")
	// A correction (a data subject's rectification) keeps the earlier version.
	b.run(chromedp.SetValue("#field", "size", chromedp.ByID), chromedp.SendKeys("#value", "9", chromedp.ByID),
		chromedp.SendKeys("#reason", "the household counted again", chromedp.ByID), chromedp.Submit("#reason", chromedp.ByID))
	b.run(chromedp.WaitVisible(".notice", chromedp.ByQuery))
	var versions string
	b.run(chromedp.Text("table.values", &versions, chromedp.ByQuery))
	if !strings.Contains(versions, "size\t9") {
		t.Errorf("after the correction: %q", versions)
	}
	if txt := b.text(); !strings.Contains(txt, "the household counted again") {
		t.Errorf("the correction's reason is not among the versions: %q", txt)
	}

	// An export, opened.
	zipped, resp := b.get(formURL + "/export?format=csv")
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("export: %d, Cache-Control %q", resp.StatusCode, resp.Header.Get("Cache-Control"))
	}
	z, err := zip.NewReader(bytes.NewReader(zipped), int64(len(zipped)))
	if err != nil {
		t.Fatalf("the export is not a zip: %v", err)
	}
	var csvText strings.Builder
	for _, f := range z.File {
		rc, _ := f.Open()
		io.Copy(&csvText, rc)
		rc.Close()
	}
	if !strings.Contains(csvText.String(), "HH-5") {
		t.Errorf("the export lacks a household: %.300s", csvText.String())
	}

	// An aggregate with a suppressed cell.
	b.run(chromedp.Navigate(e.srv.URL+formURL+"/aggregate"), chromedp.WaitVisible(`input[value="/data/district"]`, chromedp.ByQuery))
	b.run(chromedp.Click(`input[value="/data/district"]`, chromedp.ByQuery), chromedp.Submit(`input[value="/data/district"]`, chromedp.ByQuery))
	b.run(chromedp.WaitVisible("table.aggregate", chromedp.ByQuery))
	var agg string
	b.run(chromedp.Text("table.aggregate", &agg, chromedp.ByQuery))
	if !strings.Contains(agg, "suppressed") || !strings.Contains(agg, "north") {
		t.Errorf("the aggregate shows no suppressed cell: %q", agg)
	}
	b.check("aggregate")
	// With the choices' labels, and the same in the JSON API, counts as numbers.
	b.run(chromedp.Navigate(e.srv.URL+formURL+"/aggregate?by=/data/district&labels=1"), chromedp.WaitVisible("table.aggregate", chromedp.ByQuery))
	b.run(chromedp.Text("table.aggregate", &agg, chromedp.ByQuery))
	if !strings.Contains(agg, "North") || strings.Contains(agg, "north") {
		t.Errorf("the aggregate with labels: %q", agg)
	}
	var api struct {
		Cells []struct {
			Keys, Labels []string
			Count        *int
			Suppressed   bool
		}
	}
	e.admin("GET", fmt.Sprintf("/v1/projects/%d/forms/household/aggregate?by=district&labels=true", projectID(t, projectURL)), nil, &api)
	if len(api.Cells) != 3 || api.Cells[0].Count == nil || *api.Cells[0].Count != 12 || !api.Cells[1].Suppressed || api.Cells[1].Labels[0] != "North" {
		t.Errorf("the aggregate in JSON: %+v", api)
	}

	// The map, drawn with no internet.
	b.run(chromedp.Navigate(e.srv.URL+formURL+"/map"), chromedp.WaitVisible(".map svg", chromedp.ByQuery))
	var circles int
	b.run(chromedp.Evaluate(`document.querySelectorAll(".map svg circle").length`, &circles))
	if circles != 12 {
		t.Errorf("the map shows %d points, want 12", circles)
	}
	if svg, resp := b.get(formURL + "/map.svg"); resp.StatusCode != 200 || strings.Count(string(svg), "<circle") != 12 {
		t.Errorf("the map as SVG: %d, %d points", resp.StatusCode, strings.Count(string(svg), "<circle"))
	}
	b.check("map")

	// A data subject's erasure.
	b.run(chromedp.Navigate(e.srv.URL+projectURL+"/subjects?id=HH-2"), chromedp.WaitVisible("#confirm", chromedp.ByID))
	b.check("subject")
	b.run(chromedp.SendKeys("#confirm", "HH-2", chromedp.ByID), chromedp.Submit("#confirm", chromedp.ByID))
	b.run(chromedp.WaitVisible(".notice", chromedp.ByQuery))
	if n := e.submissionCount(projectID(t, projectURL)); n != 11 {
		t.Errorf("after erasing HH-2: %d submissions, want 11", n)
	}

	// A legal hold, placed and lifted with reasons.
	b.run(chromedp.Navigate(e.srv.URL+projectURL+"/protection"), chromedp.WaitVisible("#reason", chromedp.ByID))
	b.run(chromedp.SendKeys("#reason", "Inquiry 12", chromedp.ByID), chromedp.SendKeys("#reference", "Case 2026/44", chromedp.ByID), chromedp.Submit("#reason", chromedp.ByID))
	b.run(chromedp.WaitVisible("#liftreason", chromedp.ByID))
	if txt := b.text(); !strings.Contains(txt, "Inquiry 12") {
		t.Errorf("the hold is not shown: %q", txt)
	}
	b.run(chromedp.SendKeys("#liftreason", "Inquiry closed", chromedp.ByID), chromedp.Submit("#liftreason", chromedp.ByID))
	b.run(chromedp.WaitVisible("#reason", chromedp.ByID))
	var lifted []struct{ Details map[string]any }
	e.admin("GET", "/v1/audit?action=project.hold.lift", nil, &lifted)
	if len(lifted) != 1 || lifted[0].Details["reason"] != "Inquiry closed" {
		t.Errorf("the lift's reason is not in the audit trail: %+v", lifted)
	}

	// The DPO's pages.
	for _, p := range []struct{ path, want string }{
		{projectURL + "/protection", "Legal hold"},
		{projectURL + "/inventory", "Identify"},
		{projectURL + "/devices", "Tablet 1"},
		{projectURL + "/people", "admin@example.org"},
		{"/audit", "verifies"},
		{"/users", "admin@example.org"},
		{"/account", "Change your password"},
	} {
		b.run(chromedp.Navigate(e.srv.URL+p.path), chromedp.WaitVisible("footer", chromedp.ByQuery))
		if txt := b.text(); !strings.Contains(txt, p.want) {
			t.Errorf("%s: %q lacks %q", p.path, txt, p.want)
		}
		b.check(strings.ReplaceAll(strings.Trim(p.path[strings.LastIndexByte(p.path, '/'):], "/"), "/", "-"))
	}

	// A destroyed project's certificate, downloaded and verified.
	other := e.emptyProject()
	var cert json.RawMessage
	if st := e.call("DELETE", fmt.Sprintf("/v1/projects/%d", other.ID), e.token, nil, &cert); st != 200 {
		t.Fatalf("destroying a project: %d", st)
	}
	certJSON, resp := b.get(fmt.Sprintf("/projects/%d/certificate.json", other.ID))
	if resp.StatusCode != 200 {
		t.Fatalf("certificate download: %d", resp.StatusCode)
	}
	b.run(chromedp.Navigate(e.srv.URL+"/certificates/verify"), chromedp.WaitVisible("#file", chromedp.ByID))
	b.run(chromedp.SetUploadFiles("#file", []string{writeTemp(t, "cert.json", certJSON)}, chromedp.ByID), chromedp.Submit("#file", chromedp.ByID))
	b.run(chromedp.WaitVisible("pre.cert", chromedp.ByQuery))
	b.check("certificate")
	forged := bytes.Replace(certJSON, []byte(`"projectId"`), []byte(`"projectID"`), 1)
	b.run(chromedp.SetUploadFiles("#file", []string{writeTemp(t, "forged.json", forged)}, chromedp.ByID), chromedp.Submit("#file", chromedp.ByID))
	b.run(chromedp.WaitVisible(".problem", chromedp.ByQuery))

	// French, then signing out ends the session.
	b.run(chromedp.Navigate(e.srv.URL+"/lang/fr?next=/projects"), chromedp.WaitVisible("footer", chromedp.ByQuery))
	if txt := b.text(); !strings.Contains(txt, "Projets") {
		t.Errorf("in French: %q", txt)
	}
	b.check("projects-fr")
	b.run(chromedp.Submit(`form[action="/logout"] button`, chromedp.ByQuery), chromedp.WaitVisible("#email", chromedp.ByID))
	if _, resp := b.get("/projects"); resp.Request.URL.Path != "/login" {
		t.Errorf("after signing out, /projects answers %s", resp.Request.URL)
	}
}

func projectID(t *testing.T, projectURL string) int64 {
	var id int64
	if _, err := fmt.Sscanf(projectURL, "/projects/%d", &id); err != nil {
		t.Fatal(err)
	}
	return id
}

func countForms(t *testing.T, e *env, projectURL string) int {
	var forms []any
	e.admin("GET", fmt.Sprintf("/v1/projects/%d/forms", projectID(t, projectURL)), nil, &forms)
	return len(forms)
}

// decodeCollectQR reads a QR code as ODK Collect does: zlib-compressed JSON
// in base64, and returns the server URL in it.
func decodeCollectQR(t *testing.T, b []byte) string {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	res, err := qrcode.NewQRCodeReader().Decode(bmp, pureCode)
	if err != nil {
		t.Fatalf("the QR code does not scan: %v", err)
	}
	raw, err := base64.StdEncoding.DecodeString(res.GetText())
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zlib.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	var settings struct {
		General struct {
			ServerURL string `json:"server_url"`
		} `json:"general"`
		Project struct{ Name string } `json:"project"`
	}
	if err := json.NewDecoder(zr).Decode(&settings); err != nil {
		t.Fatal(err)
	}
	if settings.Project.Name != "Flood response" || !strings.Contains(settings.General.ServerURL, "/v1/key/") {
		t.Fatalf("the QR code's settings: %+v", settings)
	}
	return settings.General.ServerURL
}

// With a tile server configured, the map loads its tiles (the CSP allows
// that host for images, and no other); the points stay within clearance.
func TestConsoleMapTiles(t *testing.T) {
	e := newEnvConfig(t, server.Config{TileURL: "https://tiles.example.org/{z}/{x}/{y}.png"}, storage.Options{})
	pr := e.emptyProject()
	e.publishXLSX(pr.ID, matrixForm(t))
	dev := e.device(pr.ID, "Tablet")
	for i := 0; i < 3; i++ {
		xml := fmt.Sprintf(`<data id="matrix" version="1"><district>north</district><hh_id>HH-%d</hh_id><loc>-1.2%d 36.8%d 10 5</loc><meta><instanceID>uuid:t%d</instanceID></meta></data>`, i, i, i, i)
		if res, err := dev.Submit(context.Background(), []byte(xml), nil); err != nil || res.Status != 201 {
			t.Fatalf("submission: %+v %v", res, err)
		}
	}
	resp := e.consoleGet(fmt.Sprintf("/projects/%d/forms/matrix/map", pr.ID), e.token)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("map: %d", resp.StatusCode)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "img-src 'self' data: blob: https://tiles.example.org;") {
		t.Errorf("the CSP does not allow the tile server's images: %s", csp)
	}
	page := string(body)
	if !strings.Contains(page, `<image href="https://tiles.example.org/`) || strings.Contains(page, "{z}") {
		t.Errorf("no tiles on the map: %.2000s", page)
	}
	if n := strings.Count(page, "<circle"); n != 3 {
		t.Errorf("%d points on the map, want 3", n)
	}
	// A reader below the location's tier (level_2) gets no map at all.
	var u struct{ ID int64 }
	e.admin("POST", "/v1/users", map[string]string{"email": "lead@example.org", "password": "a long enough password"}, &u)
	e.admin("POST", fmt.Sprintf("/v1/projects/%d/assignments/manager/%d", pr.ID, u.ID), nil, nil)
	e.admin("PUT", fmt.Sprintf("/v1/projects/%d/clearances/%d", pr.ID, u.ID), map[string]string{"clearance": "level_1"}, nil)
	resp = e.consoleGet(fmt.Sprintf("/projects/%d/forms/matrix/map", pr.ID), e.login("lead@example.org", "a long enough password"))
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == 200 || strings.Contains(string(body), "<circle") {
		t.Errorf("a level_1 reader sees the level_2 locations: %d", resp.StatusCode)
	}
}

// TestConsoleEntityPages: a project lead sees the entity lists, one list's
// properties and entities, and what each tablet holds of it; the pages
// pass axe-core and fit a phone.
func TestConsoleEntityPages(t *testing.T) {
	e := newEnv(t)
	pid := e.emptyProject().ID
	e.publishMarkdown(pid, registrationForm)
	e.publishMarkdown(pid, followUpForm)
	northID, northURL := e.appUser(pid, "North team")
	e.admin("PUT", fmt.Sprintf("/v1/projects/%d/clearances/%d", pid, northID), map[string]string{"clearance": "level_1"}, nil)
	e.admin("PUT", fmt.Sprintf("/v1/projects/%d/datasets/households/filters/%d", pid, northID), map[string]any{"property": "area", "values": []string{"north"}}, nil)
	north := collect.New(northURL)
	submit(t, north, registration(hhNorth, "Amina Farah", "north", "4", "+252-61-NORTHPHONE"))
	submit(t, north, registration(hhSouth, "Khadar Ali", "south", "6", "+252-61-SOUTHPHONE"))

	b := newBrowser(t, e.srv.URL)
	b.run(chromedp.Navigate(e.srv.URL+"/login"), chromedp.WaitVisible("#email", chromedp.ByID),
		chromedp.SendKeys("#email", adminEmail, chromedp.ByID), chromedp.SendKeys("#password", adminPassword, chromedp.ByID),
		chromedp.Submit("#password", chromedp.ByID), chromedp.WaitVisible("#name", chromedp.ByID)) // the projects page, signed in
	b.run(chromedp.Navigate(fmt.Sprintf("%s/projects/%d/entity-lists", e.srv.URL, pid)), chromedp.WaitVisible("main", chromedp.ByQuery))
	if txt := b.text(); !strings.Contains(txt, "households") || !strings.Contains(txt, "2 entities") {
		t.Errorf("entity lists page: %q", txt)
	}
	b.check("entity-lists")
	b.run(chromedp.Navigate(fmt.Sprintf("%s/projects/%d/entity-lists/households", e.srv.URL, pid)), chromedp.WaitVisible("main", chromedp.ByQuery))
	if txt := b.text(); !strings.Contains(txt, "Amina Farah (north)") || !strings.Contains(txt, "+252-61-NORTHPHONE") || !strings.Contains(txt, "To call before a visit") {
		t.Errorf("entity list page: %q", txt)
	}
	b.check("entity-list")
	b.run(chromedp.Navigate(fmt.Sprintf("%s/projects/%d/devices", e.srv.URL, pid)), chromedp.WaitVisible("main", chromedp.ByQuery))
	if txt := b.text(); !strings.Contains(txt, "households.csv") || strings.Contains(txt, "Amina") {
		t.Errorf("devices page: %q", txt)
	}
	b.check("devices-entities")
}

// pureCode decodes an image that is the code and its quiet zone alone, as
// the console serves it. zxing's finder-pattern search, made for camera
// frames, misses about one code in a hundred drawn pixel-exact at a fixed
// scale (zbar reads them all), so a test that searched would fail at
// random on a code that is sound.
var pureCode = map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_PURE_BARCODE: true}
