package app

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
)

// ProjectView is a project as people see it: with its destruction date, the
// days left before it and a warning 30 and 7 days ahead.
type ProjectView struct {
	*haven.Project
	Closed          bool       `json:"closed"`
	DestructionDate *time.Time `json:"destructionDate"`
	DaysLeft        *int       `json:"daysLeft"`
	Warning         string     `json:"warning,omitempty"`
}

// Warning is what a project's lead should know about its coming end, on
// the day now: "" when nothing is near.
func Warning(pr *haven.Project, now time.Time) string {
	d := pr.DaysLeft(now)
	switch {
	case d == nil || pr.DestroyedAt != nil:
		return ""
	case pr.Hold != nil:
		return "On legal hold: the data is kept until the hold is lifted."
	case *d <= 7:
		return "The project's data will be destroyed within 7 days. Export what must be kept (aggregates, reports) now."
	case *d <= 30:
		return "The project's data will be destroyed within 30 days."
	}
	return ""
}

func (s *Service) view(pr *haven.Project) *ProjectView {
	now := s.now()
	v := &ProjectView{Project: pr, Closed: pr.Closed(now), DestructionDate: pr.DestructionDate(), Warning: Warning(pr, now)}
	if v.DestructionDate != nil && pr.DestroyedAt == nil {
		v.DaysLeft = pr.DaysLeft(now)
	}
	return v
}

// ProjectSettings is what may be set about a project; nil fields stay as
// they are.
type ProjectSettings struct {
	Name        *string `json:"name"`
	Description *string `json:"description"`
	// EndDate is 2027-03-31 or an RFC 3339 time; "" clears it.
	EndDate       *string `json:"endDate"`
	RetentionDays *int    `json:"retentionDays"`
	MinCellSize   *int    `json:"minCellSize"` // k of the small-cell rule for aggregates
	// APIAllow and DeviceAllow are address ranges (CIDR) or addresses; [] clears.
	APIAllow    *[]string `json:"apiAllow"`
	DeviceAllow *[]string `json:"deviceAllow"`
	// Archived sets the project aside, as in ODK Central.
	Archived *bool `json:"archived"`
	// ConfirmPastEndDate confirms an end date in the past, which closes
	// the project at once and brings its destruction near.
	ConfirmPastEndDate bool `json:"confirmPastEndDate"`
}

// checkPastEnd refuses an end date in the past unless confirmed, saying
// what it would do: close the project now, and when its data would go.
func (s *Service) checkPastEnd(b ProjectSettings, l storage.Lifecycle, retention int) error {
	if l.EndDate == nil || !l.EndDate.Before(s.now()) || b.ConfirmPastEndDate {
		return nil
	}
	if b.RetentionDays != nil {
		retention = *b.RetentionDays
	}
	destroy := l.EndDate.AddDate(0, 0, retention)
	when := "at the next haven reap, since that day has passed too"
	if destroy.After(s.now()) {
		when = fmt.Sprintf("on %s (the end date plus %d days of retention), at the first haven reap after that day", destroy.Format("2006-01-02"), retention)
	}
	return haven.Errorf(haven.EINVALID, "The end date %s is in the past: the project would close at once (devices could no longer send, and what they hold unsent would be refused), and its data would be destroyed for good %s. Nothing was changed. To do it anyway, send confirmPastEndDate: true (haven project set --yes).",
		l.EndDate.Format("2006-01-02"), when)
}

// lifecycle reads the settings. An API allowlist that leaves out the
// caller's own address is refused: it would lock them out.
func (b ProjectSettings) lifecycle(ctx context.Context) (storage.Lifecycle, error) {
	l := storage.Lifecycle{RetentionDays: b.RetentionDays, MinCellSize: b.MinCellSize, Archived: b.Archived}
	for _, a := range []struct {
		name string
		in   *[]string
		out  **haven.Allowlist
	}{{"apiAllow", b.APIAllow, &l.APIAllow}, {"deviceAllow", b.DeviceAllow, &l.DeviceAllow}} {
		if a.in == nil {
			continue
		}
		list, err := haven.ParseAllowlist(*a.in...)
		if err != nil {
			return l, haven.Errorf(haven.EINVALID, "%s: %s", a.name, haven.ErrorMessage(err))
		}
		*a.out = &list
	}
	if addr := clientAddress(ctx); l.APIAllow != nil && !l.APIAllow.Allows(addr) {
		return l, haven.Errorf(haven.EINVALID, "apiAllow leaves out your own address %s, so you would lose access to this project at once. Include it (a single address is enough), or set the list from an allowed address.", addr)
	}
	if b.EndDate != nil {
		v := strings.TrimSpace(*b.EndDate)
		if v == "" {
			l.ClearEndDate = true
			return l, nil
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			if t, err = time.Parse("2006-01-02", v); err != nil {
				return l, haven.Errorf(haven.EINVALID, "endDate %q is not a date: write it as 2027-03-31 or 2027-03-31T18:00:00Z.", v)
			}
		}
		l.EndDate = &t
	}
	return l, nil
}

// details lists, for the audit trail, what the settings change.
func (b ProjectSettings) details() map[string]any {
	d := map[string]any{}
	if b.EndDate != nil {
		d["endDate"] = *b.EndDate
	}
	if b.MinCellSize != nil {
		d["minCellSize"] = *b.MinCellSize
	}
	if b.RetentionDays != nil {
		d["retentionDays"] = *b.RetentionDays
	}
	if b.APIAllow != nil {
		d["apiAllow"] = *b.APIAllow
	}
	if b.DeviceAllow != nil {
		d["deviceAllow"] = *b.DeviceAllow
	}
	if b.Archived != nil {
		d["archived"] = *b.Archived
	}
	return d
}

