package haven

import (
	"encoding/json"
	"net/netip"
	"strings"
)

// Allowlist is a list of address ranges. An empty list allows every address.
type Allowlist []netip.Prefix

// ParseAllowlist reads CIDR ranges (10.0.0.0/8, 2001:db8::/32) or single
// addresses (192.0.2.7), in a list or comma-separated, and says which entry
// is wrong and how to write it.
func ParseAllowlist(entries ...string) (Allowlist, error) {
	var out Allowlist
	for _, e := range entries {
		for _, v := range strings.Split(e, ",") {
			v = strings.TrimSpace(v)
			if v == "" {
				continue
			}
			p, err := netip.ParsePrefix(v)
			if err != nil {
				a, aerr := netip.ParseAddr(v)
				if aerr != nil {
					return nil, Errorf(EINVALID, "%q is not an address range: write ranges in CIDR form, such as 192.0.2.0/24 or 2001:db8::/32, or single addresses such as 192.0.2.7.", v)
				}
				p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
			}
			if p.Addr().Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			out = append(out, p.Masked())
		}
	}
	return out, nil
}

// Allows reports whether addr is in the list, or the list is empty.
func (l Allowlist) Allows(addr string) bool {
	if len(l) == 0 {
		return true
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range l {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Strings returns the ranges in CIDR form.
func (l Allowlist) Strings() []string {
	out := make([]string, len(l))
	for i, p := range l {
		out[i] = p.String()
	}
	return out
}

// String writes the list comma-separated, as it is stored.
func (l Allowlist) String() string { return strings.Join(l.Strings(), ",") }

// MarshalJSON writes the list as an array of CIDR ranges ([] when empty).
func (l Allowlist) MarshalJSON() ([]byte, error) { return json.Marshal(l.Strings()) }
