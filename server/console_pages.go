package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/labstack/echo/v4"
)

// The console's pages: one handler per page or action. Each reads the
// request, calls the application layer with the signed-in principal, and
// renders a page or redirects (POST, then redirect, then GET).

func (s *Server) consoleRoutes() {
	e := s.echo
	e.GET("/static/*", s.serveStatic)
	e.GET("/login", s.loginPage, s.consoleHeaders)
	e.POST("/login", s.loginSubmit, s.consoleHeaders)
	e.GET("/lang/:lang", s.setLang, s.consoleHeaders)
	// Pages need a session: each route carries consoleAuth itself (a group
	// with middleware would also catch every unknown address of the site).
	g := &consoleGroup{e: e, prefix: "", auth: s.consoleAuth}
	g.GET("/", func(c echo.Context) error { return c.Redirect(http.StatusSeeOther, "/projects") })
	g.POST("/logout", s.logoutSubmit)
	g.GET("/account", s.accountPage)
	g.POST("/account/password", s.passwordSubmit)
	g.GET("/projects", s.projectsPage)
	g.POST("/projects", s.createProjectSubmit)
	g.GET("/audit", s.auditPage)
	g.GET("/users", s.usersPage)
	g.POST("/users", s.createUserSubmit)
	g.POST("/users/:id/disable", s.disableUserSubmit)
	g.GET("/certificates/verify", s.certificatePage)
	g.POST("/certificates/verify", s.certificateSubmit)

	p := g.group("/projects/:pid")
	p.GET("", s.projectPage)
	p.POST("/forms", s.uploadFormSubmit)
	p.POST("/app-users", s.createAppUserSubmit)
	p.POST("/app-users/:id/revoke", s.revokeAppUserSubmit)
	p.GET("/app-users/:id/qr.png", s.appUserQR)
	p.GET("/people", s.peoplePage)
	p.POST("/people", s.grantSubmit)
	p.GET("/protection", s.protectionPage)
	p.POST("/settings", s.settingsSubmit)
	p.POST("/hold", s.holdSubmit)
	p.POST("/hold/lift", s.liftHoldSubmit)
	p.GET("/certificate.json", s.certificateDownload)
	p.GET("/inventory", s.inventoryPage)
	p.GET("/inventory.csv", s.inventoryCSV)
	p.GET("/subjects", s.subjectPage)
	p.POST("/subjects/erase", s.eraseSubjectSubmit)
	p.POST("/subjects/object", s.objectSubjectSubmit)
	p.GET("/devices", s.devicesPage)
	p.GET("/entity-lists", s.entityListsPage)
	p.GET("/entity-lists/:name", s.entityListPage)

	f := p.group("/forms/:formId")
	f.GET("", s.formPage)
	f.POST("/draft", s.draftSubmit)
	f.POST("/media", s.mediaSubmit)
	f.POST("/publish", s.publishSubmit)
	f.GET("/form.xml", s.formXMLDownload)
	f.GET("/form.xlsx", s.formXLSXDownload)
	f.GET("/submissions", s.submissionsPage)
	f.GET("/submissions/:instanceId", s.submissionPage)
	f.GET("/submissions/:instanceId/files/:name", s.submissionFile)
	f.POST("/submissions/:instanceId/correct", s.correctSubmit)
	f.GET("/export", s.consoleExport)
	f.GET("/aggregate", s.aggregatePage)
	f.GET("/map", s.mapPage)
	f.GET("/map.svg", s.mapSVG)
}

// consoleGroup registers console routes under a prefix, each with the
// session middleware.
type consoleGroup struct {
	e      *echo.Echo
	prefix string
	auth   echo.MiddlewareFunc
}

func (g *consoleGroup) GET(path string, h echo.HandlerFunc) {
	g.e.GET(g.prefix+path, h, g.auth)
}

func (g *consoleGroup) POST(path string, h echo.HandlerFunc) {
	g.e.POST(g.prefix+path, h, g.auth)
}

