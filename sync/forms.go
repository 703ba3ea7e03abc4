package sync

import (
	"context"
	"io"
	"strings"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/formspec"
	"github.com/haven-org/haven/storage"
)

// parseForm checks an uploaded XForm and prepares it for storage.
func parseForm(xml []byte) (*formspec.Form, storage.NewFormVersion, error) {
	f, err := formspec.Parse(xml)
	if err != nil {
		return nil, storage.NewFormVersion{}, err
	}
	if f.Encrypted {
		return nil, storage.NewFormVersion{}, haven.Errorf(haven.EINVALID,
			"Form %s uses ODK form encryption (a public key in <submission>). Haven encrypts every submission at rest itself and must read submissions to check them against the form, so it does not accept encrypted forms: remove the public key (the public_key setting in the XLSForm) and upload the form again.", f.ID)
	}
	nv := storage.NewFormVersion{XMLFormID: f.ID, Name: f.Title, Version: f.Version, XML: xml, MD5: md5Hex(xml)}
	for _, m := range f.Media {
		nv.Media = append(nv.Media, haven.FormAttachment{Name: m.Name, Type: m.Type})
	}
	return f, nv, nil
}

// CreateForm stores an uploaded XForm as a new form of the project: a draft,
// or published at once when publish is true. rows, for a form converted from
// an XLSForm, maps field paths to survey rows for the publishing check.
func (s *Service) CreateForm(ctx context.Context, p *haven.Principal, projectID int64, xml []byte, publish bool, rows map[string]int) (*haven.Form, error) {
	if err := allowed(p, haven.ActionFormWrite, projectID); err != nil {
		return nil, err
	}
	if _, err := s.Projects.Get(ctx, projectID); err != nil {
		return nil, err
	}
	f, nv, err := parseForm(xml)
	if err != nil {
		return nil, err
	}
	if publish {
		if err := checkPublishable(f, rows); err != nil {
			return nil, err
		}
	}
	return s.Forms.CreateForm(ctx, projectID, nv, publish)
}

// Form returns a form of a project for someone allowed to read it.
func (s *Service) Form(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string) (*haven.Form, error) {
	if err := allowed(p, haven.ActionFormRead, projectID); err != nil {
		return nil, err
	}
	return s.Forms.Get(ctx, projectID, xmlFormID)
}

// ListForms lists a project's forms for someone allowed to read them.
func (s *Service) ListForms(ctx context.Context, p *haven.Principal, projectID int64) ([]*haven.Form, error) {
	if err := allowed(p, haven.ActionFormRead, projectID); err != nil {
		return nil, err
	}
	if _, err := s.Projects.Get(ctx, projectID); err != nil {
		return nil, err
	}
	return s.Forms.List(ctx, projectID)
}

// writableForm returns a form the principal may change.
func (s *Service) writableForm(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string) (*haven.Form, error) {
	if err := allowed(p, haven.ActionFormWrite, projectID); err != nil {
		return nil, err
	}
	return s.Forms.Get(ctx, projectID, xmlFormID)
}

// NewDraft starts a new draft of a form: from xml when given, else from the
// published version. Media files carry over by name.
func (s *Service) NewDraft(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string, xml []byte) (*haven.Form, error) {
	f, err := s.writableForm(ctx, p, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	var nv *storage.NewFormVersion
	if len(strings.TrimSpace(string(xml))) > 0 {
		_, parsed, err := parseForm(xml)
		if err != nil {
			return nil, err
		}
		nv = &parsed
	}
	if err := s.Forms.SetDraft(ctx, f, nv); err != nil {
		return nil, err
	}
	return s.Forms.Get(ctx, projectID, xmlFormID)
}

// Draft returns a form's draft version.
func (s *Service) Draft(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string) (*haven.Form, *haven.FormVersion, error) {
	f, err := s.writableForm(ctx, p, projectID, xmlFormID)
	if err != nil {
		return nil, nil, err
	}
	if f.DraftVersionID == 0 {
		return nil, nil, haven.Errorf(haven.ENOTFOUND, "Form %s has no draft. Create one with POST .../forms/%s/draft.", xmlFormID, xmlFormID)
	}
	v, err := s.Forms.Version(ctx, f.DraftVersionID)
	return f, v, err
}

// DeleteDraft abandons a form's draft.
func (s *Service) DeleteDraft(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string) error {
	f, err := s.writableForm(ctx, p, projectID, xmlFormID)
	if err != nil {
		return err
	}
	return s.Forms.DeleteDraft(ctx, f)
}

// UploadDraftMedia stores a media file the form's draft expects, encrypted.
func (s *Service) UploadDraftMedia(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, name string, r io.Reader) error {
	f, _, err := s.Draft(ctx, p, projectID, xmlFormID)
	if err != nil {
		return err
	}
	if err := formspec.SafeFileName(name); err != nil {
		return err
	}
	blob, err := s.Blobs.Put(ctx, projectID, r, storage.PutOptions{Limit: s.Limits.MaxMedia, MD5: true})
	if err == storage.ErrTooLarge {
		return haven.Errorf(haven.ETOOLARGE, "The file %s is larger than %d bytes, the most Haven accepts for form media.", name, s.Limits.MaxMedia)
	} else if err != nil {
		return err
	}
	if err := s.Forms.SetDraftAttachment(ctx, f, name, blob); err != nil {
		s.Blobs.Discard(ctx, blob)
		return err
	}
	return nil
}

// PublishDraft publishes a form's draft. version, when given, is written into
// the XForm; it must differ from every version published before.
func (s *Service) PublishDraft(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, version string) (*haven.Form, error) {
	f, v, err := s.Draft(ctx, p, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	xml := v.XML
	parsed, err := formspec.Parse(xml)
	if err != nil {
		return nil, err
	}
	if err := checkPublishable(parsed, nil); err != nil {
		return nil, err
	}
	if version != "" && version != v.Version {
		if xml, err = formspec.SetVersion(xml, version); err != nil {
			return nil, err
		}
	} else {
		version = v.Version
	}
	if err := s.Forms.PublishDraft(ctx, f, version, xml, md5Hex(xml)); err != nil {
		return nil, err
	}
	return s.Forms.Get(ctx, projectID, xmlFormID)
}

// SetFormState opens or closes a form.
func (s *Service) SetFormState(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, state string) (*haven.Form, error) {
	f, err := s.writableForm(ctx, p, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	if err := s.Forms.SetState(ctx, f, state); err != nil {
		return nil, err
	}
	return s.Forms.Get(ctx, projectID, xmlFormID)
}
