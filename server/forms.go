package server

import (
	"io"
	"net/http"
	"net/url"

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
	f, err := s.app.CreateForm(c.Request().Context(), principal(c), pid, u, c.QueryParam("publish") == "true")
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
	f, err := s.app.PublishDraft(c.Request().Context(), principal(c), pid, param(c, "formId"), c.QueryParam("version"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, f)
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
	cs, err := s.app.Classifications(c.Request().Context(), principal(c), pid, c.QueryParam("overdue") == "true")
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, cs)
}
