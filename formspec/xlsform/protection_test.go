package xlsform

import (
	"bytes"
	"strings"
	"testing"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/formspec"
)

const mapped = `
| survey   |                  |          |                        |                         |                          |             |
|          | type             | name     | label::English (en)    | label::Français (fr)    | purpose                  | sensitivity | calculation |
|          | start            | start    |                        |                         |                          |             |
|          | select_one yn    | agree    | Do you agree to answer?| Acceptez-vous ?         | Consent evidence         | public      |
|          | text             | hh_name  | Name                   | Nom                     | Call back the household  | level_3     |
|          | note             | thanks   | Thank you              | Merci                   |                          |             |
|          | integer          | members  | Members                | Membres                 | Plan distributions       |             |
|          | calculate        | double   |                        |                         |                          | level_0     | ${members} * 2 |
| choices  |                  |          |                        |                         |                          |             |
|          | list_name        | name     | label::English (en)    | label::Français (fr)    |                          |             |
|          | yn               | yes      | Yes                    | Oui                     |                          |             |
|          | yn               | no       | No                     | Non                     |                          |             |
| settings |                  |          |                        |                         |                          |             |
|          | form_id          | consent  | default_sensitivity    |                         |                          |             |
|          | mapped           | agree    | level_1                |                         |                          |             |
`

// purpose and sensitivity columns and the protection settings become haven:
// attributes Haven's form model reads; fields missing either are named, with
// their rows, when the form is checked for publishing.
func TestProtectionColumns(t *testing.T) {
	res := ConvertMarkdown(mapped, Options{})
	if len(res.Errors) > 0 {
		t.Fatal(res.Errors)
	}
	x := string(res.XForm)
	for _, want := range []string{`xmlns:haven="urn:haven:xforms"`, `haven:purpose="Call back the household"`, `haven:sensitivity="level_3"`,
		`haven:consent-field="/data/agree"`, `haven:default-sensitivity="level_1"`} {
		if !strings.Contains(x, want) {
			t.Errorf("the XForm lacks %s", want)
		}
	}
	f, err := formspec.Parse(res.XForm)
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[string]formspec.Field{}
	for _, fd := range f.Schema() {
		byPath[fd.Path] = fd
	}
	if fd := byPath["/data/members"]; fd.Sensitivity != haven.Level1 || fd.Kind != "data" {
		t.Errorf("members should take the default tier: %+v", fd)
	}
	if fd := byPath["/data/start"]; fd.Kind != "metadata" || fd.Purpose == "" {
		t.Errorf("start is metadata Haven maps itself: %+v", fd)
	}
	if fd := byPath["/data/thanks"]; fd.Kind != "note" {
		t.Errorf("a note is not a data field: %+v", fd)
	}
	if fd := byPath["/data/double"]; fd.Effective != haven.Level3 {
		t.Errorf("level_0 is handled as level_3: %+v", fd)
	}
	if fd := byPath["/data/agree"]; !fd.Consent {
		t.Errorf("agree is the consent question: %+v", fd)
	}
	problems := f.CheckProtection()
	if len(problems) != 1 || problems[0].Path != "/data/double" || !strings.Contains(problems[0].Message, "purpose") {
		t.Fatalf("want exactly the calculate without purpose refused, got %+v", problems)
	}
	if res.Rows["/data/double"] != 7 {
		t.Errorf("row of double: %d", res.Rows["/data/double"])
	}
	text, version := f.ConsentStatement()
	if text["Français (fr)"] != "Acceptez-vous ?" || len(version) != 64 {
		t.Errorf("statement %v %q", text, version)
	}
	// Changing the statement in one language changes its version.
	res2 := ConvertMarkdown(strings.Replace(mapped, "Acceptez-vous ?", "Acceptez-vous de répondre ?", 1), Options{})
	f2, _ := formspec.Parse(res2.XForm)
	if _, v2 := f2.ConsentStatement(); v2 == version {
		t.Error("a changed statement kept its version")
	}
}

