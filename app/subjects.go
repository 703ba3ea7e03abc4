package app

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/formspec"
	"github.com/haven-org/haven/storage"
)

// Data subject requests: access, correction, erasure and objection, by the
// identifier a project's forms record for the person (the subject_id
// setting). The identifier is never stored or audited, only its keyed hash.
//
// Finding a person by their identifier tells whether the project holds
// data about them, so every request needs, beside the right to answer
// subject requests, clearance for the identifier's own tier (the strictest
// any form of the project gives it). A refused request is answered the same
// whether or not the person is known.

// SubjectReport is everything a project holds about one person, found by
// the identifier its forms record (the answer to an access request).
type SubjectReport struct {
	Submissions []SubjectSubmission `json:"submissions"`
	// Entities are the entities those submissions made or changed, with
	// every version, within the reader's clearance.
	Entities []SubjectEntity `json:"entities"`
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

// SubjectEntity is an entity the person's submissions made or changed.
type SubjectEntity struct {
	List string `json:"entityList"`
	*haven.Entity
	Versions []haven.EntityVersion `json:"versions"`
}

// Erasure is the record kept of a subject's erasure: no personal data.
type Erasure = storage.Erasure

// subjectRequest checks that p may answer subject requests in the project
// with identifier id: the right, then clearance for the identifier's tier.
func (s *Service) subjectRequest(ctx context.Context, p *haven.Principal, projectID int64, id string) error {
	if err := s.authorize(p, haven.ActionSubjectRequest, projectID); err != nil {
		return err
	}
	tier, found, err := s.subjectTier(ctx, projectID)
	if err != nil {
		return err
	}
	if !found {
		return haven.Errorf(haven.ENOTFOUND, "No form of project %d records a subject identifier (the subject_id setting), so Haven cannot find anyone's data by one.", projectID)
	}
	if c := p.Clearance(projectID); !c.Covers(tier) {
		return haven.Errorf(haven.EFORBIDDEN, "The identifier this project's forms record is %s, above your clearance (%s): only someone cleared for it may look people up by it. Ask the project lead.", tier, c)
	}
	if strings.TrimSpace(id) == "" {
		return haven.Errorf(haven.EINVALID, "The subject identifier is empty. Give the identifier the form records for the person.")
	}
	return nil
}

// subjectTier is the strictest tier any published version of any form of
// the project gives its subject identifier field; found is false when no
// form names one.
func (s *Service) subjectTier(ctx context.Context, projectID int64) (tier haven.Sensitivity, found bool, err error) {
	tier = haven.Public
	forms, err := s.forms.List(ctx, projectID)
	if err != nil {
		return "", false, err
	}
	for _, f := range forms {
		versions, err := s.forms.Versions(ctx, f.ID)
		if err != nil {
			return "", false, err
		}
		for _, v := range versions {
			schema, err := s.schema(ctx, v.ID)
			if err != nil {
				return "", false, err
			}
			if n := schema.Subject(); n != nil {
				tier, found = haven.MaxSensitivity(tier, schema.Tier(n.Path)), true
			}
		}
	}
	return tier, found, nil
}

// Subject answers an access request: every submission about the person
// with identifier id across the project's forms, and any objection.
func (s *Service) Subject(ctx context.Context, p *haven.Principal, projectID int64, id string) (_ *SubjectReport, err error) {
	e := s.event(ctx, p, "subject.access", projectID, objProject(projectID)+"/subject")
	defer func() { s.record(ctx, e, err) }()
	if err := s.subjectRequest(ctx, p, projectID, id); err != nil {
		return nil, err
	}
	found, err := s.submissions.SubjectSubmissions(ctx, projectID, id)
	if err != nil {
		return nil, err
	}
	rep := &SubjectReport{Submissions: []SubjectSubmission{}, Entities: []SubjectEntity{}}
	byForm := map[string]*views{}
	for _, f := range found {
		vs := byForm[f.XMLFormID]
		if vs == nil {
			form, err := s.forms.Get(ctx, projectID, f.XMLFormID)
			if err != nil {
				return nil, err
			}
			vs = s.views(p, form)
			byForm[f.XMLFormID] = vs
		}
		view, err := s.submissionView(ctx, vs, projectID, f.Submission)
		if err != nil {
			return nil, err
		}
		out := SubjectSubmission{FormID: f.XMLFormID, SubmissionView: view}
		if out.Attachments, _, err = s.attachments(ctx, vs, projectID, f.Submission); err != nil {
			return nil, err
		}
		if out.Versions, err = s.versions(ctx, vs, projectID, f.Submission); err != nil {
			return nil, err
		}
		rep.Submissions = append(rep.Submissions, out)
		if err := s.subjectEntities(ctx, p, rep, f.Submission.ID); err != nil {
			return nil, err
		}
	}
	detail(e, "submissions", len(rep.Submissions))
	detail(e, "entities", len(rep.Entities))
	if rep.Objection, err = s.submissions.Objection(ctx, projectID, id); err != nil {
		return nil, err
	}
	return rep, nil
}

// EraseSubject erases every submission about the person with identifier
// id, with its versions, files and consent records, in one transaction.
func (s *Service) EraseSubject(ctx context.Context, p *haven.Principal, projectID int64, id string) (_ *Erasure, err error) {
	e := s.event(ctx, p, "subject.erase", projectID, objProject(projectID)+"/subject")
	defer func() { s.record(ctx, e, err) }()
	if err := s.subjectRequest(ctx, p, projectID, id); err != nil {
		return nil, err
	}
	return s.submissions.EraseSubject(ctx, s.blobs, projectID, id, p.ActorID, e)
}

// ObjectSubject records the person's objection: devices' new submissions
// about them are refused from then on.
func (s *Service) ObjectSubject(ctx context.Context, p *haven.Principal, projectID int64, id string) (err error) {
	e := s.event(ctx, p, "subject.object", projectID, objProject(projectID)+"/subject")
	defer func() { s.record(ctx, e, err) }()
	if err := s.subjectRequest(ctx, p, projectID, id); err != nil {
		return err
	}
	return s.submissions.Object(ctx, projectID, id, p.ActorID, e)
}

// LiftObjection removes the person's objection.
func (s *Service) LiftObjection(ctx context.Context, p *haven.Principal, projectID int64, id string) (err error) {
	e := s.event(ctx, p, "subject.object.lift", projectID, objProject(projectID)+"/subject")
	defer func() { s.record(ctx, e, err) }()
	if err := s.subjectRequest(ctx, p, projectID, id); err != nil {
		return err
	}
	return s.submissions.LiftObjection(ctx, projectID, id, e)
}

// SubjectErasures lists a project's erasure records (no personal data).
func (s *Service) SubjectErasures(ctx context.Context, p *haven.Principal, projectID int64) (_ []Erasure, err error) {
	e := s.event(ctx, p, "subject.erasures", projectID, objProject(projectID))
	defer func() { s.record(ctx, e, err) }()
	if err := s.authorize(p, haven.ActionSubjectRequest, projectID); err != nil {
		return nil, err
	}
	return s.submissions.Erasures(ctx, projectID)
}

// Correction is a correction of a submission at a person's request.
type Correction struct {
	Values map[string]string `json:"values"` // field path: corrected value
	Reason string            `json:"reason"`
}

// Correct stores a new version of a submission with the corrected values
// and the reason, validated against the submission's form version as a
// device's edit would be; files carry over. A correction may touch only
// fields the corrector is cleared to see, and its answer is the corrected
// submission as they may see it.
func (s *Service) Correct(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, instanceID string, c Correction) (_ *SubmissionView, err error) {
	e := s.event(ctx, p, "submission.correct", projectID, objSubmission(projectID, xmlFormID, instanceID))
	defer func() { s.record(ctx, e, err) }()
	form, err := s.formFor(ctx, p, haven.ActionSubjectRequest, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	paths := make([]string, 0, len(c.Values))
	for path := range c.Values {
		paths = append(paths, path)
	}
	sort.Strings(paths)
	e.Details = map[string]any{"fields": paths}
	if strings.TrimSpace(c.Reason) == "" {
		return nil, haven.Errorf(haven.EINVALID, "A correction needs a reason (for example, the person's request and what was wrong). Add \"reason\".")
	}
	sub, err := s.submissions.Get(ctx, projectID, form.ID, instanceID)
	if err != nil {
		return nil, err
	}
	vs := s.views(p, form)
	v, err := vs.of(ctx, sub)
	if err != nil {
		return nil, err
	}
	for _, path := range paths {
		if !v.Sees(path) {
			return nil, haven.Errorf(haven.EFORBIDDEN, "You may not correct %s: it is %s, above your clearance (%s). Ask someone cleared for it.", path, v.tier(path), v.clearance)
		}
	}
	xml, err := s.submissions.XML(ctx, projectID, &sub.Current)
	if err != nil {
		return nil, err
	}
	corrected, newID, err := v.schema.Correct(xml, c.Values)
	if err != nil {
		return nil, err
	}
	inst, err := formspec.ParseInstance(corrected, s.Limits.XML)
	if err != nil {
		return nil, err
	}
	val := v.schema.Validate(inst)
	if err := val.Error(inst.FormID); err != nil {
		return nil, err
	}
	detail(e, "newVersion", newID)
	if _, err := s.submissions.Ingest(ctx, &storage.Incoming{
		ProjectID:     projectID,
		FormID:        form.ID,
		FormVersionID: sub.Current.FormVersionID,
		InstanceID:    newID,
		DeprecatedID:  sub.Current.InstanceID,
		InstanceName:  inst.InstanceName,
		XML:           corrected,
		SubmitterID:   p.ActorID,
		Expected:      val.Files,
		Audit:         e,
		Subject:       v.schema.SubjectID(inst),
		EditReason:    strings.TrimSpace(c.Reason),
		Entities:      len(v.schema.Entities()) > 0,
	}); err != nil {
		return nil, err
	}
	// The entities the submission made take the corrected values too.
	if len(v.schema.Entities()) > 0 {
		s.applyAfterWrite(context.WithoutCancel(ctx))
	}
	sub, err = s.submissions.Get(ctx, projectID, form.ID, instanceID)
	if err != nil {
		return nil, fmt.Errorf("reading the corrected submission: %w", err)
	}
	return s.submissionView(ctx, vs, projectID, sub)
}

// subjectEntities adds to rep the entities a submission made or changed
// (once each), as the reader may see them.
func (s *Service) subjectEntities(ctx context.Context, p *haven.Principal, rep *SubjectReport, submissionID int64) error {
	refs, err := s.entities.OfSubmission(ctx, submissionID)
	if err != nil {
		return err
	}
	for _, r := range refs {
		if slices.ContainsFunc(rep.Entities, func(x SubjectEntity) bool { return x.List == r.List.Name && x.UUID == r.UUID }) {
			continue
		}
		v, err := s.entityView(ctx, p, r.List)
		if err != nil {
			return err
		}
		en, err := s.entities.Get(ctx, r.List, r.UUID, false)
		if err != nil {
			return err
		}
		versions, err := s.entities.Versions(ctx, r.List, en)
		if err != nil {
			return err
		}
		v.trim(&en.Current)
		for i := range versions {
			v.trim(&versions[i])
		}
		rep.Entities = append(rep.Entities, SubjectEntity{List: r.List.Name, Entity: en, Versions: versions})
	}
	return nil
}