func (g *consoleGroup) group(prefix string) *consoleGroup {
	return &consoleGroup{e: g.e, prefix: g.prefix + prefix, auth: g.auth}
}

// consoleHeaders marks a page of the console that needs no session.
func (s *Server) consoleHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Set(keyConsole, true)
		c.Response().Header().Set("Content-Security-Policy", s.consoleCSP())
		return next(c)
	}
}

// back redirects after an action to a page, with a notice of what was done.
func back(c echo.Context, to, done string) error {
	if done != "" {
		sep := "?"
		if strings.Contains(to, "?") {
			sep = "&"
		}
		to += sep + "done=" + url.QueryEscape(done)
	}
	return c.Redirect(http.StatusSeeOther, to)
}

func projectPath(pid int64) string { return "/projects/" + strconv.FormatInt(pid, 10) }

func formPath(pid int64, formID string) string {
	return projectPath(pid) + "/forms/" + url.PathEscape(formID)
}

// --- Signing in and out ---

func (s *Server) loginPage(c echo.Context) error {
	return s.renderLogin(c, http.StatusOK, nil)
}

func (s *Server) renderLogin(c echo.Context, status int, err error) error {
	v := s.page(c, "Sign in")
	token := randomToken()
	s.setCookie(c, cookieLogin, token, time.Time{})
	v.CSRF = token
	v.D = map[string]string{"Next": safeNext(c.QueryParam("next")), "Email": c.FormValue("email")}
	if err != nil {
		v.fail(err)
	}
	return s.render(c, status, "login", v)
}

func (s *Server) loginSubmit(c echo.Context) error {
	ck, err := c.Cookie(cookieLogin)
	if err != nil || ck.Value == "" || ck.Value != c.FormValue("csrf") {
		return s.renderLogin(c, http.StatusForbidden, haven.Errorf(haven.EFORBIDDEN, "The sign-in form had expired. Try again."))
	}
	se, err := s.app.Login(c.Request().Context(), c.FormValue("email"), c.FormValue("password"))
	if err != nil {
		st := status[haven.ErrorCode(err)].http
		if st == 0 {
			st = http.StatusInternalServerError
		}
		return s.renderLogin(c, st, err)
	}
	t, err := s.accessToken(se)
	if err != nil {
		return err
	}
	s.setCookie(c, cookieLogin, "", time.Time{})
	s.setCookie(c, cookieSession, t.Token, se.ExpiresAt)
	s.setCookie(c, cookieEnd, se.RefreshToken, se.ExpiresAt)
	return c.Redirect(http.StatusSeeOther, safeNext(c.FormValue("next")))
}

func (s *Server) logoutSubmit(c echo.Context) error {
	sid, _ := c.Get(keySession).(string)
	if ck, err := c.Cookie(cookieEnd); err == nil {
		if err := s.app.EndSession(c.Request().Context(), principal(c), sid, ck.Value); err != nil {
			return err
		}
	}
	s.setCookie(c, cookieSession, "", time.Time{})
	s.setCookie(c, cookieEnd, "", time.Time{})
	return c.Redirect(http.StatusSeeOther, "/login")
}

func (s *Server) setLang(c echo.Context) error {
	l := c.Param("lang")
	if catalog[l] == nil {
		l = "en"
	}
	c.SetCookie(&http.Cookie{Name: cookieLang, Value: l, Path: "/", MaxAge: 365 * 86400, SameSite: http.SameSiteStrictMode, HttpOnly: true, Secure: s.secure(c)})
	return c.Redirect(http.StatusSeeOther, safeNext(c.QueryParam("next")))
}

func (s *Server) accountPage(c echo.Context) error {
	v := s.page(c, "Your account", crumb{"Your account", ""})
	u, err := s.app.CurrentUser(c.Request().Context(), principal(c))
	if err != nil {
		return err
	}
	v.D = u
	return s.render(c, http.StatusOK, "account", v)
}

