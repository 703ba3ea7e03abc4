package server

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/formspec"
	"github.com/haven-org/haven/formspec/xlsform"
	"github.com/haven-org/haven/storage"
	"github.com/labstack/echo/v4"
)

// bind decodes a JSON body of at most 1 MiB into v.
func bind(c echo.Context, v any) error {
	dec := json.NewDecoder(io.LimitReader(c.Request().Body, 1<<20))
	if err := dec.Decode(v); err != nil {
		return haven.Errorf(haven.EINVALID, "The request body is not the JSON this endpoint expects: %v.", err)
	}
	return nil
}

func forbidden() error {
	return haven.Errorf(haven.EFORBIDDEN, "You are not allowed to do this. Ask an administrator for access.")
}

func (s *Server) login(c echo.Context) error {
	var body struct{ Email, Password string }
	if err := bind(c, &body); err != nil {
		return err
	}
	var user *haven.User
	err := s.guarded(c, body.Email, func() (err error) {
		user, err = s.users.Authenticate(c.Request().Context(), body.Email, body.Password)
		return err
	})
	if err != nil {
		return err
	}
	if e := haven.AuditFrom(c.Request().Context()); e != nil {
		e.ActorID, e.Actor = user.ID, user.Email
	}
	t, err := s.startSession(c, user.ID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, t)
}

// refresh answers POST /v1/sessions/refresh {refreshToken}: new tokens for
// the same session, and the old refresh token no longer works.
func (s *Server) refresh(c echo.Context) error {
	var body struct {
		RefreshToken string `json:"refreshToken"`
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	t, err := s.refreshSession(c, body.RefreshToken)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, t)
}

func (s *Server) logout(c echo.Context) error {
	token := c.Param("token")
	if token == "current" {
		token = strings.TrimSpace(strings.TrimPrefix(c.Request().Header.Get("Authorization"), "Bearer"))
	}
	claims, err := s.parseToken(token)
	if err != nil {
		return err
	}
	p := principal(c)
	if fmt.Sprint(p.ActorID) != claims.Subject && !p.Admin {
		return forbidden()
	}
	if err := s.users.RevokeSession(c.Request().Context(), claims.session()); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]bool{"success": true})
}

func (s *Server) currentUser(c echo.Context) error {
	p := principal(c)
	if p.Type != haven.ActorUser {
		return forbidden()
	}
	u, err := s.users.Get(c.Request().Context(), p.ActorID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, u)
}

func (s *Server) listUsers(c echo.Context) error {
	if !principal(c).Admin {
		return forbidden()
	}
	users, err := s.users.List(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, users)
}

func (s *Server) getUser(c echo.Context) error {
	id, err := pathInt(c, "id")
	if err != nil {
		return err
	}
	if p := principal(c); !p.Admin && p.ActorID != id {
		return forbidden()
	}
	u, err := s.users.Get(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, u)
}

// disableUser answers DELETE /v1/users/{id} (administrators): the user's
// sessions end at once and their credentials stop working.
func (s *Server) disableUser(c echo.Context) error {
	id, err := pathInt(c, "id")
	if err != nil {
		return err
	}
	p := principal(c)
	if !p.Admin {
		return forbidden()
	}
	if p.ActorID == id {
		return haven.Errorf(haven.ECONFLICT, "You cannot disable your own account; ask another administrator.")
	}
	if err := s.users.Disable(c.Request().Context(), id); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]bool{"success": true})
}

