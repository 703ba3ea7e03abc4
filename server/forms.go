package server

import (
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/labstack/echo/v4"
)

// Forms: upload (XForm or XLSForm), drafts, publishing, versions, media,
// the field classification.

func (s *Server) formRoutes(p *echo.Group) {
	p.GET("/forms", s.listForms)
	p.POST("/forms", s.createForm)
	p.PATCH("/forms/:formId", s.setFormState)
	p.GET("/forms/:formId/versions", s.formVersions)
	p.GET("/forms/:formId/fields", s.formFields)
	p.GET("/forms/:formId/draft/fields", s.draftFields)
	p.GET("/classification", s.classification)
	p.GET("/forms/:formId/attachments", s.formAttachments)
	p.POST("/forms/:formId/draft", s.newDraft)
	p.GET("/forms/:formId/draft", s.getDraft)
	p.GET("/forms/:formId/draft.xml", s.getDraftXML)
	p.DELETE("/forms/:formId/draft", s.deleteDraft)
	p.POST("/forms/:formId/draft/publish", s.publishDraft)
	p.GET("/forms/:formId/draft/attachments", s.draftAttachments)
	p.POST("/forms/:formId/draft/attachments/:name", s.uploadDraftAttachment)
	p.GET("/forms/:formId/draft/attachments/:name", s.draftAttachment)
	p.DELETE("/forms/:formId/draft/attachments/:name", s.deleteDraftAttachment)
	p.GET("/forms/:formId/draft.xlsx", s.draftXLSX)
	p.DELETE("/forms/:formId", s.deleteForm)
	p.GET("/forms/:formId/versions/:version", s.formVersion)
	p.GET("/forms/:formId/versions/:version/fields", s.versionFields)
	p.GET("/forms/:formId/versions/:version/attachments", s.versionAttachments)
	p.GET("/forms/:formId/versions/:version/attachments/:name", s.versionAttachment)
	p.GET("/forms/:formId/assignments", s.formAssignments)
	p.GET("/forms/:formId/assignments/:role", s.formAssignments)
	p.POST("/forms/:formId/assignments/:role/:actorId", s.assignForm)
	p.DELETE("/forms/:formId/assignments/:role/:actorId", s.unassignForm)
}

// formTarget is the project and form a request's path names.
func formTarget(c echo.Context) (int64, string, error) {
	pid, err := projectID(c)
	return pid, param(c, "formId"), err
}

// deleteForm answers DELETE .../forms/{id}: a form that holds no data goes
// for good at once (Central keeps it 30 days in its trash).
func (s *Server) deleteForm(c echo.Context) error {
	pid, id, err := formTarget(c)
	if err != nil {
		return err
	}
	if err := s.app.DeleteForm(c.Request().Context(), principal(c), pid, id); err != nil {
		return err
	}
	return success(c)
}

// formVersion answers .../versions/{version} (JSON), .../versions/{version}.xml
// and .../versions/{version}.xlsx; "___" names the empty version, as in Central.
func (s *Server) formVersion(c echo.Context) error {
	pid, id, err := formTarget(c)
	if err != nil {
		return err
	}
	v := param(c, "version")
	ctx := c.Request().Context()
	if ver, ok := strings.CutSuffix(v, ".xlsx"); ok {
		b, ct, err := s.app.FormXLSX(ctx, principal(c), pid, id, app.PublishedVersionRef(ver))
		if err != nil {
			return err
		}
		return xlsxAnswer(c, id, b, ct)
	}
	if ver, ok := strings.CutSuffix(v, ".xml"); ok {
		_, fv, err := s.app.FormVersion(ctx, principal(c), pid, id, app.PublishedVersionRef(ver))
		if err != nil {
			return err
		}
		return c.Blob(http.StatusOK, "text/xml; charset=utf-8", fv.XML)
	}
	_, fv, err := s.app.FormVersion(ctx, principal(c), pid, id, app.PublishedVersionRef(v))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, fv)
}