func (s *Server) passwordSubmit(c echo.Context) error {
	p := principal(c)
	sid, _ := c.Get(keySession).(string)
	if c.FormValue("password") != c.FormValue("confirm") {
		v := s.page(c, "Your account", crumb{"Your account", ""})
		v.D, _ = s.app.CurrentUser(c.Request().Context(), p)
		v.Problem = v.T("The two new passwords differ. Type the same new password twice.")
		return s.render(c, http.StatusBadRequest, "account", v)
	}
	if err := s.app.ChangePassword(c.Request().Context(), p, p.ActorID, c.FormValue("old"), c.FormValue("password"), sid); err != nil {
		v := s.page(c, "Your account", crumb{"Your account", ""})
		v.D, _ = s.app.CurrentUser(c.Request().Context(), p)
		v.fail(err)
		return s.render(c, status[haven.ErrorCode(err)].http, "account", v)
	}
	return back(c, "/account", "Your password was changed.")
}

// --- Projects ---

func (s *Server) projectsPage(c echo.Context) error {
	v := s.page(c, "Projects", crumb{"Projects", ""})
	list, err := s.app.ListProjects(c.Request().Context(), principal(c))
	if err != nil {
		return err
	}
	v.D = list
	return s.render(c, http.StatusOK, "projects", v)
}

func (s *Server) createProjectSubmit(c echo.Context) error {
	name := c.FormValue("name")
	pr, err := s.app.CreateProject(c.Request().Context(), principal(c), app.ProjectSettings{Name: &name})
	if err != nil {
		v := s.page(c, "Projects", crumb{"Projects", ""})
		v.D, _ = s.app.ListProjects(c.Request().Context(), principal(c))
		v.fail(err)
		return s.render(c, status[haven.ErrorCode(err)].http, "projects", v)
	}
	return back(c, projectPath(pr.ID), "The project was created.")
}

// projectData is what the project page shows.
type projectData struct {
	Project  *app.ProjectView
	Forms    []app.FormSummary
	AppUsers []*haven.AppUser
	NewUser  *app.AppUserView
	Overdue  []app.Classification
}

func (s *Server) projectPage(c echo.Context) error {
	return s.renderProject(c, http.StatusOK, nil, nil)
}

func (s *Server) renderProject(c echo.Context, st int, failure error, created *app.AppUserView) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	ctx, p := c.Request().Context(), principal(c)
	pr, err := s.app.Project(ctx, p, pid)
	if err != nil {
		return err
	}
	d := &projectData{Project: pr, NewUser: created}
	if p.Can(haven.ActionFormRead, pid) {
		if d.Forms, err = s.app.FormSummaries(ctx, p, pid); err != nil {
			return err
		}
		if d.Overdue, err = s.app.Classifications(ctx, p, pid, true); err != nil {
			return err
		}
	}
	if p.Can(haven.ActionAppUserManage, pid) {
		if d.AppUsers, err = s.app.ListAppUsers(ctx, p, pid); err != nil {
			return err
		}
	}
	v := s.page(c, pr.Name, crumb{"Projects", "/projects"}, crumb{pr.Name, ""})
	v.Title = pr.Name
	v.D = d
	if failure != nil {
		v.fail(failure)
	}
	return s.render(c, st, "project", v)
}

