package app

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
)

// CurrentUser is the signed-in user.
func (s *Service) CurrentUser(ctx context.Context, p *haven.Principal) (*haven.User, error) {
	if p == nil || p.Type != haven.ActorUser {
		return nil, haven.Errorf(haven.EFORBIDDEN, "Only web users have an account to show; app users (devices) do not.")
	}
	return s.users.Get(ctx, p.ActorID)
}

// ListUsers lists every live user (administrators).
func (s *Service) ListUsers(ctx context.Context, p *haven.Principal) ([]*haven.User, error) {
	if err := admin(p); err != nil {
		return nil, err
	}
	return s.users.List(ctx)
}

// User returns a user: to administrators, or to the user themselves.
func (s *Service) User(ctx context.Context, p *haven.Principal, id int64) (*haven.User, error) {
	if p == nil || (!p.Admin && p.ActorID != id) {
		return nil, haven.Errorf(haven.EFORBIDDEN, "You may see only your own account. Ask an administrator.")
	}
	return s.users.Get(ctx, id)
}

// NewUser is a user to create. Without a password one is generated.
type NewUser struct {
	Email, Password, DisplayName string
	Admin                        bool
}

// CreateUser adds a user (administrators). It returns the password when it
// generated one: shown once, as only its hash is kept.
func (s *Service) CreateUser(ctx context.Context, p *haven.Principal, nu NewUser) (_ *haven.User, generated string, err error) {
	e := s.event(ctx, p, "user.create", 0, "")
	defer func() { s.record(ctx, e, err) }()
	if err := admin(p); err != nil {
		return nil, "", err
	}
	if nu.Password == "" {
		nu.Password = storage.GeneratePassword()
		generated = nu.Password
	}
	u, err := s.users.Create(ctx, nu.Email, nu.Password, nu.DisplayName, nu.Admin)
	if err != nil {
		return nil, "", err
	}
	e.Object = objActor(u.ID)
	return u, generated, nil
}

// DisableUser turns a user off (administrators): their sessions end at once
// and their credentials stop working.
func (s *Service) DisableUser(ctx context.Context, p *haven.Principal, id int64) (err error) {
	e := s.event(ctx, p, "user.disable", 0, objActor(id))
	defer func() { s.record(ctx, e, err) }()
	if err := admin(p); err != nil {
		return err
	}
	if p.ActorID == id {
		return haven.Errorf(haven.ECONFLICT, "You cannot disable your own account; ask another administrator.")
	}
	return s.users.Disable(ctx, id)
}

// AppUserView is an app user as its creation answers it: with its token,
// the server URL to type into ODK Collect, and the QR code's payload.
type AppUserView struct {
	*haven.AppUser
	ServerURL       string `json:"serverUrl"`
	CollectSettings string `json:"collectSettings"`
}

// ListAppUsers lists a project's app users, revoked ones included.
func (s *Service) ListAppUsers(ctx context.Context, p *haven.Principal, projectID int64) ([]*haven.AppUser, error) {
	if err := s.authorize(p, haven.ActionAppUserManage, projectID); err != nil {
		return nil, err
	}
	return s.users.AppUsers(ctx, projectID)
}

// CreateAppUser makes a device credential in a project. base is the
// address devices reach Haven at; the token is shown only now.
func (s *Service) CreateAppUser(ctx context.Context, p *haven.Principal, projectID int64, displayName, base string) (_ *AppUserView, err error) {
	e := s.event(ctx, p, "appuser.create", projectID, objProject(projectID))
	defer func() { s.record(ctx, e, err) }()
	pr, err := s.project(ctx, p, haven.ActionAppUserManage, projectID)
	if err != nil {
		return nil, err
	}
	au, err := s.users.CreateAppUser(ctx, projectID, displayName)
	if err != nil {
		return nil, err
	}
	e.Object = objProject(projectID) + "/" + objActor(au.ID)
	url := fmt.Sprintf("%s/v1/key/%s/projects/%d", strings.TrimRight(base, "/"), *au.Token, projectID)
	qr, err := CollectSettings(url, pr.Name)
	if err != nil {
		return nil, err
	}
	return &AppUserView{AppUser: au, ServerURL: url, CollectSettings: qr}, nil
}

