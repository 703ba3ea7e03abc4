package server

import (
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/labstack/echo/v4"
)

// Submissions as the API reads them: listings, one submission (JSON or its
// raw XML), versions, files, erasure, consent withdrawal and corrections.
// What a reader sees of each is decided by the application layer's view.

func (s *Server) submissionRoutes(p *echo.Group) {
	p.GET("/forms/:formId/submissions", s.listSubmissions)
	p.GET("/forms/:formId/export", s.exportSubmissions)
	p.POST("/forms/:formId/export-jobs", s.startExportJob)
	p.GET("/export-jobs/:id", s.exportJob)
	p.GET("/export-jobs/:id/file", s.exportJobFile)
	p.GET("/forms/:formId/aggregate", s.aggregate)
	p.GET("/forms/:formId/consent-refusals", s.consentRefusals)
	p.GET("/forms/:formId/submissions/:instanceId", s.getSubmission)
	p.DELETE("/forms/:formId/submissions/:instanceId", s.deleteSubmission)
	p.POST("/forms/:formId/submissions/:instanceId/withdraw-consent", s.withdrawConsent)
	p.GET("/forms/:formId/submissions/:instanceId/versions", s.submissionVersions)
	p.GET("/forms/:formId/submissions/:instanceId/attachments", s.submissionAttachments)
	p.GET("/forms/:formId/submissions/:instanceId/attachments/:name", s.submissionAttachment)
	p.POST("/forms/:formId/submissions/:instanceId/corrections", s.correctSubmission)
	p.POST("/forms/:formId/submissions", s.createSubmission)
	p.PUT("/forms/:formId/submissions/:instanceId", s.editSubmission)
	p.PATCH("/forms/:formId/submissions/:instanceId", s.reviewSubmission)
	p.GET("/forms/:formId/submissions/:instanceId/comments", s.listComments)
	p.POST("/forms/:formId/submissions/:instanceId/comments", s.addComment)
	p.POST("/forms/:formId/submissions/:instanceId/attachments/:name", s.uploadSubmissionFile)
	p.GET("/forms/:formId/submissions.csv.zip", s.centralCSV)
	p.GET("/forms/:formId/submissions.csv", s.centralCSV)
	p.GET("/forms/:formId/submissions.geojson", s.centralCSV)
	p.POST("/forms/:formId/submissions.csv.zip", s.centralCSV)
	p.POST("/forms/:formId/submissions.csv", s.centralCSV)
}

// readXML reads a submission's XML sent as a request body.
func (s *Server) readXML(c echo.Context) ([]byte, error) {
	max := s.app.Limits.XML.MaxBytes
	b, err := io.ReadAll(io.LimitReader(c.Request().Body, int64(max)+1))
	if err != nil {
		if be := bodyError(err); be != nil {
			return nil, be
		}
		return nil, haven.Errorf(haven.EINVALID, "The submission could not be read: %v.", err)
	}
	if len(b) > max {
		return nil, haven.Errorf(haven.ETOOLARGE, "The submission XML is larger than %d bytes, more than Haven accepts. Nothing was stored.", max)
	}
	return b, nil
}

// createSubmission answers POST .../forms/{id}/submissions with the XML as
// the body (?deviceID= optional), as Central: the files follow one by one.
func (s *Server) createSubmission(c echo.Context) error {
	t, err := submissionTarget(c)
	if err != nil {
		return err
	}
	xml, err := s.readXML(c)
	if err != nil {
		return err
	}
	sub, err := s.app.CreateSubmission(c.Request().Context(), principal(c), t.pid, t.form, xml, c.QueryParam("deviceID"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, sub)
}

// editSubmission answers PUT .../submissions/{instanceId}: a new version,
// whose XML names the current one in meta/deprecatedID.
func (s *Server) editSubmission(c echo.Context) error {
	t, err := submissionTarget(c)
	if err != nil {
		return err
	}
	xml, err := s.readXML(c)
	if err != nil {
		return err
	}
	sub, err := s.app.EditSubmission(c.Request().Context(), principal(c), t.pid, t.form, t.instanceID, xml)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, sub)
}

