package xlsform

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/formspec"
)

const household = `
| survey   |                 |          |                     |                      |
|          | type            | name     | label::English (en) | label::Français (fr) |
|          | select_one area | district | District            | District             |
|          | integer         | members  | Members of ${district} | Membres           |
|          | begin repeat    | member   | Member              | Membre               |
|          | text            | name     | Name                | Nom                  |
|          | end repeat      |          |                     |                      |
| choices  |                 |          |                     |                      |
|          | list_name       | name     | label::English (en) | label::Français (fr) |
|          | area            | north    | North               | Nord                 |
|          | area            | south    | South               | Sud                  |
| settings |                 |          |                     |                      |
|          | form_id         | version  |                     |                      |
|          | household       | 2026     |                     |                      |
`

// The output is an XForm Haven's own form model accepts, and the same input
// gives the same bytes every time.
func TestConvertIsDeterministicAndParses(t *testing.T) {
	first := ConvertMarkdown(household, Options{})
	if len(first.Errors) > 0 {
		t.Fatal(first.Errors)
	}
	for i := 0; i < 20; i++ {
		if again := ConvertMarkdown(household, Options{}); !bytes.Equal(again.XForm, first.XForm) {
			t.Fatal("two conversions of the same workbook differ")
		}
	}
	f, err := formspec.Parse(first.XForm)
	if err != nil {
		t.Fatalf("Haven cannot parse the output: %v\n%s", err, first.XForm)
	}
	if f.ID != "household" || f.Version != "2026" || !f.Node("/data/member").Repeat || f.Node("/data/members").Type != "int" {
		t.Fatalf("form: %+v", f)
	}
	if c := f.Node("/data/district").Choices; !c["north"] || !c["south"] {
		t.Fatalf("choices: %v", c)
	}
	if !bytes.Contains(first.XForm, []byte(`lang="Français (fr)"`)) || !bytes.Contains(first.XForm, []byte(`<output value=" /data/district "/>`)) {
		t.Fatalf("translations or references missing:\n%s", first.XForm)
	}
}

func TestConvertRefusals(t *testing.T) {
	cases := []struct{ md, says string }{
		{"| survey | | | |\n| | type | name | label |\n| | frobnicate | q | Q |", "Unknown question type"},
		{"| survey | | | |\n| | type | name | label |\n| | text | | Q |", "no name"},
		{"| survey | | | |\n| | type | name | label |\n| | text | 1q | Q |", "cannot be used"},
		{"| survey | | | |\n| | type | name | label |\n| | text | q | Q |\n| | text | q | Q2 |", "already"},
		{"| survey | | | |\n| | type | name | label |\n| | end group | | |", "Unmatched"},
		{"| survey | | | |\n| | type | name | label |\n| | begin group | g | G |", "never ended"},
		{"| survey | | | |\n| | type | name | label |\n| | select_one nope | q | Q |", "not on the choices sheet"},
		{"| survey | | | |\n| | type | name | label |\n| | text | q | ${nothere} |", "no question named"},
		{"| settings | |\n| | form_title |\n| | x |", "no sheet named survey"},
		{"| survey | | | |\n| | type | name | label |\n| | text | q | Q |\n| settings | |\n| | name |\n| | 0 |", "root element"},
		{"| survey | | | |\n| | type | name | label |\n| | text | q | Q |\n| settings | |\n| | name |\n| | a b |", "root element"},
	}
	for _, c := range cases {
		res := ConvertMarkdown(c.md, Options{})
		if len(res.Errors) == 0 || !strings.Contains(res.Errors[0].Message, c.says) || res.XForm != nil {
			t.Errorf("%q: %+v, want an error saying %q", c.md, res.Errors, c.says)
		}
		if len(res.Errors) > 0 && res.Errors[0].Sheet != "" && res.Errors[0].Row == 0 {
			t.Errorf("%q: the error does not say which row: %+v", c.md, res.Errors[0])
		}
	}
	res := ConvertMarkdown("| survey | | | |\n| | type | name | label |\n| | text | q | Q |", Options{RootName: "<x>"})
	if len(res.Errors) == 0 || !strings.Contains(res.Errors[0].Message, `root name "<x>"`) || res.XForm != nil {
		t.Errorf("--root-name <x>: %+v", res.Errors)
	}
}

