// Package server is Haven's HTTP layer (echo): the OpenRosa endpoints devices
// use, the REST API at ODK Central's paths, and the middleware for
// authentication and limits. It turns requests into calls on sync and
// storage, and errors into HTTP in one place (errors.go).
package server

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
	"github.com/haven-org/haven/sync"
	"github.com/labstack/echo/v4"
)

// Config is what the operator sets.
type Config struct {
	// PublicURL is the address devices reach Haven at (https://haven.example.org);
	// empty means: as the request came in.
	PublicURL string
	// BehindTLS says a proxy in front terminates TLS, so Basic authentication is safe.
	BehindTLS bool
	// ReadHeaderTimeout bounds how long a request's headers may take to
	// arrive (default 10 s: slow-loris).
	ReadHeaderTimeout time.Duration
	// BodyIdleTimeout bounds how long a request body may go without a byte
	// (default 60 s, as ODK Collect's own read and write timeouts). A slow
	// upload that keeps moving is never cut.
	BodyIdleTimeout time.Duration
	// APIAllow and DeviceAllow are the addresses that may reach the API and
	// console, and the device endpoints (empty: any). Projects may narrow them.
	APIAllow, DeviceAllow haven.Allowlist
	// TrustedProxies are the proxies whose X-Forwarded-For is believed.
	// Without them the client address is the connection's.
	TrustedProxies haven.Allowlist
}

// Server is Haven's HTTP server.
type Server struct {
	cfg      Config
	echo     *echo.Echo
	log      *slog.Logger
	users    *storage.Users
	projects *storage.Projects
	subs     *storage.Submissions
	blobs    *storage.Blobs
	sync     *sync.Service
	auditLog *storage.Audit
	store    *storage.Store
	jwtKey   []byte
	nonceKey []byte
	now      func() time.Time
	// devicePaths are the routes devices use, for the device allowlist.
	devicePaths map[string]bool
	logins      *loginGuard
}

// Deps are the services the server calls.
type Deps struct {
	Users       *storage.Users
	Projects    *storage.Projects
	Submissions *storage.Submissions
	Blobs       *storage.Blobs
	Sync        *sync.Service
	Audit       *storage.Audit
	Store       *storage.Store // destruction certificates
	// MasterKey seeds the server's own secrets (JWT signing, Digest nonces).
	MasterKey []byte
	Log       *slog.Logger
	Now       func() time.Time
}

// New builds the server and its routes.
func New(cfg Config, d Deps) *Server {
	s := &Server{
		cfg: cfg, log: d.Log, users: d.Users, projects: d.Projects, subs: d.Submissions, blobs: d.Blobs, sync: d.Sync, auditLog: d.Audit, store: d.Store,
		jwtKey:      storage.DeriveSecret(d.MasterKey, "jwt"),
		nonceKey:    storage.DeriveSecret(d.MasterKey, "digest nonce"),
		now:         d.Now,
		devicePaths: map[string]bool{},
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.logins = &loginGuard{now: s.now}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.cfg.ReadHeaderTimeout == 0 {
		s.cfg.ReadHeaderTimeout = 10 * time.Second
	}
	if s.cfg.BodyIdleTimeout == 0 {
		s.cfg.BodyIdleTimeout = 60 * time.Second
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	// The client address is the connection's: X-Forwarded-For is not
	// trusted unless a trusted proxy is configured.
	e.IPExtractor = ipExtractor(cfg.TrustedProxies)
	e.Use(s.recoverPanics, s.bodyIdleTimeout, s.audit, s.checkAddress)
	s.echo = e
	s.routes()
	return s
}

// ServeHTTP makes the server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

// HTTPServer returns an http.Server for addr with deliberate timeouts: headers
// must arrive within ReadHeaderTimeout (slow-loris), a body may not stall for
// longer than BodyIdleTimeout, idle keep-alive connections close after 2
// minutes. Bodies have no overall deadline, because a 100 MB upload over a
// slow 3G link legitimately takes many minutes.
func (s *Server) HTTPServer(addr string) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           s,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

func (s *Server) recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				s.log.Error("panic", "path", c.Request().URL.Path, "panic", r)
				err = errors.New("internal panic")
			}
		}()
		return next(c)
	}
}

