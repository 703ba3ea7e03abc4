package app

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/url"
	"strings"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/export"
	"github.com/haven-org/haven/formspec"
	"github.com/haven-org/haven/storage"
)

// OData over a form's submissions, as ODK Central serves it (see
// export/odata.go for the shapes). A reader sees the form as their
// clearance allows: fields above it are absent from the service, its
// $metadata and every row, and each answer names what was left out.
// Filters and paging run on metadata; only the rows answered are decrypted.

// ODataService is a form's OData service for one reader: its tables and
// metadata document.
type ODataService = export.OData

// odataForm returns the form, the schema the service describes (the
// published version, or the draft) and the reader's view of the form.
func (s *Service) odataForm(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string, draft bool) (*haven.Form, *formspec.Form, *View, error) {
	f, err := s.formFor(ctx, p, haven.ActionSubmissionRead, projectID, xmlFormID)
	if err != nil {
		return nil, nil, nil, err
	}
	versionID := f.CurrentVersionID
	if draft {
		versionID = f.DraftVersionID
	}
	if versionID == 0 {
		if draft {
			return nil, nil, nil, haven.Errorf(haven.ENOTFOUND, "Form %s has no draft.", xmlFormID)
		}
		return nil, nil, nil, haven.Errorf(haven.ENOTFOUND, "Form %s has not been published yet; its draft's OData is at .../forms/%s/draft.svc.", xmlFormID, xmlFormID)
	}
	schema, err := s.schema(ctx, versionID)
	if err != nil {
		return nil, nil, nil, err
	}
	view, err := s.formView(ctx, p, f)
	if err != nil {
		return nil, nil, nil, err
	}
	if draft {
		// The draft's own tiers count too, as for any version read.
		tiers := map[string]haven.Sensitivity{}
		for k, v := range view.tiers {
			tiers[k] = v
		}
		for _, fd := range schema.Schema() {
			tiers[fd.Path] = haven.MaxSensitivity(tiers[fd.Path], fd.Effective)
		}
		view = &View{tiers: tiers, clearance: view.clearance}
	}
	return f, schema, view, nil
}

// OData returns a form's OData service as the reader may see it (for the
// service document and $metadata, which hold no collected data).
func (s *Service) OData(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string, draft bool) (*ODataService, error) {
	_, schema, view, err := s.odataForm(ctx, p, projectID, xmlFormID, draft)
	if err != nil {
		return nil, err
	}
	return export.NewOData(schema, view.Sees), nil
}

// ODataRequest is a read of an OData table or row, as the HTTP layer
// received it.
type ODataRequest struct {
	Draft bool
	// Path is what follows ".svc/", as sent (escaped).
	Path      string
	Top, Skip *int
	SkipToken string
	Count     bool
	Filter    string
	OrderBy   string
	Select    string
	Expand    bool
	WKT       bool
	// ServiceRoot is the URL of the service (…/forms/x.svc), and Request
	// the URL of this request, both absolute: answers link to them.
	ServiceRoot, Request string
}

// ODataAnswer is a prepared OData read, audited, ready to stream.
type ODataAnswer struct {
	s       *Service
	p       *haven.Principal
	req     ODataRequest
	form    *haven.Form
	sel     *export.Selection
	keys    []export.ODataKey
	filter  *export.ODataFilter
	order   []storage.ScanOrder
	token   skipToken
	devices bool
	omitted []string
}

// skipToken is where a page resumes, as Central encodes it ("01" and
// base64 JSON): after a submission, or after a repeat's row.
type skipToken struct {
	InstanceID string          `json:"instanceId,omitempty"`
	RepeatID   string          `json:"repeatId,omitempty"`
	Cursor     *storage.Cursor `json:"haven,omitempty"`
}

func parseSkipToken(t string) (skipToken, error) {
	var st skipToken
	bad := haven.Errorf(haven.EINVALID, "The $skiptoken is not valid: follow the @odata.nextLink of the previous page as it is.")
	rest, ok := strings.CutPrefix(t, "01")
	if !ok {
		return st, bad
	}
	b, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		if b, err = base64.RawURLEncoding.DecodeString(rest); err != nil {
			return st, bad
		}
	}
	if json.Unmarshal(b, &st) != nil || (st.InstanceID == "" && st.RepeatID == "") {
		return st, bad
	}
	return st, nil
}