// Names differing only in case are allowed, as pyxform allows them, with a
// warning: some analysis tools ignore case.
func TestCaseOnlyNamesWarn(t *testing.T) {
	res := ConvertMarkdown("| survey | | | |\n| | type | name | label |\n| | text | q | Q |\n| | text | Q | Q2 |", Options{})
	if len(res.Errors) > 0 || res.XForm == nil {
		t.Fatalf("refused: %+v", res.Errors)
	}
	if len(res.Warnings) != 1 || res.Warnings[0].Row != 3 || !strings.Contains(res.Warnings[0].Message, "only in case") {
		t.Fatalf("warnings: %+v", res.Warnings)
	}
}

// Parameters on a type that takes none are ignored, as pyxform ignores
// them, with one warning.
func TestIgnoredParametersWarn(t *testing.T) {
	res := ConvertMarkdown("| survey | | | | |\n| | type | name | label | parameters |\n| | integer | q1 | Q1 | incremental=true |", Options{})
	if len(res.Errors) > 0 || res.XForm == nil {
		t.Fatalf("refused: %+v", res.Errors)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0].Message, "ignored") || strings.Contains(string(res.XForm), "incremental") {
		t.Fatalf("warnings %+v, xform %s", res.Warnings, res.XForm)
	}
}

// A select_one_external searches the external_choices list; the form then
// expects itemsets.csv among its media, made from that sheet as pyxform
// makes it (the server attaches it to the draft).
func TestSelectOneExternal(t *testing.T) {
	md := "| survey | | | | |\n| | type | name | label | choice_filter |\n| | text | state | State | |\n| | select_one_external city | city | City | state=${state} |\n" +
		"| external_choices | | | |\n| | list_name | name | state |\n| | city | Sydney | nsw |"
	res := ConvertMarkdown(md, Options{})
	if len(res.Errors) > 0 {
		t.Fatalf("refused: %+v", res.Errors)
	}
	if !strings.Contains(string(res.XForm), `query="instance('city')/root/item[state= /data/state ]"`) {
		t.Fatalf("no query: %s", res.XForm)
	}
	if len(res.Warnings) != 0 {
		t.Fatalf("warnings: %+v", res.Warnings)
	}
	if want := "\"list_name\",\"name\",\"state\"\r\n\"city\",\"Sydney\",\"nsw\"\r\n"; string(res.Itemsets) != want {
		t.Fatalf("itemsets.csv:\n%q\nwant\n%q", res.Itemsets, want)
	}
	f, err := formspec.Parse(res.XForm)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Media) != 1 || f.Media[0].Name != "itemsets.csv" {
		t.Fatalf("media: %+v", f.Media)
	}
	if res := ConvertMarkdown(strings.Replace(md, "select_one_external city", "select_one_external town", 1), Options{}); len(res.Errors) == 0 {
		t.Fatal("a list missing from external_choices was accepted")
	}
}

func TestReadXLSXRefusesGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, []byte("not a zip"), append([]byte("PK\x03\x04"), make([]byte, 100)...)} {
		if res := ConvertWorkbook(b, Options{}); len(res.Errors) == 0 || !strings.Contains(res.Errors[0].Message, ".xlsx") {
			t.Errorf("%q: %+v", b, res.Errors)
		}
	}
}

// FuzzConvertMarkdown: no input may panic, and any output is an XForm
// Haven's own parser reads, but for a form id the conversion warned Haven
// would refuse (pyxform and Collect take it, so the converter does).
func FuzzConvertMarkdown(f *testing.F) {
	f.Add(household)
	if dirs, err := os.ReadDir(corpus); err == nil {
		for i, d := range dirs {
			if i%25 == 0 {
				if b, err := os.ReadFile(filepath.Join(corpus, d.Name(), "form.md")); err == nil {
					f.Add(string(b))
				}
			}
		}
	}
	f.Fuzz(func(t *testing.T, md string) {
		res := ConvertMarkdown(md, Options{})
		if len(res.Errors) > 0 {
			return
		}
		if err := wellFormed(res.XForm); err != nil {
			t.Fatalf("output that is not well-formed XML: %v\n%s", err, res.XForm)
		}
		_, err := formspec.Parse(res.XForm)
		if err == nil {
			return
		}
		for _, w := range res.Warnings {
			// (The id as written may differ from the cell: characters XML
			// cannot carry become U+FFFD.)
			if w.Column == "form_id" && strings.HasPrefix(haven.ErrorMessage(err), "The form id ") {
				return
			}
		}
		t.Fatalf("output Haven cannot parse: %v\n%s", err, res.XForm)
	})
}

