package server

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	gosync "sync"
	"time"

	"github.com/haven-org/haven"
	"github.com/labstack/echo/v4"
)

// Address allowlists. The site has one list for the API and console and one
// for device endpoints (Config); each project may narrow both. A request
// from outside a list is refused with 403 and audited, whatever route it was for.

// ipExtractor returns how the client's address is read: the connection's,
// or, behind proxies the operator named, the first address in
// X-Forwarded-For that is not one of those proxies. Nothing else is trusted
// (echo would trust private and loopback ranges by default).
func ipExtractor(trusted haven.Allowlist) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		opts = append(opts, echo.TrustIPRange(&net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// checkAddress refuses a request whose client address is outside the site's
// or the project's allowlist for the kind of route it is (device or API).
func (s *Server) checkAddress(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		// Devices never send Bearer tokens: with one, even a device route
		// (a form download) is an API call.
		device := s.devicePaths[c.Path()] && !strings.HasPrefix(c.Request().Header.Get("Authorization"), "Bearer ")
		site := s.cfg.APIAllow
		if device {
			site = s.cfg.DeviceAllow
		}
		addr := c.RealIP()
		refused := ""
		if !site.Allows(addr) {
			refused = "site"
		} else if pid, err := strconv.ParseInt(c.Param("pid"), 10, 64); err == nil && pid > 0 {
			// A project that does not exist is left to the handler's 404.
			if pr, err := s.projects.Get(c.Request().Context(), pid); err == nil {
				list := pr.APIAllow
				if device {
					list = pr.DeviceAllow
				}
				if !list.Allows(addr) {
					refused = "project"
				}
			}
		}
		if refused == "" {
			return next(c)
		}
		kind, endpoints, where, who := "api", "API and console", "server", "server's administrator"
		if device {
			s.markOpenRosa(c)
			kind, endpoints = "device", "device"
		}
		if refused == "project" {
			where, who = "project", "project lead"
		}
		err := haven.Errorf(haven.EFORBIDDEN, "Your address %s may not reach this %s's %s endpoints. Ask the %s to add it to the allowlist, or connect from an allowed network.",
			addr, where, endpoints, who)
		s.auditRefusal(c, refused+" "+kind+" allowlist", err)
		return err
	}
}

// auditRefusal records a request refused before its handler ran: in the
// request's own event when its route is audited, else in an event of its own.
func (s *Server) auditRefusal(c echo.Context, why string, err error) {
	if e := haven.AuditFrom(c.Request().Context()); e != nil {
		if e.Details == nil {
			e.Details = map[string]any{}
		}
		e.Details["refused"] = why
		return
	}
	object, pid := auditObject(c)
	e := &haven.AuditEvent{Action: "request.refused", Object: object, ProjectID: pid, Address: c.RealIP(), Outcome: haven.ErrorCode(err),
		Details: map[string]any{"refused": why, "method": c.Request().Method, "route": c.Path()}}
	if lerr := s.auditLog.Log(c.Request().Context(), e); lerr != nil {
		s.log.Error("audit event not written", "action", e.Action, "err", lerr)
	}
}

// Login throttling: failed password checks are counted per account and per
// client address over a window; past the limit, further attempts are refused
// (429, with Retry-After) until the window ends, even with the right password.
// The counts live in memory: a restart forgets them.
const (
	loginWindow       = 15 * time.Minute
	accountFailures   = 10 // per account and window (ODK Collect spends two per Digest try)
	addressFailures   = 30 // per address (an IPv6 /64) and window: a site behind one NAT shares it
	loginGuardEntries = 100_000
)

type loginGuard struct {
	mu  gosync.Mutex
	m   map[string]*failures
	now func() time.Time
}

type failures struct {
	n     int
	start time.Time
}

func guardAddress(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return "addr " + addr
	}
	if a = a.Unmap(); a.Is6() {
		p, _ := a.Prefix(64)
		return "addr " + p.String()
	}
	return "addr " + a.String()
}

// guarded runs a password check for account under the login guard.
func (s *Server) guarded(c echo.Context, account string, check func() error) error {
	addr := c.RealIP()
	if err := s.logins.check(account, addr); err != nil {
		return err
	}
	err := check()
	switch haven.ErrorCode(err) {
	case "":
		s.logins.succeed(account)
	case haven.EUNAUTHORIZED:
		s.logins.fail(account, addr)
	}
	return err
}

func guardAccount(account string) string {
	return "account " + strings.ToLower(strings.TrimSpace(account))
}

// check refuses an attempt for an account, or from an address, that has
// failed too often in the current window.
func (g *loginGuard) check(account, addr string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	for _, k := range []struct {
		key   string
		limit int
		what  string
	}{{guardAccount(account), accountFailures, "for this account"}, {guardAddress(addr), addressFailures, "from your address"}} {
		f := g.m[k.key]
		if f == nil || now.Sub(f.start) >= loginWindow || f.n < k.limit {
			continue
		}
		wait := f.start.Add(loginWindow).Sub(now)
		mins := int((wait + time.Minute - 1) / time.Minute)
		e := haven.Errorf(haven.ETOOMANY, "Too many failed logins %s. Wait %d minutes and try again; an administrator can reset a forgotten password.", k.what, mins)
		e.Details = map[string]any{"retryAfterSeconds": int(wait.Seconds()) + 1}
		return e
	}
	return nil
}

// fail counts a failed attempt against the account and the address.
func (g *loginGuard) fail(account, addr string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if g.m == nil {
		g.m = map[string]*failures{}
	}
	if len(g.m) >= loginGuardEntries {
		g.sweep(now)
	}
	for _, k := range []string{guardAccount(account), guardAddress(addr)} {
		f := g.m[k]
		if f == nil || now.Sub(f.start) >= loginWindow {
			f = &failures{start: now}
			g.m[k] = f
		}
		f.n++
	}
}

// succeed clears an account's failures (not its address's: one good
// account must not reset a guessing run from the same place).
func (g *loginGuard) succeed(account string) {
	g.mu.Lock()
	delete(g.m, guardAccount(account))
	g.mu.Unlock()
}

// sweep forgets ended windows, and when that is not enough, arbitrary
// entries: memory stays bounded under a spray of accounts and addresses.
func (g *loginGuard) sweep(now time.Time) {
	for k, f := range g.m {
		if now.Sub(f.start) >= loginWindow {
			delete(g.m, k)
		}
	}
	for k := range g.m {
		if len(g.m) < loginGuardEntries*3/4 {
			break
		}
		delete(g.m, k)
	}
}
