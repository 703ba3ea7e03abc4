package sync

import (
	"context"
	"sort"
	"strings"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/formspec"
	"github.com/haven-org/haven/storage"
)

// SubjectReport is everything a project holds about one person, found by
// the identifier its forms record (the answer to an access request).
type SubjectReport struct {
	Submissions []SubjectSubmission `json:"submissions"`
	// Objection is set while the person's objection stands.
	Objection *storage.Objection `json:"objection"`
}

// SubjectSubmission is one submission about the person: its record,
// consent, values, files and every version, within the reader's clearance.
type SubjectSubmission struct {
	FormID string `json:"xmlFormId"`
	*SubmissionView
	Attachments []haven.Attachment        `json:"attachments"`
	Versions    []haven.SubmissionVersion `json:"versions"`
}

func checkSubjectID(id string) error {
	if strings.TrimSpace(id) == "" {
		return haven.Errorf(haven.EINVALID, "The subject identifier is empty. Give the identifier the form records for the person.")
	}
	return nil
}

// Subject answers an access request: every submission about the person
// with identifier id across the project's forms, and any objection.
func (s *Service) Subject(ctx context.Context, p *haven.Principal, projectID int64, id string) (*SubjectReport, error) {
	if err := allowed(p, haven.ActionSubjectRequest, projectID); err != nil {
		return nil, err
	}
	if err := checkSubjectID(id); err != nil {
		return nil, err
	}
	found, err := s.Submissions.SubjectSubmissions(ctx, projectID, id)
	if err != nil {
		return nil, err
	}
	rep := &SubjectReport{Submissions: []SubjectSubmission{}}
	vs := s.views(p, projectID)
	for _, f := range found {
		view, err := s.submissionView(ctx, vs, projectID, f.Submission)
		if err != nil {
			return nil, err
		}
		form := &haven.Form{ID: f.FormID, ProjectID: projectID, XMLFormID: f.XMLFormID}
		out := SubjectSubmission{FormID: f.XMLFormID, SubmissionView: view}
		if out.Attachments, _, err = s.Attachments(ctx, p, form, f.Submission); err != nil {
			return nil, err
		}
		if out.Versions, err = s.Versions(ctx, p, form, f.Submission); err != nil {
			return nil, err
		}
		rep.Submissions = append(rep.Submissions, out)
	}
	if rep.Objection, err = s.Submissions.Objection(ctx, projectID, id); err != nil {
		return nil, err
	}
	return rep, nil
}

// EraseSubject erases every submission about the person with identifier id.
func (s *Service) EraseSubject(ctx context.Context, p *haven.Principal, projectID int64, id string) (*storage.Erasure, error) {
	if err := allowed(p, haven.ActionSubjectRequest, projectID); err != nil {
		return nil, err
	}
	if err := checkSubjectID(id); err != nil {
		return nil, err
	}
	return s.Submissions.EraseSubject(ctx, s.Blobs, projectID, id, p.ActorID, haven.AuditFrom(ctx))
}

// ObjectSubject records the person's objection; LiftObjection removes it.
func (s *Service) ObjectSubject(ctx context.Context, p *haven.Principal, projectID int64, id string) error {
	if err := allowed(p, haven.ActionSubjectRequest, projectID); err != nil {
		return err
	}
	if err := checkSubjectID(id); err != nil {
		return err
	}
	return s.Submissions.Object(ctx, projectID, id, p.ActorID, haven.AuditFrom(ctx))
}

// LiftObjection removes the person's objection.
func (s *Service) LiftObjection(ctx context.Context, p *haven.Principal, projectID int64, id string) error {
	if err := allowed(p, haven.ActionSubjectRequest, projectID); err != nil {
		return err
	}
	return s.Submissions.LiftObjection(ctx, projectID, id, haven.AuditFrom(ctx))
}

// Correction is a correction of a submission at a person's request.
type Correction struct {
	FormID     string            `json:"xmlFormId"`
	InstanceID string            `json:"instanceId"`
	Values     map[string]string `json:"values"` // field path: corrected value
	Reason     string            `json:"reason"`
}

// Correct stores a new version of a submission with the corrected values
// and the reason, validated against the submission's form version as a
// device's edit would be; files carry over. It returns the new version.
func (s *Service) Correct(ctx context.Context, p *haven.Principal, projectID int64, c Correction) (*haven.Submission, error) {
	if err := allowed(p, haven.ActionSubjectRequest, projectID); err != nil {
		return nil, err
	}
	if strings.TrimSpace(c.Reason) == "" {
		return nil, haven.Errorf(haven.EINVALID, "A correction needs a reason (for example, the person's request and what was wrong). Add \"reason\".")
	}
	form, err := s.Forms.Get(ctx, projectID, c.FormID)
	if err != nil {
		return nil, err
	}
	sub, err := s.Submissions.Get(ctx, projectID, form.ID, c.InstanceID)
	if err != nil {
		return nil, err
	}
	xml, err := s.Submissions.XML(ctx, projectID, &sub.Current)
	if err != nil {
		return nil, err
	}
	schema, err := s.schema(ctx, sub.Current.FormVersionID)
	if err != nil {
		return nil, err
	}
	corrected, newID, err := schema.Correct(xml, c.Values)
	if err != nil {
		return nil, err
	}
	inst, err := formspec.ParseInstance(corrected, s.Limits.XML)
	if err != nil {
		return nil, err
	}
	val := schema.Validate(inst)
	if err := val.Error(inst.FormID); err != nil {
		return nil, err
	}
	audit := haven.AuditFrom(ctx)
	if audit != nil {
		paths := make([]string, 0, len(c.Values))
		for p := range c.Values {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		audit.Details = map[string]any{"fields": paths, "newVersion": newID}
	}
	if _, err := s.Submissions.Ingest(ctx, &storage.Incoming{
		ProjectID:     projectID,
		FormID:        form.ID,
		FormVersionID: sub.Current.FormVersionID,
		InstanceID:    newID,
		DeprecatedID:  sub.Current.InstanceID,
		InstanceName:  inst.InstanceName,
		XML:           corrected,
		SubmitterID:   p.ActorID,
		Expected:      val.Files,
		Audit:         audit,
		Subject:       schema.SubjectID(inst),
		EditReason:    strings.TrimSpace(c.Reason),
	}); err != nil {
		return nil, err
	}
	return s.Submissions.Get(ctx, projectID, form.ID, c.InstanceID)
}
