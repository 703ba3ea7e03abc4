package xlsform_test

import (
	"strings"
	"testing"

	"github.com/haven-org/haven/formspec/xlsform"
)

// Older spellings pyxform still reads convert exactly as today's: the
// select syntax of older forms, single-colon language columns, headers in
// other cases and spacing, whole-phrase question types, URI device
// properties. Each pair must give the same XForm.
func TestOlderSpellingsConvertAsToday(t *testing.T) {
	form := func(header, rows string) string {
		return "| survey |\n| | " + header + " |\n" + rows + `
| choices |
| | list_name | name | label |
| | yn | yes | Yes |
| | yn | no | No |
| settings |
| | form_id |
| | f |
`
	}
	for _, c := range []struct{ name, old, today string }{
		{"select one from",
			form("type | name | label", "| | select one from yn | q | Q |\n"),
			form("type | name | label", "| | select_one yn | q | Q |\n")},
		{"select all that apply from, or specify other",
			form("type | name | label", "| | select all that apply from yn or specify other | q | Q |\n"),
			form("type | name | label", "| | select_multiple yn or_other | q | Q |\n")},
		{"add select one prompt using",
			form("type | name | label", "| | add select one prompt using yn | q | Q |\n"),
			form("type | name | label", "| | select_one yn | q | Q |\n")},
		{"single-colon language columns",
			form("type | name | label:English | hint:English", "| | text | q | Q | H |\n"),
			form("type | name | label::English | hint::English", "| | text | q | Q | H |\n")},
		{"headers in other cases and spacing",
			form("Type | Name | Label | Repeat Count | Read Only", "| | text | q | Q |  | yes |\n"),
			form("type | name | label | repeat_count | readonly", "| | text | q | Q |  | yes |\n")},
		{"header aliases",
			form("command | tag | caption | relevance", "| | text | q | Q | 1 = 1 |\n"),
			form("type | name | label | relevant", "| | text | q | Q | 1 = 1 |\n")},
		{"whole-phrase types",
			form("type | name | label", "| | q picture | p | P |\n| | add date time prompt | d | D |\n| | get start time | s | |\n"),
			form("type | name | label", "| | image | p | P |\n| | dateTime | d | D |\n| | start | s | |\n")},
		{"a phone number is digits",
			form("type | name | label", "| | phone number | p | P |\n"),
			form("type | name | label | constraint | hint", "| | text | p | P | regex(., '^\\d*$') | Enter numbers only. |\n")},
		{"number of days",
			form("type | name | label", "| | number of days in last month | n | N |\n"),
			form("type | name | label | constraint | hint", "| | integer | n | N | 0 <= . and . <= 31 | Enter a number 0-31. |\n")},
	} {
		a := xlsform.ConvertMarkdown(c.old, xlsform.Options{})
		b := xlsform.ConvertMarkdown(c.today, xlsform.Options{})
		if len(a.Errors) > 0 || len(b.Errors) > 0 {
			t.Errorf("%s: errors %v / %v", c.name, a.Errors, b.Errors)
			continue
		}
		if string(a.XForm) != string(b.XForm) {
			t.Errorf("%s: the older spelling converts differently:\n%s\nvs\n%s", c.name, a.XForm, b.XForm)
		}
	}
	// The URI names of device properties are preloads of their own.
	r := xlsform.ConvertMarkdown(form("type | name | label", "| | uri:deviceid | d | |\n"), xlsform.Options{})
	if len(r.Errors) > 0 || !strings.Contains(string(r.XForm), `jr:preloadParams="uri:deviceid"`) {
		t.Fatalf("uri:deviceid: %v\n%s", r.Errors, r.XForm)
	}
	// A file to select from has one extension a device reads.
	r = xlsform.ConvertMarkdown(form("type | name | label", "| | select one from file cities.pdf | c | C |\n"), xlsform.Options{})
	if len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Message, ".csv, .xml or .geojson") {
		t.Fatalf("select from a .pdf: %v", r.Errors)
	}
}
