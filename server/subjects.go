package server

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// Data subject requests: access, erasure and objection, by the identifier a
// project's forms record for the person. The identifier is in the path, so
// the log masks it (logPath).

func (s *Server) subjectRoutes(p *echo.Group) {
	p.GET("/subjects/:subject", s.subjectAccess)
	p.DELETE("/subjects/:subject", s.subjectErase)
	p.POST("/subjects/:subject/objection", s.subjectObject)
	p.DELETE("/subjects/:subject/objection", s.subjectLiftObjection)
	p.GET("/subject-erasures", s.subjectErasures)
}

func (s *Server) subjectAccess(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	rep, err := s.app.Subject(c.Request().Context(), principal(c), pid, param(c, "subject"))
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
	e, err := s.app.EraseSubject(c.Request().Context(), principal(c), pid, param(c, "subject"))
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
	if err := s.app.ObjectSubject(c.Request().Context(), principal(c), pid, param(c, "subject")); err != nil {
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
	if err := s.app.LiftObjection(c.Request().Context(), principal(c), pid, param(c, "subject")); err != nil {
		return err
	}
	return success(c)
}

func (s *Server) subjectErasures(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	es, err := s.app.SubjectErasures(c.Request().Context(), principal(c), pid)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, es)
}