func (t skipToken) String() string {
	b, _ := json.Marshal(t)
	return "01" + base64.StdEncoding.EncodeToString(b)
}

// ReadOData prepares an OData read. Everything about the request is
// checked, and the read audited (with the fields it leaves out), before
// the first byte is written.
func (s *Service) ReadOData(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string, r ODataRequest) (_ *ODataAnswer, err error) {
	e := s.event(ctx, p, "submission.odata", projectID, objForm(projectID, xmlFormID))
	defer func() { s.record(ctx, e, err) }()
	table, keys, err := export.ParseODataPath(r.Path)
	if err != nil {
		return nil, err
	}
	e.Details = map[string]any{"table": table}
	if r.Filter != "" {
		detail(e, "filter", r.Filter)
	}
	if len(keys) > 0 {
		detail(e, "instanceId", keys[0].ID)
	}
	f, schema, view, err := s.odataForm(ctx, p, projectID, xmlFormID, r.Draft)
	if err != nil {
		return nil, err
	}
	od := export.NewOData(schema, view.Sees)
	sel, err := od.Select(export.ODataQuery{Table: table, Expand: r.Expand, WKT: r.WKT, Select: r.Select})
	if err != nil {
		return nil, err
	}
	a := &ODataAnswer{s: s, p: p, req: r, form: f, sel: sel, keys: keys, devices: view.DeviceIDs(), omitted: od.Omitted}
	if r.Filter != "" {
		if a.filter, err = export.ParseODataFilter(r.Filter, sel.Subtable()); err != nil {
			return nil, err
		}
	}
	if r.OrderBy != "" {
		if sel.Subtable() || len(keys) > 0 {
			return nil, haven.Errorf(haven.ENOTIMPLEMENTED, "$orderby orders the Submissions table only.")
		}
		if r.SkipToken != "" {
			return nil, haven.Errorf(haven.ENOTIMPLEMENTED, "$orderby and $skiptoken cannot be used together (nor in ODK Central): page with $top and $skip instead.")
		}
		keys, err := export.ParseODataOrderBy(r.OrderBy)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			a.order = append(a.order, storage.ScanOrder{Field: k.Field, Desc: k.Desc})
		}
	}
	if r.SkipToken != "" {
		if a.token, err = parseSkipToken(r.SkipToken); err != nil {
			return nil, err
		}
	}
	if len(od.Omitted) > 0 {
		detail(e, "omitted", od.Omitted)
	}
	s.record(ctx, e, nil)
	return a, nil
}

// meta is what filters and orders read of a submission.
func meta(sub *haven.Submission) export.ODataMeta {
	return export.ODataMeta{InstanceID: sub.InstanceID, SubmissionDate: sub.CreatedAt, UpdatedAt: sub.UpdatedAt,
		SubmitterID: sub.SubmitterID, ReviewState: sub.ReviewState}
}

// system is a submission's __system block for this reader.
func (a *ODataAnswer) system(sc *storage.Scanned) *export.ODataSystem {
	sys := &export.ODataSystem{SubmissionDate: sc.CreatedAt, UpdatedAt: sc.UpdatedAt, SubmitterID: sc.SubmitterID,
		SubmitterName: sc.SubmitterName, AttachmentsPresent: sc.Current.AttachmentsPresent,
		AttachmentsExpected: sc.Current.AttachmentsExpected, ReviewState: sc.ReviewState, Edits: sc.Edits, FormVersion: sc.FirstVersion}
	if a.devices && sc.DeviceID != "" {
		d := sc.DeviceID
		sys.DeviceID = &d
	}
	return sys
}

// rows decrypts and reads one submission into the table's rows.
func (a *ODataAnswer) rows(ctx context.Context, sc *storage.Scanned) ([]export.ODataRow, error) {
	inst, err := a.s.instance(ctx, a.form.ProjectID, sc.Submission)
	if err != nil {
		return nil, err
	}
	return a.sel.Rows(inst, sc.InstanceID, a.system(sc)), nil
}

