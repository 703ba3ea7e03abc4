package server

import (
	"encoding/csv"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/sync"
	"github.com/labstack/echo/v4"
)

// exportSubmissions streams a raw export: GET .../forms/{id}/export?format=
// csv|xlsx|geojson&since=&until=&version=&splitSelectMultiples=true&
// attachments=true&geoField=. Fields above the reader's clearance are left
// out (listed in the export and in X-Haven-Omitted-Fields); the audit event
// records the parameters and what was left out.
func (s *Server) exportSubmissions(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	q := c.QueryParams()
	opts := sync.ExportOptions{Format: q.Get("format"), Version: q.Get("version"), GeoField: q.Get("geoField"),
		SplitSelectMultiples: q.Get("splitSelectMultiples") == "true", Attachments: q.Get("attachments") == "true",
		Labels: q.Get("labels") == "true", Language: q.Get("language")}
	for _, d := range []struct {
		name string
		to   **time.Time
	}{{"since", &opts.Since}, {"until", &opts.Until}} {
		if v := q.Get(d.name); v != "" {
			t, err := parseWhen(v)
			if err != nil {
				return haven.Errorf(haven.EINVALID, "%s must be a date (2026-11-23) or a time (2026-11-23T08:00:00Z), not %q.", d.name, v)
			}
			*d.to = &t
		}
	}
	ctx := c.Request().Context()
	exp, err := s.sync.Export(ctx, principal(c), pid, c.Param("formId"), opts)
	if err != nil {
		return err
	}
	if e := haven.AuditFrom(ctx); e != nil {
		params := map[string]any{}
		for k := range q {
			params[k] = q.Get(k)
		}
		e.Details = map[string]any{"parameters": params, "omitted": exp.Omitted}
	}
	h := c.Response().Header()
	h.Set("Content-Type", exp.ContentType)
	h.Set("Content-Disposition", `attachment; filename="`+exp.FileName+`"`)
	h.Set("X-Haven-Omitted-Fields", strconv.Itoa(len(exp.Omitted)))
	h.Set("Cache-Control", "no-store")
	c.Response().WriteHeader(http.StatusOK)
	if err := exp.Write(ctx, c.Response()); err != nil {
		// The status is sent: cut the connection so the client gets a
		// broken download, never a complete-looking partial file.
		s.log.Error("export failed mid-stream", "form", c.Param("formId"), "err", err)
		panic(http.ErrAbortHandler)
	}
	return nil
}

// parseWhen reads a date or an RFC 3339 time.
func parseWhen(v string) (time.Time, error) {
	if t, err := time.Parse("2006-01-02", v); err == nil {
		return t, nil
	}
	return time.Parse(time.RFC3339, v)
}

// aggregate answers GET .../forms/{id}/aggregate?by=a,b&measure=count|sum:x|
// mean:x&format=json|csv|xlsx with small-cell suppression. Every query is
// audited with its parameters.
func (s *Server) aggregate(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	q := c.QueryParams()
	var by []string
	for _, b := range strings.Split(q.Get("by"), ",") {
		if b = strings.TrimSpace(b); b != "" {
			by = append(by, b)
		}
	}
	ctx := c.Request().Context()
	if e := haven.AuditFrom(ctx); e != nil {
		e.Details = map[string]any{"by": by, "measure": q.Get("measure"), "format": q.Get("format")}
	}
	agg, err := s.sync.Aggregate(ctx, principal(c), pid, c.Param("formId"), sync.AggregateOptions{By: by, Measure: q.Get("measure")})
	if err != nil {
		return err
	}
	rows := [][]string{append(append([]string{}, agg.Dimensions...), "count", agg.Measure)}
	for _, cell := range agg.Cells {
		row := make([]string, 0, len(cell.Keys)+2)
		for _, k := range cell.Keys {
			if k == "" {
				k = "(all)"
			}
			row = append(row, k)
		}
		v := ""
		if cell.Value != nil {
			v = *cell.Value
		}
		rows = append(rows, append(row, cell.Count, v))
	}
	if agg.Measure == "count" {
		for i := range rows {
			rows[i] = rows[i][:len(rows[i])-1]
		}
	}
	name := c.Param("formId") + "-aggregate"
	switch q.Get("format") {
	case "", "json":
		return c.JSON(http.StatusOK, agg)
	case "csv":
		c.Response().Header().Set("Content-Disposition", `attachment; filename="`+name+`.csv"`)
		c.Response().Header().Set("Content-Type", "text/csv; charset=utf-8")
		c.Response().WriteHeader(http.StatusOK)
		w := csv.NewWriter(c.Response())
		w.WriteAll(rows)
		return w.Error()
	case "xlsx":
		c.Response().Header().Set("Content-Disposition", `attachment; filename="`+name+`.xlsx"`)
		c.Response().Header().Set("Content-Type", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
		c.Response().WriteHeader(http.StatusOK)
		return sync.WriteTable(c.Response(), "aggregate", rows)
	}
	return haven.Errorf(haven.EINVALID, "format is json, csv or xlsx, not %q.", q.Get("format"))
}
