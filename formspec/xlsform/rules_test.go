package xlsform

import (
	"strings"
	"testing"
)

// Rules carried over from pyxform's source: what it refuses, and how it
// writes what it accepts.
func TestPyxformRules(t *testing.T) {
	for _, c := range []struct {
		name, md string
		err      string   // a refusal's words; "" when it converts
		contains []string // in the XForm
		excludes []string
	}{
		{"allow-mock-accuracy takes true or false", "| survey | | | | |\n| | type | name | label | parameters |\n| | geoshape | g | G | allow-mock-accuracy=foo |",
			"'allow-mock-accuracy' parameter must be either 'true' or 'false'", nil, nil},
		{"allow-mock-accuracy true", "| survey | | | | |\n| | type | name | label | parameters |\n| | geopoint | g | G | allow-mock-accuracy=true |",
			"", []string{`odk:allow-mock-accuracy="true"`}, nil},
		{"incremental is true or absent", "| survey | | | | |\n| | type | name | label | parameters |\n| | geotrace | g | G | incremental=no |",
			"'incremental' parameter may either be 'true' or not included", nil, nil},
		{"big-image needs an image", "| survey | | | |\n| | type | name | media::big-image |\n| | text | c | m.png |",
			"To use big-image, you must also specify an image", nil, nil},
		{"a bare media column is ignored", "| survey | | | |\n| | type | name | media |\n| | text | c | m.png |",
			"", []string{"<label/>"}, []string{"m.png"}},
		{"a hidden question triggers nothing", "| survey | | | | |\n| | type | name | trigger | calculation |\n| | integer | two | | 1 + 1 |\n| | integer | ts | ${two} | now() |",
			"is not shown to the enumerator", nil, nil},
		{"external instance names are unique", "| survey | | | |\n| | type | name | label |\n| | xml-external | d | |\n| | begin group | g | G |\n| | csv-external | d | |\n| | end group | g | |",
			"Instance names must be unique", nil, nil},
		{"required FALSE is written false()", "| survey | | | | |\n| | type | name | label | required |\n| | text | t | T | FALSE |",
			"", []string{`required="false()"`}, nil},
		{"required 1 is an expression", "| survey | | | | |\n| | type | name | label | required |\n| | text | t | T | 1 |",
			"", []string{`required="1"`}, nil},
		{"relevant no is false()", "| survey | | | | |\n| | type | name | label | relevant |\n| | text | t | T | no |",
			"", []string{`relevant="false()"`}, nil},
		{"a guidance hint alone gets no plain hint", "| survey | | | | |\n| | type | name | label | guidance_hint |\n| | text | t | T | as on the card |",
			"", []string{`<value form="guidance">as on the card</value>`}, []string{"<value>-</value>"}},
		{"an image's app is an Android package", "| survey | | | | |\n| | type | name | label | parameters |\n| | image | i | I | app=draw |",
			"must have at least one '.' separator", nil, nil},
		{"an image's app", "| survey | | | | |\n| | type | name | label | parameters |\n| | image | i | I | app=org.odk.draw |",
			"", []string{`intent="org.odk.draw"`}, nil},
		{"a repeat is not named as the root", "| survey | | | |\n| | type | name | label |\n| | begin repeat | data | R |\n| | text | a | A |\n| | end repeat | | |",
			"must not be the same as the survey's root", nil, nil},
		{"a seed with randomize=false", "| survey | | | | |\n| | type | name | label | parameters |\n| | select_one l | s | S | randomize=false seed=3 |\n| choices | | |\n| | list_name | name | label |\n| | l | a | A |",
			"", nil, nil},
		{"a seed without randomize", "| survey | | | | |\n| | type | name | label | parameters |\n| | select_one l | s | S | seed=3 |\n| choices | | |\n| | list_name | name | label |\n| | l | a | A |",
			"must include randomize=true to use a seed", nil, nil},
		{"the style setting is the body's class", "| survey | | | |\n| | type | name | label |\n| | text | a | A |\n| settings | |\n| | style |\n| | theme-grid pages |",
			"", []string{`<h:body class="theme-grid pages">`}, nil},
		{"a table-list group", "| survey | | | | |\n| | type | name | label | appearance |\n| | begin group | g | G | table-list |\n| | select_one yn | a | A | |\n| | select_one yn | b | B | |\n| | end group | | | |\n| choices | | | |\n| | list_name | name | label |\n| | yn | y | Yes |",
			"", []string{`<group ref="/data/g" appearance="field-list">`, `<input ref="/data/g/generated_table_list_label_2">`, `<select1 ref="/data/g/reserved_name_for_field_list_labels_3" appearance="label">`, `<select1 ref="/data/g/b" appearance="list-nolabel">`}, []string{"table-list"}},
		{"a table-list shares one list", "| survey | | | | |\n| | type | name | label | appearance |\n| | begin group | g | G | table-list |\n| | select_one yn | a | A | |\n| | select_one ab | b | B | |\n| | end group | | | |\n| choices | | | |\n| | list_name | name | label |\n| | yn | y | Yes |\n| | ab | a | A |",
			"list names don't match", nil, nil},
		{"the rows column", "| survey | | | | |\n| | type | name | label | rows |\n| | text | t | T | 5 |",
			"", []string{`rows="5"`}, nil},
		{"instance attributes of a group, references as paths", "| survey | | | | |\n| | type | name | label | instance::tag |\n| | text | a | A | |\n| | begin group | g | G | ${a} |\n| | text | b | B | |\n| | end group | | | |",
			"", []string{`<g tag=" /data/a ">`}, nil},
		{"a tick interval on the steps", "| survey | | | | |\n| | type | name | label | parameters |\n| | range | r | R | start=-3 end=3 step=2 tick_interval=3 |",
			"'tick_interval' must be a multiple of 'step'", nil, nil},
		{"a placeholder on the steps from start", "| survey | | | | |\n| | type | name | label | parameters |\n| | range | r | R | start=-3 end=3 step=2 placeholder=-2 |",
			"'placeholder' must be a multiple of 'step'", nil, nil},
		{"a placeholder on a step", "| survey | | | | |\n| | type | name | label | parameters |\n| | range | r | R | start=-3 end=3 step=2 placeholder=1 |",
			"", []string{`odk:placeholder="1"`}, nil},
		{"a seed is a number or one reference", "| survey | | | | | |\n| | type | name | label | parameters | calculation |\n| | calculate | sd | | | 4 |\n| | select_one l | s | S | randomize=true seed=int(${sd}) | |\n| choices | | |\n| | list_name | name | label |\n| | l | a | A |",
			"seed value must be a number or a reference", nil, nil},
		{"the entities sheet's columns", "| survey | | | |\n| | type | name | label |\n| | text | a | A |\n| entities | | | |\n| | list_name | label | what |\n| | e | ${a} | ! |",
			"'what'", nil, nil},
		{"a choice list named as a file's instance", "| survey | | | |\n| | type | name | label |\n| | csv-external | c1 | |\n| | text | q | Q |\n| choices | | |\n| | list_name | name | label |\n| | c1 | n | N |",
			"same name as the instance of the file jr://file-csv/c1.csv", nil, nil},
		{"an alias after its column", "| survey | | | | |\n| | type | name | value | label |\n| | text | a | b | A |",
			"two names for the same column", nil, nil},
		{"the column after its alias: the later value wins", "| survey | | | | |\n| | type | value | name | label |\n| | text | a | b | A |\n| | text | c | | C |",
			"", []string{"<b/>", "<c/>"}, nil},
		{"form_id beats id_string", "| survey | | | |\n| | type | name | label |\n| | text | a | A |\n| settings | | |\n| | form_id | id_string |\n| | kept | dropped |",
			"", []string{`id="kept"`}, []string{"dropped"}},
		{"bind:: columns are the columns", "| survey | | | | |\n| | type | name | label | bind::relevant |\n| | integer | a | A | |\n| | text | b | B | ${a} = 1 |",
			"", []string{`relevant=" /data/a  = 1"`}, []string{"${a}"}},
		{"a trigger has no bind", "| survey | | | |\n| | type | name | label |\n| | trigger | t | Press |",
			"", []string{`<trigger ref="/data/t">`}, []string{`nodeset="/data/t"`}},
		{"a note without a name", "| survey | | | |\n| | type | name | label |\n| | text | a | A |\n| | note | | Thanks |",
			"", []string{"<generated_note_name_3/>"}, nil},
		{"the instance_id setting", "| survey | | | |\n| | type | name | label |\n| | text | a | A |\n| settings | |\n| | instance_id |\n| | x |",
			"", []string{`jr:preload="x"`}, nil},
		{"body columns on groups and repeats", "| survey | | | | |\n| | type | name | label | body::tag |\n| | text | a | A | |\n| | begin group | g | G | ${a} |\n| | end group | | | |\n| | begin repeat | r | R | x |\n| | text | b | B | |\n| | end repeat | | | |",
			"", []string{`<group ref="/data/g" tag=" /data/a ">`, `<repeat nodeset="/data/r" tag="x">`}, nil},
		{"a nested body column is a dict attribute", "| survey | | | | |\n| | type | name | label | body::esri::style |\n| | text | w | W | |\n| | image | i | I | watermark=${w} |",
			"", []string{`esri="{'style': 'watermark= /data/w '}"`}, []string{"esri::"}},
	} {
		res := ConvertMarkdown(c.md, Options{})
		var errs []string
		for _, e := range res.Errors {
			errs = append(errs, e.String())
		}
		got := strings.Join(errs, "; ")
		switch {
		case c.err != "" && !strings.Contains(got, c.err):
			t.Errorf("%s: errors %q, want %q", c.name, got, c.err)
			continue
		case c.err == "" && got != "":
			t.Errorf("%s: refused: %s", c.name, got)
			continue
		}
		if c.err != "" {
			continue
		}
		if err := wellFormed(res.XForm); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
		for _, s := range c.contains {
			if !strings.Contains(string(res.XForm), s) {
				t.Errorf("%s: no %s in\n%s", c.name, s, res.XForm)
			}
		}
		for _, s := range c.excludes {
			if strings.Contains(string(res.XForm), s) {
				t.Errorf("%s: %s in\n%s", c.name, s, res.XForm)
			}
		}
	}
}

