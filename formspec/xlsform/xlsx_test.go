package xlsform_test

import (
	"archive/zip"
	"bytes"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/haven-org/haven/formspec"
	"github.com/haven-org/haven/formspec/xlsform"
	"github.com/haven-org/haven/formspec/xlsform/xlsxtest"
	"github.com/xuri/excelize/v2"
)

var corpus = filepath.Join("..", "..", "..", "shared", "conformance", "xlsform", "cases")

// The markdown and .xlsx paths give the same XForm.
func TestXLSXPathMatchesMarkdown(t *testing.T) {
	x, err := xlsxtest.FromMarkdown(xlsform.Household)
	if err != nil {
		t.Fatal(err)
	}
	a, b := xlsform.ConvertMarkdown(xlsform.Household, xlsform.Options{}), xlsform.ConvertWorkbook(x, xlsform.Options{})
	if len(b.Errors) > 0 || !bytes.Equal(a.XForm, b.XForm) {
		t.Fatalf("the .xlsx path differs: %v\n%s", b.Errors, b.XForm)
	}
}

// Haven's reader and excelize, an independent implementation, see the same
// cells in every workbook of the conformance corpus (written by openpyxl)
// and in ones excelize writes itself.
func TestReadXLSXAgreesWithExcelize(t *testing.T) {
	var files [][]byte
	dirs, err := os.ReadDir(corpus)
	if err != nil {
		t.Skipf("no conformance corpus: %v", err)
	}
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join(corpus, d.Name(), "form.xlsx")); err == nil {
			files = append(files, b)
		}
	}
	bench, err := os.ReadFile("testdata/bench300.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, md := range []string{string(bench), xlsform.Household} {
		b, err := xlsxtest.FromMarkdown(md)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, b)
	}
	if len(files) < 500 {
		t.Fatalf("only %d workbooks to compare", len(files))
	}
	for i, b := range files {
		ours, err := xlsform.ReadXLSX(b)
		if err != nil {
			t.Fatalf("workbook %d: %v", i, err)
		}
		if theirs := readWithExcelize(t, b); !reflect.DeepEqual(dropEmpty(ours).Sheets, dropEmpty(theirs).Sheets) {
			t.Fatalf("workbook %d: Haven read\n%s\nexcelize read\n%s", i, dump(ours), dump(theirs))
		}
	}
}

func readWithExcelize(t *testing.T, b []byte) *xlsform.Workbook {
	t.Helper()
	f, err := excelize.OpenReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := f.GetSheetList()
	var grids [][][]string
	for _, n := range names {
		rows, err := f.GetRows(n)
		if err != nil {
			t.Fatal(err)
		}
		grids = append(grids, rows)
	}
	return xlsform.WorkbookOf(names, grids)
}

// dropEmpty forgets empty cells: excelize leaves out a row's trailing ones.
func dropEmpty(wb *xlsform.Workbook) *xlsform.Workbook {
	for _, sh := range wb.Sheets {
		for _, r := range sh.Rows {
			for k, v := range r.Cells {
				if v == "" {
					delete(r.Cells, k)
				}
			}
		}
	}
	return wb
}

func dump(wb *xlsform.Workbook) string {
	var b strings.Builder
	for name, sh := range wb.Sheets {
		fmt.Fprintf(&b, "%s %q\n", name, sh.Raw)
		for _, r := range sh.Rows {
			fmt.Fprintf(&b, "  %d %v\n", r.Num, r.Cells)
		}
	}
	return b.String()
}

// workbook builds an .xlsx from raw parts, the way other spreadsheet
// programs lay them out, to reach what excelize and openpyxl never write.
func workbook(t testing.TB, parts map[string]string) []byte {
	t.Helper()
	return workbookLying(t, parts, "", 0)
}

