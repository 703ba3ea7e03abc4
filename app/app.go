// Package app is Haven's application layer: every use case (publish a form,
// take a device's submission, read, export or aggregate collected data,
// answer a data subject's request, run a project's life, manage users and
// their rights) is one method of Service that takes the acting principal.
// Rights and clearances are checked here, once, and every audit event is
// written here; the HTTP layer (server) and the commands call it and never
// the storage below it. What a reader may see of a submission is decided in
// one place, the read view (view.go).
package app

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"log/slog"
	"sync"
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

// Options tune a Service; the zero value is the default.
type Options struct {
	Limits *Limits      // nil: DefaultLimits
	Log    *slog.Logger // nil: slog.Default()
	// SessionLifetime is how long a login lasts (0: SessionLifetime, a
	// day, as in ODK Central).
	SessionLifetime time.Duration
}

// Service is Haven's application layer over an opened data directory.
type Service struct {
	Limits Limits
	// SessionLifetime is how long a login lasts.
	SessionLifetime time.Duration

	st          *storage.Store
	users       *storage.Users
	projects    *storage.Projects
	forms       *storage.Forms
	submissions *storage.Submissions
	entities    *storage.Entities
	blobs       *storage.Blobs
	audit       *storage.Audit
	log         *slog.Logger
	logins      *loginGuard
	nonces      *nonceLog

	entityWork  entityWorker // applies queued entity blocks, one drain at a time
	deviceLists listCache    // entity lists made for devices

	schemas  sync.Map // form version id -> *formspec.Form (published versions never change)
	tierSets sync.Map // form version ids -> the strictest tier of each field among them

	parseOnce sync.Once
	parsing   *semaphore.Weighted // of parseSize bytes
	parseSize int64               // Limits.ParseBudget when first used
}

// New returns the application layer over st: the one constructor that
// `haven serve`, the tests and the load generator use.
func New(st *storage.Store, opts Options) *Service {
	s := &Service{Limits: DefaultLimits, st: st, users: st.Users, projects: st.Projects, forms: st.Forms,
		submissions: st.Submissions, entities: st.Entities, blobs: st.Blobs, audit: st.Audit, log: opts.Log}
	if opts.Limits != nil {
		s.Limits = *opts.Limits
	}
	s.SessionLifetime = opts.SessionLifetime
	if s.SessionLifetime <= 0 {
		s.SessionLifetime = SessionLifetime
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.logins = &loginGuard{now: s.now}
	if st.DB.Shared() {
		s.logins.shared = st.DB
	}
	s.nonces = &nonceLog{now: s.now}
	return s
}

// now is the clock: the database's, which tests move.
func (s *Service) now() time.Time { return s.st.DB.Now() }

// Now is the service's clock, for the layers above that date what they answer.
func (s *Service) Now() time.Time { return s.now() }

// Secret derives a named secret of the server (JWT signing, Digest nonces)
// from the master key, so the key itself never leaves storage.
func (s *Service) Secret(name string) []byte { return storage.DeriveSecret(s.st.MasterKey, name) }

// DigestRealm is the HTTP Digest realm every stored Digest credential is made for.
const DigestRealm = storage.DigestRealm

// authorize is the one rule for whether p may do action in a project: the
// rights table decides (haven.Principal.Can). Someone with no role in the
// project is told it does not exist, whether or not it does, so that ids
// cannot be probed; someone with a role but not this right is refused.
func (s *Service) authorize(p *haven.Principal, action haven.Action, projectID int64) error {
	if p.Can(action, projectID) {
		return nil
	}
	if p.Member(projectID) {
		return haven.Errorf(haven.EFORBIDDEN, "You are not allowed to do this in project %d. Ask the project lead for access.", projectID)
	}
	return projectNotFound(projectID)
}

func projectNotFound(projectID int64) error {
	return haven.Errorf(haven.ENOTFOUND, "Project %d could not be found.", projectID)
}

// admin refuses anyone but a site administrator.
func admin(p *haven.Principal) error {
	if p == nil || !p.Admin {
		return haven.Errorf(haven.EFORBIDDEN, "Only a site administrator may do this. Ask one.")
	}
	return nil
}

// project returns a project p may do action in.
func (s *Service) project(ctx context.Context, p *haven.Principal, action haven.Action, projectID int64) (*haven.Project, error) {
	if err := s.authorize(p, action, projectID); err != nil {
		return nil, err
	}
	return s.projects.Get(ctx, projectID)
}

// schema returns the parsed model of a form version.
func (s *Service) schema(ctx context.Context, versionID int64) (*formspec.Form, error) {
	if f, ok := s.schemas.Load(versionID); ok {
		return f.(*formspec.Form), nil
	}
	v, err := s.forms.Version(ctx, versionID)
	if err != nil {
		return nil, err
	}
	f, err := formspec.Parse(v.XML)
	if err != nil {
		return nil, err
	}
	if v.PublishedAt != nil {
		s.schemas.Store(versionID, f) // a draft may still change
	}
	return f, nil
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

func md5Hex(b []byte) string {
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}
