// Package server is Haven's HTTP layer (echo): the OpenRosa endpoints devices
// use, the REST API at ODK Central's paths, and the middleware that bounds
// what a request may cost. Each handler reads its request, calls one use
// case of the application layer (app) and writes the answer; rights,
// clearances and the audit trail are decided there, never here. Errors
// become HTTP in one place (errors.go).
package server

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
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
	// (default 60 s, as ODK Collect's own read and write timeouts), and how
	// long after a request starts its body must begin. A slow upload that
	// keeps moving is never cut; a small JSON body must arrive whole within it.
	BodyIdleTimeout time.Duration
	// APIAllow and DeviceAllow are the addresses that may reach the API and
	// console, and the device endpoints (empty: any). Projects may narrow them.
	APIAllow, DeviceAllow haven.Allowlist
	// TrustedProxies are the proxies whose X-Forwarded-For is believed.
	// Without them the client address is the connection's.
	TrustedProxies haven.Allowlist
	// AccessLifetime is how long an access token (a JWT) lives within its
	// session; 0: until the session ends, as ODK Central's tokens do (pyodk
	// and ruODK keep one token for a whole script and never refresh it).
	// Shorter tokens are renewed with the refresh token.
	AccessLifetime time.Duration
	// TileURL is a map tile server for the console's maps
	// (https://tiles.example.org/{z}/{x}/{y}.png); empty: points are drawn
	// on a plain background, which needs no internet.
	TileURL string
}

// Server is Haven's HTTP server.
type Server struct {
	cfg    Config
	echo   *echo.Echo
	log    *slog.Logger
	app    *app.Service
	jwtKey []byte
	// devicePaths are the routes devices use, for the device allowlist and
	// Digest authentication.
	devicePaths map[string]bool
	pages       pages
}

// New builds the server and its routes over the application layer.
func New(cfg Config, svc *app.Service, log *slog.Logger) *Server {
	s := &Server{cfg: cfg, log: log, app: svc, jwtKey: svc.Secret("jwt"), devicePaths: map[string]bool{}, pages: parsePages()}
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
	e.Use(s.recoverPanics, s.headers, s.client, s.bodyLimits, s.checkAddress)
	s.echo = e
	s.routes()
	return s
}

// ServeHTTP makes the server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

// HTTPServer returns an http.Server for addr with deliberate timeouts: headers
// must arrive within ReadHeaderTimeout (slow-loris), a body must begin within
// BodyIdleTimeout and may not stall for longer, idle keep-alive connections
// close after 2 minutes. Uploads have no overall deadline, because a 100 MB
// upload over a slow 3G link legitimately takes many minutes.
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

