package sync

import (
	"context"
	"fmt"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/formspec"
)

// Every read path of collected data goes through a View: the fields of a
// form version a reader is cleared for, and the ones left out. The reader's
// clearance in the project is compared with each field's effective tier (an
// undecided field counts as level_3); device ids count as level_2, as Haven
// maps the device's own metadata; instance names are made from answers, so
// they are shown only to readers cleared for every field.

// View is what one reader may see of one form version's submissions.
type View struct {
	Schema    *formspec.Form
	Clearance haven.Sensitivity
	// Omitted lists the version's fields above the clearance, in document order.
	Omitted []string
}

// View returns the reader's view of a form version.
func (s *Service) View(ctx context.Context, p *haven.Principal, projectID, versionID int64) (*View, error) {
	schema, err := s.schema(ctx, versionID)
	if err != nil {
		return nil, err
	}
	v := &View{Schema: schema, Clearance: p.Clearance(projectID)}
	for _, fd := range schema.Schema() {
		if fd.Effective.Rank() > v.Clearance.Rank() {
			v.Omitted = append(v.Omitted, fd.Path)
		}
	}
	return v, nil
}

// Keep reports whether the reader may see the field n.
func (v *View) Keep(n *formspec.Node) bool { return v.Schema.Tier(n.Path).Rank() <= v.Clearance.Rank() }

// Complete reports whether the reader may see every field of the version.
func (v *View) Complete() bool { return len(v.Omitted) == 0 }

// DeviceIDs reports whether the reader may see device ids.
func (v *View) DeviceIDs() bool { return haven.Level2.Rank() <= v.Clearance.Rank() }

// views caches the views of the versions one request meets.
type views struct {
	s         *Service
	p         *haven.Principal
	projectID int64
	byVersion map[int64]*View
}

func (s *Service) views(p *haven.Principal, projectID int64) *views {
	return &views{s: s, p: p, projectID: projectID, byVersion: map[int64]*View{}}
}

func (vs *views) get(ctx context.Context, versionID int64) (*View, error) {
	if v := vs.byVersion[versionID]; v != nil {
		return v, nil
	}
	v, err := vs.s.View(ctx, vs.p, vs.projectID, versionID)
	if err == nil {
		vs.byVersion[versionID] = v
	}
	return v, err
}

// redact returns a copy of a submission record with what the view does not
// allow removed: the instance name and device ids.
func (v *View) redact(sub *haven.Submission) *haven.Submission {
	out := *sub
	if !v.Complete() {
		out.Current.InstanceName = ""
	}
	if !v.DeviceIDs() {
		out.DeviceID, out.Current.DeviceID = "", ""
	}
	return &out
}

// ListSubmissions lists a form's submissions as the reader may see them.
func (s *Service) ListSubmissions(ctx context.Context, p *haven.Principal, f *haven.Form, limit, offset int) ([]*haven.Submission, int, error) {
	if err := allowed(p, haven.ActionSubmissionRead, f.ProjectID); err != nil {
		return nil, 0, err
	}
	subs, total, err := s.Submissions.List(ctx, f.ProjectID, f.ID, limit, offset)
	if err != nil {
		return nil, 0, err
	}
	vs := s.views(p, f.ProjectID)
	for i, sub := range subs {
		v, err := vs.get(ctx, sub.Current.FormVersionID)
		if err != nil {
			return nil, 0, err
		}
		subs[i] = v.redact(sub)
	}
	return subs, total, nil
}

// SubmissionView is one submission as a reader may see it.
type SubmissionView struct {
	*haven.Submission
	Consent *haven.ConsentRecord `json:"consent"`
	Data    map[string]any       `json:"data"`
	// Omitted lists the fields left out because they are above the
	// reader's clearance.
	Omitted []string `json:"omittedFields"`
}

// Submission returns a submission's record, consent record and values as
// the reader may see them.
func (s *Service) Submission(ctx context.Context, p *haven.Principal, f *haven.Form, sub *haven.Submission) (*SubmissionView, error) {
	if err := allowed(p, haven.ActionSubmissionRead, f.ProjectID); err != nil {
		return nil, err
	}
	return s.submissionView(ctx, s.views(p, f.ProjectID), f.ProjectID, sub)
}

