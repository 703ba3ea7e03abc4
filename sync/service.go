// Package sync is device sync: it publishes forms and serves them to devices
// (form list, form download, manifest and media) and ingests submissions
// (streamed multipart, split uploads, resends, edits), checking each against
// the form version it was filled in with.
package sync

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"io"
	gosync "sync"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/formspec"
	"github.com/haven-org/haven/storage"
	"golang.org/x/sync/semaphore"
)

// Limits bound what one request may carry.
type Limits struct {
	// MaxBody is the largest submission request, advertised to devices as
	// X-OpenRosa-Accept-Content-Length: Collect splits larger uploads.
	MaxBody int64
	// MaxAttachments is the most files one submission request may carry.
	MaxAttachments int
	// XML bounds the submission XML.
	XML formspec.Limits
	// MaxMedia is the largest form media file.
	MaxMedia int64
	// ParseBudget bounds the bytes of submission XML being parsed and
	// checked at once, across all requests. A parsed document can take 20
	// times its size in memory, so a crowd of large documents waits its turn
	// rather than exhausting memory; a document larger than the budget is
	// parsed alone. Small submissions (a few KB) never wait in practice.
	ParseBudget int64
}

// DefaultLimits matches what ODK Central accepts (100 MB requests) and what
// Collect sends (at most 100 files per request). Parsing 4 MiB of XML at once
// takes at most about 100 MB.
var DefaultLimits = Limits{MaxBody: 100_000_000, MaxAttachments: 100, XML: formspec.DefaultLimits, MaxMedia: 100_000_000,
	ParseBudget: 4 << 20}

// Service is device sync and form publication over Haven's storage.
type Service struct {
	Projects    *storage.Projects
	Forms       *storage.Forms
	Submissions *storage.Submissions
	Blobs       *storage.Blobs
	Limits      Limits
	// Now is the clock (project ends, classification deadlines); nil means time.Now.
	Now func() time.Time

	schemas gosync.Map // form version id -> *formspec.Form (published versions never change)

	parseOnce gosync.Once
	parsing   *semaphore.Weighted // of parseSize bytes
	parseSize int64               // Limits.ParseBudget when first used
}

// parseSlot waits until n more bytes of submission XML may be parsed within
// Limits.ParseBudget, and returns the function that gives them back. The
// wait ends early, with ctx's error, when the request is given up.
func (s *Service) parseSlot(ctx context.Context, n int) (release func(), err error) {
	s.parseOnce.Do(func() {
		if s.Limits.ParseBudget > 0 {
			s.parseSize = s.Limits.ParseBudget
			s.parsing = semaphore.NewWeighted(s.parseSize)
		}
	})
	if s.parsing == nil {
		return func() {}, nil
	}
	// Against the semaphore's own size, never more: asking for more than
	// it holds would wait until the request ends.
	w := min(int64(n), s.parseSize)
	if err := s.parsing.Acquire(ctx, w); err != nil {
		return nil, err
	}
	return func() { s.parsing.Release(w) }, nil
}

// schema returns the parsed model of a published form version.
func (s *Service) schema(ctx context.Context, versionID int64) (*formspec.Form, error) {
	if f, ok := s.schemas.Load(versionID); ok {
		return f.(*formspec.Form), nil
	}
	v, err := s.Forms.Version(ctx, versionID)
	if err != nil {
		return nil, err
	}
	f, err := formspec.Parse(v.XML)
	if err != nil {
		return nil, err
	}
	s.schemas.Store(versionID, f)
	return f, nil
}

func allowed(p *haven.Principal, action haven.Action, projectID int64) error {
	if !p.Can(action, projectID) {
		return haven.Errorf(haven.EFORBIDDEN, "You are not allowed to do this in project %d. Ask the project's administrator for access.", projectID)
	}
	return nil
}

// DeviceForm is a form as the form list shows it to a device.
type DeviceForm struct {
	*haven.Form
	HasMedia bool
}

// FormList returns the forms a device may download from a project: published
// and open, by name. With xmlFormID set, only that form.
func (s *Service) FormList(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string) ([]DeviceForm, error) {
	if err := allowed(p, haven.ActionDeviceForms, projectID); err != nil {
		return nil, err
	}
	out := []DeviceForm{}
	if pr, err := s.Projects.Get(ctx, projectID); err != nil {
		return nil, err
	} else if pr.Closed(s.now()) {
		return out, nil // the project has ended: nothing to fill in any more
	}
	forms, err := s.Forms.List(ctx, projectID)
	if err != nil {
		return nil, err
	}
	for _, f := range forms {
		if f.CurrentVersionID == 0 || f.State != haven.FormOpen || (xmlFormID != "" && f.XMLFormID != xmlFormID) {
			continue
		}
		media, err := s.Forms.Attachments(ctx, f.CurrentVersionID)
		if err != nil {
			return nil, err
		}
		out = append(out, DeviceForm{Form: f, HasMedia: len(media) > 0})
	}
	return out, nil
}

// publishedForm returns a published form a device may use.
// Users who may read forms over REST may read them as devices do too.
func (s *Service) publishedForm(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string) (*haven.Form, error) {
	if !p.Can(haven.ActionFormRead, projectID) {
		if err := allowed(p, haven.ActionDeviceForms, projectID); err != nil {
			return nil, err
		}
	}
	f, err := s.Forms.Get(ctx, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	if f.CurrentVersionID == 0 {
		return nil, haven.Errorf(haven.ENOTFOUND, "Form %s has not been published yet.", xmlFormID)
	}
	return f, nil
}

// FormXML returns the XML of a form's published version, as devices download it.
func (s *Service) FormXML(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID string) ([]byte, error) {
	f, err := s.publishedForm(ctx, p, projectID, xmlFormID)
	if err != nil {
		return nil, err
	}
	v, err := s.Forms.Version(ctx, f.CurrentVersionID)
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
	all, err := s.Forms.Attachments(ctx, f.CurrentVersionID)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, a := range all {
		if a.Exists {
			out = append(out, a)
		}
	}
	return out, nil
}

// OpenFormMedia opens a media file of a form version.
func (s *Service) OpenFormMedia(ctx context.Context, versionID int64, name string) (io.ReadCloser, *haven.FormAttachment, error) {
	all, err := s.Forms.Attachments(ctx, versionID)
	if err != nil {
		return nil, nil, err
	}
	for _, a := range all {
		if a.Name == name && a.Exists {
			rc, _, err := s.Blobs.Open(ctx, a.BlobID)
			return rc, &a, err
		}
	}
	return nil, nil, haven.Errorf(haven.ENOTFOUND, "This form has no file named %q.", name)
}

// DeviceMedia opens a media file of a form's published version for a device.
func (s *Service) DeviceMedia(ctx context.Context, p *haven.Principal, projectID int64, xmlFormID, name string) (io.ReadCloser, *haven.FormAttachment, error) {
	f, err := s.publishedForm(ctx, p, projectID, xmlFormID)
	if err != nil {
		return nil, nil, err
	}
	return s.OpenFormMedia(ctx, f.CurrentVersionID, name)
}

func md5Hex(b []byte) string {
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}