// Write streams the answer.
func (a *ODataAnswer) Write(ctx context.Context, w io.Writer) error {
	page := export.NewODataPage(w)
	foot := export.ODataFooter{Context: a.req.ServiceRoot + "/$metadata#" + a.sel.Table(), Omitted: a.omitted}
	var err error
	switch {
	case len(a.keys) > 0:
		err = a.writeOne(ctx, page, &foot)
	case a.sel.Subtable():
		err = a.writeRepeat(ctx, page, &foot)
	default:
		err = a.writeSubmissions(ctx, page, &foot)
	}
	if err != nil {
		return err
	}
	return page.Close(foot)
}

func (a *ODataAnswer) limit() int {
	if a.req.Top == nil {
		return -1
	}
	return *a.req.Top
}

func (a *ODataAnswer) offset() int {
	if a.req.Skip == nil || a.req.SkipToken != "" {
		return 0
	}
	return *a.req.Skip
}

// nextLink is this request's URL for the page after token.
func (a *ODataAnswer) nextLink(t skipToken) string {
	u, q, _ := strings.Cut(a.req.Request, "?")
	var kept []string
	for _, pair := range strings.Split(q, "&") {
		k, _, _ := strings.Cut(pair, "=")
		if k, err := url.QueryUnescape(k); pair == "" || (err == nil && (k == "$skip" || k == "$skiptoken")) {
			continue
		}
		kept = append(kept, pair)
	}
	kept = append(kept, "$skiptoken="+url.QueryEscape(t.String()))
	return u + "?" + strings.Join(kept, "&")
}

// writeSubmissions pages through the Submissions table: newest first (or
// in $orderby's order), filtered on metadata, decrypting only the page.
func (a *ODataAnswer) writeSubmissions(ctx context.Context, page *export.ODataPage, foot *export.ODataFooter) error {
	if a.req.Draft {
		return a.count(ctx, foot, func() int { return 0 })
	}
	st := a.s.submissions
	q := storage.ScanQuery{Order: a.order}
	if a.token.InstanceID != "" {
		q.After = a.token.Cursor
		if q.After == nil {
			c, err := st.CursorOf(ctx, a.form.ID, a.token.InstanceID)
			if err != nil {
				return haven.Errorf(haven.EINVALID, "The $skiptoken names a submission that no longer exists: start again from the first page.")
			}
			q.After = c
		}
	}
	limit, skip, now := a.limit(), a.offset(), a.s.now()
	var last *storage.Scanned
	more := false
	if limit != 0 {
		err := st.Scan(ctx, a.form.ProjectID, a.form.ID, q, func(sc *storage.Scanned) error {
			if !a.filter.Match(meta(sc.Submission), now) {
				return nil
			}
			if skip > 0 {
				skip--
				return nil
			}
			if limit >= 0 && page.Rows() >= limit {
				more = true
				return storage.ErrStop
			}
			rows, err := a.rows(ctx, sc)
			if err != nil {
				return err
			}
			last = sc
			return page.Add(a.sel.Trim(rows[0]))
		})
		if err != nil {
			return err
		}
	}
	if more && last != nil && len(a.order) == 0 {
		c := last.Cursor
		foot.NextLink = a.nextLink(skipToken{InstanceID: last.InstanceID, Cursor: &c})
	}
	return a.count(ctx, foot, func() int {
		n := 0
		st.Scan(ctx, a.form.ProjectID, a.form.ID, storage.ScanQuery{Light: true}, func(sc *storage.Scanned) error {
			if a.filter.Match(meta(sc.Submission), now) {
				n++
			}
			return nil
		})
		return n
	})
}

// count sets @odata.count when $count=true asked for it.
func (a *ODataAnswer) count(ctx context.Context, foot *export.ODataFooter, n func() int) error {
	if a.req.Count {
		c := n()
		if err := ctx.Err(); err != nil {
			return err
		}
		foot.Count = &c
	}
	return nil
}