// bodyIdleTimeout cuts a request whose body stops arriving: every read of
// the body pushes the connection's read deadline BodyIdleTimeout ahead.
func (s *Server) bodyIdleTimeout(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.Body != nil && r.Body != http.NoBody {
			rc := http.NewResponseController(c.Response().Writer)
			r.Body = &idleBody{ReadCloser: r.Body, rc: rc, idle: s.cfg.BodyIdleTimeout}
		}
		return next(c)
	}
}

type idleBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.rc.SetReadDeadline(time.Now().Add(b.idle)) // unsupported writers (tests' recorders) just keep no deadline
	return b.ReadCloser.Read(p)
}

func (s *Server) routes() {
	e := s.echo
	e.GET("/", s.home)
	e.POST("/v1/sessions", s.login)
	e.POST("/v1/sessions/refresh", s.refresh)

	v1 := e.Group("/v1", s.authenticate)
	v1.DELETE("/sessions/:token", s.logout, s.requireAuth)
	v1.GET("/users/current", s.currentUser, s.requireAuth)
	v1.GET("/users", s.listUsers, s.requireAuth)
	v1.POST("/users", s.createUser, s.requireAuth)
	v1.GET("/users/:id", s.getUser, s.requireAuth)
	v1.DELETE("/users/:id", s.disableUser, s.requireAuth)
	v1.GET("/projects", s.listProjects, s.requireAuth)
	v1.POST("/projects", s.createProject, s.requireAuth)
	v1.GET("/audit", s.listAudit, s.requireAuth)
	v1.GET("/audit/verify", s.verifyAudit, s.requireAuth)

	// Device endpoints answer both under /v1 (users with a password: Digest
	// or Basic) and under /v1/key/{token} (app users, as ODK Central does).
	s.deviceRoutes(v1, s.deviceCredentials, s.requireAuth)
	s.deviceRoutes(e.Group("/v1/key/:key", s.keyAuth), s.noop, s.noop)

	p := v1.Group("/projects/:pid", s.requireAuth)
	p.GET("", s.getProject)
	p.PATCH("", s.updateProject)
	p.POST("/legal-hold", s.placeHold)
	p.DELETE("/legal-hold", s.liftHold)
	p.GET("/destruction-certificate", s.destructionCertificate)
	p.GET("/forms", s.listForms)
	p.POST("/forms", s.createForm)
	p.PATCH("/forms/:formId", s.setFormState)
	p.GET("/forms/:formId/versions", s.formVersions)
	p.GET("/forms/:formId/fields", s.formFields)
	p.GET("/forms/:formId/draft/fields", s.draftFields)
	p.GET("/forms/:formId/consent-refusals", s.consentRefusals)
	p.GET("/classification", s.classification)
	p.GET("/forms/:formId/attachments", s.formAttachments)
	p.POST("/forms/:formId/draft", s.newDraft)
	p.GET("/forms/:formId/draft", s.getDraft)
	p.GET("/forms/:formId/draft.xml", s.getDraftXML)
	p.DELETE("/forms/:formId/draft", s.deleteDraft)
	p.POST("/forms/:formId/draft/publish", s.publishDraft)
	p.GET("/forms/:formId/draft/attachments", s.draftAttachments)
	p.POST("/forms/:formId/draft/attachments/:name", s.uploadDraftAttachment)
	p.GET("/forms/:formId/submissions", s.listSubmissions)
	p.GET("/forms/:formId/export", s.exportSubmissions)
	p.GET("/forms/:formId/aggregate", s.aggregate)
	p.GET("/forms/:formId/submissions/:instanceId", s.getSubmission)
	p.DELETE("/forms/:formId/submissions/:instanceId", s.deleteSubmission)
	p.POST("/forms/:formId/submissions/:instanceId/withdraw-consent", s.withdrawConsent)
	p.GET("/forms/:formId/submissions/:instanceId/versions", s.submissionVersions)
	p.GET("/forms/:formId/submissions/:instanceId/attachments", s.submissionAttachments)
	p.GET("/forms/:formId/submissions/:instanceId/attachments/:name", s.submissionAttachment)
	p.POST("/forms/:formId/submissions/:instanceId/corrections", s.correctSubmission)
	p.GET("/subjects/:subject", s.subjectAccess)
	p.DELETE("/subjects/:subject", s.subjectErase)
	p.POST("/subjects/:subject/objection", s.subjectObject)
	p.DELETE("/subjects/:subject/objection", s.subjectLiftObjection)
	p.GET("/subject-erasures", s.subjectErasures)
	p.GET("/app-users", s.listAppUsers)
	p.POST("/app-users", s.createAppUser)
	p.DELETE("/app-users/:id", s.revokeAppUser)
	p.GET("/assignments", s.listAssignments)
	p.GET("/clearances", s.listClearances)
	p.PUT("/clearances/:actorId", s.setClearance)
	p.POST("/assignments/:role/:actorId", s.assign)
	p.DELETE("/assignments/:role/:actorId", s.unassign)
}

