package xlsform

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// TestDiffSmallest prints the smallest cases whose tree differs (a tool for
// work on the converter; run with HAVEN_XLSFORM_DIFF=N).
func TestDiffSmallest(t *testing.T) {
	n := 0
	fmt.Sscan(os.Getenv("HAVEN_XLSFORM_DIFF"), &n)
	if n == 0 {
		t.Skip("set HAVEN_XLSFORM_DIFF=N to print N differing cases")
	}
	dirs, _ := os.ReadDir(corpus)
	type item struct {
		name string
		size int
	}
	var items []item
	for _, d := range dirs {
		dir := filepath.Join(corpus, d.Name())
		var c conformanceCase
		raw, _ := os.ReadFile(filepath.Join(dir, "case.json"))
		if json.Unmarshal(raw, &c) != nil || !c.PyxformOK || c.HashseedSensitive {
			continue
		}
		md, _ := os.ReadFile(filepath.Join(dir, "form.md"))
		want, _ := os.ReadFile(filepath.Join(dir, "expected.xml"))
		xlsx, _ := os.ReadFile(filepath.Join(dir, "form.xlsx"))
		res := ConvertWorkbook(xlsx, Options{RootName: c.RootName, FormID: "data"})
		if len(res.Errors) == 0 && !sameXMLTree(res.XForm, want) {
			items = append(items, item{d.Name(), len(md)})
		}
	}
	sort.Slice(items, func(i, j int) bool { return items[i].size < items[j].size })
	for _, it := range items[:min(n, len(items))] {
		dir := filepath.Join(corpus, it.name)
		var c conformanceCase
		raw, _ := os.ReadFile(filepath.Join(dir, "case.json"))
		json.Unmarshal(raw, &c)
		md, _ := os.ReadFile(filepath.Join(dir, "form.md"))
		xlsx, _ := os.ReadFile(filepath.Join(dir, "form.xlsx"))
		res := ConvertWorkbook(xlsx, Options{RootName: c.RootName, FormID: "data"})
		os.WriteFile("/tmp/xlsdiff-"+it.name+".got.xml", res.XForm, 0o644)
		t.Logf("== %s\n%s", it.name, md)
	}
}