// reviewSubmission answers PATCH .../submissions/{instanceId} {"reviewState"}.
func (s *Server) reviewSubmission(c echo.Context) error {
	t, err := submissionTarget(c)
	if err != nil {
		return err
	}
	var body struct {
		ReviewState *string `json:"reviewState"`
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	if body.ReviewState == nil {
		return haven.Errorf(haven.EINVALID, "Send {\"reviewState\": ...} with one of %s.", strings.Join(app.ReviewStates, ", "))
	}
	sub, err := s.app.Review(c.Request().Context(), principal(c), t.pid, t.form, t.instanceID, *body.ReviewState)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, sub)
}

func (s *Server) listComments(c echo.Context) error {
	t, err := submissionTarget(c)
	if err != nil {
		return err
	}
	cs, err := s.app.Comments(c.Request().Context(), principal(c), t.pid, t.form, t.instanceID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, cs)
}

func (s *Server) addComment(c echo.Context) error {
	t, err := submissionTarget(c)
	if err != nil {
		return err
	}
	var body struct{ Body string }
	if err := bind(c, &body); err != nil {
		return err
	}
	cm, err := s.app.AddComment(c.Request().Context(), principal(c), t.pid, t.form, t.instanceID, body.Body)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, cm)
}

// uploadSubmissionFile answers POST .../submissions/{instanceId}/attachments/{name}
// with the file as the body.
func (s *Server) uploadSubmissionFile(c echo.Context) error {
	t, err := submissionTarget(c)
	if err != nil {
		return err
	}
	r := c.Request()
	if err := s.app.UploadSubmissionFile(r.Context(), principal(c), t.pid, t.form, t.instanceID, param(c, "name"), r.Body); err != nil {
		if be := bodyError(err); be != nil {
			return be
		}
		return err
	}
	return success(c)
}

// centralCSV answers Central's export addresses: submissions.csv.zip (every
// table, with the files unless attachments=false), submissions.csv (the
// submissions' own table) and submissions.geojson; $filter selects by
// metadata as in OData. POST, as Central also takes, reads the same
// options from the query.
func (s *Server) centralCSV(c echo.Context) error {
	q := c.QueryParams()
	format := "csv"
	switch {
	case strings.HasSuffix(c.Path(), ".csv"):
		format = "table"
	case strings.HasSuffix(c.Path(), ".geojson"):
		format = "geojson"
	}
	opts := app.ExportOptions{Format: format, SplitSelectMultiples: isTrue(q.Get("splitSelectMultiples")),
		Attachments: format == "csv" && !strings.EqualFold(q.Get("attachments"), "false"), Filter: q.Get("$filter"),
		GeoField: q.Get("geometryField")}
	return s.export(c, opts)
}

// target is the project, form and submission a request's path names.
type target struct {
	pid        int64
	form       string
	instanceID string
}

func submissionTarget(c echo.Context) (target, error) {
	pid, err := projectID(c)
	if err != nil {
		return target{}, err
	}
	return target{pid: pid, form: param(c, "formId"), instanceID: param(c, "instanceId")}, nil
}

func (s *Server) listSubmissions(c echo.Context) error {
	t, err := submissionTarget(c)
	if err != nil {
		return err
	}
	limit, offset := -1, 0 // all of them, as Central lists them, unless asked for a page
	if v := c.QueryParam("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > 10000 {
			return haven.Errorf(haven.EINVALID, "limit must be a number from 1 to 10000.")
		}
	}
	if v := c.QueryParam("offset"); v != "" {
		if offset, err = strconv.Atoi(v); err != nil || offset < 0 {
			return haven.Errorf(haven.EINVALID, "offset must be a number of 0 or more.")
		}
	}
	subs, total, err := s.app.ListSubmissions(c.Request().Context(), principal(c), t.pid, t.form, limit, offset)
	if err != nil {
		return err
	}
	c.Response().Header().Set("X-Total-Count", strconv.Itoa(total))
	return c.JSON(http.StatusOK, subs)
}

