package xlsform

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/antchfx/xmlquery"
	"github.com/antchfx/xpath"
)

// The rates the converter last achieved on the conformance corpus. The test
// fails when a rate drops below them; raise them as the converter improves.
const (
	achievedRefused  = 1.000 // (1) refused when pyxform refuses: target 100%
	achievedAsserted = 1.000 // (2) converted with every XPath assertion holding: target 100%
	achievedSameTree = 0.992 // (3) the same XML tree as pyxform, up to attribute order: target 95%
)

var corpus = filepath.Join("..", "..", "..", "shared", "conformance", "xlsform", "cases")

type conformanceCase struct {
	RootName          string          `json:"root_name"`
	PyxformOK         bool            `json:"pyxform_ok"`
	HashseedSensitive bool            `json:"hashseed_sensitive"`
	Assertions        json.RawMessage `json:"assertions"`
}

type assertions struct {
	Match []string             `json:"xml__xpath_match"`
	Count [][2]json.RawMessage `json:"xml__xpath_count"`
	Exact [][2]json.RawMessage `json:"xml__xpath_exact"`
}

var namespaces = map[string]string{
	"x": "http://www.w3.org/2002/xforms", "h": "http://www.w3.org/1999/xhtml", "ev": "http://www.w3.org/2001/xml-events",
	"xsd": "http://www.w3.org/2001/XMLSchema", "jr": "http://openrosa.org/javarosa", "orx": "http://openrosa.org/xforms",
	"odk": "http://www.opendatakit.org/xforms", "entities": "http://www.opendatakit.org/xforms/entities",
}

// TestConformance converts every case of the corpus recorded from pyxform's
// own tests, through the .xlsx path, and reports the three rates.
func TestConformance(t *testing.T) {
	dirs, err := os.ReadDir(corpus)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the conformance corpus is missing (%v): shared/ must sit beside the repository", err)
		}
		t.Skipf("no conformance corpus at %s", corpus)
	}
	var refusals, refused, converts, asserted, treeCases, sameTree, unevaluable int
	var failures []string
	for _, d := range dirs {
		dir := filepath.Join(corpus, d.Name())
		var c conformanceCase
		raw, err := os.ReadFile(filepath.Join(dir, "case.json"))
		if err != nil || json.Unmarshal(raw, &c) != nil {
			continue
		}
		xlsx, err := os.ReadFile(filepath.Join(dir, "form.xlsx"))
		if err != nil {
			continue
		}
		res := ConvertWorkbook(xlsx, Options{RootName: c.RootName, FormID: "data"})
		// The same input gives the same bytes (map order must never leak out).
		if again := ConvertWorkbook(xlsx, Options{RootName: c.RootName, FormID: "data"}); !bytes.Equal(again.XForm, res.XForm) || len(again.Errors) != len(res.Errors) {
			t.Errorf("%s: two conversions of the same workbook differ", d.Name())
		}
		if !c.PyxformOK {
			refusals++
			if len(res.Errors) > 0 {
				refused++
			} else {
				failures = append(failures, d.Name()+": converted what pyxform refuses")
			}
			continue
		}
		want, err := os.ReadFile(filepath.Join(dir, "expected.xml"))
		if err != nil {
			continue
		}
		// A case whose assertions pyxform's own output fails under this
		// checker (the XPath library reads a few expressions differently
		// from lxml: the namespace axis, some node() comparisons) is judged
		// by its tree instead: pyxform's output holds its assertions under
		// lxml, so the same tree holds them too.
		judged := true
		if wdoc, err := xmlquery.Parse(strings.NewReader(string(want))); err != nil || checkAssertions(wdoc, c.Assertions) != "" {
			unevaluable++
			judged = false
		}
		converts++
		if !c.HashseedSensitive {
			treeCases++ // every case pyxform converts counts, converted here or not
		}
		if len(res.Errors) > 0 {
			failures = append(failures, fmt.Sprintf("%s: refused: %v", d.Name(), res.Errors[0]))
			continue
		}
		doc, err := xmlquery.Parse(strings.NewReader(string(res.XForm)))
		if err != nil {
			t.Fatalf("%s: the output is not well-formed XML: %v", d.Name(), err)
		}
		if !judged {
			if sameXMLTree(res.XForm, want) {
				asserted++
			} else {
				failures = append(failures, d.Name()+": its assertions are beyond this checker, and the tree differs from pyxform's")
			}
		} else if msg := checkAssertions(doc, c.Assertions); msg == "" {
			asserted++
		} else {
			failures = append(failures, d.Name()+": "+msg)
		}
		if !c.HashseedSensitive && sameXMLTree(res.XForm, want) {
			sameTree++
		}
	}
	r1, r2, r3 := rate(refused, refusals), rate(asserted, converts), rate(sameTree, treeCases)
	t.Logf("(1) refused when pyxform refuses: %d/%d = %.1f%%", refused, refusals, 100*r1)
	t.Logf("(2) converted with every XPath assertion holding: %d/%d = %.1f%% (%d of them judged by their tree: the checker cannot evaluate their assertions)", asserted, converts, 100*r2, unevaluable)
	t.Logf("(3) same XML tree as pyxform: %d/%d = %.1f%%", sameTree, treeCases, 100*r3)
	if testing.Verbose() {
		sort.Strings(failures)
		for _, f := range failures {
			t.Log(f)
		}
	}
	if r1 < achievedRefused || r2 < achievedAsserted || r3 < achievedSameTree {
		t.Fatalf("a rate dropped below what the converter last achieved (%.3f, %.3f, %.3f)", achievedRefused, achievedAsserted, achievedSameTree)
	}
}

