package app

import (
	"context"
	"io"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/export"
	"github.com/haven-org/haven/formspec"
)

// What ODK Central lets a project run on its forms beyond drafts and
// publishing: form assignments to app users, versions and their files,
// the XLSForm as uploaded, draft media, deletion.

// FormAssignment is an app user a form is assigned to, as Central lists it.
type FormAssignment struct {
	ActorID int64 `json:"actorId"`
	RoleID  int64 `json:"roleId"`
}

// appUserRole checks that a role named in a form assignment is the app
// user role: the only one Haven assigns per form.
func appUserRole(ref string) error {
	if _, name, ok := haven.LookupRole(ref); !ok || name != haven.RoleAppUser {
		return haven.Errorf(haven.ENOTFOUND, "Forms are assigned to app users only: use the role app-user (or %d), not %q.", haven.RoleID(haven.RoleAppUser), ref)
	}
	return nil
}

// FormAssignments lists the app users a form is assigned to, optionally
// only those of one role (which must be the app user role).
func (s *Service) FormAssignments(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, roleRef string) ([]FormAssignment, error) {
	if err := s.authorize(p, haven.ActionAppUserManage, projectID); err != nil {
		return nil, err
	}
	if roleRef != "" {
		if err := appUserRole(roleRef); err != nil {
			return nil, err
		}
	}
	f, err := s.forms.Get(ctx, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	ids, err := s.forms.Assignees(ctx, f.ID)
	if err != nil {
		return nil, err
	}
	out := make([]FormAssignment, len(ids))
	for i, id := range ids {
		out[i] = FormAssignment{ActorID: id, RoleID: haven.RoleID(haven.RoleAppUser)}
	}
	return out, nil
}

// AssignForm lets an app user of the project list, download and submit to
// a form, or (give false) takes that away.
func (s *Service) AssignForm(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, roleRef string, actorID int64, give bool) (err error) {
	action := "form.assignment.create"
	if !give {
		action = "form.assignment.delete"
	}
	e := s.event(ctx, p, action, projectID, objForm(projectID, xmlFormID)+"/"+objActor(actorID))
	defer func() { s.record(ctx, e, err) }()
	if err := s.authorize(p, haven.ActionAppUserManage, projectID); err != nil {
		return err
	}
	if err := appUserRole(roleRef); err != nil {
		return err
	}
	f, err := s.forms.Get(ctx, projectID, xmlFormID)
	if err != nil {
		return err
	}
	if give {
		return s.forms.Assign(ctx, f, actorID)
	}
	return s.forms.Unassign(ctx, f, actorID)
}

// DeleteForm removes a form that holds no data: its versions, media and
// assignments go at once (Central keeps deleted forms for 30 days; Haven
// keeps nothing it no longer needs). A form holding submissions, or the
// records of erased ones, is refused: erase or close it instead.
func (s *Service) DeleteForm(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string) (err error) {
	e := s.event(ctx, p, "form.delete", projectID, objForm(projectID, xmlFormID))
	defer func() { s.record(ctx, e, err) }()
	f, err := s.writableForm(ctx, p, projectID, xmlFormID)
	if err != nil {
		return err
	}
	blobs, err := s.forms.Delete(ctx, f)
	if err != nil {
		return err
	}
	s.blobs.Discard(ctx, blobs...)
	return nil
}

// FormVersion is a version of a form: its published version named by its
// version string (Central writes the empty version as "___"), or the draft.
func (s *Service) FormVersion(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string, ref VersionRef) (*haven.Form, *haven.FormVersion, error) {
	if ref.Draft {
		return s.Draft(ctx, p, projectID, xmlFormID)
	}
	f, err := s.Form(ctx, p, projectID, xmlFormID)
	if err != nil {
		return nil, nil, err
	}
	var id int64
	if ref.Current {
		if f.CurrentVersionID == 0 {
			return nil, nil, haven.Errorf(haven.ENOTFOUND, "Form %s has not been published yet; its draft is at .../forms/%s/draft.", xmlFormID, xmlFormID)
		}
		id = f.CurrentVersionID
	} else {
		v, err := s.forms.PublishedVersion(ctx, f.ID, ref.Version)
		if err != nil {
			return nil, nil, haven.Errorf(haven.ENOTFOUND, "Form %s has no published version %q: GET .../forms/%s/versions lists them.", xmlFormID, ref.Version, xmlFormID)
		}
		id = v.ID
	}
	v, err := s.forms.Version(ctx, id)
	return f, v, err
}

// VersionRef names a form version: the current one, the draft, or a
// published version by its version string.
type VersionRef struct {
	Current, Draft bool
	Version        string
}

// PublishedVersionRef reads a version as Central's URLs carry it: "___"
// stands for the empty version string.
func PublishedVersionRef(v string) VersionRef {
	if v == "___" {
		v = ""
	}
	return VersionRef{Version: v}
}

// FormXLSX returns the XLSForm a version was made from, as uploaded, with
// its content type. A form uploaded as an XForm has none.
func (s *Service) FormXLSX(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string, ref VersionRef) ([]byte, string, error) {
	_, v, err := s.FormVersion(ctx, p, projectID, xmlFormID, ref)
	if err != nil {
		return nil, "", err
	}
	b, ct, err := s.forms.XLSForm(ctx, v.ID)
	if err != nil {
		return nil, "", err
	}
	if b == nil {
		return nil, "", haven.Errorf(haven.ENOTFOUND, "This version of form %s was uploaded as an XForm, not an XLSForm: download its XML instead.", xmlFormID)
	}
	return b, ct, nil
}

// VersionAttachments lists the media files a version expects.
func (s *Service) VersionAttachments(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string, ref VersionRef) ([]haven.FormAttachment, error) {
	_, v, err := s.FormVersion(ctx, p, projectID, xmlFormID, ref)
	if err != nil {
		return nil, err
	}
	return s.forms.Attachments(ctx, v.ID)
}

// OpenVersionAttachment opens a media file of a version (for the draft,
// those uploaded for it).
func (s *Service) OpenVersionAttachment(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string, ref VersionRef, name string) (io.ReadCloser, *haven.FormAttachment, error) {
	all, err := s.VersionAttachments(ctx, p, projectID, xmlFormID, ref)
	if err != nil {
		return nil, nil, err
	}
	for _, a := range all {
		if a.Name != name {
			continue
		}
		if !a.Exists {
			return nil, nil, haven.Errorf(haven.ENOTFOUND, "The form expects a file %q, but none has been uploaded.", name)
		}
		rc, _, err := s.blobs.Open(ctx, a.BlobID)
		return rc, &a, err
	}
	return nil, nil, haven.Errorf(haven.ENOTFOUND, "This form has no file named %q.", name)
}

// VersionFields is the schema view of one version.
func (s *Service) VersionFields(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string, ref VersionRef) ([]Field, error) {
	_, v, err := s.FormVersion(ctx, p, projectID, xmlFormID, ref)
	if err != nil {
		return nil, err
	}
	schema, err := s.schema(ctx, v.ID)
	if err != nil {
		return nil, err
	}
	return schema.Schema(), nil
}

// DeleteDraftMedia forgets a media file uploaded for a form's draft; the
// draft expects it again.
func (s *Service) DeleteDraftMedia(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, name string) (err error) {
	e := s.event(ctx, p, "form.attachment.delete", projectID, objForm(projectID, xmlFormID)+"/file/"+name)
	defer func() { s.record(ctx, e, err) }()
	f, _, err := s.Draft(ctx, p, projectID, xmlFormID)
	if err != nil {
		return err
	}
	if err := formspec.SafeFileName(name); err != nil {
		return err
	}
	blob, err := s.forms.ClearDraftAttachment(ctx, f, name)
	if err != nil {
		return err
	}
	if blob != nil {
		s.blobs.Discard(ctx, blob)
	}
	return nil
}

// CentralFields lists a version's fields as ODK Central does (ruODK reads
// them to type the columns): every field, groups and repeats included.
func (s *Service) CentralFields(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string, ref VersionRef, odata bool) ([]export.CentralField, error) {
	_, v, err := s.FormVersion(ctx, p, projectID, xmlFormID, ref)
	if err != nil {
		return nil, err
	}
	schema, err := s.schema(ctx, v.ID)
	if err != nil {
		return nil, err
	}
	return export.NewOData(schema, func(string) bool { return true }).CentralFields(odata), nil
}