// getSubmission answers .../submissions/{instanceId} (JSON, within the
// reader's clearance) and .../submissions/{instanceId}.xml (the raw XML,
// for readers cleared for every field).
func (s *Server) getSubmission(c echo.Context) error {
	t, err := submissionTarget(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if id, asXML := strings.CutSuffix(t.instanceID, ".xml"); asXML {
		b, err := s.app.SubmissionXML(ctx, principal(c), t.pid, t.form, id)
		if err != nil {
			return err
		}
		return c.Blob(http.StatusOK, "text/xml; charset=utf-8", b)
	}
	view, err := s.app.Submission(ctx, principal(c), t.pid, t.form, t.instanceID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, view)
}

// deleteSubmission erases a submission, its versions and its files.
func (s *Server) deleteSubmission(c echo.Context) error {
	t, err := submissionTarget(c)
	if err != nil {
		return err
	}
	if err := s.app.DeleteSubmission(c.Request().Context(), principal(c), t.pid, t.form, t.instanceID); err != nil {
		return err
	}
	return success(c)
}

func (s *Server) submissionVersions(c echo.Context) error {
	t, err := submissionTarget(c)
	if err != nil {
		return err
	}
	vs, err := s.app.Versions(c.Request().Context(), principal(c), t.pid, t.form, t.instanceID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, vs)
}

// submissionAttachments lists the files the reader may see; the header
// X-Haven-Omitted-Files counts those left out (above their clearance).
func (s *Server) submissionAttachments(c echo.Context) error {
	t, err := submissionTarget(c)
	if err != nil {
		return err
	}
	as, left, err := s.app.Attachments(c.Request().Context(), principal(c), t.pid, t.form, t.instanceID)
	if err != nil {
		return err
	}
	c.Response().Header().Set("X-Haven-Omitted-Files", strconv.Itoa(len(left)))
	return c.JSON(http.StatusOK, as)
}

func (s *Server) submissionAttachment(c echo.Context) error {
	t, err := submissionTarget(c)
	if err != nil {
		return err
	}
	name, err := url.PathUnescape(c.Param("name"))
	if err != nil {
		return haven.Errorf(haven.EINVALID, "The file name in the URL is not valid.")
	}
	rc, a, err := s.app.OpenAttachment(c.Request().Context(), principal(c), t.pid, t.form, t.instanceID, name)
	if err != nil {
		return err
	}
	defer rc.Close()
	return streamFile(c, a.Name, a.Size, rc)
}

// consentRefusals answers the anonymous tally of submissions not kept for
// want of consent, by day, and the records of withdrawn consent.
func (s *Server) consentRefusals(c echo.Context) error {
	t, err := submissionTarget(c)
	if err != nil {
		return err
	}
	r, err := s.app.ConsentRefusals(c.Request().Context(), principal(c), t.pid, t.form)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, r)
}

// withdrawConsent erases a submission whose respondent withdrew consent.
func (s *Server) withdrawConsent(c echo.Context) error {
	t, err := submissionTarget(c)
	if err != nil {
		return err
	}
	if err := s.app.WithdrawConsent(c.Request().Context(), principal(c), t.pid, t.form, t.instanceID); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"success": true, "message": "The submission, its versions and files were erased. A record that consent was withdrawn, without personal data, was kept."})
}

// correctSubmission stores a corrected version of a submission with a
// reason, and answers it as the corrector may see it.
func (s *Server) correctSubmission(c echo.Context) error {
	t, err := submissionTarget(c)
	if err != nil {
		return err
	}
	var body app.Correction
	if err := bind(c, &body); err != nil {
		return err
	}
	sub, err := s.app.Correct(c.Request().Context(), principal(c), t.pid, t.form, t.instanceID, body)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, sub)
}
