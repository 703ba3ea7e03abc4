package server

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/haven-org/haven"
	"github.com/labstack/echo/v4"
)

// The web console: server-rendered pages for the people who run a project.
// Every page calls the same application layer as the REST API, with the
// principal of the signed-in user, so rights, clearances and audit events
// are the API's. Pages work without JavaScript; the one script (static,
// never inline) only adds conveniences. A session lives in an HttpOnly,
// SameSite=Strict cookie, and every form carries a CSRF token bound to it.

//go:embed console/templates/*.html
var consoleTemplates embed.FS

//go:embed console/static
var consoleStatic embed.FS

const (
	cookieSession = "haven_session" // the session's access token (a JWT)
	cookieEnd     = "haven_end"     // its refresh token, to end the session at sign-out
	cookieLogin   = "haven_login"   // the login form's CSRF token, before there is a session
	cookieLang    = "haven_lang"
	keyConsole    = "console"
)

// consoleCSP allows nothing from elsewhere and no inline script or style.
// Map tiles come from the configured tile server when there is one.
func (s *Server) consoleCSP() string {
	img := "'self' data: blob:"
	if s.cfg.TileURL != "" {
		if u, err := url.Parse(s.cfg.TileURL); err == nil && u.Host != "" {
			img += " " + u.Scheme + "://" + u.Host
		}
	}
	return "default-src 'none'; script-src 'self'; style-src 'self'; img-src " + img +
		"; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
}

// pages holds each page's template, parsed once with the layout.
type pages map[string]*template.Template

func parsePages() pages {
	out := pages{}
	names, err := fs.Glob(consoleTemplates, "console/templates/*.html")
	if err != nil {
		panic(err)
	}
	funcs := template.FuncMap{
		"date": func(t any) string {
			switch t := t.(type) {
			case time.Time:
				return t.UTC().Format("2006-01-02 15:04")
			case *time.Time:
				if t != nil {
					return t.UTC().Format("2006-01-02 15:04")
				}
			}
			return "—"
		},
		"day": func(t *time.Time) string {
			if t == nil {
				return ""
			}
			return t.UTC().Format("2006-01-02")
		},
		"join":     strings.Join,
		"contains": strings.Contains,
		"add":      func(a, b int) int { return a + b },
		"esc":      url.PathEscape,
		"q":        url.QueryEscape,
		// dict2 passes the page and a value to a shared template.
		"dict2": func(v *view, x any) map[string]any { return map[string]any{"V": v, "X": x} },
		"has": func(list []string, s string) bool {
			for _, e := range list {
				if e == s {
					return true
				}
			}
			return false
		},
		// short names a field by the last step of its path.
		"short":       func(path string) string { return path[strings.LastIndexByte(path, '/')+1:] },
		"suppressed":  func(count string) bool { return strings.HasPrefix(count, "<") },
		"hasImageExt": func(name string) bool { return strings.HasPrefix(contentType(name), "image/") },
		"flat": func(data map[string]any) map[string]string {
			out := map[string]string{}
			flattenValues(out, "", data)
			return out
		},
	}
	for _, n := range names {
		base := strings.TrimSuffix(n[strings.LastIndexByte(n, '/')+1:], ".html")
		if base == "layout" {
			continue
		}
		out[base] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(consoleTemplates, "console/templates/layout.html", n))
	}
	return out
}

// crumb is a step of the page's breadcrumb trail.
type crumb struct{ Label, Href string }

// problemRow is one line of a refusal shown as a table: where, and what to do.
type problemRow struct {
	Sheet   string `json:"sheet"`
	Row     int    `json:"row"`
	Column  string `json:"column"`
	Path    string `json:"path"`
	Message string `json:"message"`
}

// view is what every page's template receives.
type view struct {
	Lang     string
	msgs     map[string]string
	Title    string
	User     *haven.Principal
	CSRF     string
	Notice   string
	Problem  string
	Problems []problemRow
	Crumbs   []crumb
	D        any
}

// T is a string of the catalogue in the page's language; with arguments it
// is a format.
func (v *view) T(key string, args ...any) string {
	m, ok := v.msgs[key]
	if !ok {
		m = catalog["en"][key]
	}
	if m == "" {
		m = key
	}
	if len(args) > 0 {
		return fmt.Sprintf(m, args...)
	}
	return m
}

// Can reports whether the signed-in user may do action in project pid:
// pages show only the actions a user can take (the application layer
// decides again when they are taken).
func (v *view) Can(action string, pid int64) bool {
	return v.User != nil && v.User.Can(haven.Action(action), pid)
}

// lang is the language of a request: the one chosen, else the browser's
// first known one, else English.
func lang(c echo.Context) string {
	if ck, err := c.Cookie(cookieLang); err == nil && catalog[ck.Value] != nil {
		return ck.Value
	}
	for _, part := range strings.Split(c.Request().Header.Get("Accept-Language"), ",") {
		tag, _, _ := strings.Cut(strings.TrimSpace(part), ";")
		base, _, _ := strings.Cut(strings.ToLower(tag), "-")
		if catalog[base] != nil {
			return base
		}
	}
	return "en"
}

// page starts a page's view for the request.
func (s *Server) page(c echo.Context, title string, crumbs ...crumb) *view {
	l := lang(c)
	v := &view{Lang: l, msgs: catalog[l], User: principal(c), Crumbs: crumbs}
	v.Title = v.T(title)
	if sid, _ := c.Get(keySession).(string); sid != "" {
		v.CSRF = s.csrfToken(sid)
	}
	// A notice of what was just done: only the catalogue's own sentences,
	// so a link cannot make the page say something else.
	if done := c.QueryParam("done"); catalogFR[done] != "" {
		v.Notice = v.T(done)
	}
	return v
}

