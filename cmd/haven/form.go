package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/haven-org/haven/formspec/xlsform"
)

const formUsage = `haven form convert FORM.xlsx [-o out.xml] [--form-id ID] [--root-name NAME] [--json] [--no-check]
  converts an XLSForm (.xlsx, or pyxform's markdown notation in a .md file) into an XForm, then
  checks what publishing checks (each field's purpose and tier, the legal basis, consent): the
  XForm is written either way, and the exit status is 1 when Haven would refuse to publish it.
  Errors (sheet, row, column, what to change) and warnings go to stderr; exit status 1 on errors.
  --json prints {xform, warnings, errors} to stdout instead.
haven form list|upload|attach|fields|publish|versions -p P ...   (on the server you logged in to)
`

func formCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] != "convert" {
		return formRemote(ctx, args, stdout, stderr)
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, formUsage)
		return haven.Errorf(haven.EINVALID, "usage: haven form convert FORM.xlsx")
	}
	fs, _ := flags("form convert", stderr)
	out := fs.String("o", "", "write the XForm here (default: stdout)")
	formID := fs.String("form-id", "", "form id when the settings sheet has none (default: the file name)")
	rootName := fs.String("root-name", "", "the instance's root element (default: data)")
	asJSON := fs.Bool("json", false, "print {xform, warnings, errors} as JSON")
	noCheck := fs.Bool("no-check", false, "only convert: skip the checks publishing makes (purpose, tier, legal basis, consent)")
	// Flags may come after the file name.
	var files []string
	rest := args[1:]
	for len(rest) > 0 {
		if err := parseFlags(fs, rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(files) != 1 {
		return haven.Errorf(haven.EINVALID, "give one XLSForm to convert: haven form convert FORM.xlsx")
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		return haven.Errorf(haven.EINVALID, "cannot read %s: %v", files[0], err)
	}
	if *formID == "" {
		*formID = strings.TrimSuffix(filepath.Base(files[0]), filepath.Ext(files[0]))
	}
	opt := xlsform.Options{FormID: *formID, RootName: *rootName}
	// One conversion and the process ends: collecting garbage less often
	// saves a quarter of the conversion's time (BENCHMARKS.md). The input
	// is bounded (xlsform.MaxWorkbookBytes), so the heap stays small.
	debug.SetGCPercent(400)
	var res *xlsform.Result
	if strings.EqualFold(filepath.Ext(files[0]), ".md") {
		res = xlsform.ConvertMarkdown(string(b), opt)
	} else {
		res = xlsform.ConvertWorkbook(b, opt)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			XForm    string               `json:"xform"`
			Warnings []xlsform.Diagnostic `json:"warnings"`
			Errors   []xlsform.Diagnostic `json:"errors"`
		}{string(res.XForm), res.Warnings, res.Errors}); err != nil {
			return err
		}
	} else {
		for _, w := range res.Warnings {
			fmt.Fprintln(stderr, "warning:", w)
		}
		for _, e := range res.Errors {
			fmt.Fprintln(stderr, "error:", e)
		}
	}
	if len(res.Errors) > 0 {
		return haven.Errorf(haven.EINVALID, "%s was not converted: %d error(s).", files[0], len(res.Errors))
	}
	if *asJSON {
		return nil
	}
	if *out == "" {
		if _, err := stdout.Write(res.XForm); err != nil {
			return err
		}
	} else if err := os.WriteFile(*out, res.XForm, 0o644); err != nil {
		return err
	}
	if res.Itemsets != nil && *out != "" {
		// A select_one_external reads itemsets.csv: made beside the XForm, as pyxform does.
		p := filepath.Join(filepath.Dir(*out), "itemsets.csv")
		if err := writeNew(p, res.Itemsets); err != nil {
			fmt.Fprintln(stderr, "warning:", haven.ErrorMessage(err))
		} else {
			fmt.Fprintf(stderr, "Wrote %s from the external_choices sheet: attach it with the form (haven form upload does it for you).\n", p)
		}
	}
	if *noCheck {
		return nil
	}
	// What publishing checks, checked now: a designer learns before uploading.
	if err := app.CheckPublishable(res.XForm, res.Rows); err != nil {
		printProblems(stderr, err)
		return haven.Errorf(haven.EINVALID, "%s converts, but Haven would refuse to publish it: fix the problems above (one a line) and convert again.", files[0])
	}
	fmt.Fprintf(stderr, "%s converts, and every field says why it is collected and how sensitive it is: Haven will publish it.\n", files[0])
	return nil
}