// ListProjects lists the projects p may see, by name.
func (s *Service) ListProjects(ctx context.Context, p *haven.Principal) ([]*ProjectView, error) {
	projects, err := s.projects.List(ctx, func(id int64) bool { return p.Can(haven.ActionProjectRead, id) })
	if err != nil {
		return nil, err
	}
	out := make([]*ProjectView, len(projects))
	for i, pr := range projects {
		out[i] = s.view(pr)
	}
	return out, nil
}

// CreateProject makes a project with its own data key (administrators).
func (s *Service) CreateProject(ctx context.Context, p *haven.Principal, b ProjectSettings) (_ *ProjectView, err error) {
	e := s.event(ctx, p, "project.create", 0, "")
	e.Details = b.details()
	defer func() { s.record(ctx, e, err) }()
	if err := admin(p); err != nil {
		return nil, err
	}
	life, err := b.lifecycle(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.checkPastEnd(b, life, 0); err != nil {
		return nil, err
	}
	var name, description string
	if b.Name != nil {
		name = *b.Name
	}
	if b.Description != nil {
		description = *b.Description
	}
	pr, err := s.projects.Create(ctx, name, description, life)
	if err != nil {
		return nil, err
	}
	e.ProjectID, e.Object = pr.ID, objProject(pr.ID)
	return s.view(pr), nil
}

// Project returns a project p may see.
func (s *Service) Project(ctx context.Context, p *haven.Principal, projectID int64) (*ProjectView, error) {
	pr, err := s.project(ctx, p, haven.ActionProjectRead, projectID)
	if err != nil {
		return nil, err
	}
	return s.view(pr), nil
}

// UpdateProject changes a project's name, description, end, retention,
// small-cell size and address allowlists.
func (s *Service) UpdateProject(ctx context.Context, p *haven.Principal, projectID int64, b ProjectSettings) (_ *ProjectView, err error) {
	e := s.event(ctx, p, "project.update", projectID, objProject(projectID))
	e.Details = b.details()
	defer func() { s.record(ctx, e, err) }()
	if err := s.authorize(p, haven.ActionProjectUpdate, projectID); err != nil {
		return nil, err
	}
	life, err := b.lifecycle(ctx)
	if err != nil {
		return nil, err
	}
	current, err := s.projects.Get(ctx, projectID)
	if err != nil {
		return nil, err
	}
	if err := s.checkPastEnd(b, life, current.RetentionDays); err != nil {
		return nil, err
	}
	pr, err := s.projects.Update(ctx, projectID, b.Name, b.Description, life)
	if err != nil {
		return nil, err
	}
	return s.view(pr), nil
}

// PlaceHold places a legal hold on a project: its destruction waits until
// the hold is lifted.
func (s *Service) PlaceHold(ctx context.Context, p *haven.Principal, projectID int64, reason, reference string) (_ *ProjectView, err error) {
	e := s.event(ctx, p, "project.hold.place", projectID, objProject(projectID))
	e.Details = map[string]any{"reference": reference}
	defer func() { s.record(ctx, e, err) }()
	if err := s.authorize(p, haven.ActionProjectUpdate, projectID); err != nil {
		return nil, err
	}
	pr, err := s.projects.PlaceHold(ctx, projectID, reason, reference, p.ActorID)
	if err != nil {
		return nil, err
	}
	return s.view(pr), nil
}

// LiftHold lifts a project's legal hold.
func (s *Service) LiftHold(ctx context.Context, p *haven.Principal, projectID int64, reason string) (_ *ProjectView, err error) {
	e := s.event(ctx, p, "project.hold.lift", projectID, objProject(projectID))
	defer func() { s.record(ctx, e, err) }()
	if reason = strings.TrimSpace(reason); reason != "" {
		detail(e, "reason", reason)
	}
	if err := s.authorize(p, haven.ActionProjectUpdate, projectID); err != nil {
		return nil, err
	}
	pr, err := s.projects.LiftHold(ctx, projectID, p.ActorID)
	if err != nil {
		return nil, err
	}
	return s.view(pr), nil
}

// SignedCertificate is a destruction certificate as issued.
type SignedCertificate = storage.SignedCertificate

// Certificate returns a destroyed project's destruction certificate.
func (s *Service) Certificate(ctx context.Context, p *haven.Principal, projectID int64) (*SignedCertificate, error) {
	if err := s.authorize(p, haven.ActionProjectRead, projectID); err != nil {
		return nil, err
	}
	return s.st.Certificate(ctx, projectID)
}

// Allowlists returns a project's address allowlists (API and console,
// devices), for the HTTP layer to check every request against before it
// reaches a use case; ok is false when there is no such project.
func (s *Service) Allowlists(ctx context.Context, projectID int64) (api, device haven.Allowlist, ok bool) {
	pr, err := s.projects.Get(ctx, projectID)
	if err != nil {
		return nil, nil, false
	}
	return pr.APIAllow, pr.DeviceAllow, true
}

// DeleteProject destroys a project's collected data now (site
// administrators): what the reaper does at the end of retention, with the
// same signed certificate. ODK Central's deletion only hides a project;
// Haven's removes the data for good, so it is refused while a legal hold
// stands. The project's name, dates, forms and certificate stay, marked
// destroyed.
func (s *Service) DeleteProject(ctx context.Context, p *haven.Principal, projectID int64) (_ *SignedCertificate, err error) {
	e := s.event(ctx, p, "project.delete", projectID, objProject(projectID))
	defer func() { s.record(ctx, e, err) }()
	if err := admin(p); err != nil {
		return nil, err
	}
	return s.st.Destroy(ctx, projectID, p.Name)
}
