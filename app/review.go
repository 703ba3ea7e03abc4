package app

import (
	"bytes"
	"context"
	"io"
	"mime/multipart"
	"net/textproto"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/formspec"
	"github.com/haven-org/haven/storage"
)

// Submission writes over REST, as ODK Central's API has them: create and
// edit with the XML, review states, comments, files. Each goes through the
// same ingestion, rights and read view as everything else.

// ReviewStates are the review states a submission may be given.
var ReviewStates = storage.ReviewStates

// Comment is a remark on a submission.
type Comment = storage.Comment

// wrap turns a bare submission XML into the multipart request a device
// sends, so REST writes take the one ingestion path.
func wrap(xml []byte) (*multipart.Reader, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="xml_submission_file"; filename="submission.xml"`)
	h.Set("Content-Type", "text/xml")
	w, err := mw.CreatePart(h)
	if err != nil {
		return nil, err
	}
	w.Write(xml)
	if err := mw.Close(); err != nil {
		return nil, err
	}
	return multipart.NewReader(&buf, mw.Boundary()), nil
}

// header reads what a REST write needs from a submission XML: its form id,
// instanceID and deprecatedID.
func (s *Service) header(ctx context.Context, xml []byte) (*formspec.Instance, error) {
	if len(xml) > s.Limits.XML.MaxBytes {
		return nil, haven.Errorf(haven.ETOOLARGE, "The submission XML is larger than %d bytes, more than Haven accepts.", s.Limits.XML.MaxBytes)
	}
	release, err := s.parseSlot(ctx, len(xml))
	if err != nil {
		return nil, &haven.Error{Code: haven.EUNAVAILABLE, Err: err, Message: "The server was busy checking other large forms. Nothing was saved. Send the submission again."}
	}
	defer release()
	inst, err := formspec.ParseInstance(xml, s.Limits.XML)
	if err != nil {
		return nil, err
	}
	meta := *inst
	meta.Root = nil
	return &meta, nil
}

// CreateSubmission stores a submission sent as bare XML (POST
// .../forms/{id}/submissions): its files follow one by one
// (UploadSubmissionFile). The XML must belong to the form in the URL.
func (s *Service) CreateSubmission(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string, xml []byte, deviceID string) (*haven.Submission, error) {
	if err := s.authorize(p, haven.ActionSubmit, projectID); err != nil {
		return nil, err
	}
	inst, err := s.header(ctx, xml)
	if err != nil {
		return nil, err
	}
	if inst.FormID != xmlFormID {
		return nil, haven.Errorf(haven.EINVALID, "The submission is for form %q, but was sent to form %q: send it to .../forms/%s/submissions.", inst.FormID, xmlFormID, inst.FormID)
	}
	if inst.DeprecatedID != "" {
		return nil, haven.Errorf(haven.EINVALID, "The submission names a deprecatedID, so it is an edit: send it with PUT to .../submissions/{instanceId} of the submission it edits.")
	}
	parts, err := wrap(xml)
	if err != nil {
		return nil, err
	}
	rec, err := s.Submit(ctx, SubmitRequest{Principal: p, ProjectID: projectID, DeviceID: deviceID, Parts: parts})
	if err != nil {
		return nil, err
	}
	if rec.Duplicate {
		return nil, haven.Errorf(haven.EDUPLICATE, "A submission with the instanceID %s already exists: nothing new was stored.", rec.InstanceID)
	}
	if rec.NotKept != "" {
		return nil, haven.Errorf(haven.ECONFLICT, "The submission was not stored: %s", rec.NotKept)
	}
	return s.written(ctx, p, projectID, xmlFormID, rec.InstanceID)
}

// EditSubmission stores a new version of a submission from its whole XML
// (PUT .../submissions/{instanceId}): the XML names the current version's
// instanceID as its deprecatedID and has an instanceID of its own. Whoever
// replaces every value must be cleared for every field; others correct
// the fields they may see (.../corrections).
func (s *Service) EditSubmission(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, instanceID string, xml []byte) (*haven.Submission, error) {
	f, err := s.formFor(ctx, p, haven.ActionSubmissionUpdate, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	sub, err := s.submissions.Get(ctx, projectID, f.ID, instanceID)
	if err != nil {
		return nil, err
	}
	v, err := s.views(p, f).of(ctx, sub)
	if err != nil {
		return nil, err
	}
	if !v.Complete() {
		return nil, &haven.Error{Code: haven.EFORBIDDEN, Message: "This submission holds fields above your clearance, so you cannot replace it whole. Correct the fields you may see with POST .../corrections.",
			Details: map[string]any{"omittedFields": v.Omitted}}
	}
	inst, err := s.header(ctx, xml)
	if err != nil {
		return nil, err
	}
	switch {
	case inst.FormID != xmlFormID:
		return nil, haven.Errorf(haven.EINVALID, "The XML is for form %q, not %q.", inst.FormID, xmlFormID)
	case inst.DeprecatedID != sub.Current.InstanceID:
		return nil, haven.Errorf(haven.ECONFLICT, "An edit must name the current version's instanceID (%s) as meta/deprecatedID; this one names %q. Fetch the current version and edit that.", sub.Current.InstanceID, inst.DeprecatedID)
	}
	parts, err := wrap(xml)
	if err != nil {
		return nil, err
	}
	rec, err := s.submit(ctx, SubmitRequest{Principal: p, ProjectID: projectID, Parts: parts}, "submission.update", haven.ActionSubmissionUpdate)
	if err != nil {
		return nil, err
	}
	if rec.NotKept != "" {
		return nil, haven.Errorf(haven.ECONFLICT, "The edit was not stored: %s", rec.NotKept)
	}
	return s.written(ctx, p, projectID, xmlFormID, instanceID)
}

// written answers a write with the submission's record as the writer may
// see it.
func (s *Service) written(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, instanceID string) (*haven.Submission, error) {
	f, err := s.forms.Get(ctx, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	sub, err := s.submissions.Get(ctx, projectID, f.ID, instanceID)
	if err != nil {
		return nil, err
	}
	v, err := s.views(p, f).of(ctx, sub)
	if err != nil {
		return nil, err
	}
	return v.redact(sub), nil
}

// Review sets a submission's review state (received, hasIssues, edited,
// approved, rejected).
func (s *Service) Review(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, instanceID, state string) (_ *haven.Submission, err error) {
	e := s.event(ctx, p, "submission.update", projectID, objSubmission(projectID, xmlFormID, instanceID))
	e.Details = map[string]any{"reviewState": state}
	defer func() { s.record(ctx, e, err) }()
	f, err := s.formFor(ctx, p, haven.ActionSubmissionUpdate, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	sub, err := s.submissions.Get(ctx, projectID, f.ID, instanceID)
	if err != nil {
		return nil, err
	}
	if err := s.submissions.SetReviewState(ctx, sub, state, e); err != nil {
		return nil, err
	}
	if state == "approved" {
		s.applyAfterWrite(context.WithoutCancel(ctx))
	}
	return s.written(ctx, p, projectID, xmlFormID, instanceID)
}

// Comments lists a submission's comments that the reader may see: a
// comment is as sensitive as its author's clearance when written (it may
// quote what they saw), so a reader sees those written at or below their
// own clearance.
func (s *Service) Comments(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, instanceID string) (_ []Comment, err error) {
	e := s.event(ctx, p, "submission.comment.read", projectID, objSubmission(projectID, xmlFormID, instanceID))
	defer func() { s.record(ctx, e, err) }()
	_, sub, err := s.submissionFor(ctx, p, projectID, xmlFormID, instanceID)
	if err != nil {
		return nil, err
	}
	all, err := s.submissions.Comments(ctx, projectID, sub)
	if err != nil {
		return nil, err
	}
	clearance := p.Clearance(projectID)
	out, left := all[:0], 0
	for _, c := range all {
		if clearance.Covers(c.Tier) {
			out = append(out, c)
		} else {
			left++
		}
	}
	if left > 0 {
		detail(e, "omittedComments", left)
	}
	return out, nil
}

// AddComment writes a comment on a submission, at the author's clearance.
func (s *Service) AddComment(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, instanceID, body string) (_ *Comment, err error) {
	e := s.event(ctx, p, "submission.comment.create", projectID, objSubmission(projectID, xmlFormID, instanceID))
	defer func() { s.record(ctx, e, err) }()
	f, err := s.formFor(ctx, p, haven.ActionSubmissionUpdate, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace([]byte(body))) == 0 {
		return nil, haven.Errorf(haven.EINVALID, "The comment is empty: give it a body.")
	}
	if len(body) > 64<<10 {
		return nil, haven.Errorf(haven.ETOOLARGE, "The comment is longer than 64 KiB; shorten it.")
	}
	sub, err := s.submissions.Get(ctx, projectID, f.ID, instanceID)
	if err != nil {
		return nil, err
	}
	c := &Comment{Body: body, ActorID: p.ActorID, Tier: p.Clearance(projectID)}
	if err := s.submissions.AddComment(ctx, projectID, sub, c, e); err != nil {
		return nil, err
	}
	return c, nil
}

// UploadSubmissionFile stores a file that a submission's current version
// names and lacks (Central's POST .../attachments/{name}); a file already
// there changes only with an edit.
func (s *Service) UploadSubmissionFile(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, instanceID, name string, r io.Reader) (err error) {
	e := s.event(ctx, p, "submission.attachment.update", projectID, objSubmission(projectID, xmlFormID, instanceID)+"/file/"+name)
	defer func() { s.record(ctx, e, err) }()
	f, err := s.formFor(ctx, p, haven.ActionSubmissionUpdate, projectID, xmlFormID)
	if err != nil {
		if haven.ErrorCode(err) != haven.EFORBIDDEN || !p.Can(haven.ActionSubmit, projectID) {
			return err
		}
		// A submitter completes the files of what they sent.
		if f, err = s.forms.Get(ctx, projectID, xmlFormID); err != nil {
			return err
		}
	}
	if err := formspec.SafeFileName(name); err != nil {
		return err
	}
	sub, err := s.submissions.Get(ctx, projectID, f.ID, instanceID)
	if err != nil {
		return err
	}
	if p.Type == haven.ActorFieldKey || !p.Can(haven.ActionSubmissionUpdate, projectID) {
		if sub.SubmitterID != p.ActorID {
			return haven.Errorf(haven.EFORBIDDEN, "Only whoever sent submission %s may add its files.", instanceID)
		}
	}
	blob, err := s.blobs.Put(ctx, projectID, r, storage.PutOptions{Limit: s.Limits.MaxBody})
	if err == storage.ErrTooLarge {
		return haven.Errorf(haven.ETOOLARGE, "The file %s is larger than %d bytes, the most Haven accepts.", name, s.Limits.MaxBody)
	} else if err != nil {
		return err
	}
	if err := s.submissions.AttachFile(ctx, sub, name, blob, e); err != nil {
		s.blobs.Discard(ctx, blob)
		return err
	}
	return nil
}