// xlsxAnswer sends an XLSForm as uploaded.
func xlsxAnswer(c echo.Context, formID string, b []byte, contentType string) error {
	name := app.FileStem(formID) + ".xlsx"
	if contentType == "application/vnd.ms-excel" {
		name = app.FileStem(formID) + ".xls"
	}
	c.Response().Header().Set("Content-Disposition", attachment(name))
	if contentType == "" {
		contentType = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
	}
	return c.Blob(http.StatusOK, contentType, b)
}

func (s *Server) draftXLSX(c echo.Context) error {
	pid, id, err := formTarget(c)
	if err != nil {
		return err
	}
	b, ct, err := s.app.FormXLSX(c.Request().Context(), principal(c), pid, id, app.VersionRef{Draft: true})
	if err != nil {
		return err
	}
	return xlsxAnswer(c, id, b, ct)
}

func (s *Server) versionFields(c echo.Context) error {
	pid, id, err := formTarget(c)
	if err != nil {
		return err
	}
	if v := c.QueryParam("odata"); v != "" {
		fs, err := s.app.CentralFields(c.Request().Context(), principal(c), pid, id, app.PublishedVersionRef(param(c, "version")), isTrue(v))
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, fs)
	}
	fs, err := s.app.VersionFields(c.Request().Context(), principal(c), pid, id, app.PublishedVersionRef(param(c, "version")))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, fs)
}

func (s *Server) versionAttachments(c echo.Context) error {
	pid, id, err := formTarget(c)
	if err != nil {
		return err
	}
	as, err := s.app.VersionAttachments(c.Request().Context(), principal(c), pid, id, app.PublishedVersionRef(param(c, "version")))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, as)
}

func (s *Server) versionAttachment(c echo.Context) error {
	return s.mediaFile(c, app.PublishedVersionRef(param(c, "version")))
}

func (s *Server) draftAttachment(c echo.Context) error {
	return s.mediaFile(c, app.VersionRef{Draft: true})
}

// mediaFile sends a form version's media file.
func (s *Server) mediaFile(c echo.Context, ref app.VersionRef) error {
	pid, id, err := formTarget(c)
	if err != nil {
		return err
	}
	rc, a, err := s.app.OpenVersionAttachment(c.Request().Context(), principal(c), pid, id, ref, param(c, "name"))
	if err != nil {
		return err
	}
	defer rc.Close()
	return streamFile(c, a.Name, a.Size, rc)
}

func (s *Server) deleteDraftAttachment(c echo.Context) error {
	pid, id, err := formTarget(c)
	if err != nil {
		return err
	}
	if err := s.app.DeleteDraftMedia(c.Request().Context(), principal(c), pid, id, param(c, "name")); err != nil {
		return err
	}
	return success(c)
}

// formAssignments answers .../forms/{id}/assignments[/{role}]: the app
// users the form is assigned to.
func (s *Server) formAssignments(c echo.Context) error {
	pid, id, err := formTarget(c)
	if err != nil {
		return err
	}
	as, err := s.app.FormAssignments(c.Request().Context(), principal(c), pid, id, param(c, "role"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, as)
}

func (s *Server) assignForm(c echo.Context) error   { return s.formAssignment(c, true) }
func (s *Server) unassignForm(c echo.Context) error { return s.formAssignment(c, false) }

func (s *Server) formAssignment(c echo.Context, give bool) error {
	pid, id, err := formTarget(c)
	if err != nil {
		return err
	}
	actor, err := pathInt(c, "actorId")
	if err != nil {
		return err
	}
	if err := s.app.AssignForm(c.Request().Context(), principal(c), pid, id, param(c, "role"), actor, give); err != nil {
		return err
	}
	return success(c)
}

func (s *Server) listForms(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	forms, err := s.app.ListForms(c.Request().Context(), principal(c), pid)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, forms)
}

