package server

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/labstack/echo/v4"
)

// markOpenRosa makes the request's answer, errors included, speak OpenRosa.
func (s *Server) markOpenRosa(c echo.Context) {
	c.Set(keyOpenRosa, true)
	h := c.Response().Header()
	h.Set("X-OpenRosa-Version", "1.0")
	h.Set("X-OpenRosa-Accept-Content-Length", strconv.FormatInt(s.app.Limits.MaxBody, 10))
}

// devicePrefix is the URL prefix of the request's device routes, so the URLs
// Haven hands a device keep its token (or not).
func (s *Server) devicePrefix(c echo.Context, pid int64) string {
	if key := param(c, "key"); key != "" {
		return fmt.Sprintf("%s/v1/key/%s/projects/%d", s.baseURL(c), key, pid)
	}
	return fmt.Sprintf("%s/v1/projects/%d", s.baseURL(c), pid)
}

// The form list and the manifest are what every device fetches at every
// sync, so they are written by hand: encoding/xml's reflection took a tenth
// of the server's CPU under a form-list load. TestDeviceDocuments checks
// that encoding/xml reads back exactly what was written.

type xformEntry struct {
	FormID      string `xml:"formID"`
	Name        string `xml:"name"`
	Version     string `xml:"version"`
	Hash        string `xml:"hash"`
	DownloadURL string `xml:"downloadUrl"`
	ManifestURL string `xml:"manifestUrl,omitempty"`
}

type mediaFile struct {
	Type         string `xml:"type,attr,omitempty"` // entityList for an entity list
	Filename     string `xml:"filename"`
	Hash         string `xml:"hash"`
	DownloadURL  string `xml:"downloadUrl"`
	IntegrityURL string `xml:"integrityUrl,omitempty"`
}

// formListXML is the OpenRosa form list of forms.
func formListXML(forms []xformEntry) []byte {
	var d xmlDoc
	d.Grow(128 + 256*len(forms))
	d.WriteString(xml.Header + `<xforms xmlns="http://openrosa.org/xforms/xformsList">`)
	for _, f := range forms {
		d.WriteString("<xform>")
		d.elem("formID", f.FormID)
		d.elem("name", f.Name)
		d.elem("version", f.Version)
		d.elem("hash", f.Hash)
		d.elem("downloadUrl", f.DownloadURL)
		if f.ManifestURL != "" {
			d.elem("manifestUrl", f.ManifestURL)
		}
		d.WriteString("</xform>")
	}
	d.WriteString("</xforms>")
	return d.Bytes()
}

// manifestXML is the OpenRosa manifest of a form's media files.
func manifestXML(files []mediaFile) []byte {
	var d xmlDoc
	d.Grow(128 + 192*len(files))
	d.WriteString(xml.Header + `<manifest xmlns="http://openrosa.org/xforms/xformsManifest">`)
	for _, f := range files {
		if f.Type != "" {
			d.WriteString(`<mediaFile type="`)
			xml.EscapeText(&d, []byte(f.Type))
			d.WriteString(`">`)
		} else {
			d.WriteString("<mediaFile>")
		}
		d.elem("filename", f.Filename)
		d.elem("hash", f.Hash)
		d.elem("downloadUrl", f.DownloadURL)
		if f.IntegrityURL != "" {
			d.elem("integrityUrl", f.IntegrityURL)
		}
		d.WriteString("</mediaFile>")
	}
	d.WriteString("</manifest>")
	return d.Bytes()
}

// xmlDoc is a small XML document written in order.
type xmlDoc struct{ bytes.Buffer }

// elem writes <name>text</name>, the text escaped by encoding/xml's own
// escaper (a bytes.Buffer never fails a write).
func (d *xmlDoc) elem(name, text string) {
	d.WriteByte('<')
	d.WriteString(name)
	d.WriteByte('>')
	xml.EscapeText(d, []byte(text))
	d.WriteString("</")
	d.WriteString(name)
	d.WriteByte('>')
}