func rate(n, of int) float64 {
	if of == 0 {
		return 1
	}
	return float64(n) / float64(of)
}

// checkAssertions evaluates a case's XPath assertions; "" when all hold.
func checkAssertions(doc *xmlquery.Node, raw json.RawMessage) string {
	var a assertions
	json.Unmarshal(raw, &a)
	count := func(expr string) (n int, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("the XPath library cannot evaluate it: %v", r)
			}
		}()
		e, err := xpath.CompileWithNS(expr, namespaces)
		if err != nil || e == nil {
			return 0, fmt.Errorf("compiling: %v", err)
		}
		switch v := e.Evaluate(xmlquery.CreateXPathNavigator(doc)).(type) {
		case *xpath.NodeIterator:
			n := 0
			for v.MoveNext() {
				n++
			}
			return n, nil
		case bool:
			if v {
				return 1, nil
			}
			return 0, nil
		default:
			return 1, nil
		}
	}
	for _, xp := range a.Match {
		n, err := count(xp)
		if err != nil || n != 1 {
			return fmt.Sprintf("xpath %s selects %d (%v)", xp, n, err)
		}
	}
	for _, pair := range a.Count {
		var xp string
		var want int
		json.Unmarshal(pair[0], &xp)
		json.Unmarshal(pair[1], &want)
		n, err := count(xp)
		if err != nil || n != want {
			return fmt.Sprintf("xpath %s selects %d, want %d (%v)", xp, n, want, err)
		}
	}
	if len(a.Exact) > 0 {
		return "xml__xpath_exact is not checked yet"
	}
	return ""
}

// sameXMLTree compares two documents as trees: names, attributes (in any
// order) and trimmed text, children in order.
func sameXMLTree(a, b []byte) bool {
	da, err1 := xmlquery.Parse(strings.NewReader(string(a)))
	db, err2 := xmlquery.Parse(strings.NewReader(string(b)))
	if err1 != nil || err2 != nil {
		return false
	}
	return canonical(da) == canonical(db)
}

func canonical(n *xmlquery.Node) string {
	var b strings.Builder
	var walk func(n *xmlquery.Node)
	walk = func(n *xmlquery.Node) {
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			switch c.Type {
			case xmlquery.ElementNode:
				attrs := []string{}
				for _, a := range c.Attr {
					if a.Name.Space == "xmlns" || a.Name.Local == "xmlns" {
						continue
					}
					attrs = append(attrs, a.NamespaceURI+"|"+a.Name.Local+"="+a.Value)
				}
				sort.Strings(attrs)
				fmt.Fprintf(&b, "<%s|%s %s>", c.NamespaceURI, c.Data, strings.Join(attrs, " "))
				walk(c)
				b.WriteString("</>")
			case xmlquery.TextNode, xmlquery.CharDataNode:
				if s := strings.TrimSpace(c.Data); s != "" {
					b.WriteString(s)
				}
			}
		}
	}
	walk(n)
	return b.String()
}

// TestConformanceHarness checks the checker: pyxform's own output must pass
// every assertion it can evaluate, and compare equal to itself as a tree.
func TestConformanceHarness(t *testing.T) {
	dirs, err := os.ReadDir(corpus)
	if err != nil {
		t.Skipf("no conformance corpus at %s", corpus)
	}
	checked, unsupported := 0, 0
	for _, d := range dirs {
		dir := filepath.Join(corpus, d.Name())
		var c conformanceCase
		raw, _ := os.ReadFile(filepath.Join(dir, "case.json"))
		if json.Unmarshal(raw, &c) != nil || !c.PyxformOK {
			continue
		}
		want, err := os.ReadFile(filepath.Join(dir, "expected.xml"))
		if err != nil {
			continue
		}
		doc, err := xmlquery.Parse(strings.NewReader(string(want)))
		if err != nil {
			t.Fatalf("%s: expected.xml: %v", d.Name(), err)
		}
		switch msg := checkAssertions(doc, c.Assertions); {
		case msg == "":
			checked++
		case strings.Contains(msg, "not checked yet") || strings.Contains(msg, "cannot evaluate"):
			unsupported++
		default:
			// The XPath library reads a few expressions differently from lxml;
			// TestConformance leaves those cases out of rate (2) and counts them.
			t.Logf("%s: the checker cannot evaluate this case's assertions as lxml does: %s", d.Name(), msg)
			unsupported++
		}
		if !sameXMLTree(want, want) {
			t.Errorf("%s: expected.xml differs from itself", d.Name())
		}
	}
	t.Logf("pyxform's output passes the assertions of %d cases; %d use what the checker cannot evaluate", checked, unsupported)
	if checked < 600 {
		t.Fatalf("only %d cases checked", checked)
	}
}
