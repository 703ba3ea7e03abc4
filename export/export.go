// Package export writes what Haven hands out of a form's data: raw exports
// (a zip of CSV tables, an XLSX workbook, GeoJSON) and aggregates with
// small-cell suppression. It decides no permission: the application layer
// gives it the reader's view (which fields they see) and the rows to write,
// and it writes them in one pass with flat memory.
package export

import (
	"archive/zip"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/flate"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/formspec"
)

// Raw exports stream: submissions are read, decrypted and written one at a
// time, in one pass whatever the number of tables. A zip holds one table
// per repeat level: the first streams to the client as it is written, the
// others wait in encrypted spools with a key held only in memory (see
// zipEntries), so no plaintext reaches the disk.

// Options say what a raw export holds.
type Options struct {
	Format string // csv (a zip), table (the main table as one CSV), xlsx or geojson
	// SplitSelectMultiples adds a 0/1 column per choice of a select_multiple.
	SplitSelectMultiples bool
	// Attachments adds the submissions' files (within clearance) to a csv zip.
	Attachments bool
	// GeoField is the geo field a GeoJSON export maps; the first one by default.
	GeoField string
	// Labels writes the chosen choices' labels instead of their values, in
	// Language (the form's default language when empty).
	Labels   bool
	Language string
	// RawCSV writes CSV cells exactly as stored, for machine readers; by
	// default a cell a spreadsheet would run as a formula is neutralised.
	RawCSV bool
	// GeoCombined keeps a geopoint in one column ("lat lon alt acc"), as
	// stored; by default tables split it into latitude, longitude,
	// altitude and accuracy columns, as ODK Central's CSV does.
	GeoCombined bool
	// HeaderLabels names columns by their questions' labels (in Language)
	// instead of their field names.
	HeaderLabels bool
}

// geoParts name a split geopoint's columns, as ODK Central does.
var geoParts = []string{"Latitude", "Longitude", "Altitude", "Accuracy"}

// FileStem is a form id made fit to name a file (a download, a zip entry):
// the characters file systems refuse or read as folders become '_'. Form
// ids are any text (uuid:..., spaces, slashes), names on disk are not.
func FileStem(id string) string {
	out := strings.Map(func(r rune) rune {
		if strings.ContainsRune(`<>:"/\|?*`, r) || r < 0x20 {
			return '_'
		}
		return r
	}, id)
	if out == "" || out == "." || out == ".." {
		out = "_" + out
	}
	return out
}

// SafeCell neutralises a cell that a spreadsheet program would run as a
// formula (one starting with =, +, -, @, a tab or a carriage return), as
// OWASP recommends: a leading ' makes it text. A plain number (-3, +2.5)
// is no formula and stays as it is.
func SafeCell(v string) string {
	if v == "" {
		return v
	}
	switch v[0] {
	case '=', '+', '-', '@', '\t', '\r':
		if _, err := strconv.ParseFloat(v, 64); err == nil {
			return v
		}
		return "'" + v
	}
	return v
}

// View is what the reader may see, as the application layer decided it.
type View interface {
	// Sees reports whether the reader may see the field at path.
	Sees(path string) bool
	// DeviceIDs reports whether the reader may see device ids.
	DeviceIDs() bool
}

// Row is one submission to write: its record, its parsed XML, its consent
// record, and the schema of the form version it was filled in with.
type Row struct {
	Sub     *haven.Submission
	Inst    *formspec.Instance
	Consent *haven.ConsentRecord
	Schema  *formspec.Form
}

// Source gives an export what it writes: the rows (every call walks them
// again, in the same order), the files of a submission version, and
// scratch space for the tables that wait while the first one streams.
type Source interface {
	Rows(ctx context.Context, fn func(Row) error) error
	Attachments(ctx context.Context, versionID int64) ([]haven.Attachment, error)
	OpenFile(ctx context.Context, blobID int64) (io.ReadCloser, error)
	Scratch() (Scratch, error)
}

// Scratch is space to write a table into and read it back from, once,
// which no one can read after it is closed (storage.Spool).
type Scratch interface {
	io.Writer
	Reader() (io.Reader, error)
	Close() error
}

// Export is a raw export ready to stream.
type Export struct {
	ContentType, FileName string
	// Omitted lists the fields left out because they are above the
	// reader's clearance (in every version exported).
	Omitted   []string
	opts      Options
	layout    *layout
	deviceIDs bool // the reader may see device ids
	src       Source
}

