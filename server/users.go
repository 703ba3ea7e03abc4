package server

import (
	"net/http"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/labstack/echo/v4"
)

// Users: web users who log in with an email and a password.

func (s *Server) currentUser(c echo.Context) error {
	u, err := s.app.CurrentUser(c.Request().Context(), principal(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, u)
}

func (s *Server) listUsers(c echo.Context) error {
	users, err := s.app.ListUsers(c.Request().Context(), principal(c))
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
	u, err := s.app.User(c.Request().Context(), principal(c), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, u)
}

// createUser answers POST /v1/users (administrators). A password the server
// generated is shown once: only its hash is kept.
func (s *Server) createUser(c echo.Context) error {
	var body struct {
		Email, Password, DisplayName string
		Admin                        bool
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	u, generated, err := s.app.CreateUser(c.Request().Context(), principal(c), app.NewUser(body))
	if err != nil {
		return err
	}
	if generated != "" {
		return c.JSON(http.StatusOK, struct {
			*haven.User
			Password string `json:"password"`
		}{u, generated})
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
	if err := s.app.DisableUser(c.Request().Context(), principal(c), id); err != nil {
		return err
	}
	return success(c)
}
