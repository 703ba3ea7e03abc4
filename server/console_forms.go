package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/labstack/echo/v4"
)

// The console's form pages: a form's draft and versions, its submissions,
// exports, aggregates and map.

type formData struct {
	Project      *app.ProjectView
	Form         *haven.Form
	Draft        *haven.FormVersion
	DraftMedia   []haven.FormAttachment
	Versions     []*haven.FormVersion
	Fields       []app.Field
	DraftFields  []app.Field
	Tiers        []haven.Sensitivity
	LegalBases   []string
	Publishable  bool
	NextVersion  string
	Dimensions   []app.Field
	Measures     []app.Field
	HasGeopoints bool
	// DraftProblems is what publishing the draft would refuse.
	DraftProblems *view
}

func (s *Server) formPage(c echo.Context) error { return s.renderForm(c, http.StatusOK, nil) }

func (s *Server) formData(c echo.Context) (*formData, error) {
	pid, formID, err := formTarget(c)
	if err != nil {
		return nil, err
	}
	ctx, p := c.Request().Context(), principal(c)
	pr, err := s.app.Project(ctx, p, pid)
	if err != nil {
		return nil, err
	}
	f, err := s.app.Form(ctx, p, pid, formID)
	if err != nil {
		return nil, err
	}
	d := &formData{Project: pr, Form: f, Tiers: haven.Sensitivities, LegalBases: haven.LegalBases}
	if d.Versions, err = s.app.FormVersions(ctx, p, pid, formID); err != nil {
		return nil, err
	}
	if f.CurrentVersionID != 0 {
		if d.Fields, err = s.app.Fields(ctx, p, pid, formID, false); err != nil {
			return nil, err
		}
		for _, fd := range d.Fields {
			if fd.Repeat || fd.Kind == "note" {
				continue
			}
			switch fd.Type {
			case "select1", "string", "boolean", "date", "int":
				d.Dimensions = append(d.Dimensions, fd)
			}
			if fd.Type == "int" || fd.Type == "decimal" {
				d.Measures = append(d.Measures, fd)
			}
			if fd.Type == "geopoint" {
				d.HasGeopoints = true
			}
		}
	}
	if f.DraftVersionID != 0 && p.Can(haven.ActionFormWrite, pid) {
		if _, d.Draft, err = s.app.Draft(ctx, p, pid, formID); err != nil {
			return nil, err
		}
		if d.DraftMedia, err = s.app.DraftAttachments(ctx, p, pid, formID); err != nil {
			return nil, err
		}
		if d.DraftFields, err = s.app.Fields(ctx, p, pid, formID, true); err != nil {
			return nil, err
		}
		if err := s.app.CheckDraft(ctx, p, pid, formID); err != nil {
			d.DraftProblems = s.page(c, "")
			d.DraftProblems.fail(err)
		}
		d.Publishable = true
		for _, m := range d.DraftMedia {
			d.Publishable = d.Publishable && m.Exists
		}
		d.NextVersion = d.Draft.Version
		for _, v := range d.Versions {
			if v.Version == d.NextVersion {
				d.NextVersion = time.Now().UTC().Format("2006010215")
			}
		}
	}
	return d, nil
}

func (s *Server) renderForm(c echo.Context, st int, failure error) error {
	d, err := s.formData(c)
	if err != nil {
		return err
	}
	v := s.page(c, d.Form.Name, crumb{"Projects", "/projects"}, crumb{d.Project.Name, projectPath(d.Project.ID)}, crumb{formName(d.Form), ""})
	v.Title = formName(d.Form)
	v.D = d
	if failure != nil {
		v.fail(failure)
	}
	return s.render(c, st, "form", v)
}

func formName(f *haven.Form) string {
	if f.Name != "" {
		return f.Name
	}
	return f.XMLFormID
}