// column is one column of an export table.
type column struct {
	header string
	path   string // absolute path of the field, repeat indexes removed
	choice string // a split select_multiple's choice: "1" when chosen
	geo    string // geopoint, geotrace or geoshape
	part   int    // of a split geopoint: 1 latitude … 4 accuracy; 0 the whole value
	kind   string // the field's type (int, decimal, date, dateTime…), for typed cells
	slot   int    // where the field's value is in a row's values
}

// table is the main table or one repeat level's.
type table struct {
	name   string
	repeat string // the repeat's path; "" for the main table
	node   *pathNode
	cols   []column
	row    []string // reused for every row: emit must not keep it
}

type layout struct {
	tables  []*table
	repeats map[string]bool
	visible map[string]bool // the paths of the columns the reader sees
	geo     []column
	// selects holds, for a labels export, each select's node in every
	// version (newest first), to find a choice's label in the newest that has it.
	selects map[string][]*formspec.Node
	lang    string
	// paths holds every column's and repeat's path as a tree of element
	// names, so a submission is matched to columns without building path
	// strings; values holds one row's field values, by slot.
	paths  *pathNode
	values []string
	// splitGeo splits geopoints into four columns; headerLabels names
	// columns by their labels.
	splitGeo, headerLabels bool
}

// pathNode is one element of the layout's paths.
type pathNode struct {
	kids   map[string]*pathNode
	slot   int // -1 when no column reads this element
	repeat bool
}

// node returns the node of an absolute path, adding it if needed.
func (l *layout) node(path string) *pathNode {
	n := l.paths
	for _, name := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		k := n.kids[name]
		if k == nil {
			if n.kids == nil {
				n.kids = map[string]*pathNode{}
			}
			k = &pathNode{slot: -1}
			n.kids[name] = k
		}
		n = k
	}
	return n
}

// index builds the path tree and gives every column its slot.
func (l *layout) index() {
	l.paths = &pathNode{slot: -1}
	for p := range l.repeats {
		l.node(p).repeat = true
	}
	slots := 0
	for _, t := range l.tables {
		if t.repeat != "" {
			t.node = l.node(t.repeat)
		}
		for i := range t.cols {
			n := l.node(t.cols[i].path)
			if n.slot < 0 {
				n.slot = slots
				slots++
			}
			t.cols[i].slot = n.slot
		}
	}
	l.values = make([]string, slots)
}

// New lays out a raw export of a form: versions are the schemas of the
// form versions it covers, newest first; the columns are the union of
// their fields, less those the view leaves out. Languages names every
// language of the form's versions, for checking opts.Language.
func New(formID string, versions []*formspec.Form, opts Options, view View) (*Export, error) {
	switch opts.Format {
	case "", "csv":
		opts.Format = "csv"
	case "xlsx", "geojson", "table":
	default:
		return nil, haven.Errorf(haven.EINVALID, "The export format %q is not one Haven writes: use csv, xlsx or geojson.", opts.Format)
	}
	lay := &layout{repeats: map[string]bool{}, visible: map[string]bool{}, splitGeo: !opts.GeoCombined && opts.Format != "geojson", headerLabels: opts.HeaderLabels, lang: opts.Language}
	if opts.Labels {
		lay.selects = map[string][]*formspec.Node{}
	}
	tables := map[string]*table{}
	seen := map[string]bool{}
	var omitted, langs []string
	for _, schema := range versions {
		if (opts.Labels || opts.HeaderLabels) && lay.lang == "" {
			lay.lang = schema.DefaultLanguage // the newest version's
		}
		for _, l := range schema.Languages {
			if !slices.Contains(langs, l) {
				langs = append(langs, l)
			}
		}
		lay.add(schema, schema.Root, "", tables, seen, opts.SplitSelectMultiples, formID)
	}
	if opts.Language != "" && !slices.Contains(langs, opts.Language) {
		if len(langs) == 0 {
			return nil, haven.Errorf(haven.EINVALID, "Form %q has no translations, so there is no language %q to choose: leave language out.", formID, opts.Language)
		}
		return nil, haven.Errorf(haven.EINVALID, "Form %q has no language %q; its languages are: %s.", formID, opts.Language, strings.Join(langs, ", "))
	}
	// Leave out what the reader may not see.
	for _, t := range lay.tables {
		kept := t.cols[:0]
		for _, c := range t.cols {
			if !view.Sees(c.path) {
				if c.choice == "" {
					omitted = append(omitted, c.path)
				}
				continue
			}
			kept = append(kept, c)
			lay.visible[c.path] = true
			if c.geo != "" && c.part <= 1 && t.repeat == "" {
				lay.geo = append(lay.geo, c)
			}
		}
		t.cols = kept
	}
	lay.index()
	e := &Export{opts: opts, layout: lay, Omitted: omitted, deviceIDs: view.DeviceIDs()}
	if e.Omitted == nil {
		e.Omitted = []string{}
	}
	switch opts.Format {
	case "csv":
		e.ContentType, e.FileName = "application/zip", FileStem(formID)+".csv.zip"
	case "xlsx":
		e.ContentType, e.FileName = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", FileStem(formID)+".xlsx"
	case "geojson":
		e.ContentType, e.FileName = "application/geo+json", FileStem(formID)+".geojson"
		if err := e.pickGeo(); err != nil {
			return nil, err
		}
	case "table":
		e.ContentType, e.FileName = "text/csv; charset=utf-8", FileStem(formID)+".csv"
	}
	return e, nil
}

