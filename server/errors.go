package server

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/haven-org/haven"
	"github.com/labstack/echo/v4"
)

// status maps each error code to its HTTP status and its ODK Central-style
// numeric code (status, then a sub-code after the point). This is the one
// place where errors become HTTP.
var status = map[string]struct {
	http    int
	central float64
}{
	haven.EINVALID:        {http.StatusBadRequest, 400.1},
	haven.EUNAUTHORIZED:   {http.StatusUnauthorized, 401.2},
	haven.EFORBIDDEN:      {http.StatusForbidden, 403.1},
	haven.ENOTFOUND:       {http.StatusNotFound, 404.1},
	haven.ECONFLICT:       {http.StatusConflict, 409.1},
	haven.EDUPLICATE:      {http.StatusConflict, 409.3}, // Central's uniqueness violation
	haven.ETOOLARGE:       {http.StatusRequestEntityTooLarge, 413.1},
	haven.ETOOMANY:        {http.StatusTooManyRequests, 429.1},
	haven.ETIMEOUT:        {http.StatusRequestTimeout, 408.1},
	haven.EUNAVAILABLE:    {http.StatusServiceUnavailable, 503.1},
	haven.EINTERNAL:       {http.StatusInternalServerError, 500.1},
	haven.ENOTIMPLEMENTED: {http.StatusNotImplemented, 501.1},
}

// errorBody is the JSON shape of an API error, as ODK Central answers.
type errorBody struct {
	Code    float64        `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details,omitempty"`
}

// openRosaResponse is the XML envelope devices read; Collect shows the first
// message to the enumerator.
type openRosaResponse struct {
	XMLName xml.Name `xml:"http://openrosa.org/http/response OpenRosaResponse"`
	Message struct {
		Nature string `xml:"nature,attr"`
		Text   string `xml:",chardata"`
	} `xml:"message"`
}

// keyOpenRosa marks a request as a device's: its errors travel as an OpenRosaResponse.
const keyOpenRosa = "openrosa"

// bodyError turns what went wrong reading a request body into an answer:
// too large, too slow, or cut off. It returns nil for other errors.
func bodyError(err error) error {
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &mbe):
		return haven.Errorf(haven.ETOOLARGE, "The request body is larger than the %d bytes this address takes. Nothing was stored.", mbe.Limit)
	case errors.As(err, &ne) && ne.Timeout():
		return &haven.Error{Code: haven.ETIMEOUT, Err: err, Message: "The request body did not arrive in time, so the server stopped waiting for it. Nothing was stored; send it again."}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &haven.Error{Code: haven.EINVALID, Err: err, Message: "The request body was cut off. Nothing was stored; send it again."}
	}
	return nil
}

// handleError writes err as the answer to the request, in the request's language.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	// A client that went away (or stopped sending) is no failure of the
	// server's: it is answered, if anyone still listens, but not logged as one.
	gone := errors.Is(err, context.Canceled) || c.Request().Context().Err() != nil
	if be := bodyError(err); be != nil && haven.ErrorCode(err) == haven.EINTERNAL {
		err = be
	}
	code, msg := haven.ErrorCode(err), haven.ErrorMessage(err)
	var details map[string]any
	var he *haven.Error
	var ee *echo.HTTPError
	switch {
	case errors.As(err, &he):
		details = he.Details
	case errors.As(err, &ee):
		// The router's own answers (no such address, method not allowed, a
		// header too large) keep their status.
		code = ""
		switch ee.Code {
		case http.StatusNotFound:
			msg = "There is nothing at this address. Check the URL."
		case http.StatusMethodNotAllowed:
			msg = fmt.Sprintf("This address does not take %s requests.", c.Request().Method)
		default:
			msg = http.StatusText(ee.Code)
		}
	}
	st, ok := status[code]
	if !ok && he == nil && ee != nil {
		st.http, st.central = ee.Code, float64(ee.Code)+0.1
	} else if !ok {
		st = status[haven.EINTERNAL]
	}
	if st.http >= 500 && gone {
		s.log.Debug("client gone", "method", c.Request().Method, "path", logPath(c))
	} else if st.http >= 500 {
		s.log.Error("request failed", "method", c.Request().Method, "path", logPath(c), "err", err)
	}
	h := c.Response().Header()
	if code == haven.EUNAVAILABLE {
		h.Set("Retry-After", "30")
	}
	if n, ok := details["retryAfterSeconds"].(int); ok {
		h.Set("Retry-After", strconv.Itoa(n))
	}
	if unread(c) {
		// Answer, then close: reading what is left of a refused body could
		// hold the connection for as long as the client cares to trickle it.
		h.Set("Connection", "close")
	}
	if c.Get(keyConsole) != nil {
		s.consoleError(c, st.http, err)
		return
	}
	if c.Get(keyOpenRosa) != nil {
		writeOpenRosa(c, st.http, "error", msg)
		return
	}
	if err := c.JSON(st.http, errorBody{Code: st.central, Message: msg, Details: details}); err != nil {
		s.log.Debug("writing error response", "err", err)
	}
}

func writeOpenRosa(c echo.Context, httpStatus int, nature, message string) error {
	var r openRosaResponse
	r.Message.Nature, r.Message.Text = nature, message
	b, err := xml.Marshal(r)
	if err != nil {
		return err
	}
	return c.Blob(httpStatus, "text/xml; charset=utf-8", append([]byte(xml.Header), b...))
}

// bind decodes a JSON body of at most jsonBody bytes into v.
func bind(c echo.Context, v any) error {
	dec := json.NewDecoder(io.LimitReader(c.Request().Body, jsonBody))
	if err := dec.Decode(v); err != nil {
		if be := bodyError(err); be != nil {
			return be
		}
		return haven.Errorf(haven.EINVALID, "The request body is not the JSON this endpoint expects: %v.", err)
	}
	return nil
}

// success is the answer of a change that has nothing else to say.
func success(c echo.Context) error { return c.JSON(http.StatusOK, map[string]bool{"success": true}) }

// isTrue reads a query flag as Central does: "true" in any case.
func isTrue(v string) bool { return strings.EqualFold(v, "true") }
