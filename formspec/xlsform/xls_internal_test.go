package xlsform

import (
	"slices"
	"testing"
)

// Excel splits a long string table over CONTINUE records, and a string cut
// there goes on after a flags byte that may change its width: Latin-1 in
// one record, UTF-16 in the next (MS-XLS 2.5.293). xlwt, which wrote the
// test workbooks, never changes width, so this is built by hand.
func TestSSTWidthChangesAtContinue(t *testing.T) {
	first := []byte{
		3, 0, 0, 0, 2, 0, 0, 0, // 3 references, 2 unique strings
		6, 0, 0, 'c', 'a', 'f', // "café!" begins in Latin-1...
	}
	second := []byte{
		1, 0xE9, 0x00, '!', 0x00, '?', 0x00, // ...and ends in UTF-16: "é!?"
		2, 0, 1, 0x27, 0x06, 0x44, 0x06, // then "ال", UTF-16 from the start
	}
	got, err := readSST([][]byte{first, second})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"café!?", "ال"}; !slices.Equal(got, want) {
		t.Fatalf("read %q, want %q", got, want)
	}
	// A UTF-16 string going on in Latin-1, with rich-text runs after it
	// in the next record: the runs are skipped wherever they fall.
	first = []byte{1, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0x09, 1, 0, 0x3B, 0x06}
	second = []byte{0, 'x', 'y', 0, 0}
	third := []byte{0, 0}
	if got, err = readSST([][]byte{first, second, third}); err != nil || !slices.Equal(got, []string{"\u063bxy"}) {
		t.Fatalf("read %q (%v), want one string, rich-text runs skipped", got, err)
	}
	// A count the table cannot hold is refused before anything is made.
	if _, err := readSST([][]byte{{0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0x7F}}); err == nil {
		t.Fatal("a table claiming two billion strings was read")
	}
}

// xlrd's rule for the workbook's own number formats.
func TestXLDateFormats(t *testing.T) {
	for code, date := range map[string]bool{
		"yyyy-mm-dd": true, "dd/mm/yyyy hh:mm": true, `[$-409]mmmm d, yyyy`: true, "h:mm AM/PM": true,
		"0.00": false, "#,##0": false, "General": false, "@": false, `"days" 0`: false, `0.00E+00`: false,
		`[Red]0.00`: false, `#,##0.00 "d"`: false, `0 "m" 0 "s"`: false, `y0`: false, `yy0`: true,
	} {
		if got := isXLDateFormat(code); got != date {
			t.Errorf("%q: date %v, want %v", code, got, date)
		}
	}
}