func (s *Server) createUser(c echo.Context) error {
	if !principal(c).Admin {
		return forbidden()
	}
	var body struct {
		Email, Password, DisplayName string
		Admin                        bool
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	generated := body.Password == ""
	if generated {
		body.Password = storage.GeneratePassword()
	}
	u, err := s.users.Create(c.Request().Context(), body.Email, body.Password, body.DisplayName, body.Admin)
	if err != nil {
		return err
	}
	if generated {
		// Shown once: only its hash is kept.
		return c.JSON(http.StatusOK, struct {
			*haven.User
			Password string `json:"password"`
		}{u, body.Password})
	}
	return c.JSON(http.StatusOK, u)
}

func (s *Server) listProjects(c echo.Context) error {
	p := principal(c)
	projects, err := s.projects.List(c.Request().Context(), func(id int64) bool { return p.Can(haven.ActionProjectRead, id) })
	if err != nil {
		return err
	}
	out := make([]projectAnswer, len(projects))
	for i, pr := range projects {
		out[i] = s.answerProject(pr)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) createProject(c echo.Context) error {
	if !principal(c).Admin {
		return forbidden()
	}
	var body struct {
		Name, Description string
		lifecycleBody
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	life, err := body.lifecycle(c.RealIP())
	if err != nil {
		return err
	}
	body.lifecycleBody.audit(c)
	pr, err := s.projects.Create(c.Request().Context(), body.Name, body.Description, life)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.answerProject(pr))
}

// project returns the project in the path if the principal may do action in it.
func (s *Server) project(c echo.Context, action haven.Action) (*haven.Project, error) {
	pid, err := projectID(c)
	if err != nil {
		return nil, err
	}
	if !principal(c).Can(action, pid) {
		// Do not tell a stranger whether the project exists.
		if !principal(c).Can(haven.ActionProjectRead, pid) {
			return nil, haven.Errorf(haven.ENOTFOUND, "Project %d could not be found.", pid)
		}
		return nil, forbidden()
	}
	return s.projects.Get(c.Request().Context(), pid)
}

func (s *Server) getProject(c echo.Context) error {
	pr, err := s.project(c, haven.ActionProjectRead)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.answerProject(pr))
}

func (s *Server) updateProject(c echo.Context) error {
	pr, err := s.project(c, haven.ActionProjectUpdate)
	if err != nil {
		return err
	}
	var body struct {
		Name, Description *string
		lifecycleBody
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	life, err := body.lifecycle(c.RealIP())
	if err != nil {
		return err
	}
	body.lifecycleBody.audit(c)
	pr, err = s.projects.Update(c.Request().Context(), pr.ID, body.Name, body.Description, life)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.answerProject(pr))
}

func (s *Server) listForms(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	forms, err := s.sync.ListForms(c.Request().Context(), principal(c), pid)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, forms)
}

// upload is a form as uploaded: its XForm, and for an XLSForm the
// conversion's warnings and the survey row of each field.
type upload struct {
	xml      []byte
	warnings []xlsform.Diagnostic
	rows     map[string]int
}

// readForm reads an uploaded form: an XForm, or an XLSForm (.xlsx) that it
// converts; conversion errors come back whole (and nothing is stored), and
// warnings are returned for the answer.
func readForm(c echo.Context) (*upload, error) {
	ct, _, _ := mime.ParseMediaType(c.Request().Header.Get("Content-Type"))
	limit := int64(formspec.MaxFormSize)
	isXLSX := strings.Contains(ct, "spreadsheetml") || strings.Contains(ct, "ms-excel")
	if isXLSX {
		limit = xlsform.MaxWorkbookBytes
	}
	b, err := io.ReadAll(io.LimitReader(c.Request().Body, limit+1))
	if err != nil {
		return nil, haven.Errorf(haven.EINVALID, "The upload could not be read: %v.", err)
	}
	if int64(len(b)) > limit {
		return nil, haven.Errorf(haven.ETOOLARGE, "The form is larger than %d bytes, the most Haven accepts.", limit)
	}
	if !isXLSX {
		return &upload{xml: b}, nil
	}
	res := xlsform.ConvertXLSX(b, xlsform.Options{FormID: c.Request().Header.Get("X-XlsForm-FormId-Fallback")})
	if len(res.Errors) > 0 {
		msgs := make([]string, len(res.Errors))
		for i, e := range res.Errors {
			msgs[i] = e.String()
		}
		return nil, &haven.Error{Code: haven.EINVALID,
			Message: "The XLSForm could not be converted, so nothing was stored: " + strings.Join(msgs, " "),
			Details: map[string]any{"errors": res.Errors, "warnings": res.Warnings}}
	}
	return &upload{xml: res.XForm, warnings: res.Warnings, rows: res.Rows}, nil
}

// formAnswer is a form as the API shows it after an upload, with the
// conversion's warnings when it was an XLSForm.
type formAnswer struct {
	*haven.Form
	Warnings []xlsform.Diagnostic `json:"warnings,omitempty"`
}

func (s *Server) createForm(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	up, err := readForm(c)
	if err != nil {
		return err
	}
	f, err := s.sync.CreateForm(c.Request().Context(), principal(c), pid, up.xml, c.QueryParam("publish") == "true", up.rows)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, formAnswer{f, up.warnings})
}

func (s *Server) setFormState(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	var body struct{ State string }
	if err := bind(c, &body); err != nil {
		return err
	}
	f, err := s.sync.SetFormState(c.Request().Context(), principal(c), pid, c.Param("formId"), body.State)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, f)
}

