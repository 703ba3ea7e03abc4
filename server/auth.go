package server

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/labstack/echo/v4"
)

// Authentication: who is calling. A Bearer token (a JWT within a session),
// HTTP Basic (over TLS), HTTP Digest (devices only, as ODK Collect sends
// it) or an app user's token in the URL. The application layer checks the
// passwords, the sessions and the Digest nonces; this file reads them off
// the request.

const keyPrincipal = "principal"

func setPrincipal(c echo.Context, p *haven.Principal) { c.Set(keyPrincipal, p) }

// principal returns who is calling, or nil.
func principal(c echo.Context) *haven.Principal {
	p, _ := c.Get(keyPrincipal).(*haven.Principal)
	return p
}

type sessionClaims struct {
	jwt.RegisteredClaims
	// SessionID is the session the token belongs to (tokens made before
	// refresh existed carry it as their jti).
	SessionID string `json:"sid,omitempty"`
}

func (c *sessionClaims) session() string {
	if c.SessionID != "" {
		return c.SessionID
	}
	return c.ID
}

// tokens is what a login or a refresh answers.
type tokens struct {
	Token            string    `json:"token"`
	ExpiresAt        time.Time `json:"expiresAt"`
	RefreshToken     string    `json:"refreshToken"`
	SessionExpiresAt time.Time `json:"sessionExpiresAt"`
	CreatedAt        time.Time `json:"createdAt"`
}

// accessToken signs a short-lived JWT within a session.
func (s *Server) accessToken(se *app.Session) (*tokens, error) {
	now := s.app.Now()
	exp := se.ExpiresAt
	if l := s.cfg.AccessLifetime; l > 0 && now.Add(l).Before(exp) {
		exp = now.Add(l)
	}
	var id [16]byte
	rand.Read(id[:])
	claims := sessionClaims{RegisteredClaims: jwt.RegisteredClaims{
		Issuer: "haven", Subject: strconv.FormatInt(se.User.ID, 10), ID: hex.EncodeToString(id[:]),
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(exp),
	}, SessionID: se.ID}
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.jwtKey)
	if err != nil {
		return nil, err
	}
	return &tokens{Token: token, ExpiresAt: exp.UTC(), RefreshToken: se.RefreshToken, SessionExpiresAt: se.ExpiresAt, CreatedAt: now.UTC()}, nil
}

// parseToken checks a JWT's signature and times and returns its claims.
func (s *Server) parseToken(token string) (*sessionClaims, error) {
	var claims sessionClaims
	_, err := jwt.ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) { return s.jwtKey, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithIssuer("haven"), jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(s.app.Now))
	if err != nil {
		return nil, haven.Errorf(haven.EUNAUTHORIZED, "Your session token is not valid or has expired. Log in again (POST /v1/sessions).")
	}
	return &claims, nil
}

const (
	keyAuthError = "authError"
	keySession   = "session"
)

// authenticate establishes the principal from a Bearer token, HTTP Digest or
// HTTP Basic credentials. A request without credentials goes on without a
// principal; the handlers that need one answer with a challenge.
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Request().Header.Get("Authorization")
		if h == "" {
			return next(c)
		}
		scheme, rest, _ := strings.Cut(h, " ")
		var p *haven.Principal
		var err error
		switch strings.ToLower(scheme) {
		case "bearer":
			p, err = s.bearer(c, strings.TrimSpace(rest))
		case "digest":
			p, err = s.digest(c, rest)
		case "basic":
			p, err = s.basic(c, rest)
		default:
			err = haven.Errorf(haven.EUNAUTHORIZED, "Haven does not know the authorization scheme %q: use Bearer, Digest or Basic.", scheme)
		}
		if err != nil {
			// Kept for requireAuth, which runs after the route's own middleware
			// has said whether the answer is JSON or an OpenRosaResponse.
			c.Set(keyAuthError, err)
			return next(c)
		}
		setPrincipal(c, p)
		return next(c)
	}
}

