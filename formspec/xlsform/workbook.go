// Package xlsform converts XLSForms into XForms the way pyxform 4.5 does, so
// that ODK Collect runs Haven's output exactly as it runs pyxform's. Convert
// is a pure function: workbook in, XForm bytes and diagnostics out.
package xlsform

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Limits on what a workbook may cost to read.
const (
	MaxWorkbookBytes = 20 << 20  // the .xlsx file
	MaxUnzipped      = 100 << 20 // everything inside it (zip bombs)
	MaxRows          = 50_000    // per sheet
	MaxColumns       = 500
)

// Workbook is the sheets of an XLSForm, each a header row and data rows.
type Workbook struct {
	Sheets map[string]*Sheet
	// spreadsheet: read from .xlsx or .xls, where pyxform refuses a header
	// written twice (its markdown notation lets the later column win).
	spreadsheet bool
}

// Sheet is one sheet: Headers in order, Rows as header -> cell text.
type Sheet struct {
	Name    string
	Headers []string
	Raw     []string // the headers as written, before aliases were resolved
	Rows    []Row
}

// Row is a data row; Num is its row number in the sheet (the header is row 1).
type Row struct {
	Num   int
	Cells map[string]string
}

// Get returns a cell's trimmed text, with typographic quotes made plain as
// pyxform does (spreadsheets curl them as one types).
func (r Row) Get(col string) string {
	s := strings.TrimSpace(r.Cells[col])
	if strings.IndexByte(s, 0xe2) < 0 { // no curly quote can be there
		return s
	}
	return smartQuotes.Replace(s)
}

var smartQuotes = strings.NewReplacer("\u2018", "'", "\u2019", "'", "\u201c", `"`, "\u201d", `"`)

func (w *Workbook) sheet(name string) *Sheet {
	if w == nil {
		return nil
	}
	return w.Sheets[name]
}

// firstInvalid is the offset of s's first byte that is not UTF-8.
func firstInvalid(s string) int {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n == 1 {
				return i
			}
		}
	}
	return len(s)
}

// ReadMarkdown reads pyxform's markdown notation: a line whose first column
// names a sheet starts it, the next line holds its headers, and lines with an
// empty first column are its rows; '#' starts a comment.
func ReadMarkdown(s string) (*Workbook, error) {
	if !utf8.ValidString(s) {
		line := 1 + strings.Count(s[:firstInvalid(s)], "\n")
		return nil, fmt.Errorf("line %d is not UTF-8 text: save the file as UTF-8", line)
	}
	wb := &Workbook{Sheets: map[string]*Sheet{}}
	var name string
	var grid [][]string
	WalkMarkdown(s, func(sheet string) error {
		if name != "" {
			wb.add(name, grid)
		}
		name, grid = sheet, nil
		return nil
	}, func(cells []string) error {
		grid = append(grid, cells)
		return nil
	})
	if name != "" {
		wb.add(name, grid)
	}
	if len(wb.Sheets) == 0 {
		return nil, fmt.Errorf("no sheet found in the markdown")
	}
	return wb, nil
}

