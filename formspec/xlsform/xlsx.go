package xlsform

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ReadXLSX reads an .xlsx workbook within limits, giving each cell the text
// pyxform would give it: openpyxl's value, then pyxform's string rules
// (TRUE/FALSE, whole numbers without ".0", dates as Python prints them,
// no-break spaces as spaces).
//
// It reads only the parts a form needs (the workbook, its relationships,
// shared strings, styles and sheets) with the standard library's zip reader
// and a small XML scanner; excelize, which the tests use to write workbooks,
// spent 11 ms of a 20 ms conversion decoding XML with reflection.
func ReadXLSX(b []byte) (*Workbook, error) {
	if len(b) > MaxWorkbookBytes {
		return nil, fmt.Errorf("the workbook is %d bytes; Haven reads workbooks up to %d bytes: remove pictures and sheets the form does not use", len(b), MaxWorkbookBytes)
	}
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return nil, notXLSX(err)
	}
	p := &pkg{files: map[string]*zip.File{}, budget: MaxUnzipped}
	for _, f := range zr.File {
		p.files[strings.ToLower(strings.TrimPrefix(strings.ReplaceAll(f.Name, `\`, "/"), "/"))] = f
	}
	wbPath := "xl/workbook.xml"
	if rels, err := p.rels("_rels/.rels", ""); err != nil {
		return nil, err
	} else if t := rels.target("officeDocument"); t != "" {
		wbPath = t
	}
	if _, ok := p.files[strings.ToLower(wbPath)]; !ok {
		return nil, notXLSX(errors.New("it has no workbook part"))
	}
	sheets, date1904, err := p.workbook(wbPath)
	if err != nil {
		return nil, err
	}
	rels, err := p.rels(path.Join(path.Dir(wbPath), "_rels", path.Base(wbPath)+".rels"), path.Dir(wbPath))
	if err != nil {
		return nil, err
	}
	r := &sheetReader{date1904: date1904}
	if t := rels.target("sharedStrings"); t != "" {
		if r.shared, err = p.sharedStrings(t); err != nil {
			return nil, err
		}
	}
	if t := rels.target("styles"); t != "" {
		if r.dateStyle, err = p.styles(t); err != nil {
			return nil, err
		}
	}
	wb := &Workbook{Sheets: map[string]*Sheet{}, spreadsheet: true}
	for _, sh := range sheets {
		target := rels.byID[sh.rid]
		if target == "" {
			return nil, notXLSX(fmt.Errorf("sheet %s has no part", sh.name))
		}
		data, err := p.read(target)
		if err != nil {
			return nil, err
		}
		grid, err := r.read(data)
		if err != nil {
			if errors.Is(err, errTooManyRows) {
				return nil, fmt.Errorf("sheet %s: %w", sh.name, err)
			}
			return nil, notXLSX(fmt.Errorf("sheet %s: %v", sh.name, err)) // damaged: saving again mends it
		}
		wb.add(sh.name, grid)
	}
	return wb, nil
}

// errTooManyRows: a sheet's rows holding values pass MaxRows.
var errTooManyRows = fmt.Errorf("it has more than %d rows holding values, more than any form needs: is it the right sheet?", MaxRows)

// maxRowNumber is the last row a spreadsheet can have (Excel's).
const maxRowNumber = 1 << 20

func notXLSX(err error) error {
	return fmt.Errorf("the file is not a readable .xlsx workbook (%v); save it again as Excel Workbook (.xlsx)", err)
}

// pkg is the workbook's zip package; budget is what may still be unzipped.
type pkg struct {
	files  map[string]*zip.File
	budget int64
}

// read returns a part's bytes; a part that is absent reads as empty for
// optional parts, and declared or actual sizes past the budget are refused
// before they are inflated.
func (p *pkg) read(name string) ([]byte, error) {
	f, ok := p.files[strings.ToLower(name)]
	if !ok {
		return nil, notXLSX(fmt.Errorf("part %s is missing", name))
	}
	if f.UncompressedSize64 > uint64(p.budget) {
		return nil, fmt.Errorf("the workbook unpacks to more than %d MB; Haven reads workbooks up to that size (is it a zip bomb?)", MaxUnzipped>>20)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, notXLSX(err)
	}
	defer rc.Close()
	// The declared size is a hint, not a promise: allocate by it only so far.
	out := bytes.NewBuffer(make([]byte, 0, min(f.UncompressedSize64, 1<<20)+bytes.MinRead))
	n, err := io.Copy(out, io.LimitReader(rc, p.budget+1))
	if err != nil {
		return nil, notXLSX(fmt.Errorf("part %s: %v", name, err))
	}
	if n > p.budget {
		return nil, fmt.Errorf("the workbook unpacks to more than %d MB; Haven reads workbooks up to that size (is it a zip bomb?)", MaxUnzipped>>20)
	}
	p.budget -= n
	return out.Bytes(), nil
}

// scan reads a part and walks its tokens.
func (p *pkg) scan(name string, fn func(t *xmlToken) error) error {
	data, err := p.read(name)
	if err != nil {
		return err
	}
	if err := scanXML(data, fn); err != nil {
		return notXLSX(fmt.Errorf("%s: %v", name, err))
	}
	return nil
}

func scanXML(data []byte, fn func(t *xmlToken) error) error {
	s, err := newXMLScanner(data)
	if err != nil {
		return err
	}
	for s.next() {
		if err := fn(&s.tok); err != nil {
			return err
		}
	}
	return s.err
}

type relationships struct {
	byID   map[string]string // Id -> part path
	byType map[string]string // last segment of Type -> part path
}

func (r relationships) target(kind string) string { return r.byType[kind] }

// rels reads a relationships part; targets are resolved against dir.
func (p *pkg) rels(name, dir string) (relationships, error) {
	r := relationships{byID: map[string]string{}, byType: map[string]string{}}
	if _, ok := p.files[strings.ToLower(name)]; !ok {
		return r, nil
	}
	err := p.scan(name, func(t *xmlToken) error {
		if t.kind != tokStart || string(t.name) != "Relationship" {
			return nil
		}
		if mode, _ := attr(t.attrs, "TargetMode"); mode == "External" {
			return nil
		}
		id, _ := attr(t.attrs, "Id")
		typ, _ := attr(t.attrs, "Type")
		target, _ := attr(t.attrs, "Target")
		if strings.HasPrefix(target, "/") {
			target = target[1:]
		} else {
			target = path.Join(dir, target)
		}
		r.byID[id] = target
		r.byType[typ[strings.LastIndexByte(typ, '/')+1:]] = target
		return nil
	})
	if err != nil {
		return r, err
	}
	return r, nil
}

type sheetRef struct{ name, rid string }

func (p *pkg) workbook(name string) ([]sheetRef, bool, error) {
	var sheets []sheetRef
	date1904 := false
	err := p.scan(name, func(t *xmlToken) error {
		if t.kind != tokStart {
			return nil
		}
		switch string(t.name) {
		case "workbookPr":
			v, _ := attr(t.attrs, "date1904")
			date1904 = v == "1" || v == "true"
		case "sheet":
			n, _ := attr(t.attrs, "name")
			id, _ := attr(t.attrs, "id")
			sheets = append(sheets, sheetRef{n, id})
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	if len(sheets) == 0 {
		return nil, false, notXLSX(errors.New("it has no sheets"))
	}
	return sheets, date1904, nil
}

// sharedStrings reads the workbook's string table: each <si> is the text of
// its runs, leaving out phonetic guides (<rPh>) as Excel shows them.
func (p *pkg) sharedStrings(name string) ([]string, error) {
	var out []string
	var cur textRuns
	inSI := false
	err := p.scan(name, func(t *xmlToken) error {
		switch t.kind {
		case tokStart:
			if string(t.name) == "si" {
				inSI = true
				cur.reset()
			} else if inSI {
				cur.start(t.name)
			}
		case tokEnd:
			if string(t.name) == "si" {
				s, err := cur.text()
				if err != nil {
					return err
				}
				out = append(out, s)
				inSI = false
			} else if inSI {
				cur.end(t.name)
			}
		case tokText:
			if inSI {
				cur.add(t)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// textRuns gathers the text of <t> elements not inside <rPh>, the content
// of a shared string or an inline string.
type textRuns struct {
	inT, inRPh bool
	parts      []xmlToken
}

func (r *textRuns) reset() { r.inT, r.inRPh, r.parts = false, false, r.parts[:0] }

func (r *textRuns) start(name []byte) {
	switch string(name) {
	case "t":
		r.inT = true
	case "rPh":
		r.inRPh = true
	}
}

func (r *textRuns) end(name []byte) {
	switch string(name) {
	case "t":
		r.inT = false
	case "rPh":
		r.inRPh = false
	}
}

func (r *textRuns) add(t *xmlToken) {
	if r.inT && !r.inRPh {
		r.parts = append(r.parts, *t)
	}
}

func (r *textRuns) text() (string, error) {
	var b strings.Builder
	for _, p := range r.parts {
		s, err := unescapeXML(p.text, p.cdata)
		if err != nil {
			return "", err
		}
		b.WriteString(s)
	}
	return unescapeOOXML(b.String()), nil
}

// ooxmlEscape is how SpreadsheetML writes characters XML cannot carry:
// _x000D_ for a carriage return, _x005F_ for a literal underscore.
var ooxmlEscape = regexp.MustCompile(`_x[0-9A-Fa-f]{4}_`)

func unescapeOOXML(s string) string {
	if !strings.Contains(s, "_x") {
		return s
	}
	return ooxmlEscape.ReplaceAllStringFunc(s, func(m string) string {
		n, _ := strconv.ParseUint(m[2:6], 16, 16)
		return string(rune(n))
	})
}

// styles reads which cell formats show dates, as openpyxl decides: the
// built-in date and time formats, or a format code with date or time letters
// outside quotes and brackets.
func (p *pkg) styles(name string) ([]bool, error) {
	custom := map[int]string{}
	var xfs []int
	inCellXfs := false
	err := p.scan(name, func(t *xmlToken) error {
		switch {
		case t.kind == tokStart && string(t.name) == "numFmt":
			id, _ := attr(t.attrs, "numFmtId")
			code, _ := attr(t.attrs, "formatCode")
			if n, err := strconv.Atoi(id); err == nil {
				custom[n] = code
			}
		case t.kind == tokStart && string(t.name) == "cellXfs":
			inCellXfs = true
		case t.kind == tokEnd && string(t.name) == "cellXfs":
			inCellXfs = false
		case t.kind == tokStart && inCellXfs && string(t.name) == "xf":
			id, _ := attr(t.attrs, "numFmtId")
			n, _ := strconv.Atoi(id)
			xfs = append(xfs, n)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	dates := make([]bool, len(xfs))
	for i, id := range xfs {
		if code, ok := custom[id]; ok {
			dates[i] = isDateFormat(code)
		} else {
			dates[i] = id >= 14 && id <= 22 || id >= 45 && id <= 47
		}
	}
	return dates, nil
}

var (
	formatNoise = regexp.MustCompile(`\[[^\]]*\]|"[^"]*"`)
	dateLetters = regexp.MustCompile(`(^|[^_\\])[dmhysDMHYS]`)
)

func isDateFormat(code string) bool {
	code, _, _ = strings.Cut(code, ";")
	return dateLetters.MatchString(formatNoise.ReplaceAllString(code, ""))
}

// sheetReader turns a worksheet part into rows of cell text.
type sheetReader struct {
	shared    []string
	dateStyle []bool
	date1904  bool
}

func (r *sheetReader) read(data []byte) ([][]string, error) {
	var grid [][]string
	var row []string
	var (
		inData, inRow, inCell, inV, inIs bool
		rowNum, valued                   int // the current row's number; rows holding a value so far
		col                              int
		typ                              string
		ref, style                       []byte
		v                                []xmlToken
		is                               textRuns
	)
	err := scanXML(data, func(t *xmlToken) error {
		switch t.kind {
		case tokStart:
			switch string(t.name) {
			case "sheetData":
				inData = true
			case "row":
				if !inData {
					return nil
				}
				n := rowNum + 1
				if s, ok := attr(t.attrs, "r"); ok {
					k, err := strconv.Atoi(s)
					if err != nil || k < 1 {
						return fmt.Errorf("row number %q is not a number", s)
					}
					if k > n {
						n = k
					}
				}
				if n > maxRowNumber {
					return fmt.Errorf("row number %d is past the last row a spreadsheet can have (%d)", n, maxRowNumber)
				}
				rowNum, inRow, row = n, true, nil
			case "c":
				if !inRow {
					return nil
				}
				inCell, v = true, v[:0]
				is.reset()
				ref, typ, style = nil, "", nil
				eachAttr(t.attrs, func(name, raw []byte) bool {
					if len(name) == 1 && bytes.IndexByte(raw, '&') < 0 {
						switch name[0] {
						case 'r':
							ref = raw
						case 't':
							typ = cellType(raw)
						case 's':
							style = raw
						}
					}
					return true
				})
				col = len(row)
				if ref != nil {
					c, ok := columnOf(ref)
					if !ok {
						return fmt.Errorf("cell reference %q is not a cell", ref)
					}
					col = max(c, len(row))
				}
			case "v":
				inV = inCell
			case "is":
				if inCell {
					inIs = true
					is.reset()
				}
			default:
				if inIs {
					is.start(t.name)
				}
			}
		case tokText:
			if inV {
				v = append(v, *t)
			} else if inIs {
				is.add(t)
			}
		case tokEnd:
			switch string(t.name) {
			case "sheetData":
				inData = false
			case "row":
				if inRow {
					for len(row) > 0 && row[len(row)-1] == "" {
						row = row[:len(row)-1]
					}
					inRow = false
					// Spreadsheet programs save formatted empty rows down to the
					// sheet's end: only rows that hold a value count, and are kept.
					if len(row) == 0 {
						return nil
					}
					if valued++; valued > MaxRows {
						return errTooManyRows
					}
					for len(grid) < rowNum-1 {
						grid = append(grid, nil)
					}
					grid = append(grid, row)
				}
			case "c":
				if !inCell {
					return nil
				}
				inCell = false
				if col >= MaxColumns {
					return nil
				}
				val, err := r.value(typ, style, v, inlineText(&is, typ))
				if err != nil {
					return fmt.Errorf("cell %s: %v", cellName(ref, col, rowNum), err)
				}
				for len(row) < col {
					row = append(row, "")
				}
				row = append(row, val)
			case "v":
				inV = false
			case "is":
				inIs = false
			default:
				if inIs {
					is.end(t.name)
				}
			}
		}
		return nil
	})
	return grid, err
}

// cellType interns the usual cell types, which are compared, not kept.
func cellType(raw []byte) string {
	switch string(raw) {
	case "s":
		return "s"
	case "n":
		return "n"
	case "str":
		return "str"
	case "inlineStr":
		return "inlineStr"
	case "b":
		return "b"
	}
	return string(raw)
}

func inlineText(is *textRuns, typ string) *textRuns {
	if typ == "inlineStr" {
		return is
	}
	return nil
}

func cellName(ref []byte, col, row int) string {
	if ref != nil {
		return string(ref)
	}
	return columnName(col) + strconv.Itoa(row)
}

// columnOf reads the column of a reference like "AB12", counting from 0.
func columnOf(ref []byte) (int, bool) {
	n, i := 0, 0
	for ; i < len(ref) && i < 3; i++ {
		c := ref[i] | 0x20
		if c < 'a' || c > 'z' {
			break
		}
		n = n*26 + int(c-'a'+1)
	}
	if i == 0 || i < len(ref) && (ref[i] < '0' || ref[i] > '9') {
		return 0, false
	}
	return n - 1, true
}

func columnName(col int) string {
	var b []byte
	for col++; col > 0; col = (col - 1) / 26 {
		b = append([]byte{byte('A' + (col-1)%26)}, b...)
	}
	return string(b)
}

// value is a cell's text as pyxform makes it from openpyxl's value.
func (r *sheetReader) value(typ string, style []byte, v []xmlToken, is *textRuns) (string, error) {
	if is != nil {
		s, err := is.text()
		return nbsp(s), err
	}
	var raw string
	switch len(v) {
	case 0:
	case 1:
		s, err := unescapeXML(v[0].text, v[0].cdata)
		if err != nil {
			return "", err
		}
		raw = s
	default:
		var b strings.Builder
		for _, p := range v {
			s, err := unescapeXML(p.text, p.cdata)
			if err != nil {
				return "", err
			}
			b.WriteString(s)
		}
		raw = b.String()
	}
	switch typ {
	case "s":
		k, err := strconv.Atoi(strings.TrimSpace(raw))
		if err != nil || k < 0 || k >= len(r.shared) {
			return "", fmt.Errorf("it refers to shared string %q, which the workbook does not have", raw)
		}
		return nbsp(r.shared[k]), nil
	case "str", "e", "d":
		return nbsp(unescapeOOXML(raw)), nil
	case "b":
		switch strings.TrimSpace(raw) {
		case "1", "true":
			return "TRUE", nil
		case "0", "false":
			return "FALSE", nil
		}
		return raw, nil
	}
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", nil
	}
	if !strings.ContainsAny(raw, ".eE") { // openpyxl reads an int
		if n, err := strconv.ParseInt(raw, 10, 64); err == nil {
			if r.isDate(style) {
				return r.date(float64(n)), nil
			}
			return strconv.FormatInt(n, 10), nil
		}
	}
	f, err := strconv.ParseFloat(raw, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return raw, nil
	}
	if r.isDate(style) {
		return r.date(f), nil
	}
	return pythonFloat(f), nil
}

func nbsp(s string) string {
	if !strings.Contains(s, "\u00a0") {
		return s
	}
	return strings.ReplaceAll(s, "\u00a0", " ")
}

func (r *sheetReader) isDate(style []byte) bool {
	if style == nil {
		return false
	}
	k, err := strconv.Atoi(string(style))
	return err == nil && k >= 0 && k < len(r.dateStyle) && r.dateStyle[k]
}

// date prints a serial date as Python prints the datetime openpyxl makes of
// it: a time of day alone for serials under one, milliseconds rounded.
func (r *sheetReader) date(serial float64) string {
	if serial < -1e7 || serial > 1e7 {
		return pythonFloat(serial)
	}
	day := math.Floor(serial)
	ms := int64(math.Round((serial - day) * 86_400_000))
	epoch := time.Date(1899, 12, 30, 0, 0, 0, 0, time.UTC)
	if r.date1904 {
		epoch = time.Date(1904, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if serial >= 0 && serial < 1 && ms < 86_400_000 {
		t := time.UnixMilli(ms).UTC()
		return pythonTime(t, "15:04:05")
	}
	if serial > 0 && serial < 60 && !r.date1904 {
		day++ // Excel counts 29 February 1900, which never was
	}
	t := epoch.AddDate(0, 0, int(day)).Add(time.Duration(ms) * time.Millisecond)
	return pythonTime(t, "2006-01-02 15:04:05")
}

func pythonTime(t time.Time, layout string) string {
	s := t.Format(layout)
	if us := t.Nanosecond() / 1000; us != 0 {
		s += fmt.Sprintf(".%06d", us)
	}
	return s
}

// pythonFloat prints a number as pyxform does: whole numbers as integers,
// others as Python's repr (shortest form, exponent outside 1e-4..1e16).
func pythonFloat(f float64) string {
	if f == math.Trunc(f) {
		if f == 0 {
			return "0" // and not -0
		}
		return strconv.FormatFloat(f, 'f', 0, 64)
	}
	e := strconv.FormatFloat(f, 'e', -1, 64)
	exp, _ := strconv.Atoi(e[strings.IndexByte(e, 'e')+1:])
	if exp < -4 || exp >= 16 {
		return e
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}
