package export

import (
	"archive/zip"
	"bufio"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
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
}

func (s *sheetWriter) row(cells []string) error {
	s.w.WriteString("<row>")
	for _, c := range cells {
		if c == "" {
			s.w.WriteString("<c/>")
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
			emit[i] = sws[i].row
		}
		return e.allRows(ctx, emit)
	})
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
	for _, part := range [][2]string{
		{"[Content_Types].xml", `<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>` + types.String() + `</Types>`},
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
			sws[i] = &sheetWriter{bufio.NewWriterSize(w, 64<<10)}
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

// WriteTable writes rows as a one-sheet XLSX workbook.
func WriteTable(w io.Writer, sheet string, rows [][]string) error {
	return writeWorkbook(w, []string{sheet}, nil, func(sws []*sheetWriter) error {
		for _, r := range rows {
			if err := sws[0].row(r); err != nil {
				return err
			}
		}
		return nil
	})
}