// WalkMarkdown calls sheet for each sheet of a markdown workbook and row for
// each of its rows (the header row first), cells trimmed.
func WalkMarkdown(md string, sheet func(name string) error, row func(cells []string) error) error {
	inSheet := false
	for _, line := range strings.Split(md, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if strings.HasPrefix(cells[0], "#") {
			continue
		}
		var err error
		switch {
		case cells[0] != "":
			inSheet = true
			err = sheet(cells[0])
		case inSheet:
			err = row(cells[1:])
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// add makes a sheet of a grid whose first non-empty row is the header.
func (wb *Workbook) add(name string, grid [][]string) {
	sh := &Sheet{Name: strings.TrimSpace(name)}
	start := 0
	for start < len(grid) && allEmpty(grid[start]) {
		start++
	}
	if start < len(grid) {
		// As pyxform: headers are split on "::", or, in a sheet where no
		// header has "::" (older forms), on ":" (label:English).
		double := false
		for _, h := range grid[start] {
			double = double || strings.Contains(h, "::")
		}
		// As pyxform: a run of more than 20 empty headers ends the columns,
		// and a run of more than 60 empty rows ends the sheet (spreadsheet
		// programs leave stray cells far below a form).
		empty := 0
		for _, h := range grid[start] {
			if strings.TrimSpace(h) == "" {
				if empty == maxEmptyColumns {
					break
				}
				empty++
			} else {
				empty = 0
			}
			if !double {
				h = singleColons(h)
			}
			sh.Headers = append(sh.Headers, normalizeHeader(h))
			sh.Raw = append(sh.Raw, strings.TrimSpace(h))
		}
		if strings.EqualFold(sh.Name, "settings") && slices.Contains(sh.Raw, "form_id") {
			// pyxform drops id_string when form_id is there too.
			if k := slices.Index(sh.Raw, "id_string"); k >= 0 {
				sh.Headers[k] = ""
			}
		}
		empty = 0
		for i, r := range grid[start+1:] {
			if !holdsValue(r, sh.Headers) {
				if empty == maxEmptyRows {
					break
				}
				empty++
				continue
			}
			empty = 0
			row := Row{Num: start + i + 2, Cells: map[string]string{}}
			for j, c := range r[:min(len(r), len(sh.Headers))] {
				// Two headers naming one column (name and value, say): the
				// later cell holding a value wins, as in pyxform.
				h := sh.Headers[j]
				if _, set := row.Cells[h]; h != "" && (!set || strings.TrimSpace(c) != "") {
					row.Cells[h] = c
				}
			}
			sh.Rows = append(sh.Rows, row)
		}
	}
	wb.Sheets[strings.ToLower(sh.Name)] = sh
}

// The runs of empty columns and rows after which pyxform stops reading.
const (
	maxEmptyColumns = 20
	maxEmptyRows    = 60
)

// holdsValue reports whether a row has a value under a header.
func holdsValue(r []string, headers []string) bool {
	for j, c := range r {
		if j < len(headers) && headers[j] != "" && strings.TrimSpace(c) != "" {
			return true
		}
	}
	return false
}

func allEmpty(r []string) bool {
	for _, c := range r {
		if strings.TrimSpace(c) != "" {
			return false
		}
	}
	return true
}

// headerAliases are the other spellings pyxform accepts for columns.
var headerAliases = map[string]string{
	"list name":           "list_name",
	"caption":             "label",
	"id_string":           "form_id",
	"required message":    "required_message",
	"constraint message":  "constraint_message",
	"jr:constraintmsg":    "constraint_message",
	"jr:requiredmsg":      "required_message",
	"calculate":           "calculation",
	"read_only":           "readonly",
	"choice filter":       "choice_filter",
	"repeat count":        "repeat_count",
	"jr:count":            "repeat_count",
	"image":               "media::image",
	"audio":               "media::audio",
	"video":               "media::video",
	"big-image":           "media::big-image",
	"value":               "name",
	"public key":          "public_key",
	"submission url":      "submission_url",
	"form title":          "form_title",
	"form id":             "form_id",
	"instance name":       "instance_name",
	"default language":    "default_language",
	"guidance hint":       "guidance_hint",
	"default sensitivity": "default_sensitivity",
	"legal basis":         "legal_basis",
	"subject id":          "subject_id",
	// pyxform's survey_header, list_header and settings_header aliases.
	"relevance":            "relevant",
	"constraining_message": "constraint_message",
	"command":              "type",
	"tag":                  "name",
	"count":                "repeat_count",
	"noapperrorstring":     "no_app_error_string",
	"requiredmsg":          "required_message",
	"set_form_title":       "form_title",
	"set_form_id":          "form_id",
}

// groupedColumns are the columns pyxform reads under a group prefix
// (bind::relevant is the relevant column, control::appearance the
// appearance column): its header "relevant" is the alias of bind::relevant.
var groupedColumns = map[string]map[string]string{
	"bind": {"relevant": "relevant", "required": "required", "constraint": "constraint", "calculate": "calculation",
		"readonly": "readonly", "jr:constraintmsg": "constraint_message", "jr:requiredmsg": "required_message",
		"jr:noapperrorstring": "no_app_error_string"},
	"control": {"appearance": "appearance", "jr:count": "repeat_count", "autoplay": "autoplay", "rows": "rows"},
}

// groupedHeader rewrites bind::X and control::X (body::X) headers naming a
// column Haven reads as that column, keeping a language after them.
func groupedHeader(h string) string {
	group, rest, ok := strings.Cut(h, "::")
	if !ok {
		return h
	}
	g := strings.ToLower(strings.TrimSpace(group))
	if g == "body" {
		g = "control"
	}
	cols := groupedColumns[g]
	if cols == nil {
		return h
	}
	key, lang, hasLang := strings.Cut(rest, "::")
	col, ok := cols[strings.ToLower(strings.TrimSpace(key))]
	if !ok {
		return h
	}
	if hasLang {
		return col + "::" + lang
	}
	return col
}

// knownHeader reports whether h is a column Haven reads.
func knownHeader(h string) bool {
	switch h {
	case "label", "hint", "guidance_hint", "constraint_message", "required_message", "type", "name", "list_name", "required", "relevant",
		"constraint", "calculation", "default", "readonly", "appearance", "choice_filter", "repeat_count", "parameters", "trigger",
		"form_title", "form_id", "version", "instance_name", "default_language", "style", "public_key", "submission_url",
		"auto_send", "auto_delete", "client_editable", "prefix", "delimiter", "instance_xmlns", "compact_tag", "namespaces",
		"allow_choice_duplicates", "clean_text_values", "omit_instanceID", "autoplay", "purpose", "sensitivity",
		"default_sensitivity", "legal_basis", "consent", "subject_id", "save_to", "media", "no_app_error_string", "rows",
		"dataset", "entity_id", "create_if", "update_if":
		return true
	}
	return false
}

// singleColons rewrites a header delimited by single colons with double
// ones, keeping jr: prefixes whole (jr:count, label:jr:constraintMsg...).
func singleColons(h string) string {
	if !strings.Contains(h, ":") {
		return h
	}
	parts := strings.Split(h, ":")
	var tokens []string
	for i := 0; i < len(parts); i++ {
		t := strings.TrimSpace(parts[i])
		if t == "jr" && i+1 < len(parts) {
			i++
			t = "jr:" + strings.TrimSpace(parts[i])
		}
		tokens = append(tokens, t)
	}
	if len(tokens) == 1 {
		return tokens[0]
	}
	return strings.Join(tokens, "::")
}

func normalizeHeader(h string) string {
	h = strings.TrimSpace(h)
	h = groupedHeader(h)
	base, lang, hasLang := strings.Cut(h, "::")
	lb := strings.ToLower(strings.TrimSpace(base))
	if a, ok := headerAliases[strings.Join(strings.Fields(lb), "_")]; ok {
		lb = a // pyxform also reads headers in snake case: "Repeat Count"
	} else if snake := strings.Join(strings.Fields(lb), "_"); knownHeader(snake) {
		lb = snake
	}
	if a, ok := headerAliases[lb]; ok {
		lb = a
	}
	switch lb {
	case "label", "hint", "guidance_hint", "constraint_message", "required_message", "media::image", "media::audio", "media::video", "media::big-image",
		"type", "name", "list_name", "required", "relevant", "constraint", "calculation", "default", "readonly", "appearance", "choice_filter",
		"repeat_count", "parameters", "trigger", "form_title", "form_id", "version", "instance_name", "default_language", "style",
		"public_key", "submission_url", "auto_send", "auto_delete", "client_editable", "prefix", "delimiter", "instance_xmlns", "compact_tag", "namespaces", "allow_choice_duplicates", "clean_text_values", "omit_instanceID", "autoplay",
		"purpose", "sensitivity", "default_sensitivity", "legal_basis", "consent", "subject_id",
		"dataset", "entity_id", "create_if", "update_if", "save_to":
		base = lb
	}
	if hasLang {
		return base + "::" + strings.TrimSpace(lang)
	}
	if lb == "image" || lb == "audio" || lb == "video" {
		return "media::" + lb
	}
	return base
}
