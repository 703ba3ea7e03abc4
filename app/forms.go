package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"sort"
	"strings"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/formspec"
	"github.com/haven-org/haven/formspec/xlsform"
	"github.com/haven-org/haven/storage"
)

// Diagnostic is an XLSForm conversion's error or warning, placed in the
// workbook (sheet, row, column).
type Diagnostic = xlsform.Diagnostic

// Field is the schema view of one field: path, type, purpose and tiers.
type Field = formspec.Field

// Upload is a form as a client uploaded it: an XForm, or an XLSForm
// (.xlsx) to convert.
type Upload struct {
	Body        []byte
	ContentType string
	// FormIDFallback names the form when an XLSForm's settings do not
	// (the X-XlsForm-FormId-Fallback header, as in ODK Central).
	FormIDFallback string
}

// xlsx reports whether the upload is a spreadsheet.
func (u Upload) xlsx() bool {
	ct, _, _ := mime.ParseMediaType(u.ContentType)
	return strings.Contains(ct, "spreadsheetml") || strings.Contains(ct, "ms-excel")
}

// keep stores an uploaded XLSForm with the version made from it, so it can
// be downloaded as uploaded (Central's .xlsx endpoints).
func (u Upload) keep(nv *storage.NewFormVersion) {
	if u.xlsx() {
		// Typed by what it is, whatever the client said: an .xls sent as
		// .xlsx is still downloaded as .xls.
		nv.XLSX = u.Body
		nv.XLSXType = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
		if xlsform.IsXLS(u.Body) {
			nv.XLSXType = "application/vnd.ms-excel"
		}
	}
}

// UploadLimit is the largest form upload of a content type Haven reads.
func UploadLimit(contentType string) int64 {
	if (Upload{ContentType: contentType}).xlsx() {
		return xlsform.MaxWorkbookBytes
	}
	return formspec.MaxFormSize
}

// TooLarge is the answer to an upload larger than limit.
func TooLarge(what string, limit int64) error {
	return haven.Errorf(haven.ETOOLARGE, "The %s is larger than %d bytes, the most Haven accepts. Nothing was stored.", what, limit)
}

// converted is an uploaded form as an XForm, with the conversion's
// warnings and, for an XLSForm, the survey row of each field.
type converted struct {
	xml      []byte
	warnings []Diagnostic
	rows     map[string]int
	itemsets []byte // itemsets.csv, made from the external_choices sheet
}

// convert turns an upload into an XForm: an XLSForm is converted, and its
// errors come back whole.
func convert(u Upload) (*converted, error) {
	if int64(len(u.Body)) > UploadLimit(u.ContentType) {
		return nil, TooLarge("form", UploadLimit(u.ContentType))
	}
	if !u.xlsx() {
		return &converted{xml: u.Body}, nil
	}
	res := xlsform.ConvertWorkbook(u.Body, xlsform.Options{FormID: u.FormIDFallback})
	if len(res.Errors) > 0 {
		msgs := make([]string, len(res.Errors))
		for i, e := range res.Errors {
			msgs[i] = e.String()
		}
		return nil, &haven.Error{Code: haven.EINVALID,
			Message: "The XLSForm could not be converted, so nothing was stored: " + strings.Join(msgs, " "),
			Details: map[string]any{"errors": res.Errors, "warnings": res.Warnings}}
	}
	return &converted{xml: res.XForm, warnings: res.Warnings, rows: res.Rows, itemsets: res.Itemsets}, nil
}

// parseForm checks an XForm and prepares it for storage.
func parseForm(xml []byte) (*formspec.Form, storage.NewFormVersion, error) {
	f, err := formspec.Parse(xml)
	if err != nil {
		return nil, storage.NewFormVersion{}, err
	}
	if f.Encrypted {
		return nil, storage.NewFormVersion{}, haven.Errorf(haven.EINVALID,
			"Form %s uses ODK form encryption (a public key in <submission>). Haven encrypts every submission at rest itself and must read submissions to check them against the form, so it does not accept encrypted forms: remove the public key (the public_key setting in the XLSForm) and upload the form again.", f.ID)
	}
	nv := storage.NewFormVersion{XMLFormID: f.ID, Name: f.Title, Version: f.Version, XML: xml, MD5: md5Hex(xml)}
	for _, m := range f.Media {
		nv.Media = append(nv.Media, haven.FormAttachment{Name: m.Name, Type: m.Type})
	}
	return f, nv, nil
}

// FormAnswer is a form after an upload, with the conversion's warnings
// when it was an XLSForm.
type FormAnswer struct {
	*haven.Form
	Warnings []Diagnostic `json:"warnings,omitempty"`
}

