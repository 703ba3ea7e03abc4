package server

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
	"github.com/labstack/echo/v4"
)

const keyPrincipal = "principal"

// principal returns who is calling, or nil.
// setPrincipal records who is making the request, for handlers and for the
// request's audit event, which a lower layer may write before the handler returns.
func setPrincipal(c echo.Context, p *haven.Principal) {
	c.Set(keyPrincipal, p)
	if e := haven.AuditFrom(c.Request().Context()); e != nil && p != nil {
		e.ActorID, e.Actor = p.ActorID, p.Name
	}
}

func principal(c echo.Context) *haven.Principal {
	p, _ := c.Get(keyPrincipal).(*haven.Principal)
	return p
}

// A login opens a session of SessionLifetime. Its access tokens (JWTs) live
// AccessLifetime: the client swaps its refresh token for a new pair
// (POST /v1/sessions/refresh) as they expire. Every request checks that the
// session is still open, so logging out or disabling the user revokes at once.
const (
	SessionLifetime = 24 * time.Hour
	AccessLifetime  = 15 * time.Minute
)

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

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newRefresh makes a refresh token for a session: the session id and a
// secret, of which only the SHA-256 is stored.
func newRefresh(sid string) (token string, hash []byte) {
	secret := randomHex(32)
	sum := sha256.Sum256([]byte(secret))
	return sid + "." + secret, sum[:]
}

// startSession opens a session for a user and returns its first tokens.
func (s *Server) startSession(c echo.Context, userID int64) (*tokens, error) {
	sid := randomHex(16)
	refresh, hash := newRefresh(sid)
	end := s.now().Add(SessionLifetime)
	if err := s.users.CreateSession(c.Request().Context(), sid, userID, end.UnixMilli(), hash); err != nil {
		return nil, err
	}
	return s.accessToken(userID, sid, refresh, end)
}

// accessToken signs a short-lived JWT within a session.
func (s *Server) accessToken(userID int64, sid, refresh string, sessionEnd time.Time) (*tokens, error) {
	now := s.now()
	exp := now.Add(AccessLifetime)
	if exp.After(sessionEnd) {
		exp = sessionEnd
	}
	claims := sessionClaims{RegisteredClaims: jwt.RegisteredClaims{
		Issuer: "haven", Subject: fmt.Sprint(userID), ID: randomHex(16),
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(exp),
	}, SessionID: sid}
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.jwtKey)
	if err != nil {
		return nil, err
	}
	return &tokens{Token: token, ExpiresAt: exp.UTC(), RefreshToken: refresh, SessionExpiresAt: sessionEnd.UTC(), CreatedAt: now.UTC()}, nil
}

// refreshSession swaps a refresh token for new tokens in the same session.
func (s *Server) refreshSession(c echo.Context, refresh string) (*tokens, error) {
	sid, secret, ok := strings.Cut(strings.TrimSpace(refresh), ".")
	if !ok || sid == "" || secret == "" {
		return nil, haven.Errorf(haven.EUNAUTHORIZED, "This refresh token is not valid. Log in again.")
	}
	old := sha256.Sum256([]byte(secret))
	next, hash := newRefresh(sid)
	userID, end, err := s.users.RefreshSession(c.Request().Context(), sid, old[:], hash)
	if err != nil {
		return nil, err
	}
	if e := haven.AuditFrom(c.Request().Context()); e != nil {
		if u, err := s.users.Get(c.Request().Context(), userID); err == nil {
			e.ActorID, e.Actor = u.ID, u.Email
		}
	}
	return s.accessToken(userID, sid, next, time.UnixMilli(end))
}

// parseToken checks a JWT's signature and times and returns its claims.
func (s *Server) parseToken(token string) (*sessionClaims, error) {
	var claims sessionClaims
	_, err := jwt.ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) { return s.jwtKey, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithIssuer("haven"), jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(s.now))
	if err != nil {
		return nil, haven.Errorf(haven.EUNAUTHORIZED, "Your session token is not valid or has expired. Log in again (POST /v1/sessions).")
	}
	return &claims, nil
}

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

const keyAuthError = "authError"

func (s *Server) bearer(c echo.Context, token string) (*haven.Principal, error) {
	claims, err := s.parseToken(token)
	if err != nil {
		return nil, err
	}
	ctx := c.Request().Context()
	ok, err := s.users.SessionActive(ctx, claims.session())
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, haven.Errorf(haven.EUNAUTHORIZED, "Your session has ended (logged out or expired). Log in again.")
	}
	var id int64
	fmt.Sscan(claims.Subject, &id)
	return s.livePrincipal(c, id)
}

// secure reports whether the request reached Haven over TLS (directly or
// through a proxy the operator vouched for).
func (s *Server) secure(c echo.Context) bool {
	return c.Request().TLS != nil || s.cfg.BehindTLS
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
	var id int64
	err = s.guarded(c, email, func() (err error) {
		id, err = s.users.AuthenticateBasic(c.Request().Context(), email, password)
		return err
	})
	if err != nil {
		return nil, err
	}
	return s.livePrincipal(c, id)
}