// readUpload reads a form file from a multipart form: its bytes and its
// content type, told by its name when the browser says nothing useful.
func readUpload(c echo.Context, field string) (app.Upload, error) {
	fh, err := c.FormFile(field)
	if err != nil {
		return app.Upload{}, haven.Errorf(haven.EINVALID, "Choose a file to upload: an XLSForm (.xlsx or .xls) or an XForm (.xml).")
	}
	name := strings.ToLower(fh.Filename)
	ct := "application/xml"
	switch {
	case strings.HasSuffix(name, ".xlsx"):
		ct = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
	case strings.HasSuffix(name, ".xls"):
		ct = "application/vnd.ms-excel"
	case strings.HasSuffix(name, ".xml"):
	default:
		return app.Upload{}, haven.Errorf(haven.EINVALID, "%s is neither an XLSForm (.xlsx or .xls) nor an XForm (.xml): upload one of those.", fh.Filename)
	}
	limit := app.UploadLimit(ct)
	if fh.Size > limit {
		return app.Upload{}, app.TooLarge("form", limit)
	}
	f, err := fh.Open()
	if err != nil {
		return app.Upload{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return app.Upload{}, err
	}
	stem := fh.Filename[:len(fh.Filename)-len(name[strings.LastIndexByte(name, '.'):])]
	return app.Upload{Body: b, ContentType: ct, FormIDFallback: stem}, nil
}

func (s *Server) uploadFormSubmit(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	u, err := readUpload(c, "file")
	if err != nil {
		return s.renderProject(c, http.StatusBadRequest, err, nil)
	}
	fa, err := s.app.CreateForm(c.Request().Context(), principal(c), pid, u, false)
	if err != nil {
		return s.renderProject(c, status[haven.ErrorCode(err)].http, err, nil)
	}
	return back(c, formPath(pid, fa.XMLFormID), "The form was uploaded as a draft.")
}

func (s *Server) createAppUserSubmit(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	ctx, p := c.Request().Context(), principal(c)
	au, err := s.app.CreateAppUser(ctx, p, pid, c.FormValue("name"), s.baseURL(c))
	if err != nil {
		return s.renderProject(c, status[haven.ErrorCode(err)].http, err, nil)
	}
	// The forms its tablet may fill (Central's form access).
	form, _ := c.FormParams()
	for _, id := range form["form"] {
		if err := s.app.AssignForm(ctx, p, pid, id, haven.RoleAppUser, au.ID, true); err != nil {
			return s.renderProject(c, status[haven.ErrorCode(err)].http, err, au)
		}
	}
	return s.renderProject(c, http.StatusOK, nil, au)
}

func (s *Server) revokeAppUserSubmit(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	id, err := pathInt(c, "id")
	if err != nil {
		return err
	}
	if err := s.app.RevokeAppUser(c.Request().Context(), principal(c), pid, id); err != nil {
		return s.renderProject(c, status[haven.ErrorCode(err)].http, err, nil)
	}
	return back(c, projectPath(pid), "The app user was revoked: its device can no longer list forms or send.")
}

// appUserQR draws an app user's settings as a QR code ODK Collect scans.
func (s *Server) appUserQR(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	id, err := pathInt(c, "id")
	if err != nil {
		return err
	}
	ctx, p := c.Request().Context(), principal(c)
	au, err := s.app.AppUser(ctx, p, pid, id)
	if err != nil {
		return err
	}
	if au.Token == nil {
		return haven.Errorf(haven.ENOTFOUND, "This app user has no QR code: it was revoked, or made before tokens were kept. Create a new app user.")
	}
	pr, err := s.app.Project(ctx, p, pid)
	if err != nil {
		return err
	}
	settings, err := app.CollectSettings(s.baseURL(c)+"/v1/key/"+*au.Token+"/projects/"+strconv.FormatInt(pid, 10), pr.Name)
	if err != nil {
		return err
	}
	png, err := qrPNG(settings)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.Blob(http.StatusOK, "image/png", png)
}

// --- People: roles and clearances ---

type peopleData struct {
	Project    *app.ProjectView
	Users      []*haven.User
	Roles      map[int64][]string
	Clearances map[int64]haven.Sensitivity
	RoleNames  []string
	Tiers      []haven.Sensitivity
}

func (s *Server) peoplePage(c echo.Context) error { return s.renderPeople(c, http.StatusOK, nil) }

func (s *Server) renderPeople(c echo.Context, st int, failure error) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	ctx, p := c.Request().Context(), principal(c)
	pr, err := s.app.Project(ctx, p, pid)
	if err != nil {
		return err
	}
	as, err := s.app.ListAssignments(ctx, p, pid)
	if err != nil {
		return err
	}
	cl, err := s.app.ListClearances(ctx, p, pid)
	if err != nil {
		return err
	}
	d := &peopleData{Project: pr, Roles: map[int64][]string{}, Clearances: map[int64]haven.Sensitivity{}, RoleNames: haven.Roles}
	for _, a := range as {
		d.Roles[a.ActorID] = append(d.Roles[a.ActorID], a.Role)
	}
	for _, x := range cl {
		d.Clearances[x.ActorID] = x.Clearance
	}
	own := p.Clearance(pid)
	for _, t := range haven.Sensitivities {
		if t != haven.Level0 && own.Covers(t) {
			d.Tiers = append(d.Tiers, t)
		}
	}
	// Administrators see every user; a project lead the project's.
	if users, err := s.app.ListUsers(ctx, p); err == nil {
		d.Users = users
	} else {
		for id := range d.Roles {
			if u, err := s.app.User(ctx, p, id); err == nil {
				d.Users = append(d.Users, u)
			}
		}
	}
	v := s.page(c, "People", crumb{"Projects", "/projects"}, crumb{pr.Name, projectPath(pid)}, crumb{"People", ""})
	v.D = d
	if failure != nil {
		v.fail(failure)
	}
	return s.render(c, st, "people", v)
}