// add walks a version's schema into tables and columns.
func (l *layout) add(f *formspec.Form, n *formspec.Node, repeat string, tables map[string]*table, seen map[string]bool, split bool, formID string) {
	t := tables[repeat]
	if t == nil {
		t = &table{name: FileStem(formID), repeat: repeat}
		if repeat != "" {
			t.name = FileStem(formID) + "-" + n.Name
		}
		tables[repeat] = t
		l.tables = append(l.tables, t)
	}
	for _, c := range n.Children {
		if c.Repeat {
			l.repeats[c.Path] = true
			l.add(f, c, c.Path, tables, seen, split, formID)
			continue
		}
		if c.IsGroup() {
			l.add(f, c, repeat, tables, seen, split, formID)
			continue
		}
		if l.selects != nil && len(c.ChoiceLabels) > 0 {
			l.selects[c.Path] = append(l.selects[c.Path], c)
		}
		if seen[c.Path] || formspec.IsNote(c) {
			continue // a note is shown, never answered: no column
		}
		seen[c.Path] = true
		base := repeat
		if base == "" {
			base = f.Root.Path
		}
		header := strings.ReplaceAll(strings.TrimPrefix(strings.TrimPrefix(c.Path, base), "/"), "/", "-")
		if l.headerLabels {
			if lab := c.Label[l.lang]; lab != "" {
				header = lab
			} else if lab := c.Label[""]; lab != "" {
				header = lab
			}
		}
		col := column{header: header, path: c.Path, kind: c.Type}
		switch c.Type {
		case "geopoint", "geotrace", "geoshape":
			col.geo = c.Type
		}
		if c.Type == "geopoint" && l.splitGeo {
			for i, part := range geoParts {
				t.cols = append(t.cols, column{header: header + "-" + part, path: c.Path, geo: c.Type, part: i + 1, kind: "decimal"})
			}
			continue
		}
		t.cols = append(t.cols, col)
		if split && c.Control == "select" && c.Choices != nil {
			choices := make([]string, 0, len(c.Choices))
			for v := range c.Choices {
				choices = append(choices, v)
			}
			sort.Strings(choices)
			for _, v := range choices {
				t.cols = append(t.cols, column{header: header + "/" + v, path: c.Path, choice: v})
			}
		}
	}
}

func (e *Export) pickGeo() error {
	for _, c := range e.layout.geo {
		if e.opts.GeoField == "" || c.path == e.opts.GeoField || c.header == e.opts.GeoField {
			e.layout.geo = []column{c}
			return nil
		}
	}
	if e.opts.GeoField != "" {
		return haven.Errorf(haven.EINVALID, "The form has no geo field %q outside repeats within your clearance, so there is nothing to map. Check geoField, or export csv or xlsx instead.", e.opts.GeoField)
	}
	return haven.Errorf(haven.EINVALID, "The form has no geo field outside repeats within your clearance, so there is nothing to map. Export csv or xlsx instead.")
}