// Choice labels survive conversion into itext-labelled itemsets, in every
// language, for exports that write labels.
func TestChoiceLabelsFromItemsets(t *testing.T) {
	res := ConvertMarkdown(household, Options{})
	f, err := formspec.Parse(res.XForm)
	if err != nil {
		t.Fatal(err)
	}
	d := f.Node(f.Root.Path + "/district")
	if d == nil || !d.Choices["south"] {
		t.Fatalf("district: %+v", d)
	}
	if got := d.ChoiceLabel("south", "Français (fr)"); got != "Sud" {
		t.Errorf("French label: %q", got)
	}
	if got := d.ChoiceLabel("north", "English (en)"); got != "North" {
		t.Errorf("English label: %q", got)
	}
	if f.DefaultLanguage != "English (en)" {
		t.Errorf("default language %q", f.DefaultLanguage)
	}
}

// Several entity lists: each gets its own container as pyxform places
// them, and save_to must say which list when there is more than one.
func TestSeveralEntityLists(t *testing.T) {
	form := func(saveTo string) string {
		return `| survey | | | | |
| | type | name | label | save_to |
| | text | hname | Household | ` + saveTo + ` |
| | begin_repeat | people | People | |
| | text | pname | Name | people#given |
| | end_repeat | | | |
| entities | | |
| | list_name | label |
| | households | ${hname} |
| | people | ${pname} |`
	}
	res := ConvertMarkdown(form("households#hh"), Options{})
	if len(res.Errors) > 0 {
		t.Fatal(res.Errors)
	}
	x := string(res.XForm)
	for _, want := range []string{
		`entities:entities-version="2025.1.0"`,
		`<bind nodeset="/data/people/meta/entity/label" calculate=" ../../../pname " readonly="true()" type="string"/>`,
		`<setvalue ref="/data/people/meta/entity/@id" event="odk-new-repeat" value="uuid()"/>`,
		`<bind nodeset="/data/meta/entity/label" calculate=" /data/hname " readonly="true()" type="string"/>`,
		`<bind nodeset="/data/hname" type="string" entities:saveto="hh"/>`,
	} {
		if !strings.Contains(x, want) {
			t.Errorf("missing %s in\n%s", want, x)
		}
	}
	for saveTo, says := range map[string]string{
		"hh":          "must say which",
		"houses#hh":   "not on the entities sheet",
		"people#name": "reserved",
	} {
		res := ConvertMarkdown(form(saveTo), Options{})
		if len(res.Errors) == 0 || !strings.Contains(res.Errors[0].Message, says) {
			t.Errorf("save_to %s: %v, want an error saying %q", saveTo, res.Errors, says)
		}
	}
}

// Runs of spaces become one, as pyxform makes them, unless the settings
// say clean_text_values: no; the workbook given to Convert is not changed.
func TestCleanTextValues(t *testing.T) {
	md := "| survey | | | |\n| | type | name | label |\n| | note | n | Two  spaces |\n"
	wb, err := ReadMarkdown(md)
	if err != nil {
		t.Fatal(err)
	}
	res := Convert(wb, Options{})
	if len(res.Errors) > 0 || !bytes.Contains(res.XForm, []byte("<label>Two spaces</label>")) {
		t.Fatalf("%v\n%s", res.Errors, res.XForm)
	}
	if got := wb.Sheets["survey"].Rows[0].Cells["label"]; got != "Two  spaces" {
		t.Fatalf("Convert changed its input: %q", got)
	}
	res = ConvertMarkdown(md+"| settings | |\n| | clean_text_values |\n| | no |\n", Options{})
	if len(res.Errors) > 0 || !bytes.Contains(res.XForm, []byte("<label>Two  spaces</label>")) {
		t.Fatalf("clean_text_values no: %v\n%s", res.Errors, res.XForm)
	}
}

// A markdown form that is not UTF-8 is refused with the line to mend; its
// bytes would otherwise reach the XForm as replacement characters.
func TestMarkdownNotUTF8(t *testing.T) {
	res := ConvertMarkdown("| survey | | | |\n| | type | name | label |\n| | text | q | Caf\xe9 |", Options{})
	if len(res.Errors) != 1 || res.Errors[0].Message != "line 3 is not UTF-8 text: save the file as UTF-8" || res.XForm != nil {
		t.Errorf("%+v", res.Errors)
	}
}