// render writes a page.
func (s *Server) render(c echo.Context, status int, name string, v *view) error {
	t := s.pages[name]
	if t == nil {
		return fmt.Errorf("no console page %q", name)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, v); err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set("Cache-Control", "no-store")
	return c.HTMLBlob(status, b.Bytes())
}

// fail shows a refusal on the page where it happened: the message, and
// the table of problems an upload's refusal lists.
func (v *view) fail(err error) {
	v.Problem = haven.ErrorMessage(err)
	var he *haven.Error
	if !errors.As(err, &he) {
		return
	}
	for _, key := range []string{"errors", "problems"} {
		if list, ok := he.Details[key]; ok {
			b, _ := json.Marshal(list)
			var rows []problemRow
			if json.Unmarshal(b, &rows) == nil {
				v.Problems = append(v.Problems, rows...)
			}
		}
	}
	if len(v.Problems) > 0 {
		// The table says it line by line: keep the first sentence.
		if i := strings.Index(v.Problem, ": "); i > 0 && strings.Contains(v.Problem[:i], "cannot be published") {
			v.Problem = v.Problem[:i] + "."
		}
	}
}

// csrfToken is the CSRF token of a session: a MAC of its id, so it needs
// no storage and dies with the session.
func (s *Server) csrfToken(sessionID string) string {
	m := hmac.New(sha256.New, s.app.Secret("console-csrf"))
	m.Write([]byte(sessionID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// consoleAuth establishes the signed-in user from the session cookie.
// Pages need one: without it they send the browser to the sign-in page.
func (s *Server) consoleAuth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Set(keyConsole, true)
		h := c.Response().Header()
		h.Set("Content-Security-Policy", s.consoleCSP())
		// Pages, files and exports show collected data: never kept in a cache.
		h.Set("Cache-Control", "no-store")
		ck, err := c.Cookie(cookieSession)
		if err == nil && ck.Value != "" {
			if claims, err := s.parseToken(ck.Value); err == nil {
				if id, err := strconv.ParseInt(claims.Subject, 10, 64); err == nil {
					if p, err := s.app.SessionPrincipal(c.Request().Context(), claims.session(), id); err == nil {
						setPrincipal(c, p)
						c.Set(keySession, claims.session())
					}
				}
			}
		}
		if principal(c) == nil {
			if c.Request().Method == http.MethodGet {
				return c.Redirect(http.StatusSeeOther, "/login?next="+url.QueryEscape(c.Request().URL.RequestURI()))
			}
			return haven.Errorf(haven.EUNAUTHORIZED, "Your session has ended. Sign in again.")
		}
		if c.Request().Method == http.MethodPost && !s.csrfOK(c) {
			return haven.Errorf(haven.EFORBIDDEN, "This form has expired or did not come from Haven's own page. Go back, reload the page and try again.")
		}
		return next(c)
	}
}

// csrfOK checks a form's CSRF token against the session's, and the
// request's Origin (when the browser sends one) against the server.
func (s *Server) csrfOK(c echo.Context) bool {
	if o := c.Request().Header.Get("Origin"); o != "" && o != "null" {
		if u, err := url.Parse(o); err != nil || u.Host != c.Request().Host {
			return false
		}
	}
	sid, _ := c.Get(keySession).(string)
	want := s.csrfToken(sid)
	got := c.Request().FormValue("csrf")
	return sid != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// setCookie sets a console cookie: HttpOnly, SameSite=Strict, Secure
// behind TLS; until expires, or for the browser's session when zero.
func (s *Server) setCookie(c echo.Context, name, value string, expires time.Time) {
	ck := &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.secure(c)}
	if !expires.IsZero() {
		ck.Expires = expires
		ck.MaxAge = max(1, int(time.Until(expires).Seconds()))
	}
	if value == "" {
		ck.MaxAge = -1
	}
	c.SetCookie(ck)
}

func randomToken() string {
	var b [24]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// safeNext keeps a redirect after sign-in on this site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") || strings.HasPrefix(next, "/v1/") {
		return "/projects"
	}
	return next
}

// consoleError renders an error as a page of the console.
func (s *Server) consoleError(c echo.Context, httpStatus int, err error) {
	if haven.ErrorCode(err) == haven.EUNAUTHORIZED {
		c.Redirect(http.StatusSeeOther, "/login")
		return
	}
	v := s.page(c, "Something went wrong")
	v.fail(err)
	if httpStatus == http.StatusNotFound && haven.ErrorCode(err) == "" {
		v.Problem = v.T("There is nothing at this address.")
	}
	if err := s.render(c, httpStatus, "error", v); err != nil {
		s.log.Error("rendering an error page", "err", err)
	}
}

// serveStatic serves the console's embedded assets, cacheable for a day.
func (s *Server) serveStatic(c echo.Context) error {
	name := "console/static/" + c.Param("*")
	b, err := consoleStatic.ReadFile(name)
	if err != nil || strings.Contains(c.Param("*"), "..") {
		return echo.ErrNotFound
	}
	c.Response().Header().Set("Cache-Control", "public, max-age=86400")
	return c.Blob(http.StatusOK, mime.TypeByExtension(path.Ext(name)), b)
}