func writeDoc(c echo.Context, b []byte) error {
	return c.Blob(http.StatusOK, "text/xml; charset=utf-8", b)
}

// formList answers GET .../formList: the open, published forms of the project.
func (s *Server) formList(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	forms, err := s.app.FormList(c.Request().Context(), principal(c), pid, c.QueryParam("formID"))
	if err != nil {
		return err
	}
	var list []xformEntry
	prefix := s.devicePrefix(c, pid)
	for _, f := range forms {
		id := url.PathEscape(f.XMLFormID)
		e := xformEntry{FormID: f.XMLFormID, Name: f.Name, Version: f.Version, Hash: "md5:" + f.Hash,
			DownloadURL: prefix + "/forms/" + id + ".xml"}
		if f.HasMedia {
			e.ManifestURL = prefix + "/forms/" + id + "/manifest"
		}
		list = append(list, e)
	}
	return writeDoc(c, formListXML(list))
}

// getForm answers GET .../forms/{id}.xml with the XForm a device downloads,
// and GET .../forms/{id} with the form's JSON.
func (s *Server) getForm(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if id, ok := strings.CutSuffix(param(c, "formId"), ".svc"); ok {
		return s.odataService(c, pid, id, false)
	}
	if id, ok := strings.CutSuffix(param(c, "formId"), ".xlsx"); ok {
		b, ct, err := s.app.FormXLSX(ctx, principal(c), pid, id, app.VersionRef{Current: true})
		if err != nil {
			return err
		}
		return xlsxAnswer(c, id, b, ct)
	}
	if id, ok := strings.CutSuffix(param(c, "formId"), ".xml"); ok {
		s.markOpenRosa(c)
		b, err := s.app.FormXML(ctx, principal(c), pid, id)
		if err != nil {
			return err
		}
		return c.Blob(http.StatusOK, "text/xml; charset=utf-8", b)
	}
	f, err := s.app.Form(ctx, principal(c), pid, param(c, "formId"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, f)
}

func (s *Server) manifest(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	id := param(c, "formId")
	files, err := s.app.Manifest(c.Request().Context(), principal(c), pid, id)
	if err != nil {
		return err
	}
	var m []mediaFile
	prefix := s.devicePrefix(c, pid) + "/forms/" + url.PathEscape(id) + "/attachments/"
	for _, f := range files {
		mf := mediaFile{Filename: f.Name, Hash: "md5:" + f.Hash, DownloadURL: prefix + url.PathEscape(f.Name)}
		if f.EntityList != "" {
			mf.Type = "entityList"
			if f.EntityListApproval {
				mf.Type = "approvalEntityList" // as Central names a list that waits for approvals
			}
			mf.IntegrityURL = s.devicePrefix(c, pid) + "/datasets/" + url.PathEscape(f.EntityList) + "/integrity"
		}
		m = append(m, mf)
	}
	return writeDoc(c, manifestXML(m))
}

// formAttachment serves a media file of a form's published version.
func (s *Server) formAttachment(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	name, err := url.PathUnescape(c.Param("name"))
	if err != nil {
		return haven.Errorf(haven.EINVALID, "The file name in the URL is not valid.")
	}
	rc, a, err := s.app.FormMedia(c.Request().Context(), principal(c), pid, param(c, "formId"), name)
	if err != nil {
		return err
	}
	defer rc.Close()
	// The content's MD5 is its ETag, as in Central: a client that has it
	// (an entity list unchanged since) gets 304 and no body.
	if a.Hash != "" {
		etag := `"` + a.Hash + `"`
		c.Response().Header().Set("ETag", etag)
		if match := c.Request().Header.Get("If-None-Match"); match != "" && (match == etag || match == "W/"+etag || match == "*") {
			return c.NoContent(http.StatusNotModified)
		}
	}
	return streamFile(c, name, a.Size, rc)
}

func streamFile(c echo.Context, name string, size int64, r io.Reader) error {
	h := c.Response().Header()
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	h.Set("Content-Disposition", attachment(name))
	return c.Stream(http.StatusOK, contentType(name), r)
}

// attachment is a Content-Disposition that saves a download as name.
func attachment(name string) string {
	return mime.FormatMediaType("attachment", map[string]string{"filename": name})
}

func contentType(name string) string {
	ext := strings.ToLower(name[strings.LastIndexByte(name, '.')+1:])
	switch ext {
	case "jpg", "jpeg":
		return "image/jpeg"
	case "png":
		return "image/png"
	case "csv":
		return "text/csv"
	case "xml":
		return "text/xml"
	case "mp3":
		return "audio/mpeg"
	case "m4a":
		return "audio/mp4"
	case "mp4":
		return "video/mp4"
	case "geojson", "json":
		return "application/json"
	}
	return "application/octet-stream"
}

// submissionPreflight answers Collect's HEAD (or GET) before a submission:
// 204 with the accept length, or 401 for credentials.
func (s *Server) submissionPreflight(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	if err := s.app.CanSubmit(c.Request().Context(), principal(c), pid); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// submit ingests a submission POST.
func (s *Server) submit(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	r := c.Request()
	if !strings.HasPrefix(strings.ToLower(r.Header.Get("Content-Type")), "multipart/form-data") {
		return haven.Errorf(haven.EINVALID, "A submission must be sent as multipart/form-data with an xml_submission_file part.")
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return haven.Errorf(haven.EINVALID, "The upload is not valid multipart/form-data (%v). Send the form again.", err)
	}
	receipt, err := s.app.Submit(r.Context(), app.SubmitRequest{
		Principal: principal(c), ProjectID: pid, DeviceID: deviceID(c), Parts: mr,
	})
	if err != nil {
		return err
	}
	s.log.Debug("submission", "project", pid, "receipt", receipt) // formatted only when debug logging is on
	return writeOpenRosa(c, http.StatusCreated, "submit_success", receiptMessage(receipt))
}

func deviceID(c echo.Context) string {
	id := c.QueryParam("deviceID")
	if len(id) > 200 {
		id = id[:200]
	}
	return id
}

func receiptMessage(r *app.Receipt) string {
	switch {
	case r.NotKept != "":
		return r.NotKept
	case len(r.Missing) > 0 && r.Incomplete:
		return fmt.Sprintf("Received; waiting for %d more file(s) of this form.", len(r.Missing))
	case len(r.Missing) > 0:
		return fmt.Sprintf("Form received, but %d file(s) it names did not arrive: %s. Send the form again to complete it.", len(r.Missing), strings.Join(r.Missing, ", "))
	case r.Duplicate:
		return "This form was already received. Nothing more is needed."
	}
	return "Form received successfully."
}

// entityIntegrity answers Collect's integrity check of an entity list:
// GET .../datasets/{name}/integrity?id=a,b (or id=a&id=b) says which of
// the entities the device holds are deleted (or no longer its to hold).
func (s *Server) entityIntegrity(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	var ids []string
	for _, v := range c.QueryParams()["id"] {
		for _, id := range strings.Split(v, ",") {
			if id = strings.TrimSpace(id); id != "" {
				ids = append(ids, id)
			}
		}
	}
	state, err := s.app.EntityIntegrity(c.Request().Context(), principal(c), pid, param(c, "name"), ids)
	if err != nil {
		return err
	}
	var d xmlDoc
	d.WriteString(xml.Header + "<data><entities>")
	for _, id := range ids {
		gone, ok := state[id]
		if !ok {
			continue
		}
		d.WriteString(`<entity id="`)
		xml.EscapeText(&d, []byte(id))
		d.WriteString(`">`)
		d.elem("deleted", strconv.FormatBool(gone))
		d.WriteString("</entity>")
	}
	d.WriteString("</entities></data>")
	return writeDoc(c, d.Bytes())
}