func (s *Server) routes() {
	e := s.echo
	s.consoleRoutes()
	e.POST("/v1/sessions", s.login)
	e.POST("/v1/sessions/refresh", s.refresh)

	v1 := e.Group("/v1", s.authenticate)
	v1.DELETE("/sessions/:token", s.logout)
	v1.GET("/users/current", s.currentUser, s.requireAuth)
	v1.GET("/users", s.listUsers, s.requireAuth)
	v1.POST("/users", s.createUser, s.requireAuth)
	v1.GET("/users/:id", s.getUser, s.requireAuth)
	v1.DELETE("/users/:id", s.disableUser, s.requireAuth)
	v1.PATCH("/users/:id", s.updateUser, s.requireAuth)
	v1.PUT("/users/:id/password", s.changePassword, s.requireAuth)
	v1.GET("/roles", s.listRoles)
	v1.GET("/roles/:id", s.getRole)
	v1.GET("/assignments", s.siteAssignments, s.requireAuth)
	v1.GET("/assignments/:role", s.siteAssignments, s.requireAuth)
	v1.POST("/assignments/:role/:actorId", s.grantSiteRole, s.requireAuth)
	v1.DELETE("/assignments/:role/:actorId", s.revokeSiteRole, s.requireAuth)
	v1.GET("/sessions/restore", s.restoreSession, s.requireAuth)
	v1.GET("/audits", s.listAudit, s.requireAuth)
	v1.GET("/projects", s.listProjects, s.requireAuth)
	v1.POST("/projects", s.createProject, s.requireAuth)
	v1.GET("/audit", s.listAudit, s.requireAuth)
	v1.GET("/audit/verify", s.verifyAudit, s.requireAuth)
	v1.GET("/system/stats", s.systemStats, s.requireAuth)
	// For load balancers: no credentials, no detail.
	e.GET("/healthz", func(c echo.Context) error {
		if err := s.app.Healthy(c.Request().Context()); err != nil {
			return err
		}
		return c.String(http.StatusOK, "ok\n")
	})

	// Device endpoints answer both under /v1 (users with a password: Digest
	// or Basic) and under /v1/key/{token} (app users, as ODK Central does).
	s.deviceRoutes(v1, s.deviceCredentials, s.requireAuth)
	s.deviceRoutes(e.Group("/v1/key/:key", s.keyAuth), s.noop, s.noop)

	p := v1.Group("/projects/:pid", s.requireAuth)
	s.projectRoutes(p)
	s.formRoutes(p)
	s.submissionRoutes(p)
	s.subjectRoutes(p)
	s.appUserRoutes(p)
	s.assignmentRoutes(p)
	s.odataRoutes(p)
	s.entityRoutes(p)
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
		g.GET("/projects/:pid/datasets/:name/integrity", s.entityIntegrity, openrosa),
	} {
		s.devicePaths[r.Path] = true
	}
}

func (s *Server) noop(next echo.HandlerFunc) echo.HandlerFunc { return next }

func (s *Server) recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				s.log.Error("panic", "path", logPath(c), "panic", r)
				err = errors.New("internal panic")
			}
		}()
		return next(c)
	}
}

// headers sets what every answer carries: no content sniffing, no framing,
// no referrer; collected data is never kept in a cache (every /v1 answer
// says no-store); HSTS when Haven is reached over TLS.
func (s *Server) headers(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		if strings.HasPrefix(c.Request().URL.Path, "/v1/") {
			h.Set("Cache-Control", "no-store")
		}
		if s.secure(c) {
			h.Set("Strict-Transport-Security", "max-age=63072000")
		}
		return next(c)
	}
}

// client records the client's address in the request's context, for the
// audit trail and the login guard.
func (s *Server) client(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		c.SetRequest(r.WithContext(app.WithClient(r.Context(), c.RealIP())))
		return next(c)
	}
}

// jsonBody is the most a JSON request body may hold.
const jsonBody = 1 << 20

// multipartSlack is what Haven accepts beyond the advertised accept length:
// Collect sizes its batches by file sizes and adds multipart headers and the
// XML on top.
const multipartSlack = 1 << 20

// bodyLimit is the most a route's request body may hold, and whether it is
// an upload (a body that may take long, as long as it keeps moving).
func (s *Server) bodyLimit(c echo.Context) (limit int64, upload bool) {
	r := c.Request()
	if r.Method != http.MethodPost && r.Method != http.MethodPut && r.Method != http.MethodPatch {
		return jsonBody, false
	}
	switch route := strings.Replace(c.Path(), "/v1/key/:key/", "/v1/", 1); route {
	case "/v1/projects/:pid/submission":
		return s.app.Limits.MaxBody + multipartSlack, true
	case "/v1/projects/:pid/forms/:formId/draft/attachments/:name":
		return s.app.Limits.MaxMedia, true
	case "/v1/projects/:pid/forms", "/v1/projects/:pid/forms/:formId/draft":
		return app.UploadLimit(r.Header.Get("Content-Type")), true
	case "/v1/projects/:pid/forms/:formId/submissions", "/v1/projects/:pid/forms/:formId/submissions/:instanceId":
		if r.Method != http.MethodPatch {
			return int64(s.app.Limits.XML.MaxBytes), true // a submission's XML, over REST
		}
	case "/v1/projects/:pid/forms/:formId/submissions/:instanceId/attachments/:name":
		return s.app.Limits.MaxBody, true
	// The console's uploads: multipart forms around a form file or a media file.
	case "/projects/:pid/forms", "/projects/:pid/forms/:formId/draft":
		return max(app.UploadLimit("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"), app.UploadLimit("application/xml")) + multipartSlack, true
	case "/projects/:pid/forms/:formId/media":
		return s.app.Limits.MaxMedia + multipartSlack, true
	}
	return jsonBody, false
}