// deviceRoutes registers the endpoints ODK Collect uses. openrosa marks a
// route's errors as OpenRosa responses and challenges missing credentials;
// auth only requires credentials (form and media downloads answer JSON errors
// to API clients and OpenRosa ones to devices).
func (s *Server) deviceRoutes(g *echo.Group, openrosa, auth echo.MiddlewareFunc) {
	for _, r := range []*echo.Route{
		g.GET("/projects/:pid/formList", s.formList, openrosa),
		g.HEAD("/projects/:pid/submission", s.submissionPreflight, openrosa),
		g.GET("/projects/:pid/submission", s.submissionPreflight, openrosa),
		g.POST("/projects/:pid/submission", s.submit, openrosa),
		g.GET("/projects/:pid/forms/:formId", s.getForm, auth),
		g.GET("/projects/:pid/forms/:formId/manifest", s.manifest, openrosa),
		g.GET("/projects/:pid/forms/:formId/attachments/:name", s.formAttachment, auth),
	} {
		s.devicePaths[r.Path] = true
	}
}

func (s *Server) noop(next echo.HandlerFunc) echo.HandlerFunc { return next }

// deviceCredentials marks /v1 device requests as OpenRosa and challenges
// those without credentials, as ODK Collect expects.
func (s *Server) deviceCredentials(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		s.markOpenRosa(c)
		return s.requireAuth(next)(c)
	}
}

func (s *Server) home(c echo.Context) error {
	return c.String(http.StatusOK, "Haven is running. Devices connect at /v1/key/{token}/projects/{id}; the API is under /v1.\n")
}

// baseURL is the address clients reach this server at.
func (s *Server) baseURL(c echo.Context) string {
	if s.cfg.PublicURL != "" {
		return strings.TrimRight(s.cfg.PublicURL, "/")
	}
	scheme := "http"
	if s.secure(c) {
		scheme = "https"
	}
	return scheme + "://" + c.Request().Host
}

func pathInt(c echo.Context, name string) (int64, error) {
	v, err := strconv.ParseInt(c.Param(name), 10, 64)
	if err != nil || v <= 0 {
		return 0, haven.Errorf(haven.ENOTFOUND, "%q is not a valid %s.", c.Param(name), name)
	}
	return v, nil
}

func projectID(c echo.Context) (int64, error) { return pathInt(c, "pid") }

// FromStore builds the server over an opened data directory, with default limits.
func FromStore(cfg Config, st *storage.Store, log *slog.Logger) *Server {
	svc := &sync.Service{Projects: st.Projects, Forms: st.Forms, Submissions: st.Submissions, Blobs: st.Blobs, Limits: sync.DefaultLimits, Now: st.DB.Now}
	return New(cfg, Deps{
		Users: st.Users, Projects: st.Projects, Submissions: st.Submissions, Blobs: st.Blobs, Sync: svc, Audit: st.Audit, Store: st,
		MasterKey: st.MasterKey, Log: log, Now: st.DB.Now,
	})
}