func (s *Service) submissionView(ctx context.Context, vs *views, projectID int64, sub *haven.Submission) (*SubmissionView, error) {
	v, err := vs.get(ctx, sub.Current.FormVersionID)
	if err != nil {
		return nil, err
	}
	consent, err := s.Submissions.Consent(ctx, projectID, sub)
	if err != nil {
		return nil, err
	}
	if consent != nil && !v.DeviceIDs() {
		consent.DeviceID = ""
	}
	xml, err := s.Submissions.XML(ctx, projectID, &sub.Current)
	if err != nil {
		return nil, err
	}
	inst, err := formspec.ParseInstance(xml, s.Limits.XML)
	if err != nil {
		return nil, err
	}
	out := &SubmissionView{Submission: v.redact(sub), Consent: consent, Omitted: v.Omitted}
	out.Data, _ = v.Schema.Data(inst, v.Keep)
	if out.Omitted == nil {
		out.Omitted = []string{}
	}
	return out, nil
}

// Versions lists a submission's versions as the reader may see them.
func (s *Service) Versions(ctx context.Context, p *haven.Principal, f *haven.Form, sub *haven.Submission) ([]haven.SubmissionVersion, error) {
	if err := allowed(p, haven.ActionSubmissionRead, f.ProjectID); err != nil {
		return nil, err
	}
	out, err := s.Submissions.Versions(ctx, f.ProjectID, sub)
	if err != nil {
		return nil, err
	}
	vs := s.views(p, f.ProjectID)
	for i := range out {
		v, err := vs.get(ctx, out[i].FormVersionID)
		if err != nil {
			return nil, err
		}
		if !v.Complete() {
			out[i].InstanceName, out[i].EditReason = "", ""
		}
		if !v.DeviceIDs() {
			out[i].DeviceID = ""
		}
	}
	return out, nil
}

// RawXML returns a submission's current XML, only to a reader cleared for
// every field of its form version.
func (s *Service) RawXML(ctx context.Context, p *haven.Principal, f *haven.Form, sub *haven.Submission) ([]byte, error) {
	if err := allowed(p, haven.ActionSubmissionRead, f.ProjectID); err != nil {
		return nil, err
	}
	v, err := s.View(ctx, p, f.ProjectID, sub.Current.FormVersionID)
	if err != nil {
		return nil, err
	}
	if !v.Complete() {
		return nil, &haven.Error{Code: haven.EFORBIDDEN, Message: fmt.Sprintf(
			"The raw XML holds %d field(s) above your clearance (%s), so it is only for readers cleared for every field. Read the submission as JSON, which leaves those fields out, or ask the project lead for a higher clearance.",
			len(v.Omitted), v.Clearance), Details: map[string]any{"omittedFields": v.Omitted}}
	}
	return s.Submissions.XML(ctx, f.ProjectID, &sub.Current)
}

// Attachments lists the files of a submission's current version the
// reader may see (those named by fields within their clearance), and the
// names of those left out.
func (s *Service) Attachments(ctx context.Context, p *haven.Principal, f *haven.Form, sub *haven.Submission) ([]haven.Attachment, []string, error) {
	if err := allowed(p, haven.ActionSubmissionRead, f.ProjectID); err != nil {
		return nil, nil, err
	}
	all, err := s.Submissions.Attachments(ctx, sub.Current.ID)
	if err != nil {
		return nil, nil, err
	}
	v, err := s.View(ctx, p, f.ProjectID, sub.Current.FormVersionID)
	if err != nil {
		return nil, nil, err
	}
	if v.Complete() {
		return all, []string{}, nil
	}
	xml, err := s.Submissions.XML(ctx, f.ProjectID, &sub.Current)
	if err != nil {
		return nil, nil, err
	}
	inst, err := formspec.ParseInstance(xml, s.Limits.XML)
	if err != nil {
		return nil, nil, err
	}
	fields := v.Schema.FileFields(inst)
	kept, left := []haven.Attachment{}, []string{}
	for _, a := range all {
		if path, ok := fields[a.Name]; ok && v.Schema.Tier(path).Rank() <= v.Clearance.Rank() {
			kept = append(kept, a)
		} else {
			left = append(left, a.Name)
		}
	}
	return kept, left, nil
}
