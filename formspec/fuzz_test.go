package formspec

import (
	"fmt"
	"os"
	"reflect"
	"testing"
	"unicode/utf8"
)

// FuzzParseInstance feeds arbitrary bytes to the submission parser and the
// validator: neither may panic, and whatever parses has an id and instanceID.
func FuzzParseInstance(f *testing.F) {
	f.Add([]byte(validInstance))
	f.Add([]byte(`<x id="f"><meta><instanceID>uuid:1</instanceID></meta></x>`))
	f.Add([]byte(`<!DOCTYPE x><x/>`))
	f.Add([]byte("<x id=\"f\">\xff</x>"))
	form := household(f)
	lim := Limits{MaxBytes: 1 << 16, MaxDepth: 32, MaxElements: 2000}
	f.Fuzz(func(t *testing.T, b []byte) {
		inst, err := ParseInstance(b, lim)
		if err != nil {
			return
		}
		if inst.FormID == "" || inst.InstanceID == "" {
			t.Fatalf("parsed without form id or instanceID: %+v", inst)
		}
		v := form.Validate(inst)
		for _, name := range v.Files {
			if SafeFileName(name) != nil {
				t.Fatalf("validation let through file name %q", name)
			}
		}
	})
}

// FuzzParseForm feeds arbitrary bytes to the XForm parser: no panics, and a
// parsed form always has an id and a root.
func FuzzParseForm(f *testing.F) {
	b, err := os.ReadFile("testdata/household.xml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`<h:html xmlns:h="x"><h:head><model><instance><d id="a"/></instance></model></h:head></h:html>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		form, err := Parse(b)
		if err != nil {
			return
		}
		if form.ID == "" || form.Root == nil {
			t.Fatalf("parsed without id or root")
		}
		for _, m := range form.Media {
			if SafeFileName(m.Name) != nil {
				t.Fatalf("unsafe media name %q", m.Name)
			}
		}
	})
}

// FuzzFastTree: where the fast parser accepts a document, encoding/xml
// accepts it too and builds the same tree.
func FuzzFastTree(f *testing.F) {
	for _, s := range fastCases {
		f.Add([]byte(s))
	}
	f.Add([]byte(validInstance))
	lim := Limits{MaxBytes: 1 << 16, MaxDepth: 32, MaxElements: 2000}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !utf8.Valid(b) {
			return // ParseInstance refuses it before either parser
		}
		fast, ok := fastTree(b, lim)
		if !ok {
			return
		}
		slow, err := slowTree(b, lim)
		if err != nil {
			t.Fatalf("fast accepted what encoding/xml refuses (%v): %q", err, b)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("trees differ for %q:\nfast %s\nslow %s", b, dump(fast), dump(slow))
		}
	})
}

func dump(e *Element) string {
	s := fmt.Sprintf("<%s %v %q>", e.Name, e.Attrs, e.Text)
	for _, c := range e.Children {
		s += dump(c)
	}
	return s + "</>"
}