func (s *Server) bearer(c echo.Context, token string) (*haven.Principal, error) {
	claims, err := s.parseToken(token)
	if err != nil {
		return nil, err
	}
	id, err := strconv.ParseInt(claims.Subject, 10, 64)
	if err != nil {
		return nil, haven.Errorf(haven.EUNAUTHORIZED, "Your session token is not valid. Log in again.")
	}
	c.Set(keySession, claims.session())
	return s.app.SessionPrincipal(c.Request().Context(), claims.session(), id)
}

func (s *Server) basic(c echo.Context, rest string) (*haven.Principal, error) {
	if !s.secure(c) {
		return nil, haven.Errorf(haven.EUNAUTHORIZED, "Basic authentication sends the password in clear, so Haven refuses it over plain http. Use https, or Digest authentication (ODK Collect does this by itself).")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest))
	if err != nil {
		return nil, haven.Errorf(haven.EUNAUTHORIZED, "The Basic credentials are not valid base64.")
	}
	email, password, ok := strings.Cut(string(raw), ":")
	if !ok {
		return nil, haven.Errorf(haven.EUNAUTHORIZED, "The Basic credentials must be email:password.")
	}
	return s.app.BasicPrincipal(c.Request().Context(), email, password)
}

// digest reads HTTP Digest credentials (RFC 2617), which only the device
// endpoints take: the API takes tokens, or Basic over TLS.
func (s *Server) digest(c echo.Context, rest string) (*haven.Principal, error) {
	if !s.devicePaths[c.Path()] {
		return nil, haven.Errorf(haven.EUNAUTHORIZED, "Digest authentication is for devices (form lists, forms and submissions). Log in with POST /v1/sessions and send the token as Bearer.")
	}
	f := parseDigest(rest)
	p, err := s.app.DigestPrincipal(c.Request().Context(), app.Digest{
		Username: f["username"], Realm: f["realm"], Nonce: f["nonce"], URI: f["uri"], NC: f["nc"], CNonce: f["cnonce"],
		QOP: f["qop"], Response: f["response"], Algorithm: f["algorithm"], Method: c.Request().Method, RequestURI: c.Request().RequestURI})
	if app.ErrStale(err) {
		// Right password, spent nonce: ask again with stale=true, so the client retries without prompting.
		s.challenge(c, true)
	}
	return p, err
}