func (s *Server) draftSubmit(c echo.Context) error {
	pid, formID, err := formTarget(c)
	if err != nil {
		return err
	}
	u, err := readUpload(c, "file")
	if err != nil {
		return s.renderForm(c, http.StatusBadRequest, err)
	}
	if _, err := s.app.NewDraft(c.Request().Context(), principal(c), pid, formID, u); err != nil {
		return s.renderForm(c, status[haven.ErrorCode(err)].http, err)
	}
	return back(c, formPath(pid, formID), "The new draft was uploaded.")
}

func (s *Server) mediaSubmit(c echo.Context) error {
	pid, formID, err := formTarget(c)
	if err != nil {
		return err
	}
	fh, err := c.FormFile("file")
	if err != nil {
		return s.renderForm(c, http.StatusBadRequest, haven.Errorf(haven.EINVALID, "Choose the media file to attach."))
	}
	name := c.FormValue("name")
	if name == "" {
		name = fh.Filename
	}
	f, err := fh.Open()
	if err != nil {
		return err
	}
	defer f.Close()
	if err := s.app.UploadDraftMedia(c.Request().Context(), principal(c), pid, formID, name, f); err != nil {
		return s.renderForm(c, status[haven.ErrorCode(err)].http, err)
	}
	return back(c, formPath(pid, formID), "The file was attached.")
}

func (s *Server) publishSubmit(c echo.Context) error {
	pid, formID, err := formTarget(c)
	if err != nil {
		return err
	}
	if _, err := s.app.PublishDraft(c.Request().Context(), principal(c), pid, formID, strings.TrimSpace(c.FormValue("version"))); err != nil {
		return s.renderForm(c, status[haven.ErrorCode(err)].http, err)
	}
	return back(c, formPath(pid, formID), "The form was published: devices get it at their next form list.")
}

// versionRef reads ?version= (a published version) or ?draft=1.
func versionRef(c echo.Context) app.VersionRef {
	if c.QueryParam("draft") != "" {
		return app.VersionRef{Draft: true}
	}
	if v, ok := c.QueryParams()["version"]; ok {
		return app.PublishedVersionRef(v[0])
	}
	return app.VersionRef{Current: true}
}

func (s *Server) formXMLDownload(c echo.Context) error {
	pid, formID, err := formTarget(c)
	if err != nil {
		return err
	}
	_, fv, err := s.app.FormVersion(c.Request().Context(), principal(c), pid, formID, versionRef(c))
	if err != nil {
		return err
	}
	c.Response().Header().Set("Content-Disposition", attachment(app.FileStem(formID)+".xml"))
	return c.Blob(http.StatusOK, "text/xml; charset=utf-8", fv.XML)
}

func (s *Server) formXLSXDownload(c echo.Context) error {
	pid, formID, err := formTarget(c)
	if err != nil {
		return err
	}
	b, ct, err := s.app.FormXLSX(c.Request().Context(), principal(c), pid, formID, versionRef(c))
	if err != nil {
		return err
	}
	return xlsxAnswer(c, formID, b, ct)
}

// --- Submissions ---

type submissionsData struct {
	*formData
	Table      *app.Table
	Since      string
	Until      string
	Version    string
	From, To   int
	Prev, Next string
	Query      string
}

const tablePage = 25

