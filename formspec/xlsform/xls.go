package xlsform

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/richardlehane/mscfb"
)

// oleMagic starts every OLE2 compound file, the container of .xls workbooks.
var oleMagic = []byte{0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1}

// IsXLS reports whether b is an Excel 97-2003 workbook's container.
func IsXLS(b []byte) bool { return bytes.HasPrefix(b, oleMagic) }

// ReadWorkbook reads an .xlsx or an .xls workbook, whichever b is.
func ReadWorkbook(b []byte) (*Workbook, error) {
	if IsXLS(b) {
		return ReadXLS(b)
	}
	return ReadXLSX(b)
}

// BIFF record types the reader uses (MS-XLS 2.3).
const (
	recFormula    = 0x0006
	recEOF        = 0x000A
	recFilePass   = 0x002F
	recDateMode   = 0x0022
	recContinue   = 0x003C
	recBoundSheet = 0x0085
	recMulRK      = 0x00BD
	recRString    = 0x00D6
	recXF         = 0x00E0
	recSST        = 0x00FC
	recLabelSST   = 0x00FD
	recNumber     = 0x0203
	recLabel      = 0x0204
	recBoolErr    = 0x0205
	recString     = 0x0207
	recRK         = 0x027E
	recFormat     = 0x041E
	recBOF        = 0x0809
)

// ReadXLS reads an Excel 97-2003 workbook (.xls, BIFF8), giving each cell
// the text pyxform gives it through xlrd: numbers as integers when whole,
// dates to the second as Python prints them, TRUE and FALSE, formulas by
// their saved result. Only worksheets are read, hidden ones included, as
// xlrd does; charts and macro sheets are not.
func ReadXLS(b []byte) (*Workbook, error) {
	if len(b) > MaxWorkbookBytes {
		return nil, fmt.Errorf("the workbook is %d bytes; Haven reads workbooks up to %d bytes: remove pictures and sheets the form does not use", len(b), MaxWorkbookBytes)
	}
	doc, err := mscfb.New(bytes.NewReader(b))
	if err != nil {
		return nil, notXLS(err)
	}
	var stream []byte
	for f, err := doc.Next(); err == nil; f, err = doc.Next() {
		switch f.Name {
		case "Workbook":
			if f.Size > MaxUnzipped {
				return nil, notXLS(fmt.Errorf("its workbook stream is %d bytes", f.Size))
			}
			if stream, err = io.ReadAll(io.LimitReader(f, MaxUnzipped)); err != nil {
				return nil, notXLS(err)
			}
		case "Book":
			if stream == nil {
				return nil, errOldExcel
			}
		}
	}
	if stream == nil {
		return nil, notXLS(errors.New("it has no workbook stream"))
	}
	x := &xlsReader{data: stream, custom: map[uint16]bool{}}
	sheets, err := x.globals()
	if err != nil {
		return nil, err
	}
	wb := &Workbook{Sheets: map[string]*Sheet{}, spreadsheet: true}
	for _, sh := range sheets {
		grid, err := x.sheet(sh.offset)
		if err != nil {
			if errors.Is(err, errTooManyRows) {
				return nil, fmt.Errorf("sheet %s: %w", sh.name, err)
			}
			return nil, notXLS(fmt.Errorf("sheet %s: %v", sh.name, err))
		}
		wb.add(sh.name, grid)
	}
	return wb, nil
}

// errOldExcel: BIFF5 and older, which xlrd reads but Excel 97 replaced.
var errOldExcel = errors.New("the workbook was saved by Excel 95 or older, which Haven does not read: open it and save it as Excel Workbook (.xlsx)")

func notXLS(err error) error {
	return fmt.Errorf("the file is not a readable .xls workbook (%v); open it and save it as Excel Workbook (.xlsx)", err)
}

// xlsReader walks a BIFF8 workbook stream.
type xlsReader struct {
	data     []byte
	sst      []string
	xfFormat []uint16        // each XF record's number format
	custom   map[uint16]bool // the workbook's own number formats: is each a date?
	date1904 bool
}

type xlsSheet struct {
	name   string
	offset int
}

// record is one BIFF record: its type and data.
type record struct {
	typ  uint16
	data []byte
}

