package xlsform

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/haven-org/haven/storage/miniotest"
)

// ODK's web forms engine (@getodk/xforms-engine, the engine Central
// previews and fills forms with) loads what Haven converts: every corpus
// form whose pyxform output the engine loads must load from Haven's
// output too. The engine runs in Node under jsdom, installed with npm
// into the cache on first use (a pinned version); the test fails rather
// than skips when it cannot have them.

const webFormsEngine = "0.22.0"

// webFormsLoader loads each XForm named on its command line and prints a
// JSON line for each: {"file", "ok", "error"}. Emscripten's loader in an
// ES module needs __dirname and require, which Node gives only to CommonJS.
const webFormsLoader = `import { JSDOM } from 'jsdom';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
const { window } = new JSDOM('');
for (const k of ['DOMParser', 'XMLSerializer', 'Node', 'Element', 'Document', 'XPathResult', 'document']) {
  if (!(k in globalThis)) globalThis[k] = window[k];
}
globalThis.__dirname = new URL('./node_modules/@getodk/xforms-engine/dist/', import.meta.url).pathname;
globalThis.require ??= createRequire(import.meta.url);
const { loadForm } = await import('@getodk/xforms-engine');
const fetchFormAttachment = async () => new Response('', { status: 404 });
for (const file of process.argv.slice(2)) {
  let ok = false, error = '';
  try {
    const res = await loadForm(readFileSync(file, 'utf8'), { fetchFormAttachment, missingResourceBehavior: 'BLANK' });
    if (res.status === 'failure') {
      error = String(res.error?.message ?? res.error);
    } else {
      res.createInstance();
      ok = true;
    }
  } catch (e) {
    error = String(e?.message ?? e);
  }
  console.log(JSON.stringify({ file, ok, error: error.slice(0, 300) }));
}
`

var webFormsOnce sync.Once
var webFormsDir string
var webFormsErr error

// webForms installs the engine once and returns the folder with its loader.
func webForms(t *testing.T) string {
	t.Helper()
	webFormsOnce.Do(func() {
		if _, err := exec.LookPath("npm"); err != nil {
			miniotest.Announce("Node.js is missing: installing Debian's nodejs and npm with apt-get, once")
			install := exec.Command("apt-get", "install", "-y", "--no-install-recommends", "nodejs", "npm")
			if os.Geteuid() != 0 {
				install = exec.Command("sudo", "-n", "apt-get", "install", "-y", "--no-install-recommends", "nodejs", "npm")
			}
			install.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			if out, err := install.CombinedOutput(); err != nil {
				webFormsErr = fmt.Errorf("the web forms engine test needs Node.js and npm, and installing them failed (%v): apt-get install nodejs npm\n%s", err, out)
				return
			}
		}
		cache, err := os.UserCacheDir()
		if err != nil {
			webFormsErr = err
			return
		}
		dir := filepath.Join(cache, "haven-test", "xforms-engine-"+webFormsEngine)
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "@getodk", "xforms-engine", "dist", "index.js")); err != nil {
			miniotest.Announce("installing ODK's web forms engine " + webFormsEngine + " and jsdom with npm into " + dir + ", once")
			if err := miniotest.NPMInstall(dir, "@getodk/xforms-engine@"+webFormsEngine, "jsdom@26"); err != nil {
				webFormsErr = fmt.Errorf("installing the web forms engine with npm: %w", err)
				return
			}
		}
		webFormsErr = os.WriteFile(filepath.Join(dir, "load.mjs"), []byte(webFormsLoader), 0o644)
		webFormsDir = dir
	})
	if webFormsErr != nil {
		t.Fatal(webFormsErr)
	}
	return webFormsDir
}

// loadInEngine loads XForm files in the engine and reports, for each,
// the error it gave ("" when it loaded).
func loadInEngine(t *testing.T, files []string) map[string]string {
	t.Helper()
	dir := webForms(t)
	out := map[string]string{}
	for len(files) > 0 {
		n := min(len(files), 200)
		cmd := exec.Command("node", append([]string{filepath.Join(dir, "load.mjs")}, files[:n]...)...)
		cmd.Dir = dir
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		b, err := cmd.Output()
		if err != nil {
			t.Fatalf("the web forms engine did not run: %v\n%s", err, stderr.String())
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r struct {
				File  string
				OK    bool
				Error string
			}
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				out[r.File] = r.Error
				if r.OK {
					out[r.File] = ""
				} else if r.Error == "" {
					out[r.File] = "failed"
				}
			}
		}
		files = files[n:]
	}
	return out
}

func TestWebFormsEngineLoadsWhatPyxformsLoads(t *testing.T) {
	dirs, err := os.ReadDir(corpus)
	if err != nil {
		t.Fatalf("the conformance corpus is missing (%v): shared/ must sit beside the repository", err)
	}
	tmp := t.TempDir()
	var files []string
	ours := map[string]string{} // expected.xml -> Haven's output
	for _, d := range dirs {
		dir := filepath.Join(corpus, d.Name())
		var c conformanceCase
		raw, err := os.ReadFile(filepath.Join(dir, "case.json"))
		if err != nil || json.Unmarshal(raw, &c) != nil || !c.PyxformOK {
			continue
		}
		xlsx, err := os.ReadFile(filepath.Join(dir, "form.xlsx"))
		if err != nil {
			continue
		}
		res := ConvertWorkbook(xlsx, Options{RootName: c.RootName, FormID: "data"})
		if len(res.Errors) > 0 {
			continue // TestConformance counts what Haven refuses
		}
		mine := filepath.Join(tmp, d.Name()+".xml")
		if err := os.WriteFile(mine, res.XForm, 0o644); err != nil {
			t.Fatal(err)
		}
		want, _ := filepath.Abs(filepath.Join(dir, "expected.xml")) // node runs elsewhere
		files = append(files, want, mine)
		ours[want] = mine
	}
	if len(ours) < 100 {
		t.Fatalf("only %d corpus forms to load", len(ours))
	}
	// A form no engine can load, to show the check can fail.
	broken := filepath.Join(tmp, "broken.xml")
	res := ConvertMarkdown("| survey | | | | |\n| | type | name | label | calculation |\n| | text | a | A | |\n| | calculate | c | | if( ${a} <1,0,1 |", Options{})
	os.WriteFile(broken, res.XForm, 0o644)
	files = append(files, broken)
	loaded := loadInEngine(t, files)
	if loaded[broken] == "" {
		t.Errorf("the web forms engine loaded a form with an unclosed if(: the check cannot fail")
	}
	var failed []string
	pyxformLoads := 0
	for want, mine := range ours {
		if loaded[want] != "" {
			continue // the engine refuses pyxform's output too
		}
		pyxformLoads++
		if e, ok := loaded[mine]; !ok || e != "" {
			failed = append(failed, fmt.Sprintf("%s: %s", filepath.Base(filepath.Dir(want)), e))
		}
	}
	t.Logf("the web forms engine loads pyxform's output of %d forms, and Haven's of %d of them", pyxformLoads, pyxformLoads-len(failed))
	if len(failed) > 0 {
		t.Errorf("the web forms engine loads pyxform's output but not Haven's:\n%s", strings.Join(failed, "\n"))
	}
}