// RevokeAppUser revokes a device token at once.
func (s *Service) RevokeAppUser(ctx context.Context, p *haven.Principal, projectID, actorID int64) (err error) {
	e := s.event(ctx, p, "appuser.revoke", projectID, objProject(projectID)+"/"+objActor(actorID))
	defer func() { s.record(ctx, e, err) }()
	if err := s.authorize(p, haven.ActionAppUserManage, projectID); err != nil {
		return err
	}
	return s.users.RevokeAppUser(ctx, projectID, actorID)
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

// Assignment is a role held by an actor in a project.
type Assignment = storage.Assignment

// Clearance is a user's clearance in a project.
type Clearance = storage.Clearance

// ListAssignments lists the roles held in a project.
func (s *Service) ListAssignments(ctx context.Context, p *haven.Principal, projectID int64) ([]Assignment, error) {
	if err := s.authorize(p, haven.ActionAssignmentManage, projectID); err != nil {
		return nil, err
	}
	return s.users.Assignments(ctx, projectID)
}

// Assign gives a user a role in a project.
func (s *Service) Assign(ctx context.Context, p *haven.Principal, projectID, actorID int64, role string) (err error) {
	role = roleName(role)
	e := s.event(ctx, p, "assignment.create", projectID, objProject(projectID)+"/"+objActor(actorID))
	e.Details = map[string]any{"role": role}
	defer func() { s.record(ctx, e, err) }()
	if err := s.authorize(p, haven.ActionAssignmentManage, projectID); err != nil {
		return err
	}
	if _, err := s.projects.Get(ctx, projectID); err != nil {
		return err
	}
	return s.users.Assign(ctx, projectID, actorID, role)
}

// Unassign takes a role in a project away from a user.
func (s *Service) Unassign(ctx context.Context, p *haven.Principal, projectID, actorID int64, role string) (err error) {
	role = roleName(role)
	e := s.event(ctx, p, "assignment.delete", projectID, objProject(projectID)+"/"+objActor(actorID))
	e.Details = map[string]any{"role": role}
	defer func() { s.record(ctx, e, err) }()
	if err := s.authorize(p, haven.ActionAssignmentManage, projectID); err != nil {
		return err
	}
	return s.users.Unassign(ctx, projectID, actorID, role)
}

// ListClearances lists the clearances granted in a project.
func (s *Service) ListClearances(ctx context.Context, p *haven.Principal, projectID int64) ([]Clearance, error) {
	if err := s.authorize(p, haven.ActionAssignmentManage, projectID); err != nil {
		return nil, err
	}
	return s.users.Clearances(ctx, projectID)
}

// SetClearance sets a user's clearance in a project. No one grants a
// clearance above their own, and no one changes the clearance of a user
// cleared above them: a lower-cleared manager can neither raise nor lower
// a higher-cleared colleague.
func (s *Service) SetClearance(ctx context.Context, p *haven.Principal, projectID, actorID int64, clearance haven.Sensitivity) (err error) {
	e := s.event(ctx, p, "clearance.set", projectID, objProject(projectID)+"/"+objActor(actorID))
	e.Details = map[string]any{"clearance": clearance}
	defer func() { s.record(ctx, e, err) }()
	if err := s.authorize(p, haven.ActionAssignmentManage, projectID); err != nil {
		return err
	}
	own := p.Clearance(projectID)
	if !own.Covers(clearance) {
		return haven.Errorf(haven.EFORBIDDEN, "You cannot grant %s: it is above your own clearance in this project (%s).", clearance, own)
	}
	target, err := s.users.Principal(ctx, actorID)
	if haven.ErrorCode(err) == haven.ENOTFOUND {
		// An app user: its clearance is what its devices may hold of
		// entity lists.
		target, err = s.users.AppUserPrincipalByID(ctx, actorID)
		if err == nil && len(target.Roles[projectID]) == 0 {
			err = haven.Errorf(haven.ENOTFOUND, "App user %d is not of project %d.", actorID, projectID)
		}
	}
	if err != nil {
		return err
	}
	if current := target.Clearance(projectID); !own.Covers(current) {
		return haven.Errorf(haven.EFORBIDDEN, "User %d is cleared for %s, above your own clearance (%s): only someone cleared at least as high may change it.", actorID, current, own)
	}
	return s.users.SetClearance(ctx, projectID, actorID, clearance, p.ActorID)
}

// UserChange is what PATCH /v1/users/{id} may change; nil leaves a value.
type UserChange struct {
	DisplayName *string
	Email       *string
}

// UpdateUser changes a user's display name or email: administrators may
// change anyone's, users their own.
func (s *Service) UpdateUser(ctx context.Context, p *haven.Principal, id int64, c UserChange) (_ *haven.User, err error) {
	e := s.event(ctx, p, "user.update", 0, objActor(id))
	defer func() { s.record(ctx, e, err) }()
	if p == nil || (!p.Admin && p.ActorID != id) {
		return nil, haven.Errorf(haven.EFORBIDDEN, "You may change only your own account. Ask an administrator.")
	}
	if c.Email != nil {
		detail(e, "email", "changed")
	}
	return s.users.UpdateUser(ctx, id, c.DisplayName, c.Email)
}

// ChangePassword sets a user's password once the current one is proved:
// only the user themselves may. Every other session of theirs ends.
func (s *Service) ChangePassword(ctx context.Context, p *haven.Principal, id int64, old, password, sessionID string) (err error) {
	e := s.event(ctx, p, "user.password.change", 0, objActor(id))
	defer func() { s.record(ctx, e, err) }()
	if p == nil || p.Type != haven.ActorUser || p.ActorID != id {
		return haven.Errorf(haven.EFORBIDDEN, "Only the user themselves may change their password.")
	}
	return s.users.SetPassword(ctx, id, old, password, sessionID)
}

// Roles lists every role, as Central's /v1/roles does: open to anyone signed in.
func (s *Service) Roles() []haven.RoleInfo { return haven.RoleList() }

// Role finds one role by number or system name.
func (s *Service) Role(ref string) (*haven.RoleInfo, error) {
	r, _, ok := haven.LookupRole(ref)
	if !ok {
		return nil, haven.Errorf(haven.ENOTFOUND, "There is no role %q: see /v1/roles for the roles there are.", ref)
	}
	return &r, nil
}

// SiteAssignment is a role held server-wide: in Haven, only administrator.
type SiteAssignment struct {
	ActorID int64 `json:"actorId"`
	RoleID  int64 `json:"roleId"`
}

// SiteAssignments lists the server-wide roles (administrators), optionally
// only those of one role.
func (s *Service) SiteAssignments(ctx context.Context, p *haven.Principal, roleRef string) ([]SiteAssignment, error) {
	if err := admin(p); err != nil {
		return nil, err
	}
	out := []SiteAssignment{}
	if roleRef != "" {
		_, name, ok := haven.LookupRole(roleRef)
		if !ok {
			return nil, haven.Errorf(haven.ENOTFOUND, "There is no role %q: see /v1/roles for the roles there are.", roleRef)
		}
		if name != haven.RoleAdmin {
			return out, nil
		}
	}
	users, err := s.users.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, u := range users {
		if u.Admin {
			out = append(out, SiteAssignment{ActorID: u.ID, RoleID: haven.RoleID(haven.RoleAdmin)})
		}
	}
	return out, nil
}

// SetSiteRole gives a user, or takes away, a server-wide role: only
// administrator is one; project roles are given within a project.
func (s *Service) SetSiteRole(ctx context.Context, p *haven.Principal, roleRef string, actorID int64, give bool) (err error) {
	action := "admin.grant"
	if !give {
		action = "admin.revoke"
	}
	e := s.event(ctx, p, action, 0, objActor(actorID))
	defer func() { s.record(ctx, e, err) }()
	if err := admin(p); err != nil {
		return err
	}
	_, name, ok := haven.LookupRole(roleRef)
	if !ok {
		return haven.Errorf(haven.ENOTFOUND, "There is no role %q: see /v1/roles for the roles there are.", roleRef)
	}
	if name != haven.RoleAdmin {
		return haven.Errorf(haven.EINVALID, "Only the administrator role is held server-wide; give %s within a project at /v1/projects/{id}/assignments.", name)
	}
	if !give && p.ActorID == actorID {
		return haven.Errorf(haven.ECONFLICT, "You cannot take away your own administrator role; ask another administrator.")
	}
	return s.users.SetAdmin(ctx, actorID, give)
}

// roleName turns a role as Central clients name it (its number or system
// name) into Haven's name; unknown names stay as given, to be refused.
func roleName(ref string) string {
	if _, name, ok := haven.LookupRole(ref); ok {
		return name
	}
	return ref
}

// AppUser returns one app user of a project.
func (s *Service) AppUser(ctx context.Context, p *haven.Principal, projectID, actorID int64) (*haven.AppUser, error) {
	all, err := s.ListAppUsers(ctx, p, projectID)
	if err != nil {
		return nil, err
	}
	for _, au := range all {
		if au.ID == actorID {
			return au, nil
		}
	}
	return nil, haven.Errorf(haven.ENOTFOUND, "Project %d has no app user %d.", projectID, actorID)
}
