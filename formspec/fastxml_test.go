package formspec

import (
	"reflect"
	"testing"
)

// Documents the fast parser takes or leaves to encoding/xml; either way,
// ParseInstance's tree is encoding/xml's.
var fastCases = []string{
	`<?xml version="1.0" encoding="UTF-8"?><d id="f"><a>x &amp; y &#233;&#x41;</a><meta><instanceID>uuid:1</instanceID></meta></d>`,
	`<?xml version='1.0'?>` + "\n" + `<d xmlns:orx="http://openrosa.org/xforms" xmlns="http://x" id="f" orx:version="3"><orx:meta><orx:instanceID>u</orx:instanceID></orx:meta></d>`,
	`<d id="f"> lead <a/> mid <b>é ü</b> tail </d>`,
	`<d id="f" a = "1" b='2 &lt; 3'><x k="&quot;q&apos;"/></d>`,
	"<d id=\"f\">\t<a>\n line\n</a>\n</d>\n",
	`<d id="f"><a>1</a></d><!-- trailing comment -->`,
	`<d id="f"><![CDATA[x]]></d>`,
	`<?xml version="1.0" encoding="ISO-8859-1"?><d id="f"/>`,
	`<?xml-stylesheet href="x"?><d id="f"/>`,
	"<d id=\"f\">a\r\nb</d>",
	`<d id="f"><a></b></d>`,
	`<d id="f"><a:b:c/></d>`,
	`<d id="f">&nbsp;</d>`,
	`<d id="f">&#0;</d>`,
	`<d id="f"><a x=1/></d>`,
	`<d id="f"/><e/>`,
	`text<d id="f"/>`,
	`<d id="f">`,
	`<d id="f"><a x="1"y="2"/></d>`,
	`<d id="f">` + "\u00a0" + `</d>` + "\u00a0",
	`<1d/>`,
}

func TestFastTreeAgreesWithEncodingXML(t *testing.T) {
	lim := DefaultLimits
	took := 0
	for _, c := range fastCases {
		slow, serr := slowTree([]byte(c), lim)
		fast, ok := fastTree([]byte(c), lim)
		if ok {
			took++
			if serr != nil {
				t.Errorf("fast accepted what encoding/xml refuses (%v): %q", serr, c)
			} else if !reflect.DeepEqual(fast, slow) {
				t.Errorf("%q:\nfast %s\nslow %s", c, dump(fast), dump(slow))
			}
		}
	}
	// The fast path must actually serve the ordinary documents.
	if took < 5 {
		t.Fatalf("the fast parser took only %d of the plain documents", took)
	}
	for _, c := range fastCases[:5] {
		if _, ok := fastTree([]byte(c), lim); !ok {
			t.Errorf("the fast parser left a plain document to encoding/xml: %q", c)
		}
	}
}

// BenchmarkTree compares the two parsers on the household submission.
func BenchmarkTree(b *testing.B) {
	doc := []byte(validInstance)
	for _, p := range []struct {
		name string
		fn   func() bool
	}{
		{"fast", func() bool { _, ok := fastTree(doc, DefaultLimits); return ok }},
		{"encoding-xml", func() bool { _, err := slowTree(doc, DefaultLimits); return err == nil }},
	} {
		b.Run(p.name, func(b *testing.B) {
			b.SetBytes(int64(len(doc)))
			b.ReportAllocs()
			for b.Loop() {
				if !p.fn() {
					b.Fatal("refused")
				}
			}
		})
	}
}
