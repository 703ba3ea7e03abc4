package formspec

import (
	"os"
	"strings"
	"testing"

	"github.com/haven-org/haven"
)

func household(t testing.TB) *Form {
	t.Helper()
	b, err := os.ReadFile("testdata/household.xml")
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestParseHousehold(t *testing.T) {
	f := household(t)
	if f.ID != "household" || f.Version != "2026110101" || f.Title != "Household survey" || f.RootName != "household" {
		t.Fatalf("identity: %+v", f)
	}
	types := map[string]string{}
	for _, n := range f.Fields() {
		types[n.Path] = n.Type
	}
	want := map[string]string{
		"/household/start": "dateTime", "/household/district": "select1", "/household/members": "int",
		"/household/needs": "select", "/household/shelter/roof": "select1", "/household/shelter/photo": "binary",
		"/household/member/age": "int", "/household/location": "geopoint", "/household/meta/instanceID": "string",
	}
	for p, typ := range want {
		if types[p] != typ {
			t.Errorf("%s: type %q, want %q", p, types[p], typ)
		}
	}
	if !f.Node("/household/member").Repeat || f.Node("/household/shelter").Repeat {
		t.Error("member must be a repeat and shelter not")
	}
	if c := f.Node("/household/district").Choices; !c["north"] || !c["south"] || len(c) != 2 {
		t.Errorf("itemset choices: %v", c)
	}
	if c := f.Node("/household/needs").Choices; len(c) != 3 || !c["water"] {
		t.Errorf("inline choices: %v", c)
	}
	if len(f.Media) != 2 || f.Media[0] != (Media{"prices.csv", "file"}) || f.Media[1] != (Media{"shelter.png", "image"}) {
		t.Errorf("media: %+v", f.Media)
	}
}

const validInstance = `<?xml version="1.0"?>
<household xmlns:jr="http://openrosa.org/javarosa" xmlns:orx="http://openrosa.org/xforms" id="household" version="2026110101">
  <start>2026-11-20T09:15:00.000+03:00</start><district>north</district><head_name>Amina</head_name><members>3</members>
  <visit_date>2026-11-20</visit_date><location>2.04 45.34 12 5</location><needs>food water</needs>
  <shelter><roof>tarp</roof><photo>1700000000.jpg</photo></shelter>
  <member><age>34</age><sex>f</sex></member><member><age>5</age><sex>m</sex></member>
  <price/>
  <orx:meta><orx:instanceID>uuid:6b1d3f3e-0000-4000-8000-000000000001</orx:instanceID><orx:instanceName>HH Amina</orx:instanceName></orx:meta>
</household>`

func TestValidateAccepts(t *testing.T) {
	f := household(t)
	inst, err := ParseInstance([]byte(validInstance), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if inst.InstanceID != "uuid:6b1d3f3e-0000-4000-8000-000000000001" || inst.InstanceName != "HH Amina" || inst.FormID != "household" || inst.Version != "2026110101" {
		t.Fatalf("instance: %+v", inst)
	}
	v := f.Validate(inst)
	if len(v.Problems) != 0 {
		t.Fatalf("problems: %+v", v.Problems)
	}
	if len(v.Files) != 1 || v.Files[0] != "1700000000.jpg" {
		t.Fatalf("files: %v", v.Files)
	}
}

func TestValidateRefuses(t *testing.T) {
	f := household(t)
	cases := []struct {
		name, from, to, path string
	}{
		{"unknown element", "<price/>", "<price/><ssn>123</ssn>", "/household/ssn"},
		{"unknown nested", "<roof>tarp</roof>", "<roof>tarp</roof><gps/>", "/household/shelter/gps"},
		{"non-repeat twice", "<members>3</members>", "<members>3</members><members>4</members>", "/household/members"},
		{"int", "<members>3</members>", "<members>three</members>", "/household/members"},
		{"int in repeat", "<age>5</age>", "<age>5.5</age>", "/household/member[2]/age"},
		{"date", "<visit_date>2026-11-20</visit_date>", "<visit_date>20/11/2026</visit_date>", "/household/visit_date"},
		{"month 13", "<visit_date>2026-11-20</visit_date>", "<visit_date>2026-13-20</visit_date>", "/household/visit_date"},
		{"dateTime", "<start>2026-11-20T09:15:00.000+03:00</start>", "<start>yesterday</start>", "/household/start"},
		{"geopoint latitude", "2.04 45.34 12 5", "95 45.34 12 5", "/household/location"},
		{"geopoint text", "2.04 45.34 12 5", "here", "/household/location"},
		{"select1 itemset", "<district>north</district>", "<district>east</district>", "/household/district"},
		{"select1 inline", "<roof>tarp</roof>", "<roof>straw</roof>", "/household/shelter/roof"},
		{"select multiple", "<needs>food water</needs>", "<needs>food cash</needs>", "/household/needs"},
		{"binary path", "<photo>1700000000.jpg</photo>", "<photo>../../etc/passwd</photo>", "/household/shelter/photo"},
		{"group with value", "<shelter><roof>tarp</roof><photo>1700000000.jpg</photo></shelter>", "<shelter>x</shelter>", "/household/shelter"},
		{"question with children", "<members>3</members>", "<members><x/></members>", "/household/members"},
		{"meta extra", "<orx:instanceName>", "<orx:deviceSerial>1</orx:deviceSerial><orx:instanceName>", "/household/meta/deviceSerial"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := strings.Replace(validInstance, c.from, c.to, 1)
			if doc == validInstance {
				t.Fatalf("replacement %q not found", c.from)
			}
			inst, err := ParseInstance([]byte(doc), DefaultLimits)
			if err != nil {
				t.Fatal(err)
			}
			v := f.Validate(inst)
			if len(v.Problems) != 1 || v.Problems[0].Path != c.path {
				t.Fatalf("problems %+v, want one at %s", v.Problems, c.path)
			}
			err = v.Error(f.ID)
			if haven.ErrorCode(err) != haven.EINVALID || !strings.Contains(haven.ErrorMessage(err), c.path) {
				t.Fatalf("error %v does not name %s", err, c.path)
			}
		})
	}
}

func TestValidateAllowsEmptyAndProtocolMeta(t *testing.T) {
	f := household(t)
	doc := strings.Replace(validInstance, "<members>3</members>", "<members/>", 1)
	doc = strings.Replace(doc, "<orx:instanceName>", "<orx:deprecatedID>uuid:old</orx:deprecatedID><orx:instanceName>", 1)
	inst, err := ParseInstance([]byte(doc), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if v := f.Validate(inst); len(v.Problems) != 0 {
		t.Fatalf("problems: %+v", v.Problems)
	}
	if inst.DeprecatedID != "uuid:old" {
		t.Fatalf("deprecatedID %q", inst.DeprecatedID)
	}
}

func TestValidateWrongRoot(t *testing.T) {
	f := household(t)
	inst, err := ParseInstance([]byte(`<other id="household"><meta><instanceID>uuid:1</instanceID></meta></other>`), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if v := f.Validate(inst); len(v.Problems) != 1 || v.Problems[0].Path != "/other" {
		t.Fatalf("problems: %+v", v.Problems)
	}
}

func TestParseInstanceRefuses(t *testing.T) {
	deep := strings.Repeat("<a>", 100) + strings.Repeat("</a>", 100)
	cases := []struct {
		name, doc, code, says string
	}{
		{"doctype", `<!DOCTYPE x [<!ENTITY e "boom">]><x id="f"><meta><instanceID>uuid:1</instanceID></meta></x>`, haven.EINVALID, "DOCTYPE"},
		{"entity reference", `<x id="f"><a>&e;</a><meta><instanceID>uuid:1</instanceID></meta></x>`, haven.EINVALID, "well-formed"},
		{"invalid utf-8", "<x id=\"f\"><a>\xff\xfe</a><meta><instanceID>uuid:1</instanceID></meta></x>", haven.EINVALID, "UTF-8"},
		{"too deep", `<x id="f">` + deep + `</x>`, haven.EINVALID, "nested"},
		{"no form id", `<x><meta><instanceID>uuid:1</instanceID></meta></x>`, haven.EINVALID, "form id"},
		{"no instance id", `<x id="f"><meta/></x>`, haven.EINVALID, "instanceID"},
		{"two roots", `<x id="f"><meta><instanceID>uuid:1</instanceID></meta></x><y/>`, haven.EINVALID, "root"},
		{"truncated", `<x id="f"><meta><instanceID>uuid:1</instanceID></meta>`, haven.EINVALID, ""},
		{"empty", ``, haven.EINVALID, "empty"},
		{"other encoding", `<?xml version="1.0" encoding="ISO-8859-1"?><x id="f"/>`, haven.EINVALID, ""},
		{"too large", `<x id="f">` + strings.Repeat("a", 200) + `</x>`, haven.ETOOLARGE, "bytes"},
		{"instance id with slash", `<x id="f"><meta><instanceID>../../x</instanceID></meta></x>`, haven.EINVALID, "instanceID"},
	}
	lim := DefaultLimits
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := lim
			if c.name == "too large" {
				l.MaxBytes = 100
			}
			_, err := ParseInstance([]byte(c.doc), l)
			if haven.ErrorCode(err) != c.code || !strings.Contains(haven.ErrorMessage(err), c.says) {
				t.Fatalf("err = %v, want %s mentioning %q", err, c.code, c.says)
			}
		})
	}
}

