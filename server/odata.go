package server

import (
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/labstack/echo/v4"
)

// OData, at Central's addresses: .../forms/{id}.svc (the service document),
// .../forms/{id}.svc/$metadata, .../forms/{id}.svc/Submissions and the
// repeats' tables, and the same under .../forms/{id}/draft.svc.

func (s *Server) odataRoutes(p *echo.Group) {
	p.GET("/forms/:formId/*", s.odata)
}

// odataParams are the query options Haven reads; Central refuses any
// other, as the OData specification asks (11.2.1).
var odataParams = map[string]bool{"$format": true, "$count": true, "$skip": true, "$top": true, "$filter": true, "$wkt": true,
	"$expand": true, "$select": true, "$skiptoken": true, "$orderby": true, "$search": true}

// odataChecks refuses what a request asks that the service does not do.
func odataChecks(c echo.Context, format string) error {
	r := c.Request()
	// $format decides (11.2.10); Accept headers are taken as they come,
	// since clients such as Excel list every format they know.
	if f := r.URL.Query().Get("$format"); f != "" {
		isJSON := strings.Contains(f, "json")
		if isJSON != (format == "json") {
			return &haven.Error{Code: haven.EINVALID, Message: "This resource is served as " + format + " only: ask for that $format, or leave $format out."}
		}
	}
	if v := r.Header.Get("OData-MaxVersion"); v != "" {
		if n, err := strconv.ParseFloat(v, 64); err == nil && n < 4 {
			return haven.Errorf(haven.ENOTFOUND, "Haven speaks OData 4.0; the client asked for at most %s.", v)
		}
	}
	for k := range r.URL.Query() {
		if !odataParams[k] {
			return haven.Errorf(haven.ENOTIMPLEMENTED, "The query option %q is not supported; these are: $top, $skip, $skiptoken, $count, $filter, $orderby, $select, $expand=*, $wkt, $format.", k)
		}
	}
	if e := r.URL.Query().Get("$expand"); e != "" && e != "*" {
		return haven.Errorf(haven.ENOTIMPLEMENTED, "$expand takes only * (every repeat, inline).")
	}
	return nil
}

// odata answers everything under .../forms/{id}.svc/ and .../forms/{id}/draft.svc/.
func (s *Server) odata(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	esc := c.Request().URL.EscapedPath()
	i := strings.Index(esc, "/forms/")
	if i < 0 {
		return haven.Errorf(haven.ENOTFOUND, "Nothing is at this address.")
	}
	rest := esc[i+len("/forms/"):]
	seg, sub, _ := strings.Cut(rest, "/")
	var draft bool
	var root string // the service's path, up to .svc
	switch {
	case strings.HasSuffix(seg, ".svc"):
		root = esc[:i+len("/forms/")+len(seg)]
		seg = strings.TrimSuffix(seg, ".svc")
	case sub == "draft.svc" || strings.HasPrefix(sub, "draft.svc/"):
		draft = true
		root = esc[:i+len("/forms/")+len(seg)+len("/draft.svc")]
		sub = strings.TrimPrefix(strings.TrimPrefix(sub, "draft.svc"), "/")
	default:
		return haven.Errorf(haven.ENOTFOUND, "Nothing is at this address: see the API description in the README.")
	}
	formID, err := url.PathUnescape(seg)
	if err != nil {
		return haven.Errorf(haven.EINVALID, "The form id in the URL is not validly escaped.")
	}
	switch sub {
	case "":
		return s.odataService(c, pid, formID, draft)
	case "$metadata":
		return s.odataMetadata(c, pid, formID, draft)
	}
	return s.odataRead(c, pid, formID, draft, sub, s.baseURL(c)+root)
}

// odataService answers the service document.
func (s *Server) odataService(c echo.Context, pid int64, formID string, draft bool) error {
	if err := odataChecks(c, "json"); err != nil {
		return err
	}
	od, err := s.app.OData(c.Request().Context(), principal(c), pid, formID, draft)
	if err != nil {
		return err
	}
	root := strings.TrimSuffix(c.Request().URL.EscapedPath(), "/")
	c.Response().Header().Set("OData-Version", "4.0")
	c.Response().Header().Set("Content-Type", "application/json; odata.metadata=minimal")
	return c.JSON(http.StatusOK, od.ServiceDocument(s.baseURL(c)+root+"/$metadata"))
}

// odataMetadata answers the metadata document.
func (s *Server) odataMetadata(c echo.Context, pid int64, formID string, draft bool) error {
	if err := odataChecks(c, "xml"); err != nil {
		return err
	}
	od, err := s.app.OData(c.Request().Context(), principal(c), pid, formID, draft)
	if err != nil {
		return err
	}
	c.Response().Header().Set("OData-Version", "4.0")
	return c.Blob(http.StatusOK, "application/xml", od.Metadata())
}

// odataInt reads $top or $skip as Central does: a negative number is 0,
// and what is not a number is as if absent.
func odataInt(q url.Values, name string) *int {
	v := q.Get(name)
	if v == "" {
		return nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return nil
	}
	n = max(0, min(n, math.MaxInt32))
	return &n
}

// odataRead answers a table or a row.
func (s *Server) odataRead(c echo.Context, pid int64, formID string, draft bool, path, serviceRoot string) error {
	if err := odataChecks(c, "json"); err != nil {
		return err
	}
	q := c.QueryParams()
	r := c.Request()
	req := app.ODataRequest{Draft: draft, Path: path, Top: odataInt(q, "$top"), Skip: odataInt(q, "$skip"),
		SkipToken: q.Get("$skiptoken"), Count: isTrue(q.Get("$count")), Filter: q.Get("$filter"), OrderBy: q.Get("$orderby"),
		Select: q.Get("$select"), Expand: q.Get("$expand") == "*", WKT: isTrue(q.Get("$wkt")),
		ServiceRoot: serviceRoot, Request: s.baseURL(c) + r.URL.EscapedPath()}
	if r.URL.RawQuery != "" {
		req.Request += "?" + r.URL.RawQuery
	}
	ctx := r.Context()
	a, err := s.app.ReadOData(ctx, principal(c), pid, formID, req)
	if err != nil {
		return err
	}
	// Everything that can be refused has been; the rows stream.
	h := c.Response().Header()
	h.Set("OData-Version", "4.0")
	h.Set("Content-Type", "application/json; charset=utf-8")
	w := &lazyWriter{c: c}
	if err := a.Write(ctx, w); err != nil {
		if !w.started {
			return err
		}
		if ctx.Err() == nil {
			s.log.Error("OData answer failed mid-stream", "path", logPath(c), "err", err)
		}
		panic(http.ErrAbortHandler)
	}
	return nil
}

// lazyWriter sends the status with the first byte, so an error found
// before anything was written is still answered as an error.
type lazyWriter struct {
	c       echo.Context
	started bool
}

func (w *lazyWriter) Write(p []byte) (int, error) {
	if !w.started {
		w.started = true
		w.c.Response().WriteHeader(http.StatusOK)
	}
	return w.c.Response().Write(p)
}