func (s *Server) grantSubmit(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	ctx, p := c.Request().Context(), principal(c)
	actor, err := strconv.ParseInt(c.FormValue("user"), 10, 64)
	if err != nil {
		return s.renderPeople(c, http.StatusBadRequest, haven.Errorf(haven.EINVALID, "Choose a user."))
	}
	if r := c.FormValue("role"); r != "" {
		if c.FormValue("remove") != "" {
			err = s.app.Unassign(ctx, p, pid, actor, r)
		} else {
			err = s.app.Assign(ctx, p, pid, actor, r)
		}
	}
	if t := c.FormValue("clearance"); err == nil && t != "" {
		err = s.app.SetClearance(ctx, p, pid, actor, haven.Sensitivity(t))
	}
	if err != nil {
		return s.renderPeople(c, status[haven.ErrorCode(err)].http, err)
	}
	return back(c, projectPath(pid)+"/people", "Saved.")
}

// --- Administration: users, audit, certificates ---

func (s *Server) usersPage(c echo.Context) error { return s.renderUsers(c, http.StatusOK, nil, "") }

func (s *Server) renderUsers(c echo.Context, st int, failure error, generated string) error {
	v := s.page(c, "Users", crumb{"Users", ""})
	users, err := s.app.ListUsers(c.Request().Context(), principal(c))
	if err != nil {
		return err
	}
	v.D = map[string]any{"Users": users, "Generated": generated}
	if failure != nil {
		v.fail(failure)
	}
	return s.render(c, st, "users", v)
}

func (s *Server) createUserSubmit(c echo.Context) error {
	u, pw, err := s.app.CreateUser(c.Request().Context(), principal(c), app.NewUser{Email: c.FormValue("email"), DisplayName: c.FormValue("name"), Admin: c.FormValue("admin") != ""})
	if err != nil {
		return s.renderUsers(c, status[haven.ErrorCode(err)].http, err, "")
	}
	if pw != "" {
		return s.renderUsers(c, http.StatusOK, nil, u.Email+": "+pw)
	}
	return back(c, "/users", "The user was created.")
}

func (s *Server) disableUserSubmit(c echo.Context) error {
	id, err := pathInt(c, "id")
	if err != nil {
		return err
	}
	if err := s.app.DisableUser(c.Request().Context(), principal(c), id); err != nil {
		return s.renderUsers(c, status[haven.ErrorCode(err)].http, err, "")
	}
	return back(c, "/users", "The user was disabled.")
}