// Inside a repeat, a reference in the predicate of a secondary-instance
// path starts from current(): there the context is the list's item, so
// "../pos" alone would look for pos beside the item, not the question.
func TestInstancePredicateUsesCurrent(t *testing.T) {
	res := ConvertMarkdown(`
| survey |              |       |       |                                                 |
|        | type         | name  | label | calculation                                     |
|        | xml-external | item  |       |                                                 |
|        | begin repeat | rep   | Rep   |                                                 |
|        | calculate    | pos   |       | position(..)                                    |
|        | begin group  | grp   | Grp   |                                                 |
|        | calculate    | item3 |       | instance('item')/root/item[index=${pos}]/label |
|        | calculate    | twice |       | ${pos} * 2                                      |
|        | end group    |       |       |                                                 |
|        | end repeat   |       |       |                                                 |
`, Options{})
	if len(res.Errors) > 0 {
		t.Fatal(res.Errors)
	}
	for _, want := range []string{
		`calculate="instance('item')/root/item[index= current()/../../pos ]/label"`,
		`calculate=" ../../pos  * 2"`,
	} {
		if !strings.Contains(strings.ReplaceAll(string(res.XForm), "&#39;", "'"), want) {
			t.Errorf("want %s in:\n%s", want, res.XForm)
		}
	}
}

// Controls as pyxform writes them: a group shows no hint; the intent column
// names an external app for a group or a question, its references resolved;
// noAppErrorString is a bind message, translated through itext.
func TestGroupHintIntentAndAppError(t *testing.T) {
	res := ConvertMarkdown(`
| survey |             |     |       |           |                    |                            |
|        | type        | name| label | hint      | intent             | noAppErrorString::English  |
|        | text        | a   | A     |           |                    |                            |
|        | begin group | g   | G     | Not shown | ex:org.x.Y(v=${a}) |                            |
|        | integer     | q   | Q     | Shown     | ex:org.x.Z         | Install ${a}               |
|        | end group   |     |       |           |                    |                            |
`, Options{})
	if len(res.Errors) > 0 {
		t.Fatal(res.Errors)
	}
	xf := string(res.XForm)
	for _, want := range []string{
		`<group ref="/data/g" intent="ex:org.x.Y(v= /data/a )">`,
		`<input ref="/data/g/q" intent="ex:org.x.Z">`,
		`<hint>Shown</hint>`,
		`jr:noAppErrorString="jr:itext('/data/g/q:jr:noAppErrorString')"`,
		`<text id="/data/g/q:jr:noAppErrorString">`,
	} {
		if !strings.Contains(xf, want) {
			t.Errorf("want %s in:\n%s", want, xf)
		}
	}
	if strings.Contains(xf, "Not shown") {
		t.Errorf("the group's hint is shown:\n%s", xf)
	}
}

// Choice lists' instances follow the choices sheet, not the order questions
// use them, as pyxform writes them.
func TestChoiceInstancesInSheetOrder(t *testing.T) {
	res := ConvertMarkdown(`
| survey  |              |      |       |
|         | type         | name | label |
|         | select_one b | q1   | Q1    |
|         | select_one a | q2   | Q2    |
| choices |           |      |       |
|         | list_name | name | label |
|         | a         | x    | X     |
|         | b         | y    | Y     |
`, Options{})
	if len(res.Errors) > 0 {
		t.Fatal(res.Errors)
	}
	xf := string(res.XForm)
	if a, b := strings.Index(xf, `<instance id="a">`), strings.Index(xf, `<instance id="b">`); a < 0 || b < 0 || a > b {
		t.Errorf("instances out of the sheet's order:\n%s", xf)
	}
}

// wellFormed checks what Go's XML decoder lets pass but XML forbids and
// form engines refuse: an attribute written twice on one element.
func wellFormed(b []byte) error {
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := d.RawToken()
		if err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if se, ok := tok.(xml.StartElement); ok {
			seen := map[xml.Name]bool{}
			for _, a := range se.Attr {
				if seen[a.Name] {
					return fmt.Errorf("<%s> has the attribute %s:%s twice", se.Name.Local, a.Name.Space, a.Name.Local)
				}
				seen[a.Name] = true
			}
		}
	}
}

// An attribute set by two columns (body::rows and the rows parameter) is
// written once, the parameter's winning as in pyxform.
func TestAttributeWrittenOnce(t *testing.T) {
	res := ConvertMarkdown("| survey | | | | | |\n| | type | name | label | body::rows | parameters |\n| | text | name | Name | 7 | rows=8 |", Options{})
	if len(res.Errors) > 0 {
		t.Fatal(res.Errors)
	}
	if err := wellFormed(res.XForm); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(res.XForm), `rows="8"`) {
		t.Errorf("rows: %s", res.XForm)
	}
}
