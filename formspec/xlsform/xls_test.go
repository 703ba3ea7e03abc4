package xlsform_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/haven-org/haven/formspec/xlsform"
)

// The .xls workbooks in testdata/xls were written by xlwt, a library other
// than Haven's reader, as Excel 97-2003 saves them; NAME.cells.json is what
// xlrd reads from each, made into text by pyxform's rules, and
// NAME.pyxform.xml pyxform's XForm (testdata/xls/make.py wrote all three).
// household.xls has UTF-16 labels (French and Arabic), a rich-text label,
// a shared string table split over CONTINUE records, numbers, TRUE/FALSE,
// a date, formatted empty cells down to row 3,000 and a hidden sheet;
// dates1904.xls counts its dates from 1904.
var xlsFixtures = []string{"household", "dates1904"}

func TestReadXLSAgreesWithXlrd(t *testing.T) {
	for _, name := range xlsFixtures {
		t.Run(name, func(t *testing.T) {
			b := readFixture(t, name+".xls")
			ours, err := xlsform.ReadXLS(b)
			if err != nil {
				t.Fatal(err)
			}
			var cells map[string]map[string]string
			if err := json.Unmarshal(readFixture(t, name+".cells.json"), &cells); err != nil {
				t.Fatal(err)
			}
			var names []string
			var grids [][][]string
			for sheet, byRef := range cells {
				var grid [][]string
				for ref, text := range byRef {
					r, c, _ := strings.Cut(ref, ",")
					row, _ := strconv.Atoi(r)
					col, _ := strconv.Atoi(c)
					for len(grid) <= row {
						grid = append(grid, nil)
					}
					for len(grid[row]) <= col {
						grid[row] = append(grid[row], "")
					}
					grid[row][col] = text
				}
				names, grids = append(names, sheet), append(grids, grid)
			}
			xlrd := xlsform.WorkbookOf(names, grids)
			if len(ours.Sheets) != len(xlrd.Sheets) {
				t.Fatalf("%d sheets read, xlrd read %d", len(ours.Sheets), len(xlrd.Sheets))
			}
			if !reflect.DeepEqual(dropEmpty(ours).Sheets, dropEmpty(xlrd).Sheets) {
				t.Fatalf("Haven read\n%s\nxlrd read\n%s", dump(ours), dump(xlrd))
			}
		})
	}
}

// The same workbook gives pyxform's XForm, and the same XForm as its
// .xlsx twin would: the reader is the only part that knows the format.
func TestConvertXLSAsPyxform(t *testing.T) {
	for _, name := range xlsFixtures {
		t.Run(name, func(t *testing.T) {
			res := xlsform.ConvertWorkbook(readFixture(t, name+".xls"), xlsform.Options{FormID: name})
			if len(res.Errors) > 0 {
				t.Fatalf("refused: %v", res.Errors)
			}
			// Haven's own attributes (purpose, tier, legal basis) aside.
			ours := havenAttrs.ReplaceAll(res.XForm, nil)
			if want := readFixture(t, name+".pyxform.xml"); !xlsform.SameXMLTree(ours, want) {
				t.Fatalf("Haven's XForm differs from pyxform's:\n%s", res.XForm)
			}
		})
	}
	// Publishing checks run on what the reader gave: the household form
	// declares purposes and tiers, and the note has a name made for it.
	res := xlsform.ConvertWorkbook(readFixture(t, "household.xls"), xlsform.Options{})
	if !strings.Contains(string(res.XForm), "generated_note_name_9") || !strings.Contains(string(res.XForm), `haven:purpose="identification"`) {
		t.Fatalf("the household form lost its note or purposes:\n%.2000s", res.XForm)
	}
}

// Damaged, truncated and foreign files are refused with a message that
// says to save the workbook again, and never half-read.
func TestReadXLSRefusals(t *testing.T) {
	good := readFixture(t, "household.xls")
	for _, c := range []struct {
		name string
		b    []byte
		want string
	}{
		{"truncated", good[:len(good)/2], ".xls"},
		{"magic only", good[:8], ".xls"},
		{"not a workbook", append(append([]byte{}, good[:512]...), make([]byte, 4096)...), ".xls"},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := xlsform.ConvertWorkbook(c.b, xlsform.Options{})
			if len(res.Errors) == 0 || res.XForm != nil {
				t.Fatalf("accepted: %s", res.XForm)
			}
			msg := res.Errors[0].Message
			if !strings.Contains(msg, c.want) || !strings.Contains(msg, "save it as Excel Workbook (.xlsx)") {
				t.Fatalf("message %q does not say what to do", msg)
			}
		})
	}
}

func FuzzReadXLS(f *testing.F) {
	for _, name := range xlsFixtures {
		f.Add(readFixture(f, name+".xls"))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		wb, err := xlsform.ReadXLS(b)
		if err != nil {
			return
		}
		xlsform.Convert(wb, xlsform.Options{})
	})
}

var havenAttrs = regexp.MustCompile(` (xmlns:)?haven(:[a-z-]+)?="[^"]*"`)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "xls", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
