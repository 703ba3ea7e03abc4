package app

import (
	"context"
	"fmt"
	"io"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/formspec"
	"github.com/haven-org/haven/storage"
)

// formFor returns a form of the project if p may do action in it.
func (s *Service) formFor(ctx context.Context, p *haven.Principal, action haven.Action, projectID int64, xmlFormID string) (*haven.Form, error) {
	if err := s.authorize(p, action, projectID); err != nil {
		return nil, err
	}
	return s.forms.Get(ctx, projectID, xmlFormID)
}

// submissionFor returns a submission and its form if p may read it.
func (s *Service) submissionFor(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, instanceID string) (*haven.Form, *haven.Submission, error) {
	f, err := s.formFor(ctx, p, haven.ActionSubmissionRead, projectID, xmlFormID)
	if err != nil {
		return nil, nil, err
	}
	sub, err := s.submissions.Get(ctx, projectID, f.ID, instanceID)
	return f, sub, err
}

// ListSubmissions lists a page of a form's submissions as the reader may
// see them, and how many there are.
func (s *Service) ListSubmissions(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string, limit, offset int) (_ []*haven.Submission, total int, err error) {
	e := s.event(ctx, p, "submission.list", projectID, objForm(projectID, xmlFormID))
	defer func() { s.record(ctx, e, err) }()
	f, err := s.formFor(ctx, p, haven.ActionSubmissionRead, projectID, xmlFormID)
	if err != nil {
		return nil, 0, err
	}
	subs, total, err := s.submissions.List(ctx, projectID, f.ID, limit, offset)
	if err != nil {
		return nil, 0, err
	}
	vs := s.views(p, f)
	for i, sub := range subs {
		v, err := vs.of(ctx, sub)
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
func (s *Service) Submission(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, instanceID string) (_ *SubmissionView, err error) {
	e := s.event(ctx, p, "submission.read", projectID, objSubmission(projectID, xmlFormID, instanceID))
	defer func() { s.record(ctx, e, err) }()
	f, sub, err := s.submissionFor(ctx, p, projectID, xmlFormID, instanceID)
	if err != nil {
		return nil, err
	}
	out, err := s.submissionView(ctx, s.views(p, f), projectID, sub)
	if err == nil && len(out.Omitted) > 0 {
		detail(e, "omitted", out.Omitted)
	}
	return out, err
}

// submissionView reads a submission through the reader's view.
func (s *Service) submissionView(ctx context.Context, vs *views, projectID int64, sub *haven.Submission) (*SubmissionView, error) {
	v, err := vs.of(ctx, sub)
	if err != nil {
		return nil, err
	}
	consent, err := s.submissions.Consent(ctx, projectID, sub)
	if err != nil {
		return nil, err
	}
	v.redactConsent(consent)
	inst, err := s.instance(ctx, projectID, sub)
	if err != nil {
		return nil, err
	}
	out := &SubmissionView{Submission: v.redact(sub), Consent: consent, Data: v.data(inst), Omitted: v.Omitted}
	if out.Omitted == nil {
		out.Omitted = []string{}
	}
	return out, nil
}

// instance reads and parses a submission's current XML.
func (s *Service) instance(ctx context.Context, projectID int64, sub *haven.Submission) (*formspec.Instance, error) {
	xml, err := s.submissions.XML(ctx, projectID, &sub.Current)
	if err != nil {
		return nil, err
	}
	return formspec.ParseInstance(xml, s.Limits.XML)
}

// SubmissionXML returns a submission's current XML, only to a reader
// cleared for every field of it.
func (s *Service) SubmissionXML(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, instanceID string) (_ []byte, err error) {
	e := s.event(ctx, p, "submission.read", projectID, objSubmission(projectID, xmlFormID, instanceID))
	defer func() { s.record(ctx, e, err) }()
	f, sub, err := s.submissionFor(ctx, p, projectID, xmlFormID, instanceID)
	if err != nil {
		return nil, err
	}
	v, err := s.views(p, f).of(ctx, sub)
	if err != nil {
		return nil, err
	}
	if !v.Complete() {
		detail(e, "omitted", v.Omitted)
		return nil, &haven.Error{Code: haven.EFORBIDDEN, Message: fmt.Sprintf(
			"The raw XML holds %d field(s) above your clearance (%s), so it is only for readers cleared for every field. Read the submission as JSON, which leaves those fields out, or ask the project lead for a higher clearance.",
			len(v.Omitted), v.clearance), Details: map[string]any{"omittedFields": v.Omitted}}
	}
	return s.submissions.XML(ctx, projectID, &sub.Current)
}

// Versions lists a submission's versions, newest first, as the reader may
// see them.
func (s *Service) Versions(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, instanceID string) (_ []haven.SubmissionVersion, err error) {
	e := s.event(ctx, p, "submission.versions", projectID, objSubmission(projectID, xmlFormID, instanceID))
	defer func() { s.record(ctx, e, err) }()
	f, sub, err := s.submissionFor(ctx, p, projectID, xmlFormID, instanceID)
	if err != nil {
		return nil, err
	}
	return s.versions(ctx, s.views(p, f), projectID, sub)
}

func (s *Service) versions(ctx context.Context, vs *views, projectID int64, sub *haven.Submission) ([]haven.SubmissionVersion, error) {
	v, err := vs.of(ctx, sub)
	if err != nil {
		return nil, err
	}
	out, err := s.submissions.Versions(ctx, projectID, sub)
	if err != nil {
		return nil, err
	}
	for i := range out {
		v.redactVersion(&out[i])
	}
	return out, nil
}

// Attachments lists the files of a submission's current version the reader
// may see (those named by fields within their clearance), and the names of
// those left out.
func (s *Service) Attachments(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, instanceID string) (_ []haven.Attachment, left []string, err error) {
	e := s.event(ctx, p, "submission.attachments", projectID, objSubmission(projectID, xmlFormID, instanceID))
	defer func() { s.record(ctx, e, err) }()
	f, sub, err := s.submissionFor(ctx, p, projectID, xmlFormID, instanceID)
	if err != nil {
		return nil, nil, err
	}
	kept, left, err := s.attachments(ctx, s.views(p, f), projectID, sub)
	if len(left) > 0 {
		detail(e, "omitted", left)
	}
	return kept, left, err
}

func (s *Service) attachments(ctx context.Context, vs *views, projectID int64, sub *haven.Submission) ([]haven.Attachment, []string, error) {
	all, err := s.submissions.Attachments(ctx, sub.Current.ID)
	if err != nil {
		return nil, nil, err
	}
	v, err := vs.of(ctx, sub)
	if err != nil {
		return nil, nil, err
	}
	if len(all) == 0 {
		return all, []string{}, nil
	}
	inst, err := s.instance(ctx, projectID, sub)
	if err != nil {
		return nil, nil, err
	}
	kept, left := v.files(inst, all)
	return kept, left, nil
}

// OpenAttachment opens a file of a submission for a reader cleared for
// its field. The read is audited before the file is returned, so before its
// first byte goes out.
func (s *Service) OpenAttachment(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, instanceID, name string) (_ io.ReadCloser, _ *haven.Attachment, err error) {
	e := s.event(ctx, p, "attachment.download", projectID, objSubmission(projectID, xmlFormID, instanceID)+"/file/"+name)
	defer func() { s.record(ctx, e, err) }()
	f, sub, err := s.submissionFor(ctx, p, projectID, xmlFormID, instanceID)
	if err != nil {
		return nil, nil, err
	}
	kept, left, err := s.attachments(ctx, s.views(p, f), projectID, sub)
	if err != nil {
		return nil, nil, err
	}
	for _, l := range left {
		if l == name {
			return nil, nil, haven.Errorf(haven.EFORBIDDEN, "This file belongs to a field above your clearance. Ask the project lead for a higher clearance.")
		}
	}
	for _, a := range kept {
		if a.Name == name && a.Exists {
			rc, _, err := s.blobs.Open(ctx, a.BlobID)
			if err != nil {
				return nil, nil, err
			}
			s.record(ctx, e, nil)
			return rc, &a, nil
		}
	}
	return nil, nil, haven.Errorf(haven.ENOTFOUND, "Submission %s has no file named %q (or it has not arrived yet).", instanceID, name)
}

// DeleteSubmission erases a submission: every version, its files (from
// the object store too) and its consent record.
func (s *Service) DeleteSubmission(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, instanceID string) (err error) {
	e := s.event(ctx, p, "submission.delete", projectID, objSubmission(projectID, xmlFormID, instanceID))
	defer func() { s.record(ctx, e, err) }()
	f, err := s.formFor(ctx, p, haven.ActionSubmissionDelete, projectID, xmlFormID)
	if err != nil {
		return err
	}
	return s.submissions.Delete(ctx, s.blobs, f.ID, instanceID, e)
}

// WithdrawConsent erases a submission whose respondent withdrew consent,
// keeping only a record, without personal data, that it happened.
func (s *Service) WithdrawConsent(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, instanceID string) (err error) {
	e := s.event(ctx, p, "submission.withdraw_consent", projectID, objSubmission(projectID, xmlFormID, instanceID))
	defer func() { s.record(ctx, e, err) }()
	f, err := s.formFor(ctx, p, haven.ActionSubmissionDelete, projectID, xmlFormID)
	if err != nil {
		return err
	}
	return s.submissions.WithdrawConsent(ctx, s.blobs, projectID, f.ID, instanceID, p.ActorID, e)
}

// Withdrawal is the record kept when consent to a submission is withdrawn.
type Withdrawal = storage.Withdrawal

// ConsentRefusals is a form's anonymous tally of submissions not kept for
// want of consent, by day, and the records of withdrawn consent.
type ConsentRefusals struct {
	NotKeptByDay map[string]int `json:"notKeptByDay"`
	Withdrawals  []Withdrawal   `json:"withdrawals"`
}

// ConsentRefusals returns a form's consent refusals and withdrawals.
func (s *Service) ConsentRefusals(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string) (*ConsentRefusals, error) {
	f, err := s.formFor(ctx, p, haven.ActionSubmissionRead, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	tally, err := s.submissions.Refusals(ctx, f.ID)
	if err != nil {
		return nil, err
	}
	withdrawals, err := s.submissions.Withdrawals(ctx, f.ID)
	if err != nil {
		return nil, err
	}
	return &ConsentRefusals{NotKeptByDay: tally, Withdrawals: withdrawals}, nil
}
