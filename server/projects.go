package server

import (
	"net/http"

	"github.com/haven-org/haven/app"
	"github.com/labstack/echo/v4"
)

// Projects: settings, end and retention, legal holds and destruction
// certificates.

func (s *Server) projectRoutes(p *echo.Group) {
	p.GET("", s.getProject)
	p.PATCH("", s.updateProject)
	p.PUT("", s.updateProject) // Central's full update: name, description, archived (its forms list is not read)
	p.DELETE("", s.deleteProject)
	p.POST("/legal-hold", s.placeHold)
	p.DELETE("/legal-hold", s.liftHold)
	p.GET("/destruction-certificate", s.destructionCertificate)
}

func (s *Server) listProjects(c echo.Context) error {
	ps, err := s.app.ListProjects(c.Request().Context(), principal(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ps)
}

func (s *Server) createProject(c echo.Context) error {
	var body app.ProjectSettings
	if err := bind(c, &body); err != nil {
		return err
	}
	pr, err := s.app.CreateProject(c.Request().Context(), principal(c), body)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, pr)
}

func (s *Server) getProject(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	pr, err := s.app.Project(c.Request().Context(), principal(c), pid)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, pr)
}

func (s *Server) updateProject(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	var body app.ProjectSettings
	if err := bind(c, &body); err != nil {
		return err
	}
	pr, err := s.app.UpdateProject(c.Request().Context(), principal(c), pid, body)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, pr)
}

func (s *Server) placeHold(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	var body struct{ Reason, Reference string }
	if err := bind(c, &body); err != nil {
		return err
	}
	pr, err := s.app.PlaceHold(c.Request().Context(), principal(c), pid, body.Reason, body.Reference)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, pr)
}

func (s *Server) liftHold(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	// A reason is optional (DELETE may carry no body); it goes to the audit trail.
	var body struct{ Reason string }
	if c.Request().ContentLength > 0 {
		if err := bind(c, &body); err != nil {
			return err
		}
	}
	pr, err := s.app.LiftHold(c.Request().Context(), principal(c), pid, body.Reason)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, pr)
}

func (s *Server) destructionCertificate(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	cert, err := s.app.Certificate(c.Request().Context(), principal(c), pid)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, cert)
}

// deleteProject answers DELETE /v1/projects/{id} (administrators): the
// project's data is destroyed now, and the answer is its certificate.
func (s *Server) deleteProject(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	cert, err := s.app.DeleteProject(c.Request().Context(), principal(c), pid)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"success": true, "certificate": cert})
}