func TestProtectionRefusals(t *testing.T) {
	cases := []struct{ settings, says string }{
		{"| settings | |\n| | form_id |\n| | f |", "no consent question and declares no other legal basis"},
		{"| settings | | |\n| | form_id | legal_basis |\n| | f | because |", `legal basis "because"`},
		{"| settings | | |\n| | form_id | consent |\n| | f | nobody |", `names "nobody"`},
		{"| settings | | |\n| | form_id | consent |\n| | f | q |", "must be a select_one"},
		{"| settings | | | |\n| | form_id | legal_basis | subject_id |\n| | f | vital_interest | nobody |", `subject_id setting names "nobody"`},
	}
	for _, c := range cases {
		md := "| survey | | | | | |\n| | type | name | label | purpose | sensitivity |\n| | text | q | Q | Why | level_2 |\n" + c.settings
		res := ConvertMarkdown(md, Options{})
		if len(res.Errors) > 0 {
			t.Fatal(res.Errors)
		}
		f, err := formspec.Parse(res.XForm)
		if err != nil {
			t.Fatal(err)
		}
		var all bytes.Buffer
		for _, p := range f.CheckProtection() {
			all.WriteString(p.Message + "\n")
		}
		if !strings.Contains(all.String(), c.says) {
			t.Errorf("%s: want %q, got %q", c.settings, c.says, all.String())
		}
	}
	// With a legal basis, a form needs no consent question.
	md := "| survey | | | | | |\n| | type | name | label | purpose | sensitivity |\n| | text | q | Q | Why | level_2 |\n| settings | | |\n| | form_id | legal_basis |\n| | f | vital_interest |"
	f, err := formspec.Parse(ConvertMarkdown(md, Options{}).XForm)
	if err != nil {
		t.Fatal(err)
	}
	if p := f.CheckProtection(); len(p) != 0 {
		t.Errorf("a form with a legal basis was refused: %+v", p)
	}
	// A subject identifier inside a repeat cannot name the one person a
	// submission is about.
	md = "| survey | | | | | |\n| | type | name | label | purpose | sensitivity |\n| | begin_repeat | r | R | | |\n| | text | q | Q | Why | level_2 |\n| | end_repeat | | | | |\n" +
		"| settings | | | |\n| | form_id | legal_basis | subject_id |\n| | f | vital_interest | q |"
	if f, err = formspec.Parse(ConvertMarkdown(md, Options{}).XForm); err != nil {
		t.Fatal(err)
	}
	if p := f.CheckProtection(); len(p) != 1 || p[0].Path != "/data/r/q" || !strings.Contains(p[0].Message, "inside a repeat") {
		t.Errorf("a subject identifier in a repeat: %+v", p)
	}
}

// A form without any haven: attribute stays exactly as pyxform writes it.
func TestNoHavenNamespaceWithoutProtectionColumns(t *testing.T) {
	if x := ConvertMarkdown(household, Options{}).XForm; bytes.Contains(x, []byte("haven")) {
		t.Fatalf("unexpected haven namespace:\n%s", x)
	}
}

// An entity made per item of a repeat passes the protection check (its meta
// block is metadata Haven maps), and the entity's label, built from answers,
// is kept at the highest tier wherever the entity is made.
func TestEntityMetaProtection(t *testing.T) {
	for _, md := range []string{
		`| survey | | | | | | |
| | type | name | label | purpose | sensitivity | save_to |
| | begin_repeat | people | People | | | |
| | text | pname | Name | Register the person | level_3 | |
| | integer | age | Age | Plan services | level_1 | age |
| | end_repeat | | | | | |
| entities | | |
| | list_name | label |
| | people | ${pname} |
| settings | |
| | legal_basis |
| | public_interest |`,
		`| survey | | | | | |
| | type | name | label | purpose | sensitivity |
| | text | pname | Name | Register the person | level_3 |
| entities | | |
| | list_name | label |
| | people | ${pname} |
| settings | |
| | legal_basis |
| | public_interest |`,
		// Two entity lists: the second one's meta block sits in a group.
		`| survey | | | | | | |
| | type | name | label | purpose | sensitivity | save_to |
| | text | hname | Household | Register the household | level_2 | households#hh |
| | begin_group | head | Head | | | |
| | text | pname | Name | Register the person | level_3 | people#given |
| | end_group | | | | | |
| entities | | |
| | list_name | label |
| | households | ${hname} |
| | people | ${pname} |
| settings | |
| | legal_basis |
| | public_interest |`,
	} {
		res := ConvertMarkdown(md, Options{})
		if len(res.Errors) > 0 {
			t.Fatal(res.Errors)
		}
		if !bytes.Contains(res.XForm, []byte("/head/meta/entity/label")) && strings.Contains(md, "households") {
			t.Fatalf("the second entity is not in its group:\n%s", res.XForm)
		}
		f, err := formspec.Parse(res.XForm)
		if err != nil {
			t.Fatal(err)
		}
		if problems := f.CheckProtection(); len(problems) > 0 {
			t.Fatalf("refused for publishing: %+v", problems)
		}
		found := false
		for _, fd := range f.Schema() {
			if strings.HasSuffix(fd.Path, "/meta/entity/label") {
				found = true
				// The label takes the tier of what it reads: the household's
				// name is level_2, a person's name level_3.
				want := haven.Level3
				if strings.Contains(md, "households") && !strings.Contains(fd.Path, "/head/") {
					want = haven.Level2
				}
				if fd.Kind != "metadata" || fd.Effective != want || fd.Derived != want {
					t.Errorf("entity label %s: %+v, want %s", fd.Path, fd, want)
				}
			}
		}
		if !found {
			t.Errorf("no entity label among the fields of:\n%s", res.XForm)
		}
	}
}