func (s *Server) submissionsPage(c echo.Context) error {
	d, err := s.formData(c)
	if err != nil {
		return err
	}
	q := c.QueryParams()
	tq := app.TableQuery{Limit: tablePage}
	tq.Offset, _ = strconv.Atoi(q.Get("offset"))
	sd := &submissionsData{formData: d, Since: q.Get("since"), Until: q.Get("until")}
	if vs, ok := q["version"]; ok && vs[0] != "*" {
		sd.Version = vs[0]
		tq.Version = &sd.Version
	} else {
		sd.Version = "*"
	}
	v := s.page(c, "Submissions", crumb{"Projects", "/projects"}, crumb{d.Project.Name, projectPath(d.Project.ID)}, crumb{formName(d.Form), formPath(d.Project.ID, d.Form.XMLFormID)}, crumb{"Submissions", ""})
	v.D = sd
	if sd.Since != "" {
		t, err := app.ParseWhen("since", sd.Since)
		if err != nil {
			v.fail(err)
			return s.render(c, http.StatusBadRequest, "submissions", v)
		}
		tq.Since = *t
	}
	if sd.Until != "" {
		t, err := app.ParseWhen("until", sd.Until)
		if err != nil {
			v.fail(err)
			return s.render(c, http.StatusBadRequest, "submissions", v)
		}
		// A day given alone includes that day.
		if len(sd.Until) == len("2006-01-02") {
			*t = t.AddDate(0, 0, 1)
		}
		tq.Until = *t
	}
	sd.Table, err = s.app.SubmissionTable(c.Request().Context(), principal(c), d.Project.ID, d.Form.XMLFormID, tq)
	if err != nil {
		return err
	}
	keep := url.Values{}
	for _, k := range []string{"since", "until", "version"} {
		if q.Get(k) != "" {
			keep.Set(k, q.Get(k))
		}
	}
	sd.Query = keep.Encode()
	base := formPath(d.Project.ID, d.Form.XMLFormID) + "/submissions?"
	sd.From, sd.To = min(tq.Offset+1, sd.Table.Total), tq.Offset+len(sd.Table.Rows)
	if tq.Offset+tablePage < sd.Table.Total {
		keep.Set("offset", strconv.Itoa(tq.Offset+tablePage))
		sd.Next = base + keep.Encode()
	}
	if tq.Offset > 0 {
		keep.Set("offset", strconv.Itoa(max(0, tq.Offset-tablePage)))
		sd.Prev = base + keep.Encode()
	}
	return s.render(c, http.StatusOK, "submissions", v)
}

type submissionData struct {
	*formData
	Sub      *app.SubmissionView
	Values   []pathValue
	Versions []haven.SubmissionVersion
	Files    []haven.Attachment
	Left     []string
}

type pathValue struct{ Path, Value string }

func (s *Server) submissionPage(c echo.Context) error {
	d, err := s.formData(c)
	if err != nil {
		return err
	}
	ctx, p := c.Request().Context(), principal(c)
	iid := param(c, "instanceId")
	sv, err := s.app.Submission(ctx, p, d.Project.ID, d.Form.XMLFormID, iid)
	if err != nil {
		return err
	}
	sd := &submissionData{formData: d, Sub: sv}
	flat := map[string]string{}
	flattenValues(flat, "", sv.Data)
	for _, k := range sortedKeys(flat) {
		sd.Values = append(sd.Values, pathValue{k, flat[k]})
	}
	if sd.Versions, err = s.app.Versions(ctx, p, d.Project.ID, d.Form.XMLFormID, iid); err != nil {
		return err
	}
	if sd.Files, sd.Left, err = s.app.Attachments(ctx, p, d.Project.ID, d.Form.XMLFormID, iid); err != nil {
		return err
	}
	v := s.page(c, "Submission", crumb{"Projects", "/projects"}, crumb{d.Project.Name, projectPath(d.Project.ID)}, crumb{formName(d.Form), formPath(d.Project.ID, d.Form.XMLFormID)},
		crumb{"Submissions", formPath(d.Project.ID, d.Form.XMLFormID) + "/submissions"}, crumb{iid, ""})
	v.Title = iid
	v.D = sd
	return s.render(c, http.StatusOK, "submission", v)
}

// flattenValues lists a submission's values by path: groups joined with
// "/", each repeat entry numbered.
func flattenValues(out map[string]string, prefix string, data map[string]any) {
	for k, v := range data {
		p := strings.TrimPrefix(prefix+"/"+k, "/")
		switch v := v.(type) {
		case string:
			out[p] = v
		case map[string]any:
			flattenValues(out, p, v)
		case []any:
			for i, e := range v {
				if m, ok := e.(map[string]any); ok {
					flattenValues(out, fmt.Sprintf("%s[%d]", p, i+1), m)
				} else {
					out[fmt.Sprintf("%s[%d]", p, i+1)] = fmt.Sprint(e)
				}
			}
		}
	}
}

