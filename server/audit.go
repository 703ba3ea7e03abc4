package server

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
	"github.com/labstack/echo/v4"
)

// audited names the audit action of every route that changes something or
// reads collected data, by method and route. Routes not listed (form lists,
// form downloads, health) read nothing collected and are not audited. Device
// routes are listed without their /v1/key/:key prefix.
var audited = map[string]string{
	"POST /v1/sessions":                                                             "session.create",
	"POST /v1/sessions/refresh":                                                     "session.refresh",
	"DELETE /v1/sessions/:token":                                                    "session.end",
	"POST /v1/users":                                                                "user.create",
	"DELETE /v1/users/:id":                                                          "user.disable",
	"POST /v1/projects":                                                             "project.create",
	"PATCH /v1/projects/:pid":                                                       "project.update",
	"POST /v1/projects/:pid/legal-hold":                                             "project.hold.place",
	"DELETE /v1/projects/:pid/legal-hold":                                           "project.hold.lift",
	"POST /v1/projects/:pid/forms":                                                  "form.create",
	"PATCH /v1/projects/:pid/forms/:formId":                                         "form.update",
	"POST /v1/projects/:pid/forms/:formId/draft":                                    "form.draft.create",
	"DELETE /v1/projects/:pid/forms/:formId/draft":                                  "form.draft.delete",
	"POST /v1/projects/:pid/forms/:formId/draft/publish":                            "form.publish",
	"POST /v1/projects/:pid/forms/:formId/draft/attachments/:name":                  "form.attachment.upload",
	"GET /v1/projects/:pid/forms/:formId/aggregate":                                 "submission.aggregate",
	"GET /v1/projects/:pid/forms/:formId/export":                                    "submission.export",
	"GET /v1/projects/:pid/forms/:formId/submissions":                               "submission.list",
	"GET /v1/projects/:pid/forms/:formId/submissions/:instanceId":                   "submission.read",
	"DELETE /v1/projects/:pid/forms/:formId/submissions/:instanceId":                "submission.delete",
	"POST /v1/projects/:pid/forms/:formId/submissions/:instanceId/withdraw-consent": "submission.withdraw_consent",
	"GET /v1/projects/:pid/forms/:formId/submissions/:instanceId/versions":          "submission.versions",
	"GET /v1/projects/:pid/forms/:formId/submissions/:instanceId/attachments":       "submission.attachments",
	"GET /v1/projects/:pid/forms/:formId/submissions/:instanceId/attachments/:name": "attachment.download",
	"POST /v1/projects/:pid/forms/:formId/submissions/:instanceId/corrections":      "submission.correct",
	"GET /v1/projects/:pid/subjects/:subject":                                       "subject.access",
	"DELETE /v1/projects/:pid/subjects/:subject":                                    "subject.erase",
	"POST /v1/projects/:pid/subjects/:subject/objection":                            "subject.object",
	"DELETE /v1/projects/:pid/subjects/:subject/objection":                          "subject.object.lift",
	"GET /v1/projects/:pid/subject-erasures":                                        "subject.erasures",
	"POST /v1/projects/:pid/submission":                                             "submission.create",
	"POST /v1/projects/:pid/app-users":                                              "appuser.create",
	"DELETE /v1/projects/:pid/app-users/:id":                                        "appuser.revoke",
	"POST /v1/projects/:pid/assignments/:role/:actorId":                             "assignment.create",
	"DELETE /v1/projects/:pid/assignments/:role/:actorId":                           "assignment.delete",
	"PUT /v1/projects/:pid/clearances/:actorId":                                     "clearance.set",
	"GET /v1/audit":        "audit.list",
	"GET /v1/audit/verify": "audit.verify",
}

// auditAction returns the audit action of the request's route, or "".
func auditAction(c echo.Context) string {
	route := strings.Replace(c.Path(), "/v1/key/:key/", "/v1/", 1)
	return audited[c.Request().Method+" "+route]
}

