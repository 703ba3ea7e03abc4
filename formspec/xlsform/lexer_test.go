package xlsform

import (
	"strings"
	"testing"

	"github.com/haven-org/haven/formspec"
)

// A default is a value written into the instance or an expression set when
// the form opens; pyxform decides by its lexer's tokens, and so must Haven,
// or the same sheet gives Collect a different form.
func TestDynamicDefault(t *testing.T) {
	cases := []struct {
		typ, d  string
		dynamic bool
	}{
		{"integer", "123", false},
		{"integer", "f-g", false}, // a name: XML names may hold '-'
		{"integer", "f-4", false},
		{"text", "./f-4", false},
		{"integer", "1-2", false}, // 1 then the number -2
		{"integer", "7 - 4", true},
		{"text", "3 mod 3", true},
		{"text", "5 div 5", true},
		{"text", "a | b", true},
		{"text", "(https://mysite.com)", false},
		{"text", "Repeat after me: '~!@#$%^&()_", false},
		{"text", "concat ('a')", false}, // a space: no function call
		{"text", "concat('a')", true},
		{"text", "jr:itext('x')", true},
		{"text", "${q}", true},
		{"text", "${ q }", false},
		{"text", "${last-saved#q}", true},
		{"date", "2022-03-14", false},
		{"date", "-2022-03-14", false},
		{"dateTime", "2022-03-14T01:02:55-07:00", false},
		{"time", "01:02:55-07:00", false},
		{"geopoint", "32.7 -117.1 14 5.01", false},
		{"geopoint", "32.7 - 117.1", false}, // a minus in a geo type is text
		{"integer", "32.7 - 117.1", true},
		{"date", "today() - 1", true}, // the function comes first
		{"text", "", false},
	}
	for _, c := range cases {
		if got := dynamicDefault(c.d, c.typ); got != c.dynamic {
			t.Errorf("%s default %q: dynamic %v, want %v", c.typ, c.d, got, c.dynamic)
		}
	}
	xf := convertOK(t, "| survey | | | | |\n| | type | name | label | default |\n| | integer | a | A | f-4 |\n| | integer | b | B | 7 - 4 |", Options{})
	if !strings.Contains(xf, "<a>f-4</a>") || !strings.Contains(xf, `<setvalue ref="/data/b" event="odk-instance-first-load" value="7 - 4"/>`) {
		t.Errorf("defaults written as:\n%s", xf)
	}
}

// An instance('list')/... expression in a label is one output, its
// ${references} inside it, as pyxform writes it; otherwise the enumerator
// would read the expression's text around the referenced answers.
func TestInstanceExpressionInLabel(t *testing.T) {
	xf := convertOK(t, `
| survey  |               |      |       |
|         | type          | name | label |
|         | select_one c1 | q1   | Q1    |
|         | note          | n    | Chose instance('c1')/root/item[name = ${q1}]/label (${q1}), see instance('c1')/root/item[name = 'y']/label |
| choices |           |      |       |
|         | list_name | name | label |
|         | c1        | y    | Yes   |
`, Options{})
	for _, want := range []string{
		`Chose <output value="instance('c1')/root/item[name =  /data/q1 ]/label"/> (<output value=" /data/q1 "/>), see <output value="instance('c1')/root/item[name = 'y']/label"/> </label>`,
	} {
		if !strings.Contains(strings.ReplaceAll(xf, "&#39;", "'"), want) {
			t.Errorf("want %s in:\n%s", want, xf)
		}
	}
	// Whitespace ends a path, but " and " is one token that continues it,
	// in pyxform's lexer.
	if got := instanceSpans("see instance('c1')/root/item[x]/label then instance('c2')/a b"); len(got) != 2 || got[0] != [2]int{4, 37} || got[1] != [2]int{43, 59} {
		t.Errorf("spans %v", got)
	}
	if got := instanceSpans("see instance('c1')/a and instance('c2')/a"); len(got) != 1 || got[0] != [2]int{4, 41} {
		t.Errorf("spans %v", got)
	}
	if got := instanceSpans("instance of nothing"); got != nil {
		t.Errorf("spans %v", got)
	}
}

// The namespaces setting declares prefixes on the root, for attribute::
// settings that use them. An entry that is not a declaration is left out
// with a warning (pyxform skips it), as is an attribute whose prefix is
// undeclared (the XForm would not parse); Haven's own prefix is refused.
func TestNamespacesSetting(t *testing.T) {
	const survey = "| survey | | | |\n| | type | name | label |\n| | text | q | Q |\n"
	xf := convertOK(t, survey+"| settings | | | |\n| | namespaces | attribute::ex:xyz | attribute::jr:a |\n| | ex=\"http://example.com/x\" jr='http://other' ex='http://example.com/y' | 1234 | b |", Options{})
	for _, want := range []string{`xmlns:ex="http://example.com/y"`, `xmlns:jr="http://openrosa.org/javarosa"`, `<data id="data" ex:xyz="1234" jr:a="b"`} {
		if !strings.Contains(xf, want) {
			t.Errorf("want %s in:\n%s", want, xf)
		}
	}
	res := ConvertMarkdown(survey+"| settings | |\n| | attribute::nope:x |\n| | 1 |", Options{})
	if len(res.Errors) > 0 || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0].Message, "namespaces setting") || strings.Contains(string(res.XForm), "nope:x") {
		t.Errorf("undeclared prefix: %+v %+v", res.Errors, res.Warnings)
	}
	for _, bad := range []string{`ex`, `ex=`, `1x="u"`, `xmlfoo="u"`, `entities="http://elsewhere"`, `a=b=c`} {
		res := ConvertMarkdown(survey+"| settings | |\n| | namespaces |\n| | "+bad+" ok=\"u\" |", Options{})
		if len(res.Errors) > 0 || len(res.Warnings) != 1 || res.Warnings[0].Column != "namespaces" || !strings.Contains(string(res.XForm), `xmlns:ok="u">`) {
			t.Errorf("namespaces %s: %+v %+v", bad, res.Errors, res.Warnings)
		}
	}
	// Declaring Haven's own prefix with its own URI is harmless: it is
	// declared once.
	xf = convertOK(t, "| survey | | | | |\n| | type | name | label | purpose |\n| | text | q | Q | eligibility |\n| settings | |\n| | namespaces |\n| | haven=\""+formspec.Namespace+"\" |", Options{})
	if n := strings.Count(xf, "xmlns:haven="); n != 1 {
		t.Errorf("xmlns:haven declared %d times:\n%s", n, xf)
	}
	res = ConvertMarkdown(survey+"| settings | |\n| | namespaces |\n| | haven=\"http://elsewhere\" |", Options{})
	if len(res.Errors) != 1 || res.Errors[0].Column != "namespaces" || res.XForm != nil {
		t.Errorf("haven prefix: %+v", res.Errors)
	}
}

// convertOK converts a markdown form that must convert cleanly.
func convertOK(t *testing.T, md string, opt Options) string {
	t.Helper()
	res := ConvertMarkdown(md, opt)
	if len(res.Errors) > 0 || res.XForm == nil {
		t.Fatalf("refused: %+v", res.Errors)
	}
	return string(res.XForm)
}