// CreateForm stores an uploaded form as a new form of the project: a
// draft, or published at once. The caller's right to write forms is
// checked before anything of the upload is read.
func (s *Service) CreateForm(ctx context.Context, p *haven.Principal, projectID int64, u Upload, publish bool) (_ *FormAnswer, err error) {
	e := s.event(ctx, p, "form.create", projectID, objProject(projectID))
	defer func() { s.record(ctx, e, err) }()
	if _, err := s.project(ctx, p, haven.ActionFormWrite, projectID); err != nil {
		return nil, err
	}
	c, err := convert(u)
	if err != nil {
		return nil, err
	}
	f, nv, err := parseForm(c.xml)
	if err != nil {
		return nil, err
	}
	u.keep(&nv)
	e.Object = objForm(projectID, f.ID)
	if publish {
		if err := checkPublishable(f, c.rows); err != nil {
			return nil, err
		}
		detail(e, "version", f.Version)
	}
	discard, err := s.attachItemsets(ctx, projectID, c, &nv)
	if err != nil {
		return nil, err
	}
	form, err := s.forms.CreateForm(ctx, projectID, nv, publish)
	if err != nil {
		discard()
		return nil, err
	}
	if publish {
		if err := s.declareEntities(ctx, projectID, form.CurrentVersionID, f); err != nil {
			return nil, err
		}
	}
	return &FormAnswer{Form: form, Warnings: c.warnings}, nil
}

// Form returns a form of a project for someone allowed to read it.
func (s *Service) Form(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string) (*haven.Form, error) {
	if err := s.authorize(p, haven.ActionFormRead, projectID); err != nil {
		return nil, err
	}
	return s.forms.Get(ctx, projectID, xmlFormID)
}

// ListForms lists a project's forms for someone allowed to read them.
func (s *Service) ListForms(ctx context.Context, p *haven.Principal, projectID int64) ([]*haven.Form, error) {
	if _, err := s.project(ctx, p, haven.ActionFormRead, projectID); err != nil {
		return nil, err
	}
	return s.forms.List(ctx, projectID)
}

