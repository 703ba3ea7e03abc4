package server

import (
	"net/http"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/sync"
	"github.com/labstack/echo/v4"
)

// Data subject requests: access, correction, erasure and objection, by the
// identifier a project's forms record for the person (the subject_id
// setting). The identifier is never stored or audited, only its keyed hash.

func (s *Server) subjectAccess(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	rep, err := s.sync.Subject(c.Request().Context(), principal(c), pid, c.Param("subject"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, rep)
}

func (s *Server) subjectErase(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	e, err := s.sync.EraseSubject(c.Request().Context(), principal(c), pid, c.Param("subject"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"erasure": e,
		"message": "Every submission about this person, with its versions, files and consent record, was erased. A record that an erasure happened, without personal data, was kept."})
}

func (s *Server) subjectObject(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	if err := s.sync.ObjectSubject(c.Request().Context(), principal(c), pid, c.Param("subject")); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"success": true,
		"message": "The objection was recorded. Devices sending new forms about this person are refused. Data already held stays until erased."})
}

func (s *Server) subjectLiftObjection(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	if err := s.sync.LiftObjection(c.Request().Context(), principal(c), pid, c.Param("subject")); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]bool{"success": true})
}

func (s *Server) subjectErasures(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	if !principal(c).Can(haven.ActionSubjectRequest, pid) {
		return forbidden()
	}
	es, err := s.subs.Erasures(c.Request().Context(), pid)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, es)
}

// correctSubmission stores a corrected version of a submission with a reason.
func (s *Server) correctSubmission(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	var body struct {
		Values map[string]string `json:"values"`
		Reason string            `json:"reason"`
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	sub, err := s.sync.Correct(c.Request().Context(), principal(c), pid, sync.Correction{
		FormID: c.Param("formId"), InstanceID: c.Param("instanceId"), Values: body.Values, Reason: body.Reason})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, sub)
}
