package app

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/export"
	"github.com/haven-org/haven/formspec"
	"github.com/haven-org/haven/storage"
)

// ExportOptions say what a raw export holds and which submissions.
type ExportOptions struct {
	Format string // csv (a zip of tables), xlsx or geojson
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
	RawCSV       bool
	Since, Until *time.Time // by time of arrival: Since inclusive, Until exclusive
	Version      string     // one form version only
	// Filter is an OData $filter on the submissions' metadata (ODK
	// Central's submissions.csv.zip?$filter=...).
	Filter string
	// GeoCombined keeps each geopoint in one column instead of latitude,
	// longitude, altitude and accuracy; HeaderLabels names columns by their
	// questions' labels (in Language).
	GeoCombined, HeaderLabels bool
}

func (o ExportOptions) writer() export.Options {
	return export.Options{Format: o.Format, SplitSelectMultiples: o.SplitSelectMultiples, Attachments: o.Attachments,
		GeoField: o.GeoField, Labels: o.Labels, Language: o.Language, RawCSV: o.RawCSV, GeoCombined: o.GeoCombined, HeaderLabels: o.HeaderLabels}
}

// details lists the options for the audit trail.
func (o ExportOptions) details() map[string]any {
	d := map[string]any{"format": o.Format}
	for k, v := range map[string]string{"version": o.Version, "geoField": o.GeoField, "language": o.Language, "filter": o.Filter} {
		if v != "" {
			d[k] = v
		}
	}
	for k, v := range map[string]bool{"splitSelectMultiples": o.SplitSelectMultiples, "attachments": o.Attachments, "labels": o.Labels, "rawCSV": o.RawCSV,
		"geoCombined": o.GeoCombined, "headerLabels": o.HeaderLabels} {
		if v {
			d[k] = true
		}
	}
	for k, v := range map[string]*time.Time{"since": o.Since, "until": o.Until} {
		if v != nil {
			d[k] = v.UTC().Format(time.RFC3339)
		}
	}
	return d
}

// Export is a raw export ready to stream, already audited.
type Export struct {
	*export.Export
	src *rows
}

// Write streams the export to w.
func (e *Export) Write(ctx context.Context, w io.Writer) error { return e.Export.Write(ctx, w, e.src) }

