package app

import (
	"bytes"
	"context"
	"io"

	"github.com/haven-org/haven"
)

// What devices fetch: the form list, the forms, their manifests and media.
// None of it is collected data, so none of it is audited, except entity
// lists, which are: each download is.

// DeviceForm is a form as the form list shows it to a device.
type DeviceForm struct {
	*haven.Form
	HasMedia bool
}

// FormList returns the forms a device may download from a project: published
// and open, by name. With xmlFormID set, only that form. A project that has
// ended lists nothing.
func (s *Service) FormList(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string) ([]DeviceForm, error) {
	pr, err := s.project(ctx, p, haven.ActionDeviceForms, projectID)
	if err != nil {
		return nil, err
	}
	out := []DeviceForm{}
	if pr.Closed(s.now()) {
		return out, nil // the project has ended: nothing to fill in any more
	}
	forms, err := s.forms.List(ctx, projectID)
	if err != nil {
		return nil, err
	}
	for _, f := range forms {
		if f.CurrentVersionID == 0 || f.State != haven.FormOpen || (xmlFormID != "" && f.XMLFormID != xmlFormID) {
			continue
		}
		if ok, err := s.assigned(ctx, p, f); err != nil {
			return nil, err
		} else if !ok {
			continue
		}
		media, err := s.forms.Attachments(ctx, f.CurrentVersionID)
		if err != nil {
			return nil, err
		}
		out = append(out, DeviceForm{Form: f, HasMedia: len(media) > 0})
	}
	return out, nil
}

// publishedForm returns a published form a device may use. Users who may
// read forms over REST may read them as devices do too.
func (s *Service) publishedForm(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string) (*haven.Form, error) {
	if !p.Can(haven.ActionFormRead, projectID) {
		if err := s.authorize(p, haven.ActionDeviceForms, projectID); err != nil {
			return nil, err
		}
	}
	f, err := s.forms.Get(ctx, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	if f.CurrentVersionID == 0 {
		return nil, haven.Errorf(haven.ENOTFOUND, "Form %s has not been published yet.", xmlFormID)
	}
	if ok, err := s.assigned(ctx, p, f); err != nil {
		return nil, err
	} else if !ok {
		return nil, notAssigned(f.XMLFormID)
	}
	return f, nil
}

// assigned reports whether p may use the form as a device: app users see,
// download and submit only the forms assigned to them (as in ODK Central);
// users use every form their project role allows.
func (s *Service) assigned(ctx context.Context, p *haven.Principal, f *haven.Form) (bool, error) {
	if p == nil || p.Type != haven.ActorFieldKey {
		return true, nil
	}
	m, err := s.forms.Assigned(ctx, p.ActorID)
	return m[f.ID], err
}

func notAssigned(xmlFormID string) error {
	return haven.Errorf(haven.EFORBIDDEN, "The form %q is not assigned to this device's app user. Ask your supervisor to assign it.", xmlFormID)
}

// FormXML returns the XML of a form's published version, as devices download it.
func (s *Service) FormXML(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string) ([]byte, error) {
	f, err := s.publishedForm(ctx, p, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	v, err := s.forms.Version(ctx, f.CurrentVersionID)
	if err != nil {
		return nil, err
	}
	return v.XML, nil
}

// Manifest returns the media files of a form's published version that have been uploaded.
func (s *Service) Manifest(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string) ([]haven.FormAttachment, error) {
	f, err := s.publishedForm(ctx, p, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	all, err := s.forms.Attachments(ctx, f.CurrentVersionID)
	if err != nil {
		return nil, err
	}
	if all, err = s.linkLists(ctx, projectID, f.CurrentVersionID, all); err != nil {
		return nil, err
	}
	out := all[:0]
	for _, a := range all {
		switch {
		case a.EntityList != "":
			// Made for this device: its hash changes whenever what it
			// would download does.
			l, err := s.entities.List(ctx, projectID, a.EntityList)
			if err != nil {
				return nil, err
			}
			dl, err := s.deviceListCSV(ctx, p, l)
			if err != nil {
				return nil, err
			}
			a.Hash, a.Size, a.EntityListApproval = dl.hash, int64(len(dl.csv)), l.ApprovalRequired
			out = append(out, a)
		case a.Exists:
			out = append(out, a)
		}
	}
	return out, nil
}

// FormMedia opens a media file of a form's published version.
func (s *Service) FormMedia(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, name string) (io.ReadCloser, *haven.FormAttachment, error) {
	f, err := s.publishedForm(ctx, p, projectID, xmlFormID)
	if err != nil {
		return nil, nil, err
	}
	all, err := s.forms.Attachments(ctx, f.CurrentVersionID)
	if err != nil {
		return nil, nil, err
	}
	if all, err = s.linkLists(ctx, projectID, f.CurrentVersionID, all); err != nil {
		return nil, nil, err
	}
	for _, a := range all {
		if a.Name == name && a.EntityList != "" {
			l, err := s.entities.List(ctx, projectID, a.EntityList)
			if err != nil {
				return nil, nil, err
			}
			dl, err := s.deviceListCSV(ctx, p, l)
			if err != nil {
				return nil, nil, err
			}
			e := s.event(ctx, p, "entity.list.download", projectID, objEntityList(projectID, l.Name))
			s.record(ctx, e, nil)
			a.Hash, a.Size = dl.hash, int64(len(dl.csv))
			return io.NopCloser(bytes.NewReader(dl.csv)), &a, nil
		}
		if a.Name == name && a.Exists {
			rc, _, err := s.blobs.Open(ctx, a.BlobID)
			return rc, &a, err
		}
	}
	return nil, nil, haven.Errorf(haven.ENOTFOUND, "This form has no file named %q.", name)
}

// CanSubmit answers a device's preflight before a submission: whether p
// may send forms to the project.
func (s *Service) CanSubmit(ctx context.Context, p *haven.Principal, projectID int64) error {
	if err := s.authorize(p, haven.ActionSubmit, projectID); err != nil {
		if haven.ErrorCode(err) == haven.EFORBIDDEN {
			return haven.Errorf(haven.EFORBIDDEN, "You may not send forms to project %d. Ask your supervisor for access.", projectID)
		}
		return err
	}
	return nil
}
