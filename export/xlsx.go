package export

import (
	"archive/zip"
	"bufio"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// A minimal streaming XLSX writer: one worksheet per table, cells as inline
// strings, written straight into the zip. (General XLSX libraries buffer
// large sheets in temporary files, which would put plaintext on disk.)

const (
	nsMain = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
	nsRel  = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
	nsPkg  = "http://schemas.openxmlformats.org/package/2006/relationships"
)

// sheetName makes a valid, unique worksheet name (31 characters, none of []:*?/\).
func sheetName(name string, used map[string]bool) string {
	name = strings.Map(func(r rune) rune {
		if strings.ContainsRune(`[]:*?/\`, r) {
			return '_'
		}
		return r
	}, name)
	if r := []rune(name); len(r) > 31 {
		name = string(r[:31])
	}
	base := name
	for i := 2; used[name]; i++ {
		suffix := fmt.Sprintf("~%d", i)
		r := []rune(base)
		if len(r)+len(suffix) > 31 {
			r = r[:31-len(suffix)]
		}
		name = string(r) + suffix
	}
	used[name] = true
	return name
}

// sheetWriter writes one worksheet's rows.
type sheetWriter struct {
	w *bufio.Writer
	// types are the cells' types by column, for the rows written after
	// they are set (headers stay text); nil: every cell is text.
	types []cellType
}

// cellType is how a column's cells are written: as text, or typed so a
// spreadsheet sums, sorts and filters them.
type cellType int

const (
	cellText     cellType = iota
	cellNumber            // a number when it reads as one, else text
	cellDate              // 2026-11-03: a date
	cellDateTime          // an RFC 3339 time: a date and time, in UTC
)

// Styles of typed cells (xl/styles.xml): 1 a date, 2 a date and time.
const stylesXML = `<styleSheet xmlns="` + nsMain + `"><numFmts count="2"><numFmt numFmtId="164" formatCode="yyyy-mm-dd"/><numFmt numFmtId="165" formatCode="yyyy-mm-dd hh:mm:ss"/></numFmts>` +
	`<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts><fills count="2"><fill><patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/></fill></fills>` +
	`<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders><cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>` +
	`<cellXfs count="3"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/><xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/><xf numFmtId="165" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs>` +
	`<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles></styleSheet>`

// excelEpoch is day 0 of spreadsheet dates (with Lotus's leap day of 1900).
var excelEpoch = time.Date(1899, 12, 30, 0, 0, 0, 0, time.UTC)

// typed writes a cell of type t as a number or a date, and reports false
// when the value does not read as one (it is then written as text).
func (s *sheetWriter) typed(t cellType, v string) bool {
	switch t {
	case cellNumber:
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) || strings.ContainsAny(v, "xXpP_") {
			return false
		}
		s.w.WriteString("<c><v>")
		s.w.WriteString(strconv.FormatFloat(f, 'g', -1, 64))
		s.w.WriteString("</v></c>")
		return true
	case cellDate:
		d, err := time.Parse("2006-01-02", v)
		if err != nil {
			return false
		}
		fmt.Fprintf(s.w, `<c s="1"><v>%d</v></c>`, int(d.Sub(excelEpoch).Hours()/24))
		return true
	case cellDateTime:
		d, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			if d, err = time.Parse("2006-01-02T15:04:05.000Z07", v); err != nil { // ODK's offsets without minutes
				return false
			}
		}
		days := d.UTC().Sub(excelEpoch).Seconds() / 86400
		fmt.Fprintf(s.w, `<c s="2"><v>%s</v></c>`, strconv.FormatFloat(days, 'f', 8, 64))
		return true
	}
	return false
}

func (s *sheetWriter) row(cells []string) error {
	s.w.WriteString("<row>")
	for i, c := range cells {
		if c == "" {
			s.w.WriteString("<c/>")
			continue
		}
		if i < len(s.types) && s.types[i] != cellText && s.typed(s.types[i], c) {
			continue
		}
		if r := []rune(c); len(r) > 32767 {
			c = string(r[:32767]) // Excel's limit per cell
		}
		s.w.WriteString(`<c t="inlineStr"><is><t xml:space="preserve">`)
		xml.EscapeText(s.w, []byte(c)) // also drops characters XML cannot hold
		s.w.WriteString("</t></is></c>")
	}
	_, err := s.w.WriteString("</row>")
	return err
}

func (e *Export) writeXLSX(ctx context.Context, w io.Writer) error {
	var names []string
	for _, t := range e.layout.tables {
		names = append(names, t.name)
	}
	if len(e.Omitted) > 0 {
		names = append(names, "omitted fields")
	}
	return writeWorkbook(w, names, e.src.Scratch, func(sws []*sheetWriter) error {
		if len(e.Omitted) > 0 {
			sw := sws[len(e.layout.tables)]
			sw.row([]string{"Fields above your clearance, left out"})
			for _, p := range e.Omitted {
				sw.row([]string{p})
			}
		}
		emit := make([]func([]string) error, len(e.layout.tables))
		for i, t := range e.layout.tables {
			if err := sws[i].row(e.headers(t)); err != nil {
				return err
			}
			sws[i].types = e.cellTypes(t)
			emit[i] = sws[i].row
		}
		return e.allRows(ctx, emit)
	})
}

// cellTypes types a table's columns, in the order of its headers: numbers,
// dates and times as such (answers shown as labels stay text).
func (e *Export) cellTypes(t *table) []cellType {
	var types []cellType
	if t.repeat == "" {
		types = append(types, cellDateTime) // SubmissionDate
	}
	for _, c := range t.cols {
		switch {
		case c.choice != "" || c.part > 0:
			types = append(types, cellNumber)
		case e.layout.selects[c.path] != nil:
			types = append(types, cellText)
		case c.kind == "int" || c.kind == "decimal":
			types = append(types, cellNumber)
		case c.kind == "date":
			types = append(types, cellDate)
		case c.kind == "dateTime":
			types = append(types, cellDateTime)
		default:
			types = append(types, cellText)
		}
	}
	if t.repeat != "" {
		return types // PARENT_KEY, KEY
	}
	types = append(types, cellText, cellNumber, cellNumber, cellNumber, cellText) // KEY, SubmitterID, AttachmentsPresent, AttachmentsExpected, ReviewState
	if e.deviceIDs {
		types = append(types, cellText)
	}
	return append(types, cellText, cellText, cellText, cellText, cellDateTime) // FormVersion, consent: outcome, basis, statement, recorded at
}

// writeWorkbook writes an XLSX workbook with the named sheets, all filled by
// one call of fill (see zipEntries: spool gives scratch space to every sheet
// but the first, and may be nil for a workbook of one sheet).
func writeWorkbook(w io.Writer, sheetNames []string, spool func() (Scratch, error), fill func(sws []*sheetWriter) error) error {
	z := newZip(w)
	used := map[string]bool{}
	var names []string
	for _, n := range sheetNames {
		names = append(names, sheetName(n, used))
	}
	put := func(name, body string) error {
		f, err := createEntry(z, name, zip.Deflate)
		if err == nil {
			_, err = io.WriteString(f, xml.Header+body)
		}
		return err
	}
	var types, sheets, rels strings.Builder
	for i, n := range names {
		fmt.Fprintf(&types, `<Override PartName="/xl/worksheets/sheet%d.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>`, i+1)
		var esc strings.Builder
		xml.EscapeText(&esc, []byte(n))
		fmt.Fprintf(&sheets, `<sheet name="%s" sheetId="%d" r:id="rId%d"/>`, esc.String(), i+1, i+1)
		fmt.Fprintf(&rels, `<Relationship Id="rId%d" Type="%s/worksheet" Target="worksheets/sheet%d.xml"/>`, i+1, nsRel, i+1)
	}
	types.WriteString(`<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>`)
	fmt.Fprintf(&rels, `<Relationship Id="rId%d" Type="%s/styles" Target="styles.xml"/>`, len(names)+1, nsRel)
	for _, part := range [][2]string{
		{"[Content_Types].xml", `<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>` + types.String() + `</Types>`},
		{"xl/styles.xml", stylesXML},
		{"_rels/.rels", `<Relationships xmlns="` + nsPkg + `"><Relationship Id="rId1" Type="` + nsRel + `/officeDocument" Target="xl/workbook.xml"/></Relationships>`},
		{"xl/workbook.xml", `<workbook xmlns="` + nsMain + `" xmlns:r="` + nsRel + `"><sheets>` + sheets.String() + `</sheets></workbook>`},
		{"xl/_rels/workbook.xml.rels", `<Relationships xmlns="` + nsPkg + `">` + rels.String() + `</Relationships>`},
	} {
		if err := put(part[0], part[1]); err != nil {
			return err
		}
	}
	entries := make([]string, len(names))
	for i := range names {
		entries[i] = fmt.Sprintf("xl/worksheets/sheet%d.xml", i+1)
	}
	err := zipEntries(z, entries, spool, func(ws []io.Writer) error {
		sws := make([]*sheetWriter, len(ws))
		for i, w := range ws {
			sws[i] = &sheetWriter{w: bufio.NewWriterSize(w, 64<<10)}
			sws[i].w.WriteString(xml.Header + `<worksheet xmlns="` + nsMain + `"><sheetData>`)
		}
		if err := fill(sws); err != nil {
			return err
		}
		for _, sw := range sws {
			sw.w.WriteString("</sheetData></worksheet>")
			if err := sw.w.Flush(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return z.Close()
}

// WriteTable writes rows as a one-sheet XLSX workbook; after the first
// (header) row, the cells of the columns marked numeric are numbers when
// they read as numbers.
func WriteTable(w io.Writer, sheet string, rows [][]string, numeric ...int) error {
	return writeWorkbook(w, []string{sheet}, nil, func(sws []*sheetWriter) error {
		for i, r := range rows {
			if i == 1 && len(numeric) > 0 {
				sws[0].types = make([]cellType, len(r))
				for _, c := range numeric {
					if c < len(r) {
						sws[0].types[c] = cellNumber
					}
				}
			}
			if err := sws[0].row(r); err != nil {
				return err
			}
		}
		return nil
	})
}