type auditData struct {
	Events       []haven.AuditEvent
	Verification *app.Verification
	Filter       map[string]string
	Next, Prev   string
}

func (s *Server) auditPage(c echo.Context) error {
	ctx, p := c.Request().Context(), principal(c)
	q := c.QueryParams()
	f := app.AuditFilter{Action: q.Get("action"), Limit: 100}
	f.Offset, _ = strconv.Atoi(q.Get("offset"))
	f.Offset = max(f.Offset, 0)
	f.ProjectID, _ = strconv.ParseInt(q.Get("project"), 10, 64)
	f.ActorID, _ = strconv.ParseInt(q.Get("actor"), 10, 64)
	for name, at := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if d := q.Get(name); d != "" {
			t, err := app.ParseWhen(name, d)
			if err != nil {
				return err
			}
			*at = *t
		}
	}
	events, err := s.app.ListAudit(ctx, p, f)
	if err != nil {
		return err
	}
	d := &auditData{Events: events, Filter: map[string]string{"action": f.Action, "project": q.Get("project"), "actor": q.Get("actor"), "since": q.Get("since"), "until": q.Get("until")}}
	if p.Admin {
		if d.Verification, err = s.app.VerifyAudit(ctx, p); err != nil {
			return err
		}
	}
	page := url.Values{}
	for k, val := range d.Filter {
		if val != "" {
			page.Set(k, val)
		}
	}
	if len(events) == f.Limit {
		page.Set("offset", strconv.Itoa(f.Offset+f.Limit))
		d.Next = "/audit?" + page.Encode()
	}
	if f.Offset > 0 {
		page.Set("offset", strconv.Itoa(max(0, f.Offset-f.Limit)))
		d.Prev = "/audit?" + page.Encode()
	}
	v := s.page(c, "Audit trail", crumb{"Audit trail", ""})
	v.D = d
	return s.render(c, http.StatusOK, "audit", v)
}

func (s *Server) certificatePage(c echo.Context) error {
	v := s.page(c, "Verify a destruction certificate", crumb{"Verify a destruction certificate", ""})
	return s.render(c, http.StatusOK, "certificate", v)
}

func (s *Server) certificateSubmit(c echo.Context) error {
	v := s.page(c, "Verify a destruction certificate", crumb{"Verify a destruction certificate", ""})
	var sc app.SignedCertificate
	fh, err := c.FormFile("file")
	if err == nil {
		var f io.ReadCloser
		if f, err = fh.Open(); err == nil {
			defer f.Close()
			err = json.NewDecoder(io.LimitReader(f, 1<<20)).Decode(&sc)
		}
	}
	if err != nil {
		v.fail(haven.Errorf(haven.EINVALID, "Choose the certificate file (the .json Haven gave when the project was destroyed)."))
		return s.render(c, http.StatusBadRequest, "certificate", v)
	}
	if err := s.app.VerifyCertificate(c.Request().Context(), principal(c), &sc); err != nil {
		v.fail(err)
		return s.render(c, http.StatusUnprocessableEntity, "certificate", v)
	}
	v.D = map[string]any{"OK": true, "SHA256": sc.SHA256, "Body": string(sc.Body)}
	return s.render(c, http.StatusOK, "certificate", v)
}

// --- Data protection ---

type protectionData struct {
	Project   *app.ProjectView
	ReadsData bool // the reader may see consent refusals
	Refusals  map[string]*app.ConsentRefusals
	Erasures  []app.Erasure
	Overdue   []app.Classification
}

func (s *Server) protectionPage(c echo.Context) error {
	return s.renderProtection(c, http.StatusOK, nil)
}