// next reads the record at *pos and moves past it.
func (x *xlsReader) next(pos *int) (record, error) {
	p := *pos
	if p+4 > len(x.data) {
		return record{}, errors.New("it ends inside a record")
	}
	typ := binary.LittleEndian.Uint16(x.data[p:])
	n := int(binary.LittleEndian.Uint16(x.data[p+2:]))
	if p+4+n > len(x.data) {
		return record{}, fmt.Errorf("record %#04x runs past the end of the workbook", typ)
	}
	*pos = p + 4 + n
	return record{typ, x.data[p+4 : p+4+n]}, nil
}

// continued gathers the CONTINUE records that follow a record: the parts
// of a long string table or string.
func (x *xlsReader) continued(first []byte, pos *int) [][]byte {
	segs := [][]byte{first}
	for {
		p := *pos
		r, err := x.next(&p)
		if err != nil || r.typ != recContinue {
			return segs
		}
		segs = append(segs, r.data)
		*pos = p
	}
}

// bof checks a BOF record is BIFF8's.
func bof(r record) error {
	if r.typ != recBOF || len(r.data) < 4 {
		return errors.New("it does not start as a workbook")
	}
	if v := binary.LittleEndian.Uint16(r.data); v != 0x0600 {
		return errOldExcel
	}
	return nil
}

// globals reads the workbook's globals: string table, formats, date mode
// and its worksheets.
func (x *xlsReader) globals() ([]xlsSheet, error) {
	pos := 0
	r, err := x.next(&pos)
	if err != nil {
		return nil, notXLS(err)
	}
	if err := bof(r); err != nil {
		if errors.Is(err, errOldExcel) {
			return nil, err
		}
		return nil, notXLS(err)
	}
	var sheets []xlsSheet
	for {
		r, err := x.next(&pos)
		if err != nil {
			return nil, notXLS(err)
		}
		d := r.data
		switch r.typ {
		case recEOF:
			return sheets, nil
		case recFilePass:
			return nil, errors.New("the workbook is protected by a password: open it, remove the password and save it as Excel Workbook (.xlsx)")
		case recDateMode:
			x.date1904 = len(d) >= 2 && binary.LittleEndian.Uint16(d) == 1
		case recXF:
			if len(d) >= 4 {
				x.xfFormat = append(x.xfFormat, binary.LittleEndian.Uint16(d[2:]))
			}
		case recFormat:
			if len(d) < 2 {
				return nil, notXLS(errors.New("a number format is cut short"))
			}
			c := &cursor{segs: [][]byte{d[2:]}}
			code, err := c.unicode(2)
			if err != nil {
				return nil, notXLS(fmt.Errorf("number format: %v", err))
			}
			x.custom[binary.LittleEndian.Uint16(d)] = isXLDateFormat(code)
		case recSST:
			if x.sst, err = readSST(x.continued(d, &pos)); err != nil {
				return nil, notXLS(fmt.Errorf("shared strings: %v", err))
			}
		case recBoundSheet:
			if len(d) < 8 {
				return nil, notXLS(errors.New("a sheet entry is cut short"))
			}
			c := &cursor{segs: [][]byte{d[6:]}}
			name, err := c.unicode(1)
			if err != nil {
				return nil, notXLS(fmt.Errorf("sheet name: %v", err))
			}
			if d[5] != 0 { // a chart, macro sheet or VBA module
				continue
			}
			off := int(binary.LittleEndian.Uint32(d))
			if off <= 0 || off >= len(x.data) {
				return nil, notXLS(fmt.Errorf("sheet %s starts outside the workbook", name))
			}
			sheets = append(sheets, xlsSheet{name, off})
		}
	}
}