// headers returns a table's header row.
func (e *Export) headers(t *table) []string {
	var h []string
	if t.repeat == "" {
		h = append(h, "SubmissionDate")
	}
	for _, c := range t.cols {
		h = append(h, c.header)
	}
	if t.repeat != "" {
		return append(h, "PARENT_KEY", "KEY")
	}
	h = append(h, "KEY", "SubmitterID", "AttachmentsPresent", "AttachmentsExpected", "ReviewState")
	if e.deviceIDs {
		h = append(h, "DeviceID")
	}
	return append(h, "FormVersion", "ConsentOutcome", "LegalBasis", "ConsentStatementVersion", "ConsentRecordedAt")
}

// flatten sets the values of the fields in e (n is its node), leaving out
// those inside a nested repeat.
func (l *layout) flatten(e *formspec.Element, n *pathNode) {
	for _, c := range e.Children {
		k := n.kids[c.Name]
		if k == nil || k.repeat {
			continue
		}
		if len(c.Children) > 0 {
			l.flatten(c, k)
		} else if k.slot >= 0 {
			l.values[k.slot] = c.Text
		}
	}
}

func (l *layout) cell(c column) string {
	v := l.values[c.slot]
	if c.part > 0 {
		if f := strings.Fields(v); len(f) >= c.part {
			return f[c.part-1]
		}
		return ""
	}
	if c.choice == "" {
		if nodes := l.selects[c.path]; nodes != nil && v != "" {
			return l.label(nodes, v)
		}
		return v
	}
	for _, x := range strings.Fields(v) {
		if x == c.choice {
			return "1"
		}
	}
	return "0"
}

// label writes a select's answer as its choices' labels ("; " between the
// choices of a select_multiple); a choice without a label keeps its value.
func (l *layout) label(nodes []*formspec.Node, v string) string {
	one := func(x string) string {
		for _, n := range nodes {
			if t := n.ChoiceLabel(x, l.lang); t != "" {
				return t
			}
		}
		return x
	}
	if nodes[0].Control != "select" {
		return one(strings.TrimSpace(v))
	}
	parts := strings.Fields(v)
	for i, x := range parts {
		parts[i] = one(x)
	}
	return strings.Join(parts, "; ")
}

