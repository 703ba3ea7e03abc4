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

// updateUser answers PATCH /v1/users/{id} {"displayName", "email"}.
func (s *Server) updateUser(c echo.Context) error {
	id, err := pathInt(c, "id")
	if err != nil {
		return err
	}
	var body struct {
		DisplayName *string `json:"displayName"`
		Email       *string `json:"email"`
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	u, err := s.app.UpdateUser(c.Request().Context(), principal(c), id, app.UserChange{DisplayName: body.DisplayName, Email: body.Email})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, u)
}

// changePassword answers PUT /v1/users/{id}/password {"old", "new"}, as
// Central: the user's other sessions end.
func (s *Server) changePassword(c echo.Context) error {
	id, err := pathInt(c, "id")
	if err != nil {
		return err
	}
	var body struct{ Old, New string }
	if err := bind(c, &body); err != nil {
		return err
	}
	sid, _ := c.Get(keySession).(string)
	if err := s.app.ChangePassword(c.Request().Context(), principal(c), id, body.Old, body.New, sid); err != nil {
		return err
	}
	return success(c)
}

// Roles, as Central lists them: open to anyone.
func (s *Server) listRoles(c echo.Context) error { return c.JSON(http.StatusOK, s.app.Roles()) }

func (s *Server) getRole(c echo.Context) error {
	r, err := s.app.Role(param(c, "id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, r)
}

// siteAssignments answers /v1/assignments[/{role}]: server-wide roles
// (administrators).
func (s *Server) siteAssignments(c echo.Context) error {
	as, err := s.app.SiteAssignments(c.Request().Context(), principal(c), param(c, "role"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, as)
}

func (s *Server) grantSiteRole(c echo.Context) error  { return s.siteRole(c, true) }
func (s *Server) revokeSiteRole(c echo.Context) error { return s.siteRole(c, false) }

func (s *Server) siteRole(c echo.Context, give bool) error {
	actor, err := pathInt(c, "actorId")
	if err != nil {
		return err
	}
	if err := s.app.SetSiteRole(c.Request().Context(), principal(c), param(c, "role"), actor, give); err != nil {
		return err
	}
	return success(c)
}