func (s *Server) submissionFile(c echo.Context) error {
	pid, formID, err := formTarget(c)
	if err != nil {
		return err
	}
	rc, a, err := s.app.OpenAttachment(c.Request().Context(), principal(c), pid, formID, param(c, "instanceId"), param(c, "name"))
	if err != nil {
		return err
	}
	defer rc.Close()
	h := c.Response().Header()
	h.Set("Cache-Control", "no-store")
	ct := contentType(a.Name)
	if !strings.HasPrefix(ct, "image/") {
		h.Set("Content-Disposition", attachment(a.Name))
	}
	return c.Stream(http.StatusOK, ct, rc)
}

// consoleExport streams an export as a download (CSV zip, XLSX, GeoJSON).
func (s *Server) consoleExport(c echo.Context) error {
	q := c.QueryParams()
	opts := app.ExportOptions{Format: q.Get("format"), Labels: q.Get("labels") != "", Attachments: q.Get("attachments") != ""}
	return s.export(c, opts)
}

// --- Aggregates ---

type aggregateData struct {
	*formData
	By      []string
	Measure string
	Agg     *app.Aggregate
	Query   string
}

func (s *Server) aggregatePage(c echo.Context) error {
	d, err := s.formData(c)
	if err != nil {
		return err
	}
	q := c.QueryParams()
	ad := &aggregateData{formData: d, Measure: q.Get("measure")}
	for _, b := range q["by"] {
		if b = strings.TrimSpace(b); b != "" {
			ad.By = append(ad.By, b)
		}
	}
	v := s.page(c, "Aggregates", crumb{"Projects", "/projects"}, crumb{d.Project.Name, projectPath(d.Project.ID)}, crumb{formName(d.Form), formPath(d.Project.ID, d.Form.XMLFormID)}, crumb{"Aggregates", ""})
	v.D = ad
	if len(ad.By) == 0 {
		return s.render(c, http.StatusOK, "aggregate", v)
	}
	agg, err := s.app.Aggregate(c.Request().Context(), principal(c), d.Project.ID, d.Form.XMLFormID, app.AggregateOptions{By: ad.By, Measure: ad.Measure})
	if err != nil {
		v.fail(err)
		return s.render(c, status[haven.ErrorCode(err)].http, "aggregate", v)
	}
	switch q.Get("format") {
	case "csv":
		c.Response().Header().Set("Content-Disposition", attachment(app.FileStem(d.Form.XMLFormID)+"-aggregate.csv"))
		c.Response().Header().Set("Content-Type", "text/csv; charset=utf-8")
		c.Response().WriteHeader(http.StatusOK)
		return agg.WriteCSV(c.Response())
	case "xlsx":
		c.Response().Header().Set("Content-Disposition", attachment(app.FileStem(d.Form.XMLFormID)+"-aggregate.xlsx"))
		c.Response().Header().Set("Content-Type", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
		c.Response().WriteHeader(http.StatusOK)
		return agg.WriteXLSX(c.Response())
	}
	ad.Agg = agg
	keep := url.Values{"by": ad.By}
	if ad.Measure != "" {
		keep.Set("measure", ad.Measure)
	}
	ad.Query = keep.Encode()
	return s.render(c, http.StatusOK, "aggregate", v)
}

// --- Map ---

func (s *Server) mapPage(c echo.Context) error {
	d, err := s.formData(c)
	if err != nil {
		return err
	}
	v := s.page(c, "Map", crumb{"Projects", "/projects"}, crumb{d.Project.Name, projectPath(d.Project.ID)}, crumb{formName(d.Form), formPath(d.Project.ID, d.Form.XMLFormID)}, crumb{"Map", ""})
	v.D = map[string]any{"Form": d, "Tiles": s.cfg.TileURL}
	return s.render(c, http.StatusOK, "map", v)
}

// mapSVG draws a form's geopoints within the reader's clearance (the
// GeoJSON export's, so the same door decides) on a plain background: a
// map that needs no internet and no script.
func (s *Server) mapSVG(c echo.Context) error {
	pid, formID, err := formTarget(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	exp, err := s.app.Export(ctx, principal(c), pid, formID, app.ExportOptions{Format: "geojson", GeoField: c.QueryParam("field")})
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if err := exp.Write(ctx, &b); err != nil {
		return err
	}
	var fc struct {
		Features []struct {
			Geometry *struct {
				Coordinates []float64 `json:"coordinates"`
			} `json:"geometry"`
		} `json:"features"`
	}
	if err := json.NewDecoder(io.LimitReader(&b, 256<<20)).Decode(&fc); err != nil {
		return err
	}
	var pts [][2]float64
	for _, f := range fc.Features {
		if f.Geometry != nil && len(f.Geometry.Coordinates) >= 2 {
			pts = append(pts, [2]float64{f.Geometry.Coordinates[0], f.Geometry.Coordinates[1]})
		}
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.Blob(http.StatusOK, "image/svg+xml", pointsSVG(pts))
}

// pointsSVG plots longitude/latitude points in an equirectangular frame
// fitted around them, with a graticule for orientation.
func pointsSVG(pts [][2]float64) []byte {
	const w, h, pad = 800.0, 500.0, 30.0
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %g %g" width="%g" height="%g" role="img" font-family="sans-serif" font-size="12">`, w, h, w, h)
	b.WriteString(`<rect width="100%" height="100%" fill="#eef3f7"/>`)
	if len(pts) == 0 {
		fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle" fill="#333">No geopoints to show.</text></svg>`, w/2, h/2)
		return []byte(b.String())
	}
	minX, maxX, minY, maxY := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, p := range pts {
		minX, maxX = math.Min(minX, p[0]), math.Max(maxX, p[0])
		minY, maxY = math.Min(minY, p[1]), math.Max(maxY, p[1])
	}
	spanX, spanY := math.Max(maxX-minX, 0.01), math.Max(maxY-minY, 0.01)
	scale := math.Min((w-2*pad)/spanX, (h-2*pad)/spanY)
	cx, cy := (minX+maxX)/2, (minY+maxY)/2
	x := func(lon float64) float64 { return w/2 + (lon-cx)*scale }
	y := func(lat float64) float64 { return h/2 - (lat-cy)*scale }
	step := math.Pow(10, math.Floor(math.Log10(math.Max(spanX, spanY))))
	b.WriteString(`<g stroke="#c5d3df" stroke-width="1">`)
	for lon := math.Floor((cx-(w/2)/scale)/step) * step; lon <= cx+(w/2)/scale; lon += step {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="0" x2="%.1f" y2="%g"/><text x="%.1f" y="%g" fill="#567" stroke="none">%.4g°</text>`, x(lon), x(lon), h, x(lon)+2, h-4, lon)
	}
	for lat := math.Floor((cy-(h/2)/scale)/step) * step; lat <= cy+(h/2)/scale; lat += step {
		fmt.Fprintf(&b, `<line x1="0" y1="%.1f" x2="%g" y2="%.1f"/><text x="2" y="%.1f" fill="#567" stroke="none">%.4g°</text>`, y(lat), w, y(lat), y(lat)-2, lat)
	}
	b.WriteString(`</g><g fill="#c0392b" fill-opacity="0.75" stroke="#fff" stroke-width="1">`)
	for _, p := range pts {
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="5"/>`, x(p[0]), y(p[1]))
	}
	fmt.Fprintf(&b, `</g><text x="%g" y="18" text-anchor="end" fill="#333">%d points</text></svg>`, w-8, len(pts))
	return []byte(b.String())
}