// rows calls emit for every row of table t in one submission. emit must
// not keep the row: its slice is reused.
func (e *Export) rows(t *table, r Row, emit func([]string) error) error {
	sub, inst, consent := r.Sub, r.Inst, r.Consent
	lay := e.layout
	root := lay.paths.kids[inst.Root.Name]
	if root == nil {
		root = &pathNode{slot: -1} // a root no version has: no field matches
	}
	if t.repeat == "" {
		clear(lay.values)
		lay.flatten(inst.Root, root)
		row := append(t.row[:0], sub.CreatedAt.UTC().Format(time.RFC3339Nano))
		for _, c := range t.cols {
			row = append(row, lay.cell(c))
		}
		review := ""
		if sub.ReviewState != nil {
			review = *sub.ReviewState
		}
		row = append(row, sub.InstanceID, strconv.FormatInt(sub.SubmitterID, 10), strconv.Itoa(sub.Current.AttachmentsPresent),
			strconv.Itoa(sub.Current.AttachmentsExpected), review)
		if e.deviceIDs {
			row = append(row, sub.DeviceID)
		}
		row = append(row, sub.Current.FormVersion)
		if consent != nil {
			row = append(row, consent.Outcome, consent.LegalBasis, consent.StatementVersion, consent.ReceivedAt.UTC().Format(time.RFC3339Nano))
		} else {
			row = append(row, "", "", "", "")
		}
		t.row = row
		return emit(row)
	}
	// Repeat rows: keys as ODK Central writes them, uuid:x/member[2].
	var walk func(el *formspec.Element, n *pathNode, key string) error
	walk = func(el *formspec.Element, n *pathNode, key string) error {
		var index map[string]int
		for _, c := range el.Children {
			k := n.kids[c.Name]
			if k == nil || (len(c.Children) == 0 && !k.repeat) {
				continue
			}
			ck := key
			if k.repeat {
				if index == nil {
					index = map[string]int{}
				}
				index[c.Name]++
				ck = key + "/" + c.Name + "[" + strconv.Itoa(index[c.Name]) + "]"
				if k == t.node {
					clear(lay.values)
					lay.flatten(c, k)
					row := t.row[:0]
					for _, col := range t.cols {
						row = append(row, lay.cell(col))
					}
					row = append(row, key, ck)
					t.row = row
					if err := emit(row); err != nil {
						return err
					}
					continue
				}
			}
			if err := walk(c, k, ck); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(inst.Root, root, sub.InstanceID)
}

// allRows makes one pass over the submissions, giving each table's rows to
// its emit (emit[i] for table i).
func (e *Export) allRows(ctx context.Context, emit []func([]string) error) error {
	return e.src.Rows(ctx, func(r Row) error {
		for i, t := range e.layout.tables {
			if err := e.rows(t, r, emit[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// newZip starts a zip stream whose entries are deflated at the fastest
// level of klauspost/compress: on a 105 MB export it compresses at about
// 290 MB/s where the standard library's default level manages 43 MB/s, and
// the zip comes out a quarter larger (26% of the CSV against 21%).
// Compression at the default level took most of an export's time.
func newZip(w io.Writer) *zip.Writer {
	z := zip.NewWriter(w)
	z.RegisterCompressor(zip.Deflate, func(w io.Writer) (io.WriteCloser, error) {
		return flate.NewWriter(w, flate.BestSpeed)
	})
	return z
}

// createEntry adds an entry dated now (zip.Writer.Create dates it 1980).
func createEntry(z *zip.Writer, name string, method uint16) (io.Writer, error) {
	return z.CreateHeader(&zip.FileHeader{Name: name, Method: method, Modified: time.Now()})
}

// zipEntries writes the zip entries named in names from one pass: fill gets
// a writer per entry, all open at once. The first entry streams straight
// into the zip; the others wait in spools (encrypted scratch files that
// nothing can read after the export, see storage.Spool) and are copied into
// their entries after it. So every submission is read, decrypted and parsed
// once, whatever the number of tables, and memory stays flat.
func zipEntries(z *zip.Writer, names []string, spool func() (Scratch, error), fill func(ws []io.Writer) error) error {
	ws := make([]io.Writer, len(names))
	spools := make([]Scratch, len(names))
	defer func() {
		for _, sp := range spools {
			if sp != nil {
				sp.Close()
			}
		}
	}()
	first, err := createEntry(z, names[0], zip.Deflate)
	if err != nil {
		return err
	}
	ws[0] = first
	for i := 1; i < len(names); i++ {
		if spools[i], err = spool(); err != nil {
			return err
		}
		ws[i] = spools[i]
	}
	if err := fill(ws); err != nil {
		return err
	}
	for i := 1; i < len(names); i++ {
		r, err := spools[i].Reader()
		if err != nil {
			return err
		}
		f, err := createEntry(z, names[i], zip.Deflate)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, r); err != nil {
			return err
		}
		spools[i].Close()
		spools[i] = nil
	}
	return nil
}

// Write streams the export to w, reading what it writes from src.
func (e *Export) Write(ctx context.Context, w io.Writer, src Source) error {
	e.src = src
	switch e.opts.Format {
	case "xlsx":
		return e.writeXLSX(ctx, w)
	case "geojson":
		return e.writeGeoJSON(ctx, w)
	case "table":
		return e.writeTable(ctx, w)
	}
	return e.writeCSV(ctx, w)
}

// writeTable writes the submissions' own table as one CSV, without the
// repeats' tables (ODK Central's submissions.csv).
func (e *Export) writeTable(ctx context.Context, w io.Writer) error {
	cw := csv.NewWriter(w)
	main := e.layout.tables[0]
	if err := cw.Write(e.headers(main)); err != nil {
		return err
	}
	err := e.src.Rows(ctx, func(r Row) error {
		return e.rows(main, r, func(row []string) error {
			if !e.opts.RawCSV {
				for j := range row {
					row[j] = SafeCell(row[j])
				}
			}
			return cw.Write(row)
		})
	})
	if err != nil {
		return err
	}
	cw.Flush()
	return cw.Error()
}

func (e *Export) writeCSV(ctx context.Context, w io.Writer) error {
	z := newZip(w)
	var names []string
	for _, t := range e.layout.tables {
		names = append(names, t.name+".csv")
	}
	err := zipEntries(z, names, e.src.Scratch, func(ws []io.Writer) error {
		cws := make([]*csv.Writer, len(ws))
		emit := make([]func([]string) error, len(ws))
		for i, t := range e.layout.tables {
			cws[i] = csv.NewWriter(ws[i])
			if err := cws[i].Write(e.headers(t)); err != nil {
				return err
			}
			emit[i] = cws[i].Write
			if !e.opts.RawCSV {
				w := cws[i]
				emit[i] = func(row []string) error {
					for j := range row {
						row[j] = SafeCell(row[j])
					}
					return w.Write(row)
				}
			}
		}
		if err := e.allRows(ctx, emit); err != nil {
			return err
		}
		for _, cw := range cws {
			if cw.Flush(); cw.Error() != nil {
				return cw.Error()
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(e.Omitted) > 0 {
		f, err := createEntry(z, "OMITTED.txt", zip.Deflate)
		if err != nil {
			return err
		}
		fmt.Fprintf(f, "These fields are above your clearance and were left out:\n%s\n", strings.Join(e.Omitted, "\n"))
	}
	if e.opts.Attachments {
		if err := e.writeMedia(ctx, z); err != nil {
			return err
		}
	}
	return z.Close()
}

// writeMedia adds the files of fields within the reader's clearance.
func (e *Export) writeMedia(ctx context.Context, z *zip.Writer) error {
	type file struct {
		name   string
		blobID int64
	}
	var files []file
	err := e.src.Rows(ctx, func(r Row) error {
		as, err := e.src.Attachments(ctx, r.Sub.Current.ID)
		if err != nil || len(as) == 0 {
			return err
		}
		fields := r.Schema.FileFields(r.Inst)
		for _, a := range as {
			if path, ok := fields[a.Name]; a.Exists && ok && e.layout.visible[path] {
				files = append(files, file{strings.TrimPrefix(r.Sub.InstanceID, "uuid:") + "/" + a.Name, a.BlobID})
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, f := range files {
		rc, err := e.src.OpenFile(ctx, f.blobID)
		if err != nil {
			return err
		}
		zf, err := createEntry(z, "media/"+f.name, zip.Store) // photos, audio and video are compressed already
		if err == nil {
			_, err = io.Copy(zf, rc)
		}
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func (e *Export) writeGeoJSON(ctx context.Context, w io.Writer) error {
	geo := e.layout.geo[0]
	main := e.layout.tables[0]
	headers := e.headers(main)
	if _, err := io.WriteString(w, `{"type":"FeatureCollection","features":[`); err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	first := true
	err := e.src.Rows(ctx, func(r Row) error {
		return e.rows(main, r, func(row []string) error {
			geom := geometry(geo.geo, row[geoIndex(main, geo)+1])
			if geom == nil {
				return nil // no location recorded
			}
			props := make(map[string]string, len(row))
			for i, h := range headers {
				props[h] = row[i]
			}
			if !first {
				if _, err := io.WriteString(w, ","); err != nil {
					return err
				}
			}
			first = false
			return enc.Encode(map[string]any{"type": "Feature", "id": r.Sub.InstanceID, "geometry": geom, "properties": props})
		})
	})
	if err != nil {
		return err
	}
	omitted, _ := json.Marshal(e.Omitted)
	_, err = fmt.Fprintf(w, `],"omittedFields":%s}`, omitted)
	return err
}

func geoIndex(t *table, c column) int {
	for i, x := range t.cols {
		if x.path == c.path && x.choice == "" {
			return i
		}
	}
	return -1
}

// geometry turns an ODK geo value ("lat lon alt acc; ...") into a GeoJSON
// geometry, or nil when it is empty or unreadable.
func geometry(kind, v string) map[string]any {
	var coords [][]float64
	for _, pt := range strings.Split(v, ";") {
		f := strings.Fields(pt)
		if len(f) < 2 {
			continue
		}
		lat, err1 := strconv.ParseFloat(f[0], 64)
		lon, err2 := strconv.ParseFloat(f[1], 64)
		if err1 != nil || err2 != nil {
			return nil
		}
		c := []float64{lon, lat}
		if len(f) > 2 {
			if alt, err := strconv.ParseFloat(f[2], 64); err == nil {
				c = append(c, alt)
			}
		}
		coords = append(coords, c)
	}
	switch {
	case len(coords) == 0:
		return nil
	case kind == "geopoint":
		return map[string]any{"type": "Point", "coordinates": coords[0]}
	case kind == "geoshape":
		return map[string]any{"type": "Polygon", "coordinates": [][][]float64{coords}}
	}
	return map[string]any{"type": "LineString", "coordinates": coords}
}
