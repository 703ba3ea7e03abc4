package app

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
)

// Use cases the web console needs beyond the REST API's: a form list with
// its counts, and a page of submissions as a table. Like every other use
// case they take the acting principal and decide rights and clearances here.

// FormSummary is a form with how many submissions it holds and when the
// latest arrived.
type FormSummary struct {
	*haven.Form
	Submissions    int        `json:"submissions"`
	LastSubmission *time.Time `json:"lastSubmission"`
}

// FormSummaries lists a project's forms with their submission counts.
// Counts are not collected data: whoever may read the forms sees them.
func (s *Service) FormSummaries(ctx context.Context, p *haven.Principal, projectID int64) ([]FormSummary, error) {
	forms, err := s.ListForms(ctx, p, projectID)
	if err != nil {
		return nil, err
	}
	tallies, err := s.submissions.Tallies(ctx, projectID)
	if err != nil {
		return nil, err
	}
	out := make([]FormSummary, len(forms))
	for i, f := range forms {
		t := tallies[f.ID]
		out[i] = FormSummary{Form: f, Submissions: t.Count, LastSubmission: t.Last}
	}
	return out, nil
}

// TableQuery selects a page of a form's submissions: newest first, received
// within [Since, Until) when set, filled in with form version Version when set.
type TableQuery struct {
	Limit, Offset int
	Since, Until  time.Time
	Version       *string
}

// Table is a page of a form's submissions as one reader may see them.
type Table struct {
	// Columns are the form's fields the reader may see (paths), in the
	// order of its current version; Labels their names.
	Columns []string
	Labels  []string
	Rows    []TableRow
	Total   int
	// Omitted lists the fields left out of the page: above the reader's clearance.
	Omitted []string
}

// TableRow is one submission of a table: its record and its values by path.
type TableRow struct {
	*haven.Submission
	Values map[string]string
}