// readSST reads the shared string table, which CONTINUE records split.
func readSST(segs [][]byte) ([]string, error) {
	c := &cursor{segs: segs}
	if _, err := c.u32(); err != nil {
		return nil, err
	}
	n, err := c.u32()
	if err != nil {
		return nil, err
	}
	// Each string takes at least three bytes: a count the data cannot
	// hold is a damaged (or hostile) file, not a reason to allocate.
	total := 0
	for _, s := range segs {
		total += len(s)
	}
	if int64(n)*3 > int64(total) {
		return nil, fmt.Errorf("it says it has %d strings, more than it can hold", n)
	}
	out := make([]string, 0, n)
	for range n {
		s, err := c.unicode(2)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// sheet reads a worksheet's cells into rows of text.
func (x *xlsReader) sheet(pos int) ([][]string, error) {
	r, err := x.next(&pos)
	if err != nil {
		return nil, err
	}
	if err := bof(r); err != nil {
		return nil, err
	}
	rows := map[int][]string{}
	last := -1
	set := func(row, col int, v string) error {
		if col >= MaxColumns || v == "" {
			return nil
		}
		cells, ok := rows[row]
		if !ok {
			if len(rows) >= MaxRows {
				return errTooManyRows
			}
		}
		for len(cells) <= col {
			cells = append(cells, "")
		}
		cells[col] = v
		rows[row] = cells
		last = max(last, row)
		return nil
	}
	for {
		r, err := x.next(&pos)
		if err != nil {
			return nil, err
		}
		d := r.data
		if r.typ == recEOF {
			break
		}
		var row, col int
		switch r.typ {
		case recLabelSST, recLabel, recRString, recNumber, recRK, recBoolErr, recFormula, recMulRK:
			if len(d) < 6 {
				return nil, fmt.Errorf("a cell record %#04x is cut short", r.typ)
			}
			row, col = int(binary.LittleEndian.Uint16(d)), int(binary.LittleEndian.Uint16(d[2:]))
		default:
			continue
		}
		xf := binary.LittleEndian.Uint16(d[4:])
		var v string
		switch r.typ {
		case recLabelSST:
			if len(d) < 10 {
				return nil, errors.New("a text cell is cut short")
			}
			k := binary.LittleEndian.Uint32(d[6:])
			if int64(k) >= int64(len(x.sst)) {
				return nil, fmt.Errorf("cell %s refers to shared string %d, which the workbook does not have", columnName(col)+fmt.Sprint(row+1), k)
			}
			v = x.sst[k]
		case recLabel, recRString:
			c := &cursor{segs: x.continued(d[6:], &pos)}
			if v, err = c.unicode(2); err != nil {
				return nil, fmt.Errorf("cell %s: %v", columnName(col)+fmt.Sprint(row+1), err)
			}
		case recNumber:
			if len(d) < 14 {
				return nil, errors.New("a number cell is cut short")
			}
			v, err = x.number(math.Float64frombits(binary.LittleEndian.Uint64(d[6:])), xf)
		case recRK:
			if len(d) < 10 {
				return nil, errors.New("a number cell is cut short")
			}
			v, err = x.number(rk(binary.LittleEndian.Uint32(d[6:])), xf)
		case recMulRK:
			// xf and value pairs from the first column, then the last column.
			for i := range (len(d) - 6) / 6 {
				p := 4 + 6*i
				val, err := x.number(rk(binary.LittleEndian.Uint32(d[p+2:])), binary.LittleEndian.Uint16(d[p:]))
				if err != nil {
					return nil, fmt.Errorf("cell %s: %v", columnName(col+i)+fmt.Sprint(row+1), err)
				}
				if err := set(row, col+i, val); err != nil {
					return nil, err
				}
			}
			continue
		case recBoolErr:
			if len(d) < 8 {
				return nil, errors.New("a true/false cell is cut short")
			}
			v = boolErr(d[6], d[7] != 0)
		case recFormula:
			if len(d) < 14 {
				return nil, errors.New("a formula cell is cut short")
			}
			res := d[6:14]
			if res[6] != 0xFF || res[7] != 0xFF {
				v, err = x.number(math.Float64frombits(binary.LittleEndian.Uint64(res)), xf)
				break
			}
			switch res[0] {
			case 0: // text, in the STRING record that follows
				p := pos
				s, err2 := x.next(&p)
				for err2 == nil && s.typ != recString && s.typ != recEOF && s.typ != recFormula {
					s, err2 = x.next(&p) // SHRFMLA, ARRAY and TABLE may come first
				}
				if err2 == nil && s.typ == recString {
					c := &cursor{segs: x.continued(s.data, &p)}
					if v, err = c.unicode(2); err != nil {
						err = fmt.Errorf("formula result: %v", err)
					}
					pos = p
				}
			case 1:
				v = boolErr(res[2], false)
			case 2:
				v = boolErr(res[2], true)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("cell %s: %v", columnName(col)+fmt.Sprint(row+1), err)
		}
		if err := set(row, col, nbsp(v)); err != nil {
			return nil, err
		}
	}
	if last < 0 {
		return nil, nil
	}
	grid := make([][]string, last+1)
	for k, cells := range rows {
		grid[k] = cells
	}
	return grid, nil
}

// boolErr is a BOOLERR cell's text as xlrd and pyxform make it: TRUE or
// FALSE, or an error's code as a number.
func boolErr(b byte, isErr bool) string {
	if isErr {
		return fmt.Sprint(b)
	}
	if b != 0 {
		return "TRUE"
	}
	return "FALSE"
}

// rk decodes an RK number: a 30-bit integer or the top of a float, maybe
// times 100.
func rk(v uint32) float64 {
	var f float64
	if v&2 != 0 {
		f = float64(int32(v) >> 2)
	} else {
		f = math.Float64frombits(uint64(v&^3) << 32)
	}
	if v&1 != 0 {
		f /= 100
	}
	return f
}

// number is a number cell's text: a date when its format is a date's.
func (x *xlsReader) number(f float64, xf uint16) (string, error) {
	if int(xf) < len(x.xfFormat) && x.isDate(x.xfFormat[xf]) {
		return xlDate(f, x.date1904)
	}
	switch {
	case math.IsNaN(f):
		return "nan", nil
	case math.IsInf(f, 1):
		return "inf", nil
	case math.IsInf(f, -1):
		return "-inf", nil
	}
	return pythonFloat(f), nil
}

func (x *xlsReader) isDate(format uint16) bool {
	if d, ok := x.custom[format]; ok {
		return d
	}
	// xlrd's built-in date formats, CJK and Thai ones included.
	switch {
	case format >= 14 && format <= 22, format >= 27 && format <= 36,
		format >= 45 && format <= 47, format >= 50 && format <= 58,
		format >= 71 && format <= 81:
		return true
	}
	return false
}

// xlDate prints a date cell as pyxform prints xlrd's reading of it: to the
// nearest second, a time of day alone when the day is zero. Dates before
// March 1900 are refused, as xlrd refuses them: Excel counts a 29 February
// 1900 that never was, so those days are ambiguous.
func xlDate(serial float64, date1904 bool) (string, error) {
	if math.IsNaN(serial) || serial < 0 {
		return "", fmt.Errorf("the date %v is negative: type the value as text", serial)
	}
	days := math.Floor(serial)
	secs := int64(math.Round((serial - days) * 86400))
	if secs == 86400 {
		secs, days = 0, days+1
	}
	if days >= 2958466 {
		return "", fmt.Errorf("the date %v is after the year 9999: type the value as text", serial)
	}
	clock := fmt.Sprintf("%02d:%02d:%02d", secs/3600, secs/60%60, secs%60)
	if days == 0 {
		return clock, nil
	}
	epoch := xlsEpoch1900
	if date1904 {
		epoch = xlsEpoch1904
	} else if days < 61 {
		return "", fmt.Errorf("the date %v falls before 1 March 1900, where Excel's calendar is wrong: type the value as text", serial)
	}
	t := epoch.AddDate(0, 0, int(days))
	return t.Format("2006-01-02") + " " + clock, nil
}

var (
	xlsEpoch1900 = time.Date(1899, 12, 30, 0, 0, 0, 0, time.UTC)
	xlsEpoch1904 = time.Date(1904, 1, 1, 0, 0, 0, 0, time.UTC)
)

// cursor reads across a record and its CONTINUE records.
type cursor struct {
	segs [][]byte
	i, p int
}

func (c *cursor) avail() int {
	for c.i < len(c.segs) && c.p >= len(c.segs[c.i]) {
		c.i, c.p = c.i+1, 0
	}
	if c.i >= len(c.segs) {
		return 0
	}
	return len(c.segs[c.i]) - c.p
}

var errShort = errors.New("the data ends inside a string")

func (c *cursor) byte() (byte, error) {
	if c.avail() == 0 {
		return 0, errShort
	}
	b := c.segs[c.i][c.p]
	c.p++
	return b, nil
}

func (c *cursor) u16() (uint16, error) {
	lo, err := c.byte()
	if err != nil {
		return 0, err
	}
	hi, err := c.byte()
	return uint16(lo) | uint16(hi)<<8, err
}

func (c *cursor) u32() (uint32, error) {
	lo, err := c.u16()
	if err != nil {
		return 0, err
	}
	hi, err := c.u16()
	return uint32(lo) | uint32(hi)<<16, err
}

func (c *cursor) skip(n int) error {
	for n > 0 {
		a := c.avail()
		if a == 0 {
			return errShort
		}
		k := min(a, n)
		c.p += k
		n -= k
	}
	return nil
}

// unicode reads an XLUnicodeString (or its rich, extended form) whose
// character count takes countBytes. Characters are one byte each (Latin-1)
// or UTF-16; a string split by a CONTINUE record restarts there with a flags
// byte, and may change width.
func (c *cursor) unicode(countBytes int) (string, error) {
	var n int
	if countBytes == 1 {
		b, err := c.byte()
		if err != nil {
			return "", err
		}
		n = int(b)
	} else {
		v, err := c.u16()
		if err != nil {
			return "", err
		}
		n = int(v)
	}
	flags, err := c.byte()
	if err != nil {
		return "", err
	}
	var runs, ext int
	if flags&0x08 != 0 {
		v, err := c.u16()
		if err != nil {
			return "", err
		}
		runs = int(v)
	}
	if flags&0x04 != 0 {
		v, err := c.u32()
		if err != nil {
			return "", err
		}
		if v > MaxUnzipped {
			return "", errShort
		}
		ext = int(v)
	}
	wide := flags&1 != 0
	units := make([]uint16, 0, n)
	for {
		w := 1
		if wide {
			w = 2
		}
		left := 0 // in this record only: the next one starts with flags
		if c.i < len(c.segs) {
			left = len(c.segs[c.i]) - c.p
		}
		k := min(left/w, n-len(units))
		if k > 0 {
			seg := c.segs[c.i][c.p:]
			for j := range k {
				if wide {
					units = append(units, binary.LittleEndian.Uint16(seg[2*j:]))
				} else {
					units = append(units, uint16(seg[j])) // Latin-1 is the first 256 code points
				}
			}
			c.p += k * w
		}
		if len(units) == n {
			break
		}
		// The string goes on in the next CONTINUE record, which starts
		// with its own flags: the width may change there.
		if c.i+1 >= len(c.segs) {
			return "", errShort
		}
		c.i, c.p = c.i+1, 0
		f, err := c.byte()
		if err != nil {
			return "", err
		}
		wide = f&1 != 0
	}
	if err := c.skip(4*runs + ext); err != nil {
		return "", err
	}
	return string(utf16.Decode(units)), nil
}

// isXLDateFormat is xlrd's test of a number format: after quoted text,
// escaped characters and [brackets], date letters (ymdhs) with no digit
// placeholders (0 # ?) make a date; with both, two or more date letters do.
func isXLDateFormat(code string) bool {
	var s strings.Builder
	state := 0
	for _, r := range code {
		switch state {
		case 0:
			switch {
			case r == '"':
				state = 1
			case r == '\\' || r == '_' || r == '*':
				state = 2
			case strings.ContainsRune("$-+/(): ", r):
			default:
				s.WriteRune(r)
			}
		case 1:
			if r == '"' {
				state = 0
			}
		case 2:
			state = 0
		}
	}
	rest := xlBracketed.ReplaceAllString(s.String(), "")
	switch rest {
	case "0.00E+00", "##0.0E+0", "General", "GENERAL", "general", "@":
		return false
	}
	var dates, nums int
	for _, r := range rest {
		switch {
		case strings.ContainsRune("ymdhsYMDHS", r):
			dates++
		case r == '0' || r == '#' || r == '?':
			nums++
		}
	}
	if nums == 0 {
		return dates > 0
	}
	return dates > 1
}

var xlBracketed = regexp.MustCompile(`\[[^]]*\]`)