// Workbooks as pyxform reads them: a single sheet of any name is the
// survey; the entities sheet's headers in any case.
func TestPyxformWorkbookShapes(t *testing.T) {
	md := "| Sheet1 | | | |\n| | type | name | label |\n| | text | state | The State |"
	if res := ConvertMarkdown(md, Options{}); len(res.Errors) > 0 || !strings.Contains(string(res.XForm), `<bind nodeset="/data/state"`) {
		t.Errorf("a one-sheet workbook: %v", res.Errors)
	}
	two := md + "\n| notes | |\n| | hello |"
	if res := ConvertMarkdown(two, Options{}); len(res.Errors) == 0 {
		t.Error("two sheets, neither named survey, converted")
	}
	ent := "| survey | | | | |\n| | type | name | label | save_to |\n| | text | a | A | p |\n| entities | | |\n| | DATASET | LABEL |\n| | trees | ${a} |"
	if res := ConvertMarkdown(ent, Options{}); len(res.Errors) > 0 || !strings.Contains(string(res.XForm), `dataset="trees"`) {
		t.Errorf("an entities sheet with DATASET: %v", res.Errors)
	}
}

// pyxform's itext order: in each language, the texts it has words for,
// then questions it gives only media, then what it lacks ("-" for words,
// nothing for media); a group's bind before its children's.
func TestPyxformItextAndBindOrder(t *testing.T) {
	md := `| survey |             |      |          |          |               |              |          |
|        | type        | name | label::en | label::fr | media::image::en | hint::fr | relevant |
|        | begin group | g    | G        | G        |               |              | 1 = 1    |
|        | text        | a    |          |          | a.png         | indice       |          |
|        | text        | b    | B        |          |               |              |          |
|        | end group   | g    |          |          |               |              |          |`
	res := ConvertMarkdown(md, Options{})
	if len(res.Errors) > 0 {
		t.Fatal(res.Errors)
	}
	x := string(res.XForm)
	en := x[strings.Index(x, `lang="en"`):strings.Index(x, `lang="fr"`)]
	order := func(s string, ids ...string) bool {
		last := -1
		for _, id := range ids {
			i := strings.Index(s, `id="`+id+`"`)
			if i < last || i < 0 {
				return false
			}
			last = i
		}
		return true
	}
	// In English: words (g, b), then a's image, then a's hint it lacks.
	if !order(en, "/data/g:label", "/data/g/b:label", "/data/g/a:label", "/data/g/a:hint") {
		t.Errorf("English itext order:\n%s", en)
	}
	fr := x[strings.Index(x, `lang="fr"`):]
	fr = fr[:strings.Index(fr, "</translation>")]
	if !strings.Contains(fr, `<text id="/data/g/a:label"/>`) {
		t.Errorf("a media-only text missing in French is not empty:\n%s", fr)
	}
	if strings.Index(x, `<bind nodeset="/data/g"`) > strings.Index(x, `<bind nodeset="/data/g/a"`) {
		t.Errorf("the group's bind comes after its children's:\n%s", x)
	}
}
