package sync

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/formspec"
)

// checkPublishable refuses a form that does not say why it collects each
// field, how sensitive each is, or on what legal basis it collects at all.
// rows, when the form came from an XLSForm, maps paths to survey rows so
// the answer points at them. There is no switch that turns this off.
func checkPublishable(f *formspec.Form, rows map[string]int) error {
	problems := f.CheckProtection()
	if len(problems) == 0 {
		return nil
	}
	type located struct {
		formspec.Problem
		Row int `json:"row,omitempty"`
	}
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
	return &haven.Error{Code: haven.EINVALID,
		Message: fmt.Sprintf("Form %s cannot be published: Haven publishes only forms that say why each field is collected and how sensitive it is, and on what legal basis. Fix these %d problem(s) and publish again: %s. (In an XForm these are the bind attributes haven:purpose and haven:sensitivity and the model attributes haven:legal-basis and haven:consent-field, in the namespace urn:haven:xforms.)",
			f.ID, len(problems), strings.Join(lines, "; ")),
		Details: map[string]any{"problems": list}}
}

// Fields returns the schema view of a form's published version, or of its
// draft: every field with its path, type, purpose and tier.
func (s *Service) Fields(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string, draft bool) ([]formspec.Field, error) {
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
	versions, err := s.Forms.Versions(ctx, f.ID) // newest first
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

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// WithdrawConsent erases a submission whose respondent withdrew consent,
// keeping only a record, without personal data, that it happened.
func (s *Service) WithdrawConsent(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, instanceID string) error {
	if err := allowed(p, haven.ActionSubmissionDelete, projectID); err != nil {
		return err
	}
	f, err := s.Forms.Get(ctx, projectID, xmlFormID)
	if err != nil {
		return err
	}
	return s.Submissions.WithdrawConsent(ctx, s.Blobs, projectID, f.ID, instanceID, p.ActorID, haven.AuditFrom(ctx))
}