func TestParseFormRefuses(t *testing.T) {
	b, _ := os.ReadFile("testdata/household.xml")
	good := string(b)
	cases := []struct{ name, from, to, says string }{
		{"no id", `id="household" `, ``, "no id"},
		{"bad id", `id="household"`, `id="house&#10;hold"`, "control character"},
		{"doctype", `<?xml version="1.0" encoding="utf-8"?>`, `<?xml version="1.0"?><!DOCTYPE h:html>`, "DOCTYPE"},
		{"not xml", `</h:html>`, ``, "well-formed"},
		{"no model", `<model odk:xforms-version="1.0.0" `, `<nomodel `, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := strings.Replace(good, c.from, c.to, 1)
			if doc == good {
				t.Fatalf("replacement %q not found", c.from)
			}
			_, err := Parse([]byte(doc))
			if haven.ErrorCode(err) != haven.EINVALID || !strings.Contains(haven.ErrorMessage(err), c.says) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestSetVersion(t *testing.T) {
	b, _ := os.ReadFile("testdata/household.xml")
	out, err := SetVersion(b, `v2 "final"`)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(out)
	if err != nil || f.Version != `v2 "final"` {
		t.Fatalf("version %q, err %v", f.Version, err)
	}
	if len(out)-len(b) > 40 {
		t.Fatalf("SetVersion changed more than the attribute: %d bytes", len(out)-len(b))
	}
	same, _ := SetVersion(b, "2026110101")
	if string(same) != string(b) {
		t.Fatal("setting the same version must not change the bytes")
	}
	noVersion := strings.Replace(string(b), ` version="2026110101"`, "", 1)
	out, err = SetVersion([]byte(noVersion), "3")
	if f, _ := Parse(out); err != nil || f.Version != "3" {
		t.Fatalf("adding a version: %v", err)
	}
}

func TestSafeFileName(t *testing.T) {
	for _, ok := range []string{"photo.jpg", "1700000000.jpg", "audit.csv", "signature 1.png"} {
		if SafeFileName(ok) != nil {
			t.Errorf("%q refused", ok)
		}
	}
	for _, bad := range []string{"", ".", "..", "../x", "a/b", `a\b`, "a\x00b", "C:x", "a..b", strings.Repeat("a", 300)} {
		if SafeFileName(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