// writeRepeat pages through a repeat's table: every submission the filter
// keeps (newest first) is read, as the rows are inside them.
func (a *ODataAnswer) writeRepeat(ctx context.Context, page *export.ODataPage, foot *export.ODataFooter) error {
	if a.req.Draft {
		return a.count(ctx, foot, func() int { return 0 })
	}
	limit, skip, now := a.limit(), a.offset(), a.s.now()
	seeking := a.token.RepeatID != ""
	counted, remaining := 0, 0
	var lastID string
	err := a.s.submissions.Scan(ctx, a.form.ProjectID, a.form.ID, storage.ScanQuery{}, func(sc *storage.Scanned) error {
		if !a.filter.Match(meta(sc.Submission), now) {
			return nil
		}
		if limit >= 0 && page.Rows() >= limit && remaining > 0 && !a.req.Count {
			return storage.ErrStop
		}
		rows, err := a.rows(ctx, sc)
		if err != nil {
			return err
		}
		for _, r := range rows {
			counted++
			switch {
			case seeking:
				seeking = r.ID() != a.token.RepeatID
			case skip > 0:
				skip--
			case limit >= 0 && page.Rows() >= limit:
				remaining++
			default:
				lastID = r.ID()
				if err := page.Add(a.sel.Trim(r)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if seeking {
		return haven.Errorf(haven.EINVALID, "The $skiptoken names a repeat row that no longer exists: start again from the first page.")
	}
	if remaining > 0 && lastID != "" {
		foot.NextLink = a.nextLink(skipToken{RepeatID: lastID})
	}
	return a.count(ctx, foot, func() int { return counted })
}

// writeOne answers one submission's row, or the rows of a repeat under it
// (Submissions('uuid:1')/member), as navigation links lead.
func (a *ODataAnswer) writeOne(ctx context.Context, page *export.ODataPage, foot *export.ODataFooter) error {
	iid := a.keys[0].ID
	notFound := haven.Errorf(haven.ENOTFOUND, "Form %s has no submission %s (or it was erased).", a.form.XMLFormID, iid)
	if a.req.Draft {
		return notFound
	}
	c, err := a.s.submissions.CursorOf(ctx, a.form.ID, iid)
	if err != nil {
		return notFound
	}
	var found *storage.Scanned
	// One row: scan from just before it, stop at it.
	err = a.s.submissions.Scan(ctx, a.form.ProjectID, a.form.ID, storage.ScanQuery{After: &storage.Cursor{CreatedAt: c.CreatedAt, ID: c.ID + 1}}, func(sc *storage.Scanned) error {
		if sc.ID == c.ID {
			found = sc
		}
		return storage.ErrStop
	})
	if err != nil {
		return err
	}
	if found == nil {
		return notFound
	}
	rows, err := a.rows(ctx, found)
	if err != nil {
		return err
	}
	// Keep the rows under the last keyed step of the path.
	last := 0
	for i, k := range a.keys {
		if k.Keyed {
			last = i
		}
	}
	if last > 0 {
		names := make([]string, last+1)
		for i := range names {
			names[i] = a.keys[i].Name
		}
		field, id := "__"+strings.Join(names, "-")+"-id", a.keys[last].ID
		kept := rows[:0]
		for _, r := range rows {
			if v, _ := r.Get(field).(string); v == id {
				kept = append(kept, r)
			}
		}
		rows = kept
	}
	offset := a.offset()
	if a.token.RepeatID != "" {
		offset = -1
		for i, r := range rows {
			if r.ID() == a.token.RepeatID {
				offset = i + 1
			}
		}
		if offset < 0 {
			return haven.Errorf(haven.EINVALID, "The $skiptoken names a repeat row that no longer exists: start again from the first page.")
		}
	}
	if offset > len(rows) {
		offset = len(rows)
	}
	end := len(rows)
	if l := a.limit(); l >= 0 && offset+l < end {
		end = offset + l
	}
	for _, r := range rows[offset:end] {
		if err := page.Add(a.sel.Trim(r)); err != nil {
			return err
		}
	}
	if end < len(rows) && end > offset && a.sel.Subtable() {
		foot.NextLink = a.nextLink(skipToken{RepeatID: rows[end-1].ID()})
	}
	n := len(rows)
	return a.count(ctx, foot, func() int { return n })
}
