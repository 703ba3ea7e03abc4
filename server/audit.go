package server

import (
	"net/http"
	"strconv"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/labstack/echo/v4"
)

// listAudit answers GET /v1/audit?actor=&action=&projectId=&since=&until=&limit=&offset=
// (and /v1/audits, Central's address, with its start and end):
// the whole trail for site administrators, a project's events for its lead.
func (s *Server) listAudit(c echo.Context) error {
	var f app.AuditFilter
	q := c.QueryParams()
	var err error
	for _, kv := range []struct {
		name string
		dst  *int64
	}{{"actor", &f.ActorID}, {"projectId", &f.ProjectID}} {
		if v := q.Get(kv.name); v != "" {
			if *kv.dst, err = strconv.ParseInt(v, 10, 64); err != nil {
				return haven.Errorf(haven.EINVALID, "%s must be a number (an actor or project id).", kv.name)
			}
		}
	}
	f.Action = q.Get("action")
	for _, kv := range []struct {
		name string
		dst  *time.Time
		end  bool
	}{{"since", &f.Since, false}, {"until", &f.Until, false}, {"start", &f.Since, false}, {"end", &f.Until, true}} {
		// start and end are Central's names; a date alone is its whole day.
		if v := q.Get(kv.name); v != "" {
			if *kv.dst, err = time.Parse(time.RFC3339, v); err == nil {
				continue
			}
			d, derr := time.Parse("2006-01-02", v)
			if derr != nil {
				return haven.Errorf(haven.EINVALID, "%s must be a date (2026-11-23) or a time such as 2026-11-23T00:00:00Z.", kv.name)
			}
			if kv.end {
				d = d.AddDate(0, 0, 1)
			}
			*kv.dst = d
		}
	}
	for _, kv := range []struct {
		name string
		dst  *int
	}{{"limit", &f.Limit}, {"offset", &f.Offset}} {
		if v := q.Get(kv.name); v != "" {
			if *kv.dst, err = strconv.Atoi(v); err != nil || *kv.dst < 0 {
				return haven.Errorf(haven.EINVALID, "%s must be a number of 0 or more.", kv.name)
			}
		}
	}
	events, err := s.app.ListAudit(c.Request().Context(), principal(c), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, events)
}

// verifyAudit answers GET /v1/audit/verify: whether the chain holds, and
// the first broken link when it does not.
func (s *Server) verifyAudit(c echo.Context) error {
	v, err := s.app.VerifyAudit(c.Request().Context(), principal(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

// systemStats answers GET /v1/system/stats (administrators): goroutines,
// heap, database and WAL sizes, and what bounding the WAL has cost.
func (s *Server) systemStats(c echo.Context) error {
	st, err := s.app.SystemStats(c.Request().Context(), principal(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}
