// Package xlsxtest writes real .xlsx workbooks for tests, with excelize, a
// second and independent implementation of the format: what Haven's own
// reader reads back has to agree with what excelize wrote. Only tests
// import it, so the haven binary does not carry excelize.
package xlsxtest

import (
	"github.com/haven-org/haven/formspec/xlsform"
	"github.com/xuri/excelize/v2"
)

// FromMarkdown writes a workbook given in pyxform's markdown notation as an
// .xlsx file, sheets in the order they appear, every cell a string.
func FromMarkdown(md string) ([]byte, error) {
	f := excelize.NewFile()
	defer f.Close()
	var sheet string
	row := 0
	err := xlsform.WalkMarkdown(md, func(name string) error {
		first := sheet == ""
		sheet, row = name, 0
		if first {
			return f.SetSheetName("Sheet1", name)
		}
		_, err := f.NewSheet(name)
		return err
	}, func(cells []string) error {
		row++
		for j, v := range cells {
			cell, _ := excelize.CoordinatesToCellName(j+1, row)
			if err := f.SetCellStr(sheet, cell, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	buf, err := f.WriteToBuffer()
	if err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