// SubmissionTable returns a page of a form's submissions with the values
// the reader may see, as one audited read.
func (s *Service) SubmissionTable(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string, q TableQuery) (_ *Table, err error) {
	e := s.event(ctx, p, "submission.list", projectID, objForm(projectID, xmlFormID))
	defer func() { s.record(ctx, e, err) }()
	f, err := s.formFor(ctx, p, haven.ActionSubmissionRead, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	if q.Limit <= 0 || q.Limit > 500 {
		q.Limit = 50
	}
	q.Offset = max(q.Offset, 0)
	subs, total, err := s.submissions.Page(ctx, projectID, f.ID, storage.PageQuery{Limit: q.Limit, Offset: q.Offset, Since: q.Since, Until: q.Until, Version: q.Version})
	if err != nil {
		return nil, err
	}
	t := &Table{Total: total}
	omitted := map[string]bool{}
	if f.CurrentVersionID != 0 {
		schema, err := s.schema(ctx, f.CurrentVersionID)
		if err != nil {
			return nil, err
		}
		whole, err := s.formView(ctx, p, f)
		if err != nil {
			return nil, err
		}
		for _, fd := range schema.Schema() {
			switch {
			case fd.Repeat || fd.Kind == "note":
			case !whole.Sees(fd.Path):
				omitted[fd.Path] = true
			default:
				t.Columns = append(t.Columns, fd.Path)
				t.Labels = append(t.Labels, strings.TrimPrefix(fd.Path, "/"+schema.RootName+"/"))
			}
		}
	}
	vs := s.views(p, f)
	for _, sub := range subs {
		v, err := vs.of(ctx, sub)
		if err != nil {
			return nil, err
		}
		for _, o := range v.Omitted {
			omitted[o] = true
		}
		inst, err := s.instance(ctx, projectID, sub)
		if err != nil {
			return nil, err
		}
		values := map[string]string{}
		flatten(values, "/"+v.schema.RootName, v.data(inst))
		t.Rows = append(t.Rows, TableRow{Submission: v.redact(sub), Values: values})
	}
	for o := range omitted {
		t.Omitted = append(t.Omitted, o)
	}
	sort.Strings(t.Omitted)
	if len(t.Omitted) > 0 {
		detail(e, "omitted", t.Omitted)
	}
	return t, nil
}

// flatten writes a submission's values by path; a repeat shows how many
// entries it holds.
func flatten(out map[string]string, prefix string, data map[string]any) {
	for k, v := range data {
		switch v := v.(type) {
		case string:
			out[prefix+"/"+k] = v
		case map[string]any:
			flatten(out, prefix+"/"+k, v)
		case []any:
			out[prefix+"/"+k] = fmt.Sprintf("(%d)", len(v))
		}
	}
}

// InventoryItem is one field of a record of processing: what is collected,
// why, how sensitive, on what legal basis, for how long, who may read it.
type InventoryItem struct {
	Form        string            `json:"form"`
	Version     string            `json:"version"`
	Field       string            `json:"field"`
	Type        string            `json:"type"`
	Purpose     string            `json:"purpose"`
	Sensitivity haven.Sensitivity `json:"sensitivity"`
	Effective   haven.Sensitivity `json:"effectiveSensitivity"`
	LegalBasis  string            `json:"legalBasis"`
	Retention   string            `json:"retention"`
	Readers     []string          `json:"readers"`
	Storage     string            `json:"storage"`
}

// Inventory is a project's record of processing, generated from its
// published forms' mappings.
type Inventory struct {
	Project     *ProjectView    `json:"project"`
	GeneratedAt time.Time       `json:"generatedAt"`
	Items       []InventoryItem `json:"items"`
}

// Inventory generates the record of processing of a project: one line per
// field of each published form. It holds no collected value, only the
// mappings, the people who may read each tier and where data is kept, so
// it needs the right to read forms and to see the project's people.
func (s *Service) Inventory(ctx context.Context, p *haven.Principal, projectID int64) (_ *Inventory, err error) {
	e := s.event(ctx, p, "project.inventory", projectID, objProject(projectID))
	defer func() { s.record(ctx, e, err) }()
	pr, err := s.project(ctx, p, haven.ActionFormRead, projectID)
	if err != nil {
		return nil, err
	}
	forms, err := s.forms.List(ctx, projectID)
	if err != nil {
		return nil, err
	}
	// Who may read raw data at each tier: administrators, and the
	// project's users whose role reads submissions and whose clearance covers it.
	assignments, err := s.users.Assignments(ctx, projectID)
	if err != nil {
		return nil, err
	}
	clearances, err := s.users.Clearances(ctx, projectID)
	if err != nil {
		return nil, err
	}
	cleared := map[int64]haven.Sensitivity{}
	for _, c := range clearances {
		cleared[c.ActorID] = c.Clearance
	}
	type reader struct {
		name      string
		clearance haven.Sensitivity
	}
	var readers []reader
	seen := map[int64]bool{}
	for _, a := range assignments {
		if seen[a.ActorID] || !haven.RoleCan(a.Role, haven.ActionSubmissionRead) {
			continue
		}
		seen[a.ActorID] = true
		u, err := s.users.Get(ctx, a.ActorID)
		if err != nil || u.DeletedAt != nil {
			continue
		}
		c, ok := cleared[a.ActorID]
		if !ok {
			c = haven.Public
		}
		readers = append(readers, reader{u.Email + " (" + a.Role + ")", c})
	}
	retention := "until the project is closed and destroyed"
	if d := pr.DestructionDate(); d != nil {
		retention = fmt.Sprintf("until %s (project end %s + %d days), then destroyed", d.Format("2006-01-02"), pr.EndDate.Format("2006-01-02"), pr.RetentionDays)
	}
	where := fmt.Sprintf("Haven's database, encrypted at rest (AES-256-GCM, a key per submission wrapped by the project key); files larger than %d KiB in the %q blob store, encrypted the same way", s.blobs.Inline>>10, s.blobs.Current)
	inv := &Inventory{Project: s.view(pr), GeneratedAt: s.now().UTC(), Items: []InventoryItem{}}
	for _, f := range forms {
		if f.CurrentVersionID == 0 {
			continue
		}
		schema, err := s.schema(ctx, f.CurrentVersionID)
		if err != nil {
			return nil, err
		}
		basis := schema.LegalBasis
		if basis == "" {
			basis = haven.BasisConsent // a form without one asks for consent
		}
		for _, fd := range schema.Schema() {
			if fd.Kind == "note" {
				continue
			}
			who := []string{"site administrators"}
			for _, r := range readers {
				if r.clearance.Covers(fd.Effective) {
					who = append(who, r.name)
				}
			}
			inv.Items = append(inv.Items, InventoryItem{Form: f.XMLFormID, Version: f.Version, Field: fd.Path, Type: fd.Type,
				Purpose: fd.Purpose, Sensitivity: fd.Sensitivity, Effective: fd.Effective, LegalBasis: basis,
				Retention: retention, Readers: who, Storage: where})
		}
	}
	// Entity lists: each property (and the label) as kept on the server,
	// with who reads it there; which devices hold it is on "What devices hold".
	lists, err := s.entities.Lists(ctx, projectID)
	if err != nil {
		return nil, err
	}
	entityWhere := "Haven's database, encrypted at rest (AES-256-GCM, a key per entity wrapped by the project key); copies on the devices whose forms read it, within their clearance"
	for _, l := range lists {
		props, err := s.entities.Properties(ctx, l.ID)
		if err != nil {
			return nil, err
		}
		labelTier, err := s.entities.LabelTier(ctx, l.ID)
		if err != nil {
			return nil, err
		}
		props = append([]haven.EntityProperty{{Name: "label", Purpose: "Names the entity on devices (built from answers)", Sensitivity: labelTier}}, props...)
		for _, pr := range props {
			who := []string{"site administrators"}
			for _, r := range readers {
				if r.clearance.Covers(pr.Sensitivity) {
					who = append(who, r.name)
				}
			}
			inv.Items = append(inv.Items, InventoryItem{Form: "entity list " + l.Name, Field: pr.Name, Type: "entity property",
				Purpose: pr.Purpose, Sensitivity: pr.Sensitivity, Effective: pr.Sensitivity, LegalBasis: "that of the forms saving to it",
				Retention: retention, Readers: who, Storage: entityWhere})
		}
	}
	return inv, nil
}

// VerifyCertificate checks a destruction certificate someone holds: signed
// by this server, and chained in an audit trail that verifies. Anyone
// signed in may check one; it reveals nothing the certificate does not say.
func (s *Service) VerifyCertificate(ctx context.Context, p *haven.Principal, sc *SignedCertificate) (err error) {
	e := s.event(ctx, p, "certificate.verify", 0, "")
	defer func() { s.record(ctx, e, err) }()
	if p == nil {
		return haven.Errorf(haven.EUNAUTHORIZED, "Sign in to verify a certificate.")
	}
	return s.st.VerifyCertificate(ctx, sc)
}

// DeviceHolding is what one app user's tablet downloads: each form it
// lists, with the form's version and the media files and lists that come
// with it.
type DeviceHolding struct {
	AppUser *haven.AppUser
	Forms   []DeviceHeldForm
	// Clearance is the app user's clearance in the project.
	Clearance haven.Sensitivity
	// Lists are the entity lists its forms read, as the tablet gets them.
	Lists []DeviceHeldList
}

// DeviceHeldList is an entity list as one tablet gets it: which columns,
// whether labels, how many entities, through which filter. Names and
// counts only: no value of the list.
type DeviceHeldList struct {
	Name     string
	Columns  []string
	Label    bool
	Entities int
	Filter   *storage.EntityFilter
}

// DeviceHeldForm is a form on a tablet and the files that come with it.
type DeviceHeldForm struct {
	XMLFormID, Name, Version string
	Media                    []haven.FormAttachment
}

// DeviceHoldings says, for each app user of a project that is not revoked,
// exactly which forms, media files and lists its tablet downloads: what
// FormList and the manifests answer that app user.
func (s *Service) DeviceHoldings(ctx context.Context, p *haven.Principal, projectID int64) ([]DeviceHolding, error) {
	pr, err := s.project(ctx, p, haven.ActionAppUserManage, projectID)
	if err != nil {
		return nil, err
	}
	aus, err := s.users.AppUsers(ctx, projectID)
	if err != nil {
		return nil, err
	}
	forms, err := s.forms.List(ctx, projectID)
	if err != nil {
		return nil, err
	}
	closed := pr.Closed(s.now())
	out := []DeviceHolding{}
	for _, au := range aus {
		if au.RevokedAt != nil {
			continue
		}
		h := DeviceHolding{AppUser: au}
		lists := map[string]bool{}
		assigned, err := s.forms.Assigned(ctx, au.ID)
		if err != nil {
			return nil, err
		}
		for _, f := range forms {
			if closed || f.CurrentVersionID == 0 || f.State != haven.FormOpen || !assigned[f.ID] {
				continue
			}
			media, err := s.forms.Attachments(ctx, f.CurrentVersionID)
			if err != nil {
				return nil, err
			}
			if media, err = s.linkLists(ctx, projectID, f.CurrentVersionID, media); err != nil {
				return nil, err
			}
			held := DeviceHeldForm{XMLFormID: f.XMLFormID, Name: f.Name, Version: f.Version}
			for _, m := range media {
				switch {
				case m.EntityList != "":
					lists[m.EntityList] = true
				case m.Exists:
					held.Media = append(held.Media, m)
				}
			}
			h.Forms = append(h.Forms, held)
		}
		if len(lists) > 0 {
			dp, err := s.users.AppUserPrincipalByID(ctx, au.ID)
			if err != nil {
				return nil, err
			}
			h.Clearance = dp.Clearance(projectID)
			for _, name := range sortedKeys(lists) {
				hl, err := s.heldList(ctx, dp, projectID, name)
				if err != nil {
					return nil, err
				}
				h.Lists = append(h.Lists, *hl)
			}
		}
		out = append(out, h)
	}
	return out, nil
}

// heldList describes a list as the device of principal dp gets it.
func (s *Service) heldList(ctx context.Context, dp *haven.Principal, projectID int64, name string) (*DeviceHeldList, error) {
	l, err := s.entities.List(ctx, projectID, name)
	if err != nil {
		return nil, err
	}
	dl, err := s.deviceListCSV(ctx, dp, l)
	if err != nil {
		return nil, err
	}
	rows, err := csv.NewReader(bytes.NewReader(dl.csv)).ReadAll()
	if err != nil {
		return nil, err
	}
	hl := &DeviceHeldList{Name: name + ".csv", Columns: rows[0], Entities: len(rows) - 1}
	labelTier, err := s.entities.LabelTier(ctx, l.ID)
	if err != nil {
		return nil, err
	}
	hl.Label = dp.Clearance(projectID).Covers(labelTier)
	hl.Filter, err = s.entities.FilterOf(ctx, l, dp.ActorID)
	return hl, err
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
