package xlsform

// Household is the household form of the package's tests, for the tests
// outside the package (xlsx_test.go), which write it as an .xlsx.
const Household = household

// WorkbookOf makes a Workbook of sheets given as grids of cell text, as the
// readers do, so tests can compare what two readers saw.
func WorkbookOf(names []string, grids [][][]string) *Workbook {
	wb := &Workbook{Sheets: map[string]*Sheet{}}
	for i, n := range names {
		wb.add(n, grids[i])
	}
	return wb
}

// SameXMLTree is sameXMLTree for the tests outside the package.
var SameXMLTree = sameXMLTree