// parseDigest reads the comma-separated key=value pairs of a Digest header.
func parseDigest(s string) map[string]string {
	out := map[string]string{}
	for len(s) > 0 {
		s = strings.TrimLeft(s, " ,\t")
		k, rest, ok := strings.Cut(s, "=")
		if !ok {
			break
		}
		k = strings.ToLower(strings.TrimSpace(k))
		rest = strings.TrimLeft(rest, " ")
		var v string
		if strings.HasPrefix(rest, `"`) {
			end := 1
			for end < len(rest) && rest[end] != '"' {
				if rest[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(rest) {
				break
			}
			v = strings.ReplaceAll(rest[1:end], `\"`, `"`)
			s = rest[end+1:]
		} else {
			v, s, _ = strings.Cut(rest, ",")
			v = strings.TrimSpace(v)
		}
		out[k] = v
	}
	return out
}

// challenge sets the WWW-Authenticate headers: Digest on device routes,
// Bearer on the API, and Basic when the connection is secure enough to
// carry it.
func (s *Server) challenge(c echo.Context, stale bool) {
	h := c.Response().Header()
	h.Del("WWW-Authenticate")
	if s.devicePaths[c.Path()] {
		d := fmt.Sprintf(`Digest realm="%s", qop="auth", algorithm=MD5, nonce="%s", opaque="%s"`, app.DigestRealm, s.app.DigestNonce(), "haven")
		if stale {
			d += `, stale=true`
		}
		h.Add("WWW-Authenticate", d)
	} else {
		h.Add("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s"`, app.DigestRealm))
	}
	if s.secure(c) {
		h.Add("WWW-Authenticate", fmt.Sprintf(`Basic realm="%s", charset="UTF-8"`, app.DigestRealm))
	}
}

// keyAuth authenticates the app user whose token is in the URL (/v1/key/{token}/...).
func (s *Server) keyAuth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		s.markOpenRosa(c)
		p, err := s.app.AppUserPrincipal(c.Request().Context(), param(c, "key"))
		if err != nil {
			s.refuse(c, "credentials", err)
			return err
		}
		setPrincipal(c, p)
		return next(c)
	}
}

// requireAuth answers a request without credentials with 401 and a
// challenge; one whose credentials did not hold is refused, and audited.
func (s *Server) requireAuth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err, _ := c.Get(keyAuthError).(error); err != nil {
			if haven.ErrorCode(err) == haven.EUNAUTHORIZED && c.Response().Header().Get("WWW-Authenticate") == "" {
				s.challenge(c, false)
			}
			if !app.ErrStale(err) {
				s.refuse(c, "credentials", err)
			}
			return err
		}
		if principal(c) == nil {
			s.challenge(c, false)
			return haven.Errorf(haven.EUNAUTHORIZED, "Log in first: send a Bearer token from POST /v1/sessions, or a username and password.")
		}
		return next(c)
	}
}

// deviceCredentials marks /v1 device requests as OpenRosa and challenges
// those without credentials, as ODK Collect expects.
func (s *Server) deviceCredentials(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		s.markOpenRosa(c)
		return s.requireAuth(next)(c)
	}
}

// refuse records a request refused before its use case ran.
func (s *Server) refuse(c echo.Context, why string, err error) {
	pid, _ := strconv.ParseInt(c.Param("pid"), 10, 64)
	s.app.RefuseRequest(c.Request().Context(), principal(c), pid, c.Request().Method, c.Path(), why, err)
}

// login answers POST /v1/sessions {email, password}: an access token, a
// refresh token and the session's end.
func (s *Server) login(c echo.Context) error {
	var body struct{ Email, Password string }
	if err := bind(c, &body); err != nil {
		return err
	}
	se, err := s.app.Login(c.Request().Context(), body.Email, body.Password)
	if err != nil {
		return err
	}
	t, err := s.accessToken(se)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, t)
}

// refresh answers POST /v1/sessions/refresh {refreshToken}: new tokens for
// the same session; the old refresh token no longer works.
func (s *Server) refresh(c echo.Context) error {
	var body struct {
		RefreshToken string `json:"refreshToken"`
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	se, err := s.app.Refresh(c.Request().Context(), body.RefreshToken)
	if err != nil {
		return err
	}
	t, err := s.accessToken(se)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, t)
}

// logout answers DELETE /v1/sessions/{refreshToken}, or DELETE
// /v1/sessions/current with {"refreshToken"} (and the session's access
// token): only the holder of the refresh token ends a session.
func (s *Server) logout(c echo.Context) error {
	token, sid := param(c, "token"), ""
	if token == "current" {
		if err, _ := c.Get(keyAuthError).(error); err != nil {
			return err
		}
		sid, _ = c.Get(keySession).(string)
		if sid == "" {
			return haven.Errorf(haven.EUNAUTHORIZED, "Send the session's access token as Bearer, and its refresh token in the body, to end it.")
		}
		var body struct {
			RefreshToken string `json:"refreshToken"`
		}
		if c.Request().ContentLength != 0 {
			if err := bind(c, &body); err != nil {
				return err
			}
		}
		token = body.RefreshToken
	}
	if err := s.app.EndSession(c.Request().Context(), principal(c), sid, token); err != nil {
		return err
	}
	return success(c)
}

// restoreSession answers GET /v1/sessions/restore: the session the access
// token belongs to, as Central answers it (its token and when it ends).
func (s *Server) restoreSession(c echo.Context) error {
	token, ok := strings.CutPrefix(c.Request().Header.Get("Authorization"), "Bearer ")
	if !ok {
		return haven.Errorf(haven.ENOTFOUND, "There is no session to restore: this request was not made with a session's token.")
	}
	claims, err := s.parseToken(strings.TrimSpace(token))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"token": strings.TrimSpace(token), "expiresAt": claims.ExpiresAt.Time.UTC(),
		"createdAt": claims.IssuedAt.Time.UTC()})
}