func (s *Server) renderProtection(c echo.Context, st int, failure error) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	ctx, p := c.Request().Context(), principal(c)
	pr, err := s.app.Project(ctx, p, pid)
	if err != nil {
		return err
	}
	d := &protectionData{Project: pr, Refusals: map[string]*app.ConsentRefusals{}, ReadsData: p.Can(haven.ActionSubmissionRead, pid) && pr.DestroyedAt == nil}
	if p.Can(haven.ActionSubmissionRead, pid) && pr.DestroyedAt == nil {
		forms, err := s.app.ListForms(ctx, p, pid)
		if err != nil {
			return err
		}
		for _, f := range forms {
			if r, err := s.app.ConsentRefusals(ctx, p, pid, f.XMLFormID); err == nil && len(r.NotKeptByDay) > 0 {
				d.Refusals[f.XMLFormID] = r
			}
		}
	}
	if p.Can(haven.ActionSubjectRequest, pid) {
		d.Erasures, _ = s.app.SubjectErasures(ctx, p, pid)
	}
	if p.Can(haven.ActionFormRead, pid) && pr.DestroyedAt == nil {
		d.Overdue, _ = s.app.Classifications(ctx, p, pid, false)
	}
	v := s.page(c, "Data protection", crumb{"Projects", "/projects"}, crumb{pr.Name, projectPath(pid)}, crumb{"Data protection", ""})
	v.D = d
	if failure != nil {
		v.fail(failure)
	}
	return s.render(c, st, "protection", v)
}

func (s *Server) settingsSubmit(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	end := c.FormValue("endDate")
	b := app.ProjectSettings{EndDate: &end, ConfirmPastEndDate: c.FormValue("confirm") != ""}
	if r := c.FormValue("retentionDays"); r != "" {
		n, err := strconv.Atoi(r)
		if err != nil {
			return s.renderProtection(c, http.StatusBadRequest, haven.Errorf(haven.EINVALID, "The retention is a number of days, such as 90."))
		}
		b.RetentionDays = &n
	}
	if _, err := s.app.UpdateProject(c.Request().Context(), principal(c), pid, b); err != nil {
		return s.renderProtection(c, status[haven.ErrorCode(err)].http, err)
	}
	return back(c, projectPath(pid)+"/protection", "Saved.")
}

func (s *Server) holdSubmit(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	if _, err := s.app.PlaceHold(c.Request().Context(), principal(c), pid, c.FormValue("reason"), c.FormValue("reference")); err != nil {
		return s.renderProtection(c, status[haven.ErrorCode(err)].http, err)
	}
	return back(c, projectPath(pid)+"/protection", "The legal hold was placed: nothing of the project is destroyed while it stands.")
}

func (s *Server) liftHoldSubmit(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	if _, err := s.app.LiftHold(c.Request().Context(), principal(c), pid, c.FormValue("reason")); err != nil {
		return s.renderProtection(c, status[haven.ErrorCode(err)].http, err)
	}
	return back(c, projectPath(pid)+"/protection", "The legal hold was lifted.")
}

func (s *Server) certificateDownload(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	sc, err := s.app.Certificate(c.Request().Context(), principal(c), pid)
	if err != nil {
		return err
	}
	b, err := json.Marshal(sc) // as issued: the signature covers the body byte for byte
	if err != nil {
		return err
	}
	c.Response().Header().Set("Content-Disposition", attachment("destruction-certificate-project-"+strconv.FormatInt(pid, 10)+".json"))
	return c.Blob(http.StatusOK, "application/json", b)
}

func (s *Server) inventoryPage(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	inv, err := s.app.Inventory(c.Request().Context(), principal(c), pid)
	if err != nil {
		return err
	}
	v := s.page(c, "Data inventory", crumb{"Projects", "/projects"}, crumb{inv.Project.Name, projectPath(pid)}, crumb{"Data inventory", ""})
	v.D = inv
	return s.render(c, http.StatusOK, "inventory", v)
}

