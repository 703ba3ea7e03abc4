package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"html/template"
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
			// Categories make dimensions; identifiers, free text and the
			// most sensitive fields do not (they would single people out).
			switch fd.Type {
			case "select1", "boolean", "date", "int":
				if fd.Kind == "data" && !fd.Subject && fd.Effective.Rank() < haven.Level3.Rank() && fd.Effective != haven.Level0 {
					d.Dimensions = append(d.Dimensions, fd)
				}
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
	Labels  bool
	Agg     *app.Aggregate
	Query   string
}

func (s *Server) aggregatePage(c echo.Context) error {
	d, err := s.formData(c)
	if err != nil {
		return err
	}
	q := c.QueryParams()
	ad := &aggregateData{formData: d, Measure: q.Get("measure"), Labels: q.Get("labels") != ""}
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
	agg, err := s.app.Aggregate(c.Request().Context(), principal(c), d.Project.ID, d.Form.XMLFormID, app.AggregateOptions{By: ad.By, Measure: ad.Measure, Labels: ad.Labels})
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
	if ad.Labels {
		keep.Set("labels", "1")
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
	pts, err := s.mapPoints(c)
	if err != nil {
		return err
	}
	v := s.page(c, "Map", crumb{"Projects", "/projects"}, crumb{d.Project.Name, projectPath(d.Project.ID)}, crumb{formName(d.Form), formPath(d.Project.ID, d.Form.XMLFormID)}, crumb{"Map", ""})
	// The map is inline, so tiles from the configured tile server load
	// (the CSP allows that one host for images); the points are ours.
	v.D = map[string]any{"Form": d, "Tiles": s.cfg.TileURL != "", "SVG": template.HTML(pointsSVG(pts, s.cfg.TileURL))}
	return s.render(c, http.StatusOK, "map", v)
}

// mapPoints reads a form's geopoints within the reader's clearance: from
// the GeoJSON export, so the same door decides.
func (s *Server) mapPoints(c echo.Context) ([][2]float64, error) {
	pid, formID, err := formTarget(c)
	if err != nil {
		return nil, err
	}
	ctx := c.Request().Context()
	exp, err := s.app.Export(ctx, principal(c), pid, formID, app.ExportOptions{Format: "geojson", GeoField: c.QueryParam("field")})
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := exp.Write(ctx, &b); err != nil {
		return nil, err
	}
	var fc struct {
		Features []struct {
			Geometry *struct {
				Coordinates []float64 `json:"coordinates"`
			} `json:"geometry"`
		} `json:"features"`
	}
	if err := json.NewDecoder(&b).Decode(&fc); err != nil {
		return nil, err
	}
	var pts [][2]float64
	for _, f := range fc.Features {
		if f.Geometry != nil && len(f.Geometry.Coordinates) >= 2 {
			pts = append(pts, [2]float64{f.Geometry.Coordinates[0], f.Geometry.Coordinates[1]})
		}
	}
	return pts, nil
}

// mapSVG answers the map as an SVG file, on a plain background.
func (s *Server) mapSVG(c echo.Context) error {
	pts, err := s.mapPoints(c)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.Blob(http.StatusOK, "image/svg+xml", []byte(pointsSVG(pts, "")))
}

// mercator projects a point to Web Mercator pixels at zoom z (256-px
// tiles), as tile servers cut their tiles.
func mercator(lon, lat float64, z int) (x, y float64) {
	n := 256 * math.Exp2(float64(z))
	lat = math.Max(-85.05112878, math.Min(85.05112878, lat))
	r := lat * math.Pi / 180
	return (lon + 180) / 360 * n, (1 - math.Log(math.Tan(r)+1/math.Cos(r))/math.Pi) / 2 * n
}

// pointsSVG draws points (longitude, latitude) in Web Mercator at the
// largest zoom that fits them all, over tiles from tileURL ({z}, {x}, {y})
// when given, else on a plain background with a graticule.
func pointsSVG(pts [][2]float64, tileURL string) string {
	const w, h, pad = 800.0, 500.0, 30.0
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %g %g" width="%g" height="%g" role="img" aria-label="%d points" font-family="sans-serif" font-size="12">`, w, h, w, h, len(pts))
	b.WriteString(`<rect width="100%" height="100%" fill="#eef3f7"/>`)
	if len(pts) == 0 {
		fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle" fill="#333">No geopoints to show.</text></svg>`, w/2, h/2)
		return b.String()
	}
	minX, maxX, minY, maxY := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, p := range pts {
		minX, maxX = math.Min(minX, p[0]), math.Max(maxX, p[0])
		minY, maxY = math.Min(minY, p[1]), math.Max(maxY, p[1])
	}
	z := 17
	for ; z > 0; z-- {
		x0, y0 := mercator(minX, maxY, z)
		x1, y1 := mercator(maxX, minY, z)
		if x1-x0 <= w-2*pad && y1-y0 <= h-2*pad {
			break
		}
	}
	cx0, cy0 := mercator(minX, maxY, z)
	cx1, cy1 := mercator(maxX, minY, z)
	// The view's top-left corner in world pixels.
	ox, oy := (cx0+cx1)/2-w/2, (cy0+cy1)/2-h/2
	if tileURL != "" {
		n := int(math.Exp2(float64(z)))
		for ty := int(math.Floor(oy / 256)); ty <= int(math.Floor((oy+h)/256)); ty++ {
			for tx := int(math.Floor(ox / 256)); tx <= int(math.Floor((ox+w)/256)); tx++ {
				if ty < 0 || ty >= n {
					continue
				}
				u := strings.NewReplacer("{z}", strconv.Itoa(z), "{x}", strconv.Itoa(((tx%n)+n)%n), "{y}", strconv.Itoa(ty)).Replace(tileURL)
				fmt.Fprintf(&b, `<image href="%s" x="%.1f" y="%.1f" width="256" height="256"/>`, html.EscapeString(u), float64(tx)*256-ox, float64(ty)*256-oy)
			}
		}
	} else {
		// A graticule, every power of ten of degrees that gives a few lines.
		span := math.Max(maxX-minX, maxY-minY)
		step := math.Pow(10, math.Floor(math.Log10(math.Max(span, 1e-4))))
		b.WriteString(`<g stroke="#c5d3df" stroke-width="1">`)
		for lon := math.Floor(minX/step-3) * step; lon <= maxX+3*step; lon += step {
			x, _ := mercator(lon, 0, z)
			fmt.Fprintf(&b, `<line x1="%.1f" y1="0" x2="%.1f" y2="%g"/><text x="%.1f" y="%g" fill="#4a5866" stroke="none">%.5g°</text>`, x-ox, x-ox, h, x-ox+2, h-4, lon)
		}
		for lat := math.Floor(minY/step-3) * step; lat <= maxY+3*step; lat += step {
			_, y := mercator(0, lat, z)
			fmt.Fprintf(&b, `<line x1="0" y1="%.1f" x2="%g" y2="%.1f"/><text x="2" y="%.1f" fill="#4a5866" stroke="none">%.5g°</text>`, y-oy, w, y-oy, y-oy-2, lat)
		}
		b.WriteString(`</g>`)
	}
	b.WriteString(`<g fill="#c0392b" fill-opacity="0.8" stroke="#fff" stroke-width="1.5">`)
	for _, p := range pts {
		x, y := mercator(p[0], p[1], z)
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="6"/>`, x-ox, y-oy)
	}
	fmt.Fprintf(&b, `</g><text x="%g" y="18" text-anchor="end" fill="#1d2733">%d</text></svg>`, w-8, len(pts))
	return b.String()
}

// correctSubmit corrects one value of a submission (a data subject's
// request for rectification): a new version with the reason, through the
// same use case as the API's correction.
func (s *Server) correctSubmit(c echo.Context) error {
	pid, formID, err := formTarget(c)
	if err != nil {
		return err
	}
	ctx, p := c.Request().Context(), principal(c)
	iid := param(c, "instanceId")
	fields, err := s.app.Fields(ctx, p, pid, formID, false)
	if err != nil {
		return err
	}
	// The page names fields as it shows them (group/name); find the path.
	path := ""
	for _, f := range fields {
		if strings.HasSuffix(f.Path, "/"+c.FormValue("field")) && strings.Count(f.Path, "/") == strings.Count(c.FormValue("field"), "/")+2 {
			path = f.Path
		}
	}
	if path == "" {
		return haven.Errorf(haven.EINVALID, "Choose a field of the form to correct.")
	}
	if _, err := s.app.Correct(ctx, p, pid, formID, iid, app.Correction{Values: map[string]string{path: c.FormValue("value")}, Reason: c.FormValue("reason")}); err != nil {
		return err
	}
	return back(c, formPath(pid, formID)+"/submissions/"+url.PathEscape(iid), "The value was corrected: the earlier version is kept.")
}
