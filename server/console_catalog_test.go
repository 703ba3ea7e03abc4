package server

import (
	"io/fs"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
)

// Every string the console shows is in the French catalogue: the literal
// ones of the templates and the handlers, and those that come from data
// (form states, role names, a project's warnings). A format keeps its verbs.
func TestCatalogComplete(t *testing.T) {
	var keys []string
	tmpl := regexp.MustCompile(`\.T "((?:[^"\\]|\\.)*)"`)
	names, _ := fs.Glob(consoleTemplates, "console/templates/*.html")
	for _, n := range names {
		b, _ := consoleTemplates.ReadFile(n)
		for _, m := range tmpl.FindAllStringSubmatch(string(b), -1) {
			keys = append(keys, m[1])
		}
	}
	code := []*regexp.Regexp{
		regexp.MustCompile(`s\.page\(c, "([^"]*)"`), regexp.MustCompile(`crumb\{"([^"]*)"`),
		regexp.MustCompile(`back\([^;\n]*?, "([^"]*)"\)`), regexp.MustCompile(`v\.T\("([^"]*)"`),
	}
	for _, f := range []string{"console.go", "console_pages.go", "console_forms.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, re := range code {
			for _, m := range re.FindAllStringSubmatch(string(b), -1) {
				if m[1] != "" {
					keys = append(keys, m[1])
				}
			}
		}
	}
	if len(keys) < 200 {
		t.Fatalf("found only %d strings: the extraction is broken", len(keys))
	}
	keys = append(keys, haven.FormOpen, haven.FormClosing, haven.FormClosed)
	keys = append(keys, haven.Roles...)
	now := time.Now()
	for _, days := range []int{0, 5, 20} {
		end := now.AddDate(0, 0, days)
		keys = append(keys, app.Warning(&haven.Project{EndDate: &end}, now))
	}
	keys = append(keys, app.Warning(&haven.Project{EndDate: &now, Hold: &haven.LegalHold{}}, now))
	verbs := regexp.MustCompile(`%[a-z]`)
	for _, k := range keys {
		if k == "" {
			continue
		}
		fr, ok := catalogFR[k]
		if !ok {
			t.Errorf("not in French: %q", k)
			continue
		}
		if strings.Join(verbs.FindAllString(k, -1), "") != strings.Join(verbs.FindAllString(fr, -1), "") {
			t.Errorf("the French of %q does not keep its format verbs: %q", k, fr)
		}
	}
}
