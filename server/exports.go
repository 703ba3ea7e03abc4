package server

import (
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/labstack/echo/v4"
)

// exportSubmissions streams a raw export: GET .../forms/{id}/export?format=
// csv|xlsx|geojson&since=&until=&version=&splitSelectMultiples=true&
// attachments=true&labels=true&headerLabels=true&language=&geoField=&
// geoCombined=true&escapeFormulas=false.
// Fields above the reader's clearance are left out (listed in the export
// and in X-Haven-Omitted-Fields).
func (s *Server) exportSubmissions(c echo.Context) error {
	opts, err := exportOptions(c)
	if err != nil {
		return err
	}
	return s.export(c, opts)
}

// exportOptions reads an export's options from the query.
func exportOptions(c echo.Context) (app.ExportOptions, error) {
	var err error
	q := c.QueryParams()
	opts := app.ExportOptions{Format: q.Get("format"), GeoField: q.Get("geoField"),
		SplitSelectMultiples: isTrue(q.Get("splitSelectMultiples")), Attachments: isTrue(q.Get("attachments")),
		Labels: isTrue(q.Get("labels")), Language: q.Get("language"), RawCSV: strings.EqualFold(q.Get("escapeFormulas"), "false"),
		Version: q.Get("version"), GeoCombined: isTrue(q.Get("geoCombined")), HeaderLabels: isTrue(q.Get("headerLabels"))}
	if v := q.Get("since"); v != "" {
		if opts.Since, err = app.ParseWhen("since", v); err != nil {
			return opts, err
		}
	}
	if v := q.Get("until"); v != "" {
		if opts.Until, err = app.ParseWhen("until", v); err != nil {
			return opts, err
		}
	}
	return opts, nil
}

// startExportJob answers POST .../forms/{id}/export-jobs?format=...: the
// export runs in the background (202, with the job to watch).
func (s *Server) startExportJob(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	opts, err := exportOptions(c)
	if err != nil {
		return err
	}
	j, err := s.app.StartExport(c.Request().Context(), principal(c), pid, param(c, "formId"), opts)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, j)
}

// exportJob answers GET .../export-jobs/{id}: how the export is going.
func (s *Server) exportJob(c echo.Context) error {
	j, err := s.app.ExportJobStatus(c.Request().Context(), principal(c), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, j)
}

// exportJobFile answers GET .../export-jobs/{id}/file: the finished file,
// once; it is erased when the download ends.
func (s *Server) exportJobFile(c echo.Context) error {
	rc, j, err := s.app.DownloadExport(c.Request().Context(), principal(c), c.Param("id"))
	if err != nil {
		return err
	}
	defer rc.Close()
	h := c.Response().Header()
	h.Set("Content-Type", j.ContentType)
	h.Set("Content-Disposition", attachment(j.FileName))
	h.Set("Content-Length", strconv.FormatInt(j.Bytes, 10))
	h.Set("X-Haven-Omitted-Fields", strconv.Itoa(len(j.Omitted)))
	c.Response().WriteHeader(http.StatusOK)
	_, err = io.Copy(c.Response(), rc)
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	return nil
}

// export prepares an export and streams it.
func (s *Server) export(c echo.Context, opts app.ExportOptions) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	exp, err := s.app.Export(ctx, principal(c), pid, param(c, "formId"), opts)
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set("Content-Type", exp.ContentType)
	h.Set("Content-Disposition", attachment(exp.FileName))
	h.Set("X-Haven-Omitted-Fields", strconv.Itoa(len(exp.Omitted)))
	c.Response().WriteHeader(http.StatusOK)
	if err := exp.Write(ctx, c.Response()); err != nil {
		// The status is sent: cut the connection so the client gets a
		// broken download, never a complete-looking partial file.
		if ctx.Err() == nil {
			s.log.Error("export failed mid-stream", "path", logPath(c), "err", err)
		}
		panic(http.ErrAbortHandler)
	}
	return nil
}

// aggregate answers GET .../forms/{id}/aggregate?by=a,b&measure=count|sum:x|
// mean:x&format=json|csv|xlsx with small-cell suppression.
func (s *Server) aggregate(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	q := c.QueryParams()
	format := q.Get("format")
	if format != "" && format != "json" && format != "csv" && format != "xlsx" {
		return haven.Errorf(haven.EINVALID, "format is json, csv or xlsx, not %q.", format)
	}
	var by []string
	for _, b := range strings.Split(q.Get("by"), ",") {
		if b = strings.TrimSpace(b); b != "" {
			by = append(by, b)
		}
	}
	agg, err := s.app.Aggregate(c.Request().Context(), principal(c), pid, param(c, "formId"), app.AggregateOptions{By: by, Measure: q.Get("measure"),
		Labels: isTrue(q.Get("labels")), Language: q.Get("language")})
	if err != nil {
		return err
	}
	name := app.FileStem(param(c, "formId")) + "-aggregate"
	switch format {
	case "csv":
		c.Response().Header().Set("Content-Disposition", attachment(name+".csv"))
		c.Response().Header().Set("Content-Type", "text/csv; charset=utf-8")
		c.Response().WriteHeader(http.StatusOK)
		return agg.WriteCSV(c.Response())
	case "xlsx":
		c.Response().Header().Set("Content-Disposition", attachment(name+".xlsx"))
		c.Response().Header().Set("Content-Type", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
		c.Response().WriteHeader(http.StatusOK)
		return agg.WriteXLSX(c.Response())
	}
	return c.JSON(http.StatusOK, agg)
}