// workbookLying is workbook with one part whose header claims it unpacks to
// size bytes.
func workbookLying(t testing.TB, parts map[string]string, liar string, size uint64) []byte {
	t.Helper()
	full := map[string]string{
		"[Content_Types].xml": `<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>`,
		"_rels/.rels": `<?xml version="1.0" encoding="UTF-8"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>`,
		"xl/_rels/workbook.xml.rels": `<?xml version="1.0" encoding="UTF-8"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>
<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="/xl/worksheets/sheet2.xml"/>
<Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>
<Relationship Id="rId4" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/>
</Relationships>`,
		"xl/workbook.xml": `<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<x:workbook xmlns:x="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><x:sheets><x:sheet name="survey" sheetId="1" r:id="rId1"/><x:sheet name="choices" sheetId="2" r:id="rId2"/></x:sheets></x:workbook>`,
		"xl/styles.xml": `<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><numFmts count="2"><numFmt numFmtId="164" formatCode="yyyy\-mm\-dd"/><numFmt numFmtId="165" formatCode="&quot;day&quot; 0.00"/></numFmts>
<cellStyleXfs count="1"><xf numFmtId="14"/></cellStyleXfs><cellXfs count="5"><xf numFmtId="0"/><xf numFmtId="14"/><xf numFmtId="164"/><xf numFmtId="165"/><xf numFmtId="21"/></cellXfs></styleSheet>`,
		"xl/worksheets/sheet2.xml": `<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData/></worksheet>`,
		"xl/sharedStrings.xml":     `<sst/>`,
	}
	for k, v := range parts {
		full[k] = v
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range full {
		if name == liar {
			w, err := zw.CreateRaw(&zip.FileHeader{Name: name, Method: zip.Store, CompressedSize64: uint64(len(body)), UncompressedSize64: size, CRC32: crc32.ChecksumIEEE([]byte(body))})
			if err != nil {
				t.Fatal(err)
			}
			w.Write([]byte(body))
			continue
		}
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Cells come out as pyxform makes them from openpyxl's values.
func TestReadXLSXCellValues(t *testing.T) {
	shared := `<?xml version="1.0" encoding="UTF-8"?>
<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="6" uniqueCount="6">
<si><t>type</t></si>
<si><t>name</t></si>
<si><r><rPr><b/></rPr><t xml:space="preserve">Bold </t></r><r><t>and plain</t></r><rPh sb="0" eb="1"><t>PHONETIC</t></rPh></si>
<si><t>line one_x000D_
line two &amp; &#233;t&#xE9;</t></si>
<si><t>no&#160;break</t></si>
<si><t><![CDATA[a <b> c]]></t></si>
</sst>`
	sheet := `<?xml version="1.0" encoding="UTF-8"?>
<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>
<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c><c r="C1" t="inlineStr"><is><t>label</t></is></c><c r="D1" t="inlineStr"><is><t>default</t></is></c></row>
<row r="3"><c r="A3" t="inlineStr"><is><t>text</t></is></c><c r="B3" t="inlineStr"><is><t>rich</t></is></c><c r="C3" t="s"><v>2</v></c></row>
<row r="4"><c t="inlineStr"><is><t>text</t></is></c><c t="inlineStr"><is><t>escaped</t></is></c><c t="s"><v>3</v></c><c t="s"><v>4</v></c></row>
<row r="5"><c r="A5" t="inlineStr"><is><t>integer</t></is></c><c r="B5" t="inlineStr"><is><t>whole</t></is></c><c r="D5"><v>1.0</v></c></row>
<row r="6"><c r="A6" t="inlineStr"><is><t>decimal</t></is></c><c r="B6" t="inlineStr"><is><t>tenth</t></is></c><c r="D6"><v>0.10000000000000001</v></c></row>
<row r="7"><c r="A7" t="inlineStr"><is><t>decimal</t></is></c><c r="B7" t="inlineStr"><is><t>tiny</t></is></c><c r="D7"><v>1.5E-5</v></c></row>
<row r="8"><c r="A8" t="inlineStr"><is><t>date</t></is></c><c r="B8" t="inlineStr"><is><t>d</t></is></c><c r="D8" s="1"><v>45352</v></c></row>
<row r="9"><c r="A9" t="inlineStr"><is><t>date</t></is></c><c r="B9" t="inlineStr"><is><t>d2</t></is></c><c r="D9" s="2"><v>45352.5</v></c></row>
<row r="10"><c r="A10" t="inlineStr"><is><t>time</t></is></c><c r="B10" t="inlineStr"><is><t>t</t></is></c><c r="D10" s="4"><v>0.5208333333333334</v></c></row>
<row r="11"><c r="A11" t="inlineStr"><is><t>decimal</t></is></c><c r="B11" t="inlineStr"><is><t>quoted_format</t></is></c><c r="D11" s="3"><v>2.5</v></c></row>
<row r="12"><c r="A12" t="inlineStr"><is><t>acknowledge</t></is></c><c r="B12" t="inlineStr"><is><t>flag</t></is></c><c r="D12" t="b"><v>1</v></c></row>
<row r="13"><c r="A13" t="str"><f>CONCAT("te","xt")</f><v>text</v></c><c r="B13" t="inlineStr"><is><t>formula</t></is></c><c r="C13" t="s"><v>5</v></c><c r="D13" t="e"><v>#N/A</v></c></row>
<row r="14"><c r="A14" t="inlineStr"><is><t>integer</t></is></c><c r="B14" t="inlineStr"><is><t>big</t></is></c><c r="D14"><v>1E+20</v></c></row>
</sheetData></worksheet>`
	wb, err := xlsform.ReadXLSX(workbook(t, map[string]string{"xl/sharedStrings.xml": shared, "xl/worksheets/sheet1.xml": sheet}))
	if err != nil {
		t.Fatal(err)
	}
	sh := wb.Sheets["survey"]
	if sh == nil || wb.Sheets["choices"] == nil {
		t.Fatalf("sheets: %v", wb.Sheets)
	}
	want := map[string][2]string{ // name -> label, default
		"rich":          {"Bold and plain", ""},
		"escaped":       {"line one\r\nline two & été", "no break"},
		"whole":         {"", "1"},
		"tenth":         {"", "0.1"},
		"tiny":          {"", "1.5e-05"},
		"d":             {"", "2024-03-01 00:00:00"},
		"d2":            {"", "2024-03-01 12:00:00"},
		"t":             {"", "12:30:00"},
		"quoted_format": {"", "2.5"},
		"flag":          {"", "TRUE"},
		"formula":       {"a <b> c", "#N/A"},
		"big":           {"", "100000000000000000000"},
	}
	got := map[string][2]string{}
	for _, r := range sh.Rows {
		got[r.Cells["name"]] = [2]string{r.Cells["label"], r.Cells["default"]}
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: got %q, want %q", name, got[name], w)
		}
	}
	if sh.Rows[0].Num != 3 || sh.Rows[1].Num != 4 {
		t.Errorf("row numbers %d, %d: want 3 and 4 (row 2 is missing)", sh.Rows[0].Num, sh.Rows[1].Num)
	}
	if sh.Rows[len(sh.Rows)-2].Cells["type"] != "text" {
		t.Errorf("a formula's cached text was not read: %v", sh.Rows[len(sh.Rows)-2].Cells)
	}
}

// Damaged or hostile workbooks are refused with a message that says what is
// wrong, without reading more than the limits allow.
func TestReadXLSXRefuses(t *testing.T) {
	sheet := func(data string) map[string]string {
		return map[string]string{"xl/worksheets/sheet1.xml": `<worksheet><sheetData>` + data + `</sheetData></worksheet>`}
	}
	// A part that claims to unpack to more than the limit is refused
	// before it is inflated (one that lies low is cut off by the reader).
	bomb := workbookLying(t, map[string]string{"xl/worksheets/sheet1.xml": "<worksheet/>"}, "xl/worksheets/sheet1.xml", xlsform.MaxUnzipped+1)
	cases := []struct {
		name string
		b    []byte
		says string
	}{
		{"not a zip", []byte("not a zip"), ".xlsx"},
		{"a truncated zip", workbook(t, nil)[:300], ".xlsx"},
		{"a sheet without its part", workbook(t, nil), "is missing"},
		{"a workbook without sheets", workbook(t, map[string]string{"xl/workbook.xml": "<workbook/>"}), "no sheets"},
		{"a zip bomb", bomb, "zip bomb"},
		{"DOCTYPE", workbook(t, map[string]string{"xl/workbook.xml": `<!DOCTYPE x [<!ENTITY a "b">]><workbook/>`}), "DOCTYPE"},
		{"unclosed element", workbook(t, map[string]string{"xl/worksheets/sheet1.xml": `<worksheet><sheetData>`}), "never closed"},
		{"element closed out of order", workbook(t, sheet(`<row r="1"><c t="inlineStr"><is><t>x</t></is>`)), "does not match"},
		{"mismatched tags", workbook(t, sheet(`<row r="1"></c></row>`)), "does not match"},
		{"unknown entity", workbook(t, sheet(`<row r="1"><c t="inlineStr"><is><t>&bogus;</t></is></c></row>`)), "unknown reference"},
		{"invalid UTF-8", workbook(t, sheet("<row r=\"1\"><c t=\"inlineStr\"><is><t>\xff</t></is></c></row>")), "UTF-8"},
		{"missing shared string", workbook(t, sheet(`<row r="1"><c r="A1" t="s"><v>7</v></c></row>`)), "cell A1"},
		{"bad cell reference", workbook(t, sheet(`<row r="1"><c r="1A" t="inlineStr"><is><t>x</t></is></c></row>`)), "not a cell"},
		{"too many rows holding values", workbook(t, sheet(strings.Repeat(`<row><c t="inlineStr"><is><t>x</t></is></c></row>`, xlsform.MaxRows+1))), "rows"},
		{"a row past a spreadsheet's last", workbook(t, sheet(`<row r="1048577"><c t="inlineStr"><is><t>x</t></is></c></row>`)), "last row"},
		{"deep nesting", workbook(t, sheet(strings.Repeat("<a>", 100)+strings.Repeat("</a>", 100))), "nested"},
	}
	for _, c := range cases {
		_, err := xlsform.ReadXLSX(c.b)
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: got %v, want an error saying %q", c.name, err, c.says)
		}
	}
}

// testdata/bench300.xlsx is testdata/bench300.md written by excelize, kept
// as a file so that `haven form convert` can be timed on it; it must not
// drift from the markdown.
func TestBenchWorkbookMatchesMarkdown(t *testing.T) {
	md, err := os.ReadFile("testdata/bench300.md")
	if err != nil {
		t.Fatal(err)
	}
	x, err := os.ReadFile("testdata/bench300.xlsx")
	if err != nil {
		t.Fatal(err)
	}
	a, b := xlsform.ConvertMarkdown(string(md), xlsform.Options{}), xlsform.ConvertWorkbook(x, xlsform.Options{})
	if len(a.Errors) > 0 || len(b.Errors) > 0 || !bytes.Equal(a.XForm, b.XForm) {
		t.Fatalf("testdata/bench300.xlsx no longer matches bench300.md (%v %v): write it again with xlsxtest.FromMarkdown", a.Errors, b.Errors)
	}
}

// BenchmarkConvert converts a 300-question form with two languages, groups,
// repeats, relevance, calculations and choice filters
// (testdata/bench300.xlsx): reading the workbook and converting.
func BenchmarkConvert(b *testing.B) {
	x, err := os.ReadFile("testdata/bench300.xlsx")
	if err != nil {
		b.Fatal(err)
	}
	if res := xlsform.ConvertWorkbook(x, xlsform.Options{}); len(res.Errors) > 0 {
		b.Fatal(res.Errors)
	}
	b.SetBytes(int64(len(x)))
	b.ReportAllocs()
	for b.Loop() {
		xlsform.ConvertWorkbook(x, xlsform.Options{})
	}
}

// FuzzReadXLSX: no workbook may panic or hang the reader, and whatever it
// reads converts without panicking into an XForm Haven's parser reads.
func FuzzReadXLSX(f *testing.F) {
	if x, err := xlsxtest.FromMarkdown(xlsform.Household); err == nil {
		f.Add(x)
	}
	if dirs, err := os.ReadDir(corpus); err == nil {
		for i, d := range dirs {
			if i%40 == 0 {
				if b, err := os.ReadFile(filepath.Join(corpus, d.Name(), "form.xlsx")); err == nil {
					f.Add(b)
				}
			}
		}
	}
	f.Add(workbook(f, map[string]string{"xl/worksheets/sheet1.xml": `<worksheet><sheetData><row><c t="inlineStr"><is><t>type</t></is></c></row></sheetData></worksheet>`, "xl/sharedStrings.xml": `<sst><si><t>a</t></si></sst>`}))
	f.Fuzz(func(t *testing.T, b []byte) {
		res := xlsform.ConvertWorkbook(b, xlsform.Options{})
		if len(res.Errors) > 0 {
			return
		}
		if _, err := formspec.Parse(res.XForm); err != nil {
			t.Fatalf("output Haven cannot parse: %v\n%s", err, res.XForm)
		}
	})
}

// FuzzReadSheetXML fuzzes what FuzzReadXLSX rarely reaches through zip
// checksums: the XML of a sheet and of the shared strings, inside a sound
// package.
func FuzzReadSheetXML(f *testing.F) {
	f.Add(`<worksheet><sheetData><row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="inlineStr"><is><r><t>name</t></r></is></c></row><row r="3"><c r="A3" t="str"><v>text</v></c><c s="1"><v>1.5</v></c><c t="b"><v>1</v></c></row></sheetData></worksheet>`, `<sst><si><t>type</t></si><si><r><t>a</t></r><rPh><t>b</t></rPh></si></sst>`)
	f.Add(`<?xml version="1.0"?><!-- c --><x:worksheet xmlns:x="ns"><x:sheetData><x:row><x:c t="inlineStr"><x:is><x:t><![CDATA[<a>]]>&amp;&#233;_x000D_</x:t></x:is></x:c></x:row></x:sheetData></x:worksheet>`, `<sst/>`)
	f.Fuzz(func(t *testing.T, sheet, shared string) {
		b := workbook(t, map[string]string{"xl/worksheets/sheet1.xml": sheet, "xl/sharedStrings.xml": shared})
		wb, err := xlsform.ReadXLSX(b)
		if err != nil {
			return
		}
		if wb.Sheets["survey"] == nil {
			t.Fatal("a workbook read without error lost its first sheet")
		}
		xlsform.Convert(wb, xlsform.Options{})
	})
}

// Spreadsheet programs save formatted empty rows down to the sheet's end
// (the declared dimension runs to tens of thousands of rows): they are
// not the form's, and cost nothing. As pyxform, a run of more than 60
// empty rows ends the sheet: a stray cell far below the form is not read.
func TestReadXLSXSkipsEmptyFormattedRows(t *testing.T) {
	var rows strings.Builder
	row := func(n int, typ, name string) {
		fmt.Fprintf(&rows, `<row r="%d"><c r="A%d" t="inlineStr"><is><t>%s</t></is></c><c r="B%d" t="inlineStr"><is><t>%s</t></is></c></row>`, n, n, typ, n, name)
	}
	row(1, "type", "name")
	row(2, "text", "q1")
	for i := 3; i <= 65000; i++ {
		if i == 63 { // after exactly 60 empty rows: still the form's
			row(i, "text", "q2")
			continue
		}
		fmt.Fprintf(&rows, `<row r="%d" s="3" customFormat="1"><c r="A%d" s="3"/></row>`, i, i)
	}
	row(70000, "note", "far")
	wb, err := xlsform.ReadXLSX(workbook(t, map[string]string{"xl/worksheets/sheet1.xml": `<worksheet><dimension ref="A1:Z1048576"/><sheetData>` +
		rows.String() + `</sheetData></worksheet>`}))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, sh := range wb.Sheets {
		for _, r := range sh.Rows {
			names = append(names, r.Get("name"))
		}
	}
	if !slices.Equal(names, []string{"q1", "q2"}) {
		t.Fatalf("rows read: %q, want q1 and q2 (q2 after 60 empty rows; not the note after 64,937)", names)
	}
}
