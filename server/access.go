package server

import (
	"net"
	"strconv"
	"strings"

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
			if api, dev, ok := s.app.Allowlists(c.Request().Context(), pid); ok {
				list := api
				if device {
					list = dev
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
		s.refuse(c, refused+" "+kind+" allowlist", err)
		return err
	}
}