// Digest nonces are stateless: a timestamp and an HMAC of it under a server secret.
const nonceLifetime = 15 * time.Minute

func (s *Server) newNonce() string {
	var b [8 + 16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(s.now().Unix()))
	m := hmac.New(sha256.New, s.nonceKey)
	m.Write(b[:8])
	copy(b[8:], m.Sum(nil))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// checkNonce reports whether a nonce is ours, and whether it is still fresh.
func (s *Server) checkNonce(nonce string) (valid, fresh bool) {
	b, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(b) != 24 {
		return false, false
	}
	m := hmac.New(sha256.New, s.nonceKey)
	m.Write(b[:8])
	if !hmac.Equal(m.Sum(nil)[:16], b[8:]) {
		return false, false
	}
	issued := time.Unix(int64(binary.BigEndian.Uint64(b[:8])), 0)
	return true, s.now().Sub(issued) < nonceLifetime
}

// challenge sets the WWW-Authenticate headers: Digest always, Basic when the
// connection is secure enough to carry it.
func (s *Server) challenge(c echo.Context, stale bool) {
	h := c.Response().Header()
	d := fmt.Sprintf(`Digest realm="%s", qop="auth", algorithm=MD5, nonce="%s", opaque="%s"`, storage.DigestRealm, s.newNonce(), "haven")
	if stale {
		d += `, stale=true`
	}
	h.Add("WWW-Authenticate", d)
	h.Add("WWW-Authenticate", fmt.Sprintf(`Basic realm="%s", charset="UTF-8"`, storage.DigestRealm))
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

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// digest checks HTTP Digest credentials (RFC 2617: MD5, qop=auth).
func (s *Server) digest(c echo.Context, rest string) (*haven.Principal, error) {
	f := parseDigest(rest)
	bad := func(why string) error {
		return haven.Errorf(haven.EUNAUTHORIZED, "The Digest credentials were refused: %s.", why)
	}
	if f["realm"] != storage.DigestRealm {
		return nil, bad("wrong realm")
	}
	if a := f["algorithm"]; a != "" && !strings.EqualFold(a, "MD5") {
		return nil, bad("only MD5 is supported")
	}
	if f["qop"] != "auth" || f["nc"] == "" || f["cnonce"] == "" {
		return nil, bad("qop=auth with nc and cnonce is required")
	}
	valid, fresh := s.checkNonce(f["nonce"])
	if !valid {
		return nil, bad("unknown nonce")
	}
	if f["uri"] != c.Request().RequestURI {
		return nil, bad("the uri does not match the request")
	}
	ctx := c.Request().Context()
	var id int64
	err := s.guarded(c, f["username"], func() error {
		var ha1 []byte
		var err error
		if id, ha1, err = s.users.DigestHA1(ctx, f["username"]); err != nil {
			return err
		}
		ha2 := md5hex(c.Request().Method + ":" + f["uri"])
		want := md5hex(strings.Join([]string{hex.EncodeToString(ha1), f["nonce"], f["nc"], f["cnonce"], "auth", ha2}, ":"))
		if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(f["response"]))) != 1 {
			return haven.Errorf(haven.EUNAUTHORIZED, "The username or password is wrong.")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !fresh {
		// Right password, old nonce: ask again with stale=true, so the client retries without prompting.
		s.challenge(c, true)
		return nil, &haven.Error{Code: haven.EUNAUTHORIZED, Message: "The Digest nonce has expired; retry with the new one."}
	}
	return s.livePrincipal(c, id)
}

// livePrincipal loads the principal of a user who just proved a password;
// one disabled meanwhile is refused as unauthorized, not "not found".
func (s *Server) livePrincipal(c echo.Context, id int64) (*haven.Principal, error) {
	p, err := s.users.Principal(c.Request().Context(), id)
	if haven.ErrorCode(err) == haven.ENOTFOUND {
		return nil, haven.Errorf(haven.EUNAUTHORIZED, "This account has been disabled. Ask an administrator.")
	}
	return p, err
}

// keyAuth authenticates the app user whose token is in the URL (/v1/key/{token}/...).
func (s *Server) keyAuth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		s.markOpenRosa(c)
		p, err := s.users.AppUserPrincipal(c.Request().Context(), c.Param("key"))
		if err != nil {
			return err
		}
		setPrincipal(c, p)
		return next(c)
	}
}

// requireAuth answers a request without credentials with 401 and a challenge.
func (s *Server) requireAuth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err, _ := c.Get(keyAuthError).(error); err != nil {
			if haven.ErrorCode(err) == haven.EUNAUTHORIZED && c.Response().Header().Get("WWW-Authenticate") == "" {
				s.challenge(c, false)
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