func (s *Server) formVersions(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	f, err := s.sync.Form(c.Request().Context(), principal(c), pid, c.Param("formId"))
	if err != nil {
		return err
	}
	vs, err := s.sync.Forms.Versions(c.Request().Context(), f.ID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, vs)
}

func (s *Server) formAttachments(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	f, err := s.sync.Form(c.Request().Context(), principal(c), pid, c.Param("formId"))
	if err != nil {
		return err
	}
	if f.CurrentVersionID == 0 {
		return haven.Errorf(haven.ENOTFOUND, "Form %s has not been published yet; see its draft's attachments.", f.XMLFormID)
	}
	as, err := s.sync.Forms.Attachments(c.Request().Context(), f.CurrentVersionID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, as)
}

func (s *Server) newDraft(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	up, err := readForm(c)
	if err != nil {
		return err
	}
	if _, err := s.sync.NewDraft(c.Request().Context(), principal(c), pid, c.Param("formId"), up.xml); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"success": true, "warnings": up.warnings})
}

func (s *Server) getDraft(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	_, v, err := s.sync.Draft(c.Request().Context(), principal(c), pid, c.Param("formId"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (s *Server) getDraftXML(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	_, v, err := s.sync.Draft(c.Request().Context(), principal(c), pid, c.Param("formId"))
	if err != nil {
		return err
	}
	return c.Blob(http.StatusOK, "text/xml; charset=utf-8", v.XML)
}

func (s *Server) deleteDraft(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	if err := s.sync.DeleteDraft(c.Request().Context(), principal(c), pid, c.Param("formId")); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]bool{"success": true})
}

func (s *Server) publishDraft(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	f, err := s.sync.PublishDraft(c.Request().Context(), principal(c), pid, c.Param("formId"), c.QueryParam("version"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, f)
}

func (s *Server) draftAttachments(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	_, v, err := s.sync.Draft(c.Request().Context(), principal(c), pid, c.Param("formId"))
	if err != nil {
		return err
	}
	as, err := s.sync.Forms.Attachments(c.Request().Context(), v.ID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, as)
}

func (s *Server) uploadDraftAttachment(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	name, err := url.PathUnescape(c.Param("name"))
	if err != nil {
		return haven.Errorf(haven.EINVALID, "The file name in the URL is not valid.")
	}
	r := c.Request()
	r.Body = http.MaxBytesReader(c.Response(), r.Body, s.sync.Limits.MaxMedia+1)
	if err := s.sync.UploadDraftMedia(r.Context(), principal(c), pid, c.Param("formId"), name, r.Body); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]bool{"success": true})
}

// submissionForm returns the form in the path if the principal may read its submissions.
func (s *Server) submissionForm(c echo.Context) (*haven.Form, error) {
	pid, err := projectID(c)
	if err != nil {
		return nil, err
	}
	if !principal(c).Can(haven.ActionSubmissionRead, pid) {
		return nil, forbidden()
	}
	return s.sync.Forms.Get(c.Request().Context(), pid, c.Param("formId"))
}

func (s *Server) listSubmissions(c echo.Context) error {
	f, err := s.submissionForm(c)
	if err != nil {
		return err
	}
	limit, offset := 250, 0
	if v := c.QueryParam("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > 10000 {
			return haven.Errorf(haven.EINVALID, "limit must be a number from 1 to 10000.")
		}
	}
	if v := c.QueryParam("offset"); v != "" {
		if offset, err = strconv.Atoi(v); err != nil || offset < 0 {
			return haven.Errorf(haven.EINVALID, "offset must be a number of 0 or more.")
		}
	}
	subs, total, err := s.sync.ListSubmissions(c.Request().Context(), principal(c), f, limit, offset)
	if err != nil {
		return err
	}
	c.Response().Header().Set("X-Total-Count", strconv.Itoa(total))
	return c.JSON(http.StatusOK, subs)
}

func (s *Server) submission(c echo.Context) (*haven.Form, *haven.Submission, bool, error) {
	f, err := s.submissionForm(c)
	if err != nil {
		return nil, nil, false, err
	}
	id, asXML := strings.CutSuffix(c.Param("instanceId"), ".xml")
	sub, err := s.subs.Get(c.Request().Context(), f.ProjectID, f.ID, id)
	return f, sub, asXML, err
}

