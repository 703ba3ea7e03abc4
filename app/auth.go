package app

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/haven-org/haven"
)

// Sign-in. A login opens a session (of SessionLifetime unless configured);
// the HTTP layer hands out access tokens within it, and a client whose
// token expires before the session swaps its refresh token for a new pair. Only the holder of the refresh token can
// renew or end a session: an access token alone, which travels on every
// request, does neither. Every request checks that its session is still
// open, so ending it or disabling the user takes effect at once.
const SessionLifetime = 24 * time.Hour

// Session is a signed-in user's session.
type Session struct {
	ID   string
	User *haven.User
	// RefreshToken renews the session; it is shown once, and only its
	// SHA-256 is kept.
	RefreshToken string
	ExpiresAt    time.Time
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

// parseRefresh splits a refresh token into its session and the hash of its secret.
func parseRefresh(token string) (sid string, hash []byte, err error) {
	sid, secret, ok := strings.Cut(strings.TrimSpace(token), ".")
	if !ok || sid == "" || secret == "" {
		return "", nil, haven.Errorf(haven.EUNAUTHORIZED, "This refresh token is not valid. Log in again.")
	}
	sum := sha256.Sum256([]byte(secret))
	return sid, sum[:], nil
}

// Login checks a user's email and password, from a client address held
// back by the login guard, and opens a session. It is audited, whether it
// succeeds or not.
func (s *Service) Login(ctx context.Context, email, password string) (_ *Session, err error) {
	e := s.event(ctx, nil, "session.create", 0, "")
	defer func() { s.record(ctx, e, err) }()
	var user *haven.User
	err = s.guarded(email, clientAddress(ctx), func() (err error) {
		user, err = s.users.Authenticate(ctx, email, password)
		return err
	})
	if err != nil {
		return nil, err
	}
	e.ActorID, e.Actor = user.ID, user.Email
	sid := randomHex(16)
	refresh, hash := newRefresh(sid)
	end := s.now().Add(s.SessionLifetime)
	if err := s.users.CreateSession(ctx, sid, user.ID, end.UnixMilli(), hash); err != nil {
		return nil, err
	}
	return &Session{ID: sid, User: user, RefreshToken: refresh, ExpiresAt: end.UTC()}, nil
}

// Refresh swaps a refresh token for a new one in the same session. A
// refresh token that was already swapped was copied: presenting it ends
// the session. A token that was never the session's is simply refused.
func (s *Service) Refresh(ctx context.Context, refreshToken string) (_ *Session, err error) {
	e := s.event(ctx, nil, "session.refresh", 0, "")
	defer func() { s.record(ctx, e, err) }()
	sid, old, err := parseRefresh(refreshToken)
	if err != nil {
		return nil, err
	}
	next, hash := newRefresh(sid)
	userID, end, err := s.users.RefreshSession(ctx, sid, old, hash)
	if userID != 0 {
		e.ActorID = userID
	}
	if err != nil {
		return nil, err
	}
	u, err := s.users.Get(ctx, userID)
	if err != nil {
		return nil, err
	}
	e.Actor = u.Email
	return &Session{ID: sid, User: u, RefreshToken: next, ExpiresAt: time.UnixMilli(end).UTC()}, nil
}

// EndSession ends the session a refresh token belongs to (logging out).
// With sessionID set (the session of the access token the request came
// with), the refresh token must be that session's.
func (s *Service) EndSession(ctx context.Context, p *haven.Principal, sessionID, refreshToken string) (err error) {
	e := s.event(ctx, p, "session.end", 0, "")
	defer func() { s.record(ctx, e, err) }()
	if strings.TrimSpace(refreshToken) == "" {
		return haven.Errorf(haven.EINVALID, "To end a session, send its refresh token (the refreshToken of the login's answer): an access token alone cannot end a session.")
	}
	sid, hash, err := parseRefresh(refreshToken)
	if err != nil {
		return err
	}
	if sessionID != "" && sid != sessionID {
		return haven.Errorf(haven.EUNAUTHORIZED, "This refresh token belongs to another session than the one you are signed in with.")
	}
	userID, err := s.users.EndSession(ctx, sid, hash)
	if userID != 0 && e.ActorID == 0 {
		e.ActorID = userID
	}
	return err
}

// SessionPrincipal is who is calling with an access token of the session
// sessionID, signed for userID: refused once the session has ended.
func (s *Service) SessionPrincipal(ctx context.Context, sessionID string, userID int64) (*haven.Principal, error) {
	ok, err := s.users.SessionActive(ctx, sessionID, userID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, haven.Errorf(haven.EUNAUTHORIZED, "Your session has ended (logged out or expired). Log in again.")
	}
	return s.livePrincipal(ctx, userID)
}

// livePrincipal loads the principal of a user who just proved who they
// are; one disabled meanwhile is refused as unauthorized, not "not found".
func (s *Service) livePrincipal(ctx context.Context, id int64) (*haven.Principal, error) {
	p, err := s.users.Principal(ctx, id)
	if haven.ErrorCode(err) == haven.ENOTFOUND {
		return nil, haven.Errorf(haven.EUNAUTHORIZED, "This account has been disabled. Ask an administrator.")
	}
	return p, err
}

// AppUserPrincipal is the app user (device) whose token a request carries.
func (s *Service) AppUserPrincipal(ctx context.Context, token string) (*haven.Principal, error) {
	return s.users.AppUserPrincipal(ctx, token)
}

// BasicPrincipal checks HTTP Basic credentials (email and password), under
// the login guard.
func (s *Service) BasicPrincipal(ctx context.Context, email, password string) (*haven.Principal, error) {
	var id int64
	err := s.guarded(email, clientAddress(ctx), func() (err error) {
		id, err = s.users.AuthenticateBasic(ctx, email, password)
		return err
	})
	if err != nil {
		return nil, err
	}
	return s.livePrincipal(ctx, id)
}

// Digest is what a Digest Authorization header says (RFC 2617).
type Digest struct {
	Username, Realm, Nonce, URI, NC, CNonce, QOP, Response, Algorithm string
	// Method and RequestURI are the request's own, which the credentials
	// must name.
	Method, RequestURI string
}

// errStaleNonce: the password held, the nonce did not (expired, replayed
// or from another client). The client is asked again with stale=true.
var errStaleNonce = errors.New("stale digest nonce")

// ErrStale reports whether a Digest refusal only needs a fresh nonce.
func ErrStale(err error) bool { return errors.Is(err, errStaleNonce) }

// DigestPrincipal checks HTTP Digest credentials (MD5, qop=auth) from the
// client address in ctx, under the login guard. The nonce must be ours and
// fresh, and each use of it must come from the client that first used it,
// with a higher nonce count: a captured header cannot be played again.
func (s *Service) DigestPrincipal(ctx context.Context, d Digest) (*haven.Principal, error) {
	bad := func(why string) error {
		return haven.Errorf(haven.EUNAUTHORIZED, "The Digest credentials were refused: %s.", why)
	}
	if d.Realm != DigestRealm {
		return nil, bad("wrong realm")
	}
	if d.Algorithm != "" && !strings.EqualFold(d.Algorithm, "MD5") {
		return nil, bad("only MD5 is supported")
	}
	nc, ncErr := strconv.ParseUint(d.NC, 16, 64)
	if d.QOP != "auth" || ncErr != nil || d.CNonce == "" {
		return nil, bad("qop=auth with nc and cnonce is required")
	}
	issued, ok := s.checkNonce(d.Nonce)
	if !ok {
		return nil, bad("unknown nonce")
	}
	if d.URI != d.RequestURI {
		return nil, bad("the uri does not match the request")
	}
	addr := clientAddress(ctx)
	var id int64
	err := s.guarded(d.Username, addr, func() error {
		var ha1 []byte
		var err error
		if id, ha1, err = s.users.DigestHA1(ctx, d.Username); err != nil {
			return err
		}
		ha2 := md5hex(d.Method + ":" + d.URI)
		want := md5hex(strings.Join([]string{hex.EncodeToString(ha1), d.Nonce, d.NC, d.CNonce, "auth", ha2}, ":"))
		if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(d.Response))) != 1 {
			return haven.Errorf(haven.EUNAUTHORIZED, "The username or password is wrong.")
		}
		if !s.useNonce(ctx, d.Nonce, issued, nc, addr) {
			return errStaleNonce
		}
		return nil
	})
	if errors.Is(err, errStaleNonce) {
		return nil, &haven.Error{Code: haven.EUNAUTHORIZED, Message: "The Digest nonce has expired or was already used; retry with the new one.", Err: errStaleNonce}
	}
	if err != nil {
		return nil, err
	}
	return s.livePrincipal(ctx, id)
}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}