// bodyLimits bounds every request body before any of it is read: a body
// declared larger than its route takes is refused at once (413, and the
// connection closes rather than read it), and a body must begin within
// BodyIdleTimeout of the request. After that an upload may take as long as
// it keeps moving (every read pushes the deadline on); any other body must
// arrive whole within BodyIdleTimeout.
func (s *Server) bodyLimits(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		limit, upload := s.bodyLimit(c)
		if r.ContentLength > limit {
			c.Response().Header().Set("Connection", "close")
			if s.devicePaths[c.Path()] {
				s.markOpenRosa(c)
				return haven.Errorf(haven.ETOOLARGE, "The upload is %d bytes, larger than this server accepts in one request (%d). Nothing was saved. Update ODK Collect so it splits large uploads.", r.ContentLength, s.app.Limits.MaxBody)
			}
			return haven.Errorf(haven.ETOOLARGE, "The request body is %d bytes, larger than the %d this address takes. Nothing was read or stored.", r.ContentLength, limit)
		}
		rc := http.NewResponseController(c.Response().Writer)
		rc.SetReadDeadline(time.Now().Add(s.cfg.BodyIdleTimeout)) // test recorders keep no deadline
		if r.Body != nil && r.Body != http.NoBody {
			b := &body{ReadCloser: http.MaxBytesReader(c.Response(), r.Body, limit), rc: rc}
			if upload {
				b.idle = s.cfg.BodyIdleTimeout
			}
			r.Body = b
			c.Set(keyBody, b)
		}
		return next(c)
	}
}

const keyBody = "body"

// body is a request body under the server's deadlines.
type body struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration // for uploads: each read pushes the deadline this far on
	done bool          // read to its end
}

func (b *body) Read(p []byte) (int, error) {
	if b.idle > 0 {
		b.rc.SetReadDeadline(time.Now().Add(b.idle))
	}
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.done = true
	}
	return n, err
}

// unread reports whether the request's body was left (partly) unread.
func unread(c echo.Context) bool {
	b, _ := c.Get(keyBody).(*body)
	return b != nil && !b.done
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

// secure reports whether the request reached Haven over TLS (directly or
// through a proxy the operator vouched for).
func (s *Server) secure(c echo.Context) bool {
	return c.Request().TLS != nil || s.cfg.BehindTLS
}

func pathInt(c echo.Context, name string) (int64, error) {
	v, err := strconv.ParseInt(c.Param(name), 10, 64)
	if err != nil || v <= 0 {
		return 0, haven.Errorf(haven.ENOTFOUND, "%q is not a valid %s.", c.Param(name), name)
	}
	return v, nil
}

func projectID(c echo.Context) (int64, error) { return pathInt(c, "pid") }

// secretPath finds the parts of a path that are secrets or personal data:
// a device token, a session token, a data subject's identifier.
var secretPath = regexp.MustCompile(`(/v1/key/|/sessions/|/subjects/)[^/?]+`)

// logPath is a request's path as it may be written to the log: device
// tokens, session tokens and subject identifiers masked.
func logPath(c echo.Context) string {
	return secretPath.ReplaceAllString(c.Request().URL.Path, "${1}***")
}

// param is a path parameter, percent-decoded: clients (pyodk, browsers)
// encode ids such as uuid:... and form ids with spaces or non-ASCII letters,
// and echo hands them over as sent when the path needed escaping.
func param(c echo.Context, name string) string {
	v := c.Param(name)
	if u, err := url.PathUnescape(v); err == nil {
		return u
	}
	return v
}
