package server

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// App users: device credentials, as ODK Central names them.

func (s *Server) appUserRoutes(p *echo.Group) {
	p.GET("/app-users", s.listAppUsers)
	p.POST("/app-users", s.createAppUser)
	p.GET("/app-users/:id", s.getAppUser)
	p.DELETE("/app-users/:id", s.revokeAppUser)
}

func (s *Server) getAppUser(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	id, err := pathInt(c, "id")
	if err != nil {
		return err
	}
	au, err := s.app.AppUser(c.Request().Context(), principal(c), pid, id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, au)
}

func (s *Server) listAppUsers(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	aus, err := s.app.ListAppUsers(c.Request().Context(), principal(c), pid)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, aus)
}

// createAppUser answers with the app user's token (shown only now), the
// server URL to type into Collect and the payload of its QR code.
func (s *Server) createAppUser(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	var body struct{ DisplayName string }
	if err := bind(c, &body); err != nil {
		return err
	}
	au, err := s.app.CreateAppUser(c.Request().Context(), principal(c), pid, body.DisplayName, s.baseURL(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, au)
}

func (s *Server) revokeAppUser(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	id, err := pathInt(c, "id")
	if err != nil {
		return err
	}
	if err := s.app.RevokeAppUser(c.Request().Context(), principal(c), pid, id); err != nil {
		return err
	}
	return success(c)
}