// FormVersions lists a form's published versions, newest first.
func (s *Service) FormVersions(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string) ([]*haven.FormVersion, error) {
	f, err := s.Form(ctx, p, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	return s.forms.Versions(ctx, f.ID)
}

// FormAttachments lists the media files of a form's published version.
func (s *Service) FormAttachments(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string) ([]haven.FormAttachment, error) {
	f, err := s.Form(ctx, p, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	if f.CurrentVersionID == 0 {
		return nil, haven.Errorf(haven.ENOTFOUND, "Form %s has not been published yet; see its draft's attachments.", f.XMLFormID)
	}
	all, err := s.forms.Attachments(ctx, f.CurrentVersionID)
	if err != nil {
		return nil, err
	}
	return s.linkLists(ctx, projectID, f.CurrentVersionID, all)
}

// writableForm returns a form the principal may change.
func (s *Service) writableForm(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string) (*haven.Form, error) {
	if err := s.authorize(p, haven.ActionFormWrite, projectID); err != nil {
		return nil, err
	}
	return s.forms.Get(ctx, projectID, xmlFormID)
}

// NewDraft starts a new draft of a form: from the upload when it has a
// body, else from the published version. Media files carry over by name.
func (s *Service) NewDraft(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string, u Upload) (_ []Diagnostic, err error) {
	e := s.event(ctx, p, "form.draft.create", projectID, objForm(projectID, xmlFormID))
	defer func() { s.record(ctx, e, err) }()
	f, err := s.writableForm(ctx, p, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	var nv *storage.NewFormVersion
	var warnings []Diagnostic
	if len(strings.TrimSpace(string(u.Body))) > 0 {
		c, err := convert(u)
		if err != nil {
			return nil, err
		}
		_, parsed, err := parseForm(c.xml)
		if err != nil {
			return nil, err
		}
		u.keep(&parsed)
		discard, err := s.attachItemsets(ctx, projectID, c, &parsed)
		if err != nil {
			return nil, err
		}
		if err := s.forms.SetDraft(ctx, f, &parsed); err != nil {
			discard()
			return nil, err
		}
		return c.warnings, nil
	}
	return warnings, s.forms.SetDraft(ctx, f, nv)
}

// Draft returns a form's draft version.
func (s *Service) Draft(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string) (*haven.Form, *haven.FormVersion, error) {
	f, err := s.writableForm(ctx, p, projectID, xmlFormID)
	if err != nil {
		return nil, nil, err
	}
	if f.DraftVersionID == 0 {
		return nil, nil, haven.Errorf(haven.ENOTFOUND, "Form %s has no draft. Create one with POST .../forms/%s/draft.", xmlFormID, xmlFormID)
	}
	v, err := s.forms.Version(ctx, f.DraftVersionID)
	return f, v, err
}

// DraftAttachments lists the media files a form's draft expects.
func (s *Service) DraftAttachments(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string) ([]haven.FormAttachment, error) {
	_, v, err := s.Draft(ctx, p, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	return s.forms.Attachments(ctx, v.ID)
}

// DeleteDraft abandons a form's draft.
func (s *Service) DeleteDraft(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string) (err error) {
	e := s.event(ctx, p, "form.draft.delete", projectID, objForm(projectID, xmlFormID))
	defer func() { s.record(ctx, e, err) }()
	f, err := s.writableForm(ctx, p, projectID, xmlFormID)
	if err != nil {
		return err
	}
	return s.forms.DeleteDraft(ctx, f)
}

// UploadDraftMedia stores a media file the form's draft expects, encrypted.
func (s *Service) UploadDraftMedia(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, name string, r io.Reader) (err error) {
	e := s.event(ctx, p, "form.attachment.upload", projectID, objForm(projectID, xmlFormID)+"/file/"+name)
	defer func() { s.record(ctx, e, err) }()
	f, _, err := s.Draft(ctx, p, projectID, xmlFormID)
	if err != nil {
		return err
	}
	if err := formspec.SafeFileName(name); err != nil {
		return err
	}
	blob, err := s.blobs.Put(ctx, projectID, r, storage.PutOptions{Limit: s.Limits.MaxMedia, MD5: true})
	if err == storage.ErrTooLarge {
		return haven.Errorf(haven.ETOOLARGE, "The file %s is larger than %d bytes, the most Haven accepts for form media.", name, s.Limits.MaxMedia)
	} else if err != nil {
		return err
	}
	if err := s.forms.SetDraftAttachment(ctx, f, name, blob); err != nil {
		s.blobs.Discard(ctx, blob)
		return err
	}
	return nil
}

// PublishDraft publishes a form's draft. version, when given, is written into
// the XForm; it must differ from every version published before. A field
// whose tier the draft lowers below what an earlier version gave it may be
// published only by someone cleared for the earlier tier, and the event
// names every such field: data collected under the higher tier stays under
// it whatever the new version says (see the read view).
func (s *Service) PublishDraft(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, version string) (_ *haven.Form, err error) {
	e := s.event(ctx, p, "form.publish", projectID, objForm(projectID, xmlFormID))
	defer func() { s.record(ctx, e, err) }()
	f, v, err := s.Draft(ctx, p, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	xml := v.XML
	parsed, err := formspec.Parse(xml)
	if err != nil {
		return nil, err
	}
	if err := checkPublishable(parsed, s.draftRows(ctx, v)); err != nil {
		return nil, err
	}
	if err := s.checkLowered(ctx, p, f, parsed, e); err != nil {
		return nil, err
	}
	if version != "" && version != v.Version {
		if xml, err = formspec.SetVersion(xml, version); err != nil {
			return nil, err
		}
	} else {
		version = v.Version
	}
	detail(e, "version", version)
	if err := s.declareEntities(ctx, projectID, v.ID, parsed); err != nil {
		return nil, err
	}
	if err := s.forms.PublishDraft(ctx, f, version, xml, md5Hex(xml)); err != nil {
		return nil, err
	}
	return s.forms.Get(ctx, projectID, xmlFormID)
}

// Lowered is a field whose tier a new version lowers.
type Lowered struct {
	Path string            `json:"path"`
	From haven.Sensitivity `json:"from"`
	To   haven.Sensitivity `json:"to"`
}

// checkLowered finds the fields next lowers below the highest tier any
// published version of the form gave them, refuses when p is not cleared
// for every old tier, and names them in the event.
func (s *Service) checkLowered(ctx context.Context, p *haven.Principal, f *haven.Form, next *formspec.Form, e *haven.AuditEvent) error {
	before, err := s.formTiers(ctx, f)
	if err != nil {
		return err
	}
	var lowered []Lowered
	for _, fd := range next.Schema() {
		old, ok := before[fd.Path]
		if ok && !fd.Effective.Covers(old) {
			lowered = append(lowered, Lowered{Path: fd.Path, From: old, To: fd.Effective})
		}
	}
	if len(lowered) == 0 {
		return nil
	}
	detail(e, "lowered", lowered)
	clearance := p.Clearance(f.ProjectID)
	for _, l := range lowered {
		if !clearance.Covers(l.From) {
			return &haven.Error{Code: haven.EFORBIDDEN, Details: map[string]any{"lowered": lowered},
				Message: fmt.Sprintf("This version lowers %s from %s to %s, and only someone cleared for %s may lower it (your clearance is %s). Ask a project lead with that clearance to publish it, or keep the tier.",
					l.Path, l.From, l.To, l.From, clearance)}
		}
	}
	return nil
}

// SetFormState opens or closes a form.
func (s *Service) SetFormState(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, state string) (_ *haven.Form, err error) {
	e := s.event(ctx, p, "form.update", projectID, objForm(projectID, xmlFormID))
	e.Details = map[string]any{"state": state}
	defer func() { s.record(ctx, e, err) }()
	f, err := s.writableForm(ctx, p, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	if err := s.forms.SetState(ctx, f, state); err != nil {
		return nil, err
	}
	return s.forms.Get(ctx, projectID, xmlFormID)
}

// Fields returns the schema view of a form's published version, or of its
// draft: every field with its path, type, purpose, declared, derived and
// effective tier.
func (s *Service) Fields(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string, draft bool) ([]Field, error) {
	var versionID int64
	if draft {
		_, v, err := s.Draft(ctx, p, projectID, xmlFormID)
		if err != nil {
			return nil, err
		}
		versionID = v.ID
	} else {
		f, err := s.Form(ctx, p, projectID, xmlFormID)
		if err != nil {
			return nil, err
		}
		if f.CurrentVersionID == 0 {
			return nil, haven.Errorf(haven.ENOTFOUND, "Form %s has not been published yet; ask for its draft's fields (.../draft/fields).", xmlFormID)
		}
		versionID = f.CurrentVersionID
	}
	schema, err := s.schema(ctx, versionID)
	if err != nil {
		return nil, err
	}
	return schema.Schema(), nil
}

// checkPublishable refuses a form that does not say why it collects each
// field, how sensitive each is, or on what legal basis it collects at all.
// rows, when the form came from an XLSForm, maps paths to survey rows so
// the answer points at them. There is no switch that turns this off.
func checkPublishable(f *formspec.Form, rows map[string]int) error {
	type located struct {
		formspec.Problem
		Row int `json:"row,omitempty"`
	}
	locate := func(problems []formspec.Problem) ([]located, []string) {
		list := make([]located, len(problems))
		lines := make([]string, len(problems))
		for i, p := range problems {
			list[i] = located{Problem: p, Row: rows[p.Path]}
			where := p.Path
			if list[i].Row > 0 {
				where = fmt.Sprintf("%s (survey row %d)", p.Path, list[i].Row)
			}
			lines[i] = where + ": " + p.Message
		}
		return list, lines
	}
	// What a device would choke on comes first: such a form can be opened nowhere.
	if problems := f.CheckExpressions(); len(problems) > 0 {
		list, lines := locate(problems)
		return &haven.Error{Code: haven.EINVALID,
			Message: fmt.Sprintf("Form %s cannot be published: %d expression(s) would stop every device from opening it. Fix them and publish again: %s.",
				f.ID, len(problems), strings.Join(lines, "; ")),
			Details: map[string]any{"problems": list}}
	}
	problems := f.CheckProtection()
	if len(problems) == 0 {
		return nil
	}
	list, lines := locate(problems)
	return &haven.Error{Code: haven.EINVALID,
		Message: fmt.Sprintf("Form %s cannot be published: Haven publishes only forms that say why each field is collected and how sensitive it is, and on what legal basis. Fix these %d problem(s) and publish again: %s. (In an XForm these are the bind attributes haven:purpose and haven:sensitivity and the model attributes haven:legal-basis and haven:consent-field, in the namespace urn:haven:xforms.)",
			f.ID, len(problems), strings.Join(lines, "; ")),
		Details: map[string]any{"problems": list}}
}

// Classification says which fields of a form's published version are still
// undecided (level_0, handled as level_3), since when, and whether the
// 24-hour deadline to classify them has passed.
type Classification struct {
	XMLFormID string     `json:"xmlFormId"`
	Undecided []string   `json:"undecided"`
	Since     *time.Time `json:"since,omitempty"` // when the oldest undecided field was first published undecided
	DueAt     *time.Time `json:"dueAt,omitempty"`
	Overdue   bool       `json:"overdue"`
}

// Classifications lists the published forms of a project with undecided
// fields; with overdueOnly, only those past the deadline.
func (s *Service) Classifications(ctx context.Context, p *haven.Principal, projectID int64, overdueOnly bool) ([]Classification, error) {
	forms, err := s.ListForms(ctx, p, projectID)
	if err != nil {
		return nil, err
	}
	out := []Classification{}
	for _, f := range forms {
		c, err := s.classification(ctx, f)
		if err != nil {
			return nil, err
		}
		if len(c.Undecided) == 0 || (overdueOnly && !c.Overdue) {
			continue
		}
		out = append(out, *c)
	}
	return out, nil
}

func (s *Service) classification(ctx context.Context, f *haven.Form) (*Classification, error) {
	c := &Classification{XMLFormID: f.XMLFormID, Undecided: []string{}}
	if f.CurrentVersionID == 0 {
		return c, nil
	}
	versions, err := s.forms.Versions(ctx, f.ID) // newest first
	if err != nil {
		return nil, err
	}
	// A field has been undecided since the oldest version of the unbroken
	// run of versions, ending with the current one, in which it was level_0.
	since := map[string]time.Time{}
	open := map[string]bool{}
	for i, v := range versions {
		schema, err := s.schema(ctx, v.ID)
		if err != nil {
			return nil, err
		}
		undecided := map[string]bool{}
		for _, fd := range schema.Undecided() {
			undecided[fd.Path] = true
		}
		if i == 0 {
			for path := range undecided {
				open[path] = true
				c.Undecided = append(c.Undecided, path)
			}
		}
		for path := range open {
			if !undecided[path] || v.PublishedAt == nil {
				delete(open, path)
				continue
			}
			since[path] = *v.PublishedAt
		}
		if len(open) == 0 {
			break
		}
	}
	for _, t := range since {
		if c.Since == nil || t.Before(*c.Since) {
			c.Since = &t
		}
	}
	if c.Since != nil {
		due := c.Since.Add(haven.ClassificationDeadline)
		c.DueAt = &due
		c.Overdue = !s.now().Before(due)
	}
	sort.Strings(c.Undecided)
	return c, nil
}

// draftRows finds the survey row of each field of a draft made from an
// XLSForm (converted again from the workbook kept with it), so refusals
// can say which row to fix; nil for an XForm.
func (s *Service) draftRows(ctx context.Context, v *haven.FormVersion) map[string]int {
	b, ct, err := s.forms.XLSForm(ctx, v.ID)
	if err != nil || b == nil {
		return nil
	}
	c, err := convert(Upload{Body: b, ContentType: ct, FormIDFallback: v.XMLFormID})
	if err != nil {
		return nil
	}
	return c.rows
}

// CheckDraft says what publishing a form's draft would refuse, without
// publishing it: nil when it would publish. The console shows it on the
// draft, so a designer learns what to fix before trying.
func (s *Service) CheckDraft(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string) error {
	_, v, err := s.Draft(ctx, p, projectID, xmlFormID)
	if err != nil {
		return err
	}
	parsed, err := formspec.Parse(v.XML)
	if err != nil {
		return err
	}
	return checkPublishable(parsed, s.draftRows(ctx, v))
}

// CheckPublishable says what publishing an XForm would refuse, without a
// server: the expressions no device can read, then the purposes, tiers,
// legal basis and consent the form lacks. rows are the survey rows of an
// XLSForm's fields (from its conversion), so problems name them.
func CheckPublishable(xform []byte, rows map[string]int) error {
	f, err := formspec.Parse(xform)
	if err != nil {
		return err
	}
	return checkPublishable(f, rows)
}

// FormID reads the form id an upload will have, as publishing reads it:
// from the XLSForm's settings (or FormIDFallback), or from the XForm. A
// workbook that does not convert answers the conversion's errors.
func FormID(u Upload) (string, error) {
	c, err := convert(u)
	if err != nil {
		return "", err
	}
	f, err := formspec.Parse(c.xml)
	if err != nil {
		return "", err
	}
	return f.ID, nil
}

// attachItemsets stores itemsets.csv, made from the workbook's
// external_choices sheet, as the version's file of that name (a
// select_one_external reads it), as pyxform makes it. It returns a func
// that discards the stored file if the version is not stored after all.
func (s *Service) attachItemsets(ctx context.Context, projectID int64, c *converted, nv *storage.NewFormVersion) (discard func(), err error) {
	discard = func() {}
	if c.itemsets == nil {
		return discard, nil
	}
	for _, m := range nv.Media {
		if m.Name != "itemsets.csv" {
			continue
		}
		blob, err := s.blobs.Put(ctx, projectID, bytes.NewReader(c.itemsets), storage.PutOptions{Limit: s.Limits.MaxMedia, MD5: true})
		if err != nil {
			return discard, err
		}
		nv.Made = map[string]*storage.Blob{m.Name: blob}
		return func() { s.blobs.Discard(ctx, blob) }, nil
	}
	return discard, nil
}
