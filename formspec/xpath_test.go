package formspec_test

import (
	"strings"
	"testing"

	"github.com/haven-org/haven/formspec"
)

func TestParseXPath(t *testing.T) {
	valid := []string{
		"1", ". > 0", ". >= 18 and . <= 120", "/data/age > 5", "selected(/data/needs, 'food')",
		"if(/data/num < 1, 0, 1)", "count(/data/member)", "../q1 = 'yes'", "not(. = '')",
		"string-length(.) <= 10", "regex(., '^\\d*$')", "instance('districts')/root/item[region = /data/region]",
		"concat('HH ', /data/head_name)", "-1 + 2 * 3 div 4 mod 5", "/data/a | /data/b", "position(..) - 1",
		"today() - decimal-date-time(/data/dob) > 365", "once(uuid())", "jr:choice-name(/data/x, '/data/x')",
		"pulldata('prices', 'price', 'district', /data/district)", "@id", "*", "child::node()", "//item",
		"/data/group/*[1]", "5 div 2", "count(/data/repeat[position() = 1]/x)", "$var", "\"double\"", ".5",
		"/", "a-b", "x mod y", "mod mod mod", "div div div", "indexed-repeat(/data/r/x, /data/r, 1)",
	}
	for _, e := range valid {
		if _, err := formspec.ParseXPath(e); err != nil {
			t.Errorf("%q: %v", e, err)
		}
	}
	invalid := map[string]string{
		"if( /data/num <1,0,1": "not closed",
		"'unclosed":            "never closed",
		"1 +":                  "expected",
		"a b":                  "operator",
		"(1":                   "not closed",
		"f(1,)":                "expected",
		"/data/[1]":            "expected a step",
		"1 = = 2":              "expected",
		"a[1":                  "not closed",
		"#":                    "not part",
		"":                     "empty",
		"${q1} = 1":            "not part",
	}
	for e, says := range invalid {
		_, err := formspec.ParseXPath(e)
		if err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("%q: %v, want an error saying %q", e, err, says)
		}
	}
	paths, _ := formspec.ParseXPath("/data/a + count(/data/g/b) + ../c + /data/r[1]/x + instance('i')/root/item + //z")
	if strings.Join(paths, ",") != "/data/a,/data/g/b" {
		t.Errorf("paths: %v", paths)
	}
}

// A form a device could not open is refused at publishing, naming the
// expression: it does not parse, or names a node the form lacks.
func TestCheckExpressions(t *testing.T) {
	form := func(bind string) string {
		return `<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml"><h:head><h:title>T</h:title><model>
<instance><data id="t"><num/><q/><meta><instanceID/></meta></data></instance>` + bind + `</model></h:head><h:body/></h:html>`
	}
	for bind, want := range map[string]string{
		`<bind nodeset="/data/q" relevant="if( /data/num &lt;1,0,1"/>`:         "relevant",
		`<bind nodeset="/data/q" calculate="/data/nun + 1"/>`:                  "/data/nun",
		`<bind nodeset="/data/q" constraint=". &gt; 0 and . &lt; /data/num"/>`: "",
	} {
		f, err := formspec.Parse([]byte(form(bind)))
		if err != nil {
			t.Fatal(err)
		}
		problems := f.CheckExpressions()
		switch {
		case want == "" && len(problems) > 0:
			t.Errorf("%s: %v", bind, problems)
		case want != "" && (len(problems) != 1 || problems[0].Path != "/data/q" || !strings.Contains(problems[0].Message, want)):
			t.Errorf("%s: %v, want one problem naming %q", bind, problems, want)
		}
	}
}

func FuzzParseXPath(f *testing.F) {
	for _, s := range []string{"if(/data/a < 1, 0, 1)", "instance('x')/root/item[a = /data/b]", "-(1 + 2) * 3 div 4", "a[1][@b='c']//d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		formspec.ParseXPath(s)
	})
}