func (s *Server) getSubmission(c echo.Context) error {
	f, sub, asXML, err := s.submission(c)
	if err != nil {
		return err
	}
	if !asXML {
		view, err := s.sync.Submission(c.Request().Context(), principal(c), f, sub)
		if err != nil {
			return err
		}
		noteOmitted(c, view.Omitted)
		return c.JSON(http.StatusOK, view)
	}
	b, err := s.sync.RawXML(c.Request().Context(), principal(c), f, sub)
	if err != nil {
		return err
	}
	return c.Blob(http.StatusOK, "text/xml; charset=utf-8", b)
}

// deleteSubmission erases a submission, its versions and its files.
func (s *Server) deleteSubmission(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	if !principal(c).Can(haven.ActionSubmissionDelete, pid) {
		return forbidden()
	}
	f, err := s.sync.Forms.Get(c.Request().Context(), pid, c.Param("formId"))
	if err != nil {
		return err
	}
	if err := s.subs.Delete(c.Request().Context(), s.blobs, f.ID, c.Param("instanceId"), haven.AuditFrom(c.Request().Context())); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]bool{"success": true})
}

func (s *Server) submissionVersions(c echo.Context) error {
	f, sub, _, err := s.submission(c)
	if err != nil {
		return err
	}
	vs, err := s.sync.Versions(c.Request().Context(), principal(c), f, sub)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, vs)
}

// submissionAttachments lists the files the reader may see; the header
// X-Haven-Omitted-Files counts those left out (above their clearance).
func (s *Server) submissionAttachments(c echo.Context) error {
	f, sub, _, err := s.submission(c)
	if err != nil {
		return err
	}
	as, left, err := s.sync.Attachments(c.Request().Context(), principal(c), f, sub)
	if err != nil {
		return err
	}
	noteOmitted(c, left)
	c.Response().Header().Set("X-Haven-Omitted-Files", strconv.Itoa(len(left)))
	return c.JSON(http.StatusOK, as)
}

func (s *Server) submissionAttachment(c echo.Context) error {
	f, sub, _, err := s.submission(c)
	if err != nil {
		return err
	}
	name, err := url.PathUnescape(c.Param("name"))
	if err != nil {
		return haven.Errorf(haven.EINVALID, "The file name in the URL is not valid.")
	}
	as, left, err := s.sync.Attachments(c.Request().Context(), principal(c), f, sub)
	if err != nil {
		return err
	}
	for _, l := range left {
		if l == name {
			return haven.Errorf(haven.EFORBIDDEN, "This file belongs to a field above your clearance. Ask the project lead for a higher clearance.")
		}
	}
	for _, a := range as {
		if a.Name == name && a.Exists {
			rc, _, err := s.blobs.Open(c.Request().Context(), a.BlobID)
			if err != nil {
				return err
			}
			defer rc.Close()
			return streamFile(c, a.Name, a.Size, rc)
		}
	}
	return haven.Errorf(haven.ENOTFOUND, "Submission %s has no file named %q (or it has not arrived yet).", sub.InstanceID, name)
}

// appUserView is an app user as the API shows it on creation: with its token,
// the server URL to type into ODK Collect, and the QR code payload.
type appUserView struct {
	*haven.AppUser
	ServerURL       string `json:"serverUrl"`
	CollectSettings string `json:"collectSettings"`
}

// CollectSettings returns the payload of the QR code ODK Collect scans to be
// configured: its settings as JSON, zlib-deflated, in base64.
func CollectSettings(serverURL, projectName string) (string, error) {
	settings := map[string]any{
		"general": map[string]any{
			"server_url":       serverURL,
			"form_update_mode": "match_exactly",
			"autosend":         "wifi_and_cellular",
		},
		"admin":   map[string]any{},
		"project": map[string]any{"name": projectName},
	}
	js, err := json.Marshal(settings)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	w.Write(js)
	if err := w.Close(); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes()), nil
}

func (s *Server) listAppUsers(c echo.Context) error {
	pr, err := s.project(c, haven.ActionAppUserManage)
	if err != nil {
		return err
	}
	aus, err := s.users.AppUsers(c.Request().Context(), pr.ID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, aus)
}

func (s *Server) createAppUser(c echo.Context) error {
	pr, err := s.project(c, haven.ActionAppUserManage)
	if err != nil {
		return err
	}
	var body struct{ DisplayName string }
	if err := bind(c, &body); err != nil {
		return err
	}
	au, err := s.users.CreateAppUser(c.Request().Context(), pr.ID, body.DisplayName)
	if err != nil {
		return err
	}
	url := fmt.Sprintf("%s/v1/key/%s/projects/%d", s.baseURL(c), au.Token, pr.ID)
	qr, err := CollectSettings(url, pr.Name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, appUserView{AppUser: au, ServerURL: url, CollectSettings: qr})
}

