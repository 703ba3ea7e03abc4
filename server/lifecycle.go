package server

import (
	"net/http"
	"strings"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
	"github.com/labstack/echo/v4"
)

// projectAnswer is a project as the API shows it, with its destruction
// date, the days left before it and a warning 30 and 7 days ahead.
type projectAnswer struct {
	*haven.Project
	Closed          bool       `json:"closed"`
	DestructionDate *time.Time `json:"destructionDate"`
	DaysLeft        *int       `json:"daysLeft"`
	Warning         string     `json:"warning,omitempty"`
}

func (s *Server) answerProject(pr *haven.Project) projectAnswer {
	now := s.now()
	a := projectAnswer{Project: pr, Closed: pr.Closed(now), DestructionDate: pr.DestructionDate()}
	if a.DestructionDate != nil && pr.DestroyedAt == nil {
		a.DaysLeft = pr.DaysLeft(now)
		days := *a.DaysLeft
		switch {
		case pr.Hold != nil:
			a.Warning = "On legal hold: the data is kept until the hold is lifted."
		case days <= 7:
			a.Warning = "The project's data will be destroyed within 7 days. Export what must be kept (aggregates, reports) now."
		case days <= 30:
			a.Warning = "The project's data will be destroyed within 30 days."
		}
	}
	return a
}

// lifecycleBody is the part of a project's JSON that sets its end.
type lifecycleBody struct {
	EndDate       *string `json:"endDate"` // 2027-03-31, or a full RFC 3339 time; "" clears it
	RetentionDays *int    `json:"retentionDays"`
	MinCellSize   *int    `json:"minCellSize"` // k of the small-cell rule for aggregates
	// Address allowlists (CIDR ranges or addresses; [] clears).
	APIAllow    *[]string `json:"apiAllow"`
	DeviceAllow *[]string `json:"deviceAllow"`
}

// lifecycle reads the body's settings. An API allowlist that leaves out
// the caller's own address (addr) is refused: it would lock them out.
func (b lifecycleBody) lifecycle(addr string) (storage.Lifecycle, error) {
	l := storage.Lifecycle{RetentionDays: b.RetentionDays, MinCellSize: b.MinCellSize}
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
	if l.APIAllow != nil && !l.APIAllow.Allows(addr) {
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

func (b lifecycleBody) audit(c echo.Context) {
	if e := haven.AuditFrom(c.Request().Context()); e != nil {
		e.Details = map[string]any{}
		if b.EndDate != nil {
			e.Details["endDate"] = *b.EndDate
		}
		if b.MinCellSize != nil {
			e.Details["minCellSize"] = *b.MinCellSize
		}
		if b.RetentionDays != nil {
			e.Details["retentionDays"] = *b.RetentionDays
		}
		if b.APIAllow != nil {
			e.Details["apiAllow"] = *b.APIAllow
		}
		if b.DeviceAllow != nil {
			e.Details["deviceAllow"] = *b.DeviceAllow
		}
	}
}

func (s *Server) placeHold(c echo.Context) error {
	pr, err := s.project(c, haven.ActionProjectUpdate)
	if err != nil {
		return err
	}
	var body struct{ Reason, Reference string }
	if err := bind(c, &body); err != nil {
		return err
	}
	if e := haven.AuditFrom(c.Request().Context()); e != nil {
		e.Details = map[string]any{"reference": body.Reference}
	}
	pr, err = s.projects.PlaceHold(c.Request().Context(), pr.ID, body.Reason, body.Reference, principal(c).ActorID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.answerProject(pr))
}

func (s *Server) liftHold(c echo.Context) error {
	pr, err := s.project(c, haven.ActionProjectUpdate)
	if err != nil {
		return err
	}
	pr, err = s.projects.LiftHold(c.Request().Context(), pr.ID, principal(c).ActorID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.answerProject(pr))
}

func (s *Server) destructionCertificate(c echo.Context) error {
	pr, err := s.project(c, haven.ActionProjectRead)
	if err != nil {
		return err
	}
	if s.store == nil {
		return haven.Errorf(haven.ENOTFOUND, "This server keeps no certificates.")
	}
	cert, err := s.store.Certificate(c.Request().Context(), pr.ID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, cert)
}