// upload reads an uploaded form: an XForm, or an XLSForm that the
// application layer converts once it has checked the caller's right.
func upload(c echo.Context) (app.Upload, error) {
	r := c.Request()
	ct := r.Header.Get("Content-Type")
	limit := app.UploadLimit(ct)
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		if be := bodyError(err); be != nil {
			return app.Upload{}, be
		}
		return app.Upload{}, haven.Errorf(haven.EINVALID, "The upload could not be read: %v.", err)
	}
	if int64(len(b)) > limit {
		return app.Upload{}, app.TooLarge("form", limit)
	}
	// Clients percent-encode the fallback form id (pyodk does, as Central expects).
	fallback := r.Header.Get("X-XlsForm-FormId-Fallback")
	if u, err := url.PathUnescape(fallback); err == nil {
		fallback = u
	}
	return app.Upload{Body: b, ContentType: ct, FormIDFallback: fallback}, nil
}

func (s *Server) createForm(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	u, err := upload(c)
	if err != nil {
		return err
	}
	f, err := s.app.CreateForm(c.Request().Context(), principal(c), pid, u, isTrue(c.QueryParam("publish")))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, f)
}

func (s *Server) setFormState(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	var body struct{ State string }
	if err := bind(c, &body); err != nil {
		return err
	}
	f, err := s.app.SetFormState(c.Request().Context(), principal(c), pid, param(c, "formId"), body.State)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, f)
}

func (s *Server) formVersions(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	vs, err := s.app.FormVersions(c.Request().Context(), principal(c), pid, param(c, "formId"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, vs)
}

func (s *Server) formAttachments(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	as, err := s.app.FormAttachments(c.Request().Context(), principal(c), pid, param(c, "formId"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, as)
}

func (s *Server) newDraft(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	u, err := upload(c)
	if err != nil {
		return err
	}
	warnings, err := s.app.NewDraft(c.Request().Context(), principal(c), pid, param(c, "formId"), u)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"success": true, "warnings": warnings})
}

func (s *Server) getDraft(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	_, v, err := s.app.Draft(c.Request().Context(), principal(c), pid, param(c, "formId"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (s *Server) getDraftXML(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	_, v, err := s.app.Draft(c.Request().Context(), principal(c), pid, param(c, "formId"))
	if err != nil {
		return err
	}
	return c.Blob(http.StatusOK, "text/xml; charset=utf-8", v.XML)
}

func (s *Server) deleteDraft(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	if err := s.app.DeleteDraft(c.Request().Context(), principal(c), pid, param(c, "formId")); err != nil {
		return err
	}
	return success(c)
}

func (s *Server) publishDraft(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	if _, err := s.app.PublishDraft(c.Request().Context(), principal(c), pid, param(c, "formId"), c.QueryParam("version")); err != nil {
		return err
	}
	return success(c) // as Central answers; GET the form for what it became
}

func (s *Server) draftAttachments(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	as, err := s.app.DraftAttachments(c.Request().Context(), principal(c), pid, param(c, "formId"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, as)
}

func (s *Server) uploadDraftAttachment(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	name, err := url.PathUnescape(c.Param("name"))
	if err != nil {
		return haven.Errorf(haven.EINVALID, "The file name in the URL is not valid.")
	}
	r := c.Request()
	if err := s.app.UploadDraftMedia(r.Context(), principal(c), pid, param(c, "formId"), name, r.Body); err != nil {
		return err
	}
	return success(c)
}

// formFields answers the schema view of a form's published version: every
// field with its path, type, purpose and tiers (declared, derived, effective).
func (s *Server) formFields(c echo.Context) error { return s.fields(c, false) }

// draftFields is formFields for the draft.
func (s *Server) draftFields(c echo.Context) error { return s.fields(c, true) }

func (s *Server) fields(c echo.Context, draft bool) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	if v := c.QueryParam("odata"); v != "" {
		// Central's listing (ruODK asks for it with ?odata=true|false).
		ref := app.VersionRef{Current: true, Draft: draft}
		fs, err := s.app.CentralFields(c.Request().Context(), principal(c), pid, param(c, "formId"), ref, isTrue(v))
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, fs)
	}
	fs, err := s.app.Fields(c.Request().Context(), principal(c), pid, param(c, "formId"), draft)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, fs)
}

// classification lists the project's forms with fields still undecided
// (level_0); ?overdue=true lists only those past the 24-hour deadline.
func (s *Server) classification(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	cs, err := s.app.Classifications(c.Request().Context(), principal(c), pid, isTrue(c.QueryParam("overdue")))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, cs)
}