func (s *Server) inventoryCSV(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	inv, err := s.app.Inventory(c.Request().Context(), principal(c), pid)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	writeInventoryCSV(&b, inv)
	c.Response().Header().Set("Content-Disposition", attachment("data-inventory-project-"+strconv.FormatInt(pid, 10)+".csv"))
	return c.Blob(http.StatusOK, "text/csv; charset=utf-8", b.Bytes())
}

type subjectData struct {
	Project *app.ProjectView
	ID      string
	Report  *app.SubjectReport
	Erasure *app.Erasure
}

func (s *Server) subjectPage(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	ctx, p := c.Request().Context(), principal(c)
	pr, err := s.app.Project(ctx, p, pid)
	if err != nil {
		return err
	}
	d := &subjectData{Project: pr, ID: strings.TrimSpace(c.QueryParam("id"))}
	v := s.page(c, "Data subject requests", crumb{"Projects", "/projects"}, crumb{pr.Name, projectPath(pid)}, crumb{"Data subject requests", ""})
	v.D = d
	st := http.StatusOK
	if d.ID != "" {
		if d.Report, err = s.app.Subject(ctx, p, pid, d.ID); err != nil {
			v.fail(err)
			st = status[haven.ErrorCode(err)].http
		}
	}
	return s.render(c, st, "subjects", v)
}

func (s *Server) eraseSubjectSubmit(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	id := strings.TrimSpace(c.FormValue("id"))
	if c.FormValue("confirm") != id {
		return back(c, projectPath(pid)+"/subjects?id="+url.QueryEscape(id), "Type the identifier again to confirm the erasure.")
	}
	if _, err := s.app.EraseSubject(c.Request().Context(), principal(c), pid, id); err != nil {
		return err
	}
	return back(c, projectPath(pid)+"/subjects", "Everything the project held about this person was erased.")
}

func (s *Server) objectSubjectSubmit(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	id := strings.TrimSpace(c.FormValue("id"))
	if err := s.app.ObjectSubject(c.Request().Context(), principal(c), pid, id); err != nil {
		return err
	}
	return back(c, projectPath(pid)+"/subjects?id="+url.QueryEscape(id), "The objection was recorded: new submissions about this person are refused.")
}

func (s *Server) devicesPage(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	ctx, p := c.Request().Context(), principal(c)
	pr, err := s.app.Project(ctx, p, pid)
	if err != nil {
		return err
	}
	hs, err := s.app.DeviceHoldings(ctx, p, pid)
	if err != nil {
		return err
	}
	v := s.page(c, "What devices hold", crumb{"Projects", "/projects"}, crumb{pr.Name, projectPath(pid)}, crumb{"What devices hold", ""})
	v.D = hs
	return s.render(c, http.StatusOK, "devices", v)
}

func (s *Server) entityListsPage(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	ctx, p := c.Request().Context(), principal(c)
	pr, err := s.app.Project(ctx, p, pid)
	if err != nil {
		return err
	}
	lists, err := s.app.EntityLists(ctx, p, pid)
	if err != nil {
		return err
	}
	v := s.page(c, "Entity lists", crumb{"Projects", "/projects"}, crumb{pr.Name, projectPath(pid)}, crumb{"Entity lists", ""})
	v.D = struct {
		ProjectID int64
		Lists     []app.EntityListInfo
	}{pid, lists}
	return s.render(c, http.StatusOK, "entitylists", v)
}

func (s *Server) entityListPage(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	ctx, p := c.Request().Context(), principal(c)
	pr, err := s.app.Project(ctx, p, pid)
	if err != nil {
		return err
	}
	t, err := s.app.EntityTableFor(ctx, p, pid, param(c, "name"))
	if err != nil {
		return err
	}
	v := s.page(c, t.List.Name, crumb{"Projects", "/projects"}, crumb{pr.Name, projectPath(pid)},
		crumb{"Entity lists", projectPath(pid) + "/entity-lists"}, crumb{t.List.Name, ""})
	v.Title = t.List.Name
	v.D = t
	return s.render(c, http.StatusOK, "entitylist", v)
}