func (s *Server) revokeAppUser(c echo.Context) error {
	pr, err := s.project(c, haven.ActionAppUserManage)
	if err != nil {
		return err
	}
	id, err := pathInt(c, "id")
	if err != nil {
		return err
	}
	if err := s.users.RevokeAppUser(c.Request().Context(), pr.ID, id); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]bool{"success": true})
}

func (s *Server) listAssignments(c echo.Context) error {
	pr, err := s.project(c, haven.ActionAssignmentManage)
	if err != nil {
		return err
	}
	as, err := s.users.Assignments(c.Request().Context(), pr.ID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, as)
}

func (s *Server) assign(c echo.Context) error {
	pr, err := s.project(c, haven.ActionAssignmentManage)
	if err != nil {
		return err
	}
	actor, err := pathInt(c, "actorId")
	if err != nil {
		return err
	}
	if err := s.users.Assign(c.Request().Context(), pr.ID, actor, c.Param("role")); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]bool{"success": true})
}

func (s *Server) unassign(c echo.Context) error {
	pr, err := s.project(c, haven.ActionAssignmentManage)
	if err != nil {
		return err
	}
	actor, err := pathInt(c, "actorId")
	if err != nil {
		return err
	}
	if err := s.users.Unassign(c.Request().Context(), pr.ID, actor, c.Param("role")); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]bool{"success": true})
}

// formFields answers the schema view of a form's published version: every
// field with its path, type, purpose and sensitivity.
func (s *Server) formFields(c echo.Context) error { return s.fields(c, false) }

// draftFields is formFields for the draft.
func (s *Server) draftFields(c echo.Context) error { return s.fields(c, true) }

func (s *Server) fields(c echo.Context, draft bool) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	fs, err := s.sync.Fields(c.Request().Context(), principal(c), pid, c.Param("formId"), draft)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, fs)
}

// classification lists the project's forms with fields still undecided
// (level_0); ?overdue=true lists only those past the 24-hour deadline.
func (s *Server) classification(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	cs, err := s.sync.Classifications(c.Request().Context(), principal(c), pid, c.QueryParam("overdue") == "true")
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, cs)
}

// consentRefusals answers the anonymous tally of submissions not kept for
// want of consent, by day, and the records of withdrawn consent.
func (s *Server) consentRefusals(c echo.Context) error {
	f, err := s.submissionForm(c)
	if err != nil {
		return err
	}
	tally, err := s.subs.Refusals(c.Request().Context(), f.ID)
	if err != nil {
		return err
	}
	withdrawals, err := s.subs.Withdrawals(c.Request().Context(), f.ID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"notKeptByDay": tally, "withdrawals": withdrawals})
}

// withdrawConsent erases a submission whose respondent withdrew consent.
func (s *Server) withdrawConsent(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	if err := s.sync.WithdrawConsent(c.Request().Context(), principal(c), pid, c.Param("formId"), c.Param("instanceId")); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"success": true, "message": "The submission, its versions and files were erased. A record that consent was withdrawn, without personal data, was kept."})
}

func (s *Server) listClearances(c echo.Context) error {
	pr, err := s.project(c, haven.ActionAssignmentManage)
	if err != nil {
		return err
	}
	cs, err := s.users.Clearances(c.Request().Context(), pr.ID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, cs)
}

// setClearance sets a user's clearance in a project. No one grants a
// clearance above their own.
func (s *Server) setClearance(c echo.Context) error {
	pr, err := s.project(c, haven.ActionAssignmentManage)
	if err != nil {
		return err
	}
	actor, err := pathInt(c, "actorId")
	if err != nil {
		return err
	}
	var body struct{ Clearance haven.Sensitivity }
	if err := bind(c, &body); err != nil {
		return err
	}
	p := principal(c)
	if body.Clearance.Rank() > p.Clearance(pr.ID).Rank() {
		return haven.Errorf(haven.EFORBIDDEN, "You cannot grant %s: it is above your own clearance in this project (%s).", body.Clearance, p.Clearance(pr.ID))
	}
	if e := haven.AuditFrom(c.Request().Context()); e != nil {
		e.Details = map[string]any{"clearance": body.Clearance}
	}
	if err := s.users.SetClearance(c.Request().Context(), pr.ID, actor, body.Clearance, p.ActorID); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"actorId": actor, "clearance": body.Clearance})
}
