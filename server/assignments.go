package server

import (
	"net/http"

	"github.com/haven-org/haven"
	"github.com/labstack/echo/v4"
)

// Roles and clearances of a project's users.

func (s *Server) assignmentRoutes(p *echo.Group) {
	p.GET("/assignments", s.listAssignments)
	p.POST("/assignments/:role/:actorId", s.assign)
	p.DELETE("/assignments/:role/:actorId", s.unassign)
	p.GET("/clearances", s.listClearances)
	p.PUT("/clearances/:actorId", s.setClearance)
}

func (s *Server) listAssignments(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	as, err := s.app.ListAssignments(c.Request().Context(), principal(c), pid)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, as)
}

func (s *Server) assign(c echo.Context) error   { return s.assignment(c, true) }
func (s *Server) unassign(c echo.Context) error { return s.assignment(c, false) }

func (s *Server) assignment(c echo.Context, give bool) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	actor, err := pathInt(c, "actorId")
	if err != nil {
		return err
	}
	if give {
		err = s.app.Assign(c.Request().Context(), principal(c), pid, actor, param(c, "role"))
	} else {
		err = s.app.Unassign(c.Request().Context(), principal(c), pid, actor, param(c, "role"))
	}
	if err != nil {
		return err
	}
	return success(c)
}

func (s *Server) listClearances(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	cs, err := s.app.ListClearances(c.Request().Context(), principal(c), pid)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, cs)
}

// setClearance answers PUT .../clearances/{actorId} {"clearance": "level_2"}.
func (s *Server) setClearance(c echo.Context) error {
	pid, err := projectID(c)
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
	if err := s.app.SetClearance(c.Request().Context(), principal(c), pid, actor, body.Clearance); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"actorId": actor, "clearance": body.Clearance})
}
