package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-org/haven/formspec"
	"github.com/haven-org/haven/formspec/xlsform/xlsxtest"
)

func TestFormConvert(t *testing.T) {
	dir := t.TempDir()
	good, _ := xlsxtest.FromMarkdown(`
| survey |         |         |            |
|        | type    | name    | label      |
|        | integer | members | Members    |
|        | image   | shelter | The roof   |
`)
	bad, _ := xlsxtest.FromMarkdown(`
| survey |           |         |         |
|        | type      | name    | label   |
|        | integer   | members | Members |
|        | telepathy | mind    | Mind    |
`)
	os.WriteFile(filepath.Join(dir, "census.xlsx"), good, 0o644)
	os.WriteFile(filepath.Join(dir, "bad.xlsx"), bad, 0o644)
	ctx := context.Background()

	out := filepath.Join(dir, "census.xml")
	// The form has no purposes: it converts (the XForm is written) and the
	// check says what publishing would refuse, one line a field.
	var check bytes.Buffer
	if err := run(ctx, []string{"form", "convert", filepath.Join(dir, "census.xlsx"), "-o", out}, nil, io.Discard, &check); err == nil ||
		!strings.Contains(check.String(), "survey row 2, /data/members: has no purpose") || !strings.Contains(check.String(), "survey row 3, /data/shelter") ||
		strings.Count(check.String(), "haven:purpose") != 1 {
		t.Fatalf("the publishing check: %v\n%s", err, check.String())
	}
	x, _ := os.ReadFile(out)
	f, err := formspec.Parse(x)
	if err != nil || f.ID != "census" || f.Node("/data/shelter").Type != "binary" {
		t.Fatalf("converted form: %+v %v", f, err)
	}
	var stderr bytes.Buffer
	err = run(ctx, []string{"form", "convert", filepath.Join(dir, "bad.xlsx")}, nil, io.Discard, &stderr)
	if err == nil || !strings.Contains(stderr.String(), "row 3") || !strings.Contains(stderr.String(), "telepathy") {
		t.Fatalf("errors: %v\n%s", err, stderr.String())
	}
	var js bytes.Buffer
	run(ctx, []string{"form", "convert", "--json", filepath.Join(dir, "bad.xlsx")}, nil, &js, io.Discard)
	var res struct {
		XForm  string
		Errors []struct {
			Sheet, Column string
			Row           int
		}
	}
	if err := json.Unmarshal(js.Bytes(), &res); err != nil || len(res.Errors) != 1 || res.Errors[0].Row != 3 || res.Errors[0].Column != "type" || res.XForm != "" {
		t.Fatalf("--json: %+v %v", res, err)
	}
}