// Export prepares a raw export of a form for the reader: the columns are
// the union of the fields of every published version (newest first), less
// those above the reader's clearance. The export is audited, with its
// options and the fields it leaves out, before its first byte is written.
func (s *Service) Export(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string, opts ExportOptions) (_ *Export, err error) {
	e := s.event(ctx, p, "submission.export", projectID, objForm(projectID, xmlFormID))
	e.Details = map[string]any{"parameters": opts.details()}
	defer func() { s.record(ctx, e, err) }()
	form, err := s.formFor(ctx, p, haven.ActionSubmissionRead, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	versions, err := s.forms.Versions(ctx, form.ID)
	if err != nil {
		return nil, err
	}
	if len(versions) == 0 {
		return nil, haven.Errorf(haven.ENOTFOUND, "Form %q has never been published, so it has no submissions to export.", xmlFormID)
	}
	var schemas []*formspec.Form
	for _, v := range versions {
		if opts.Version != "" && v.Version != opts.Version {
			continue
		}
		schema, err := s.schema(ctx, v.ID)
		if err != nil {
			return nil, err
		}
		schemas = append(schemas, schema)
	}
	if len(schemas) == 0 {
		return nil, haven.Errorf(haven.ENOTFOUND, "Form %q has no published version %q.", xmlFormID, opts.Version)
	}
	view, err := s.formView(ctx, p, form)
	if err != nil {
		return nil, err
	}
	var filter *export.ODataFilter
	if opts.Filter != "" {
		if filter, err = export.ParseODataFilter(opts.Filter, false); err != nil {
			return nil, err
		}
	}
	x, err := export.New(form.XMLFormID, schemas, opts.writer(), view)
	if err != nil {
		return nil, err
	}
	detail(e, "omitted", x.Omitted)
	s.record(ctx, e, nil)
	return &Export{Export: x, src: &rows{s: s, form: form, filter: storage.Filter{Since: opts.Since, Until: opts.Until, Version: opts.Version}, keep: filter}}, nil
}

// AggregateOptions is an aggregate query.
type AggregateOptions = export.AggregateOptions

// Aggregate is an aggregate's answer: every cell, margins included.
type Aggregate = export.Aggregate

// Aggregate answers an aggregate query on a form with small-cell
// suppression. A dimension or measure above the reader's clearance (in any
// version of the form) is refused; every query is audited.
func (s *Service) Aggregate(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string, opts AggregateOptions) (_ *Aggregate, err error) {
	e := s.event(ctx, p, "submission.aggregate", projectID, objForm(projectID, xmlFormID))
	e.Details = map[string]any{"by": opts.By, "measure": opts.Measure}
	defer func() { s.record(ctx, e, err) }()
	pr, err := s.project(ctx, p, haven.ActionAggregate, projectID)
	if err != nil {
		return nil, err
	}
	form, err := s.forms.Get(ctx, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	if form.CurrentVersionID == 0 {
		return nil, haven.Errorf(haven.ENOTFOUND, "Form %q has never been published.", xmlFormID)
	}
	schema, err := s.schema(ctx, form.CurrentVersionID)
	if err != nil {
		return nil, err
	}
	q, err := export.Plan(schema, xmlFormID, opts)
	if err != nil {
		return nil, err
	}
	view, err := s.formView(ctx, p, form)
	if err != nil {
		return nil, err
	}
	for _, n := range q.Fields() {
		if !view.Sees(n.Path) {
			return nil, haven.Errorf(haven.EFORBIDDEN, "%q is %s, above your clearance (%s), so it cannot be used in an aggregate.", n.Name, view.tier(n.Path), view.clearance)
		}
	}
	src := &rows{s: s, form: form}
	return q.Run(ctx, src.Rows, pr.MinCellSize, schema.DefaultSensitivity == haven.Level3)
}

// rows walks a form's submissions for exports and aggregates.
type rows struct {
	s      *Service
	form   *haven.Form
	filter storage.Filter
	keep   *export.ODataFilter // on metadata, before anything is decrypted
	// counted, when set, is told of each submission given to the export
	// (a background export's progress).
	counted func()
}

// Rows walks the submissions, parsed. Three stages run at once, so both
// cores work: reading, decrypting and parsing, and the caller's fn.
// Bounded queues between them keep memory flat.
func (r *rows) Rows(ctx context.Context, fn func(export.Row) error) error {
	type item struct {
		row export.Row
		xml storage.SealedXML
		err error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	read, parsed := make(chan item, 64), make(chan item, 64)
	done := make(chan error, 1)
	go func() {
		defer close(read)
		now := r.s.now()
		done <- r.s.submissions.Each(ctx, r.form.ProjectID, r.form.ID, r.filter, func(sub *haven.Submission, xml storage.SealedXML, consent *haven.ConsentRecord) error {
			if !r.keep.Match(meta(sub), now) {
				return nil
			}
			select {
			case read <- item{row: export.Row{Sub: sub, Consent: consent}, xml: xml}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	go func() {
		defer close(parsed)
		for it := range read {
			var xml []byte
			if xml, it.err = it.xml.Open(); it.err == nil {
				it.row.Inst, it.err = formspec.ParseInstance(xml, r.s.Limits.XML)
			}
			if it.err == nil {
				it.row.Schema, it.err = r.s.schema(ctx, it.row.Sub.Current.FormVersionID)
			}
			it.xml = storage.SealedXML{}
			select {
			case parsed <- it:
			case <-ctx.Done():
			}
		}
	}()
	var failed error
	for it := range parsed {
		if failed != nil {
			continue // drain, so the stages see the cancellation and stop
		}
		err := it.err
		if err == nil {
			err = fn(it.row)
		}
		if err == nil && r.counted != nil {
			r.counted()
		}
		if err != nil {
			failed = err
			cancel()
		}
	}
	if err := <-done; failed == nil {
		return err
	}
	return failed
}

// Attachments lists the files of a submission version.
func (r *rows) Attachments(ctx context.Context, versionID int64) ([]haven.Attachment, error) {
	return r.s.submissions.Attachments(ctx, versionID)
}

// OpenFile opens a stored file.
func (r *rows) OpenFile(ctx context.Context, blobID int64) (io.ReadCloser, error) {
	rc, _, err := r.s.blobs.Open(ctx, blobID)
	return rc, err
}

// Scratch is an encrypted spool under a key that exists only in memory.
func (r *rows) Scratch() (export.Scratch, error) { return r.s.st.DB.Spool() }

// ParseWhen reads a date (2026-11-23) or an RFC 3339 time, for export
// filters; name is the parameter, for the message.
func ParseWhen(name, v string) (*time.Time, error) {
	v = strings.TrimSpace(v)
	if t, err := time.Parse("2006-01-02", v); err == nil {
		return &t, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return nil, haven.Errorf(haven.EINVALID, "%s must be a date (2026-11-23) or a time (2026-11-23T08:00:00Z), not %q.", name, v)
	}
	return &t, nil
}

// FileStem is a form id made fit to name a downloaded file.
func FileStem(id string) string { return export.FileStem(id) }