// auditObject names what a request acts on from its path: project, form,
// submission and file, as ids.
func auditObject(c echo.Context) (string, int64) {
	var parts []string
	pid, _ := strconv.ParseInt(c.Param("pid"), 10, 64)
	if pid > 0 {
		parts = append(parts, "project", strconv.FormatInt(pid, 10))
	}
	if c.Param("subject") != "" {
		parts = append(parts, "subject") // the identifier itself is never written down
	}
	for _, kv := range [][2]string{{"formId", "form"}, {"instanceId", "submission"}, {"name", "file"}, {"id", "actor"}, {"actorId", "actor"}} {
		if v := c.Param(kv[0]); v != "" {
			if kv[0] == "instanceId" {
				v = strings.TrimSuffix(v, ".xml") // the XML of the same submission
			}
			parts = append(parts, kv[1], v)
		}
	}
	return strings.Join(parts, "/"), pid
}

// audit writes the audit event of every audited request: who, what, from
// where and how it ended, allowed or not. A layer below may write the event
// itself, in the transaction of the change it describes (submissions do);
// otherwise it is written here once the handler is done.
func (s *Server) audit(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		action := auditAction(c)
		if action == "" {
			return next(c)
		}
		object, pid := auditObject(c)
		e := &haven.AuditEvent{Action: action, Object: object, ProjectID: pid, Address: c.RealIP()}
		r := c.Request()
		c.SetRequest(r.WithContext(haven.WithAudit(r.Context(), e)))
		err := next(c)
		if e.Recorded {
			return err
		}
		e.Outcome = outcome(c, err)
		if lerr := s.auditLog.Log(r.Context(), e); lerr != nil {
			s.log.Error("audit event not written", "action", action, "object", object, "err", lerr)
		}
		return err
	}
}

// outcome is "ok" or what went wrong, as an error code.
func outcome(c echo.Context, err error) string {
	var ee *echo.HTTPError
	switch {
	case err == nil && c.Response().Status < 400:
		return "ok"
	case err == nil:
		return "status_" + strconv.Itoa(c.Response().Status)
	case errors.As(err, &ee):
		return "status_" + strconv.Itoa(ee.Code)
	}
	return haven.ErrorCode(err)
}

// listAudit answers GET /v1/audit?actor=&action=&projectId=&since=&until=&limit=&offset=
// for site administrators.
func (s *Server) listAudit(c echo.Context) error {
	if !principal(c).Admin {
		return forbidden()
	}
	var f storage.AuditFilter
	q := c.QueryParams()
	var err error
	for _, kv := range []struct {
		name string
		dst  *int64
	}{{"actor", &f.ActorID}, {"projectId", &f.ProjectID}} {
		if v := q.Get(kv.name); v != "" {
			if *kv.dst, err = strconv.ParseInt(v, 10, 64); err != nil {
				return haven.Errorf(haven.EINVALID, "%s must be a number (an actor or project id).", kv.name)
			}
		}
	}
	f.Action = q.Get("action")
	for _, kv := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := q.Get(kv.name); v != "" {
			if *kv.dst, err = time.Parse(time.RFC3339, v); err != nil {
				return haven.Errorf(haven.EINVALID, "%s must be a time such as 2026-11-23T00:00:00Z.", kv.name)
			}
		}
	}
	for _, kv := range []struct {
		name string
		dst  *int
	}{{"limit", &f.Limit}, {"offset", &f.Offset}} {
		if v := q.Get(kv.name); v != "" {
			if *kv.dst, err = strconv.Atoi(v); err != nil || *kv.dst < 0 {
				return haven.Errorf(haven.EINVALID, "%s must be a number of 0 or more.", kv.name)
			}
		}
	}
	if e := haven.AuditFrom(c.Request().Context()); e != nil {
		e.Details = map[string]any{"filter": q.Encode()}
	}
	events, err := s.auditLog.List(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, events)
}

// verifyAudit answers GET /v1/audit/verify: whether the chain holds, and
// the first broken link when it does not.
func (s *Server) verifyAudit(c echo.Context) error {
	if !principal(c).Admin {
		return forbidden()
	}
	v, err := s.auditLog.Verify(c.Request().Context())
	if err != nil {
		return err
	}
	if !v.OK {
		s.log.Error("audit chain broken", "at", v.Broken, "reason", v.Reason)
	}
	return c.JSON(http.StatusOK, v)
}

// noteOmitted records in the request's audit event what a read left out
// because it is above the reader's clearance.
func noteOmitted(c echo.Context, omitted []string) {
	e := haven.AuditFrom(c.Request().Context())
	if e == nil || len(omitted) == 0 {
		return
	}
	if e.Details == nil {
		e.Details = map[string]any{}
	}
	e.Details["omitted"] = omitted
}
