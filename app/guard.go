package app

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/haven-org/haven"
)

// Password guessing is slowed, never stopped for good: failed checks are
// counted per account and address together, per address, and per account,
// and past a few free failures each further one makes the next attempt wait
// longer (1 s, 2 s, 4 s... up to 15 minutes). A wrong guess from one place
// never locks the account's owner out elsewhere: the per-account count
// holds back only addresses that have not signed in to the account before.
// Web logins, Basic and Digest (ODK Collect) all count. The counts live in
// memory, and a restart forgets them; on PostgreSQL they live in the
// database the nodes share (an unlogged table, which a database crash
// forgets), so guesses spread over nodes count as one run.
const (
	pairFree    = 5  // per account and address: a person mistyping
	accountFree = 10 // per account, from addresses it never signed in from
	addressFree = 30 // per address (an IPv6 /64): a site behind one NAT shares it
	maxDelay    = 15 * time.Minute
	forgetAfter = time.Hour           // strikes are forgotten an hour after the last failure
	knownFor    = 30 * 24 * time.Hour // an address that signed in stays known this long
	guardSize   = 100_000
)

type loginGuard struct {
	mu      sync.Mutex
	strikes map[string]*strikes
	known   map[string]time.Time // account and address that signed in: when
	now     func() time.Time
	// shared, when set, keeps the counts in the database that nodes share
	// (PostgreSQL), so guesses spread over several nodes count as one; the
	// maps are then unused. Two nodes counting the same failure at the
	// same instant may count it once: the counts are a brake, not a ledger.
	shared guardStore
}

// guardStore is where nodes sharing a database keep failed logins
// (storage.DB on PostgreSQL).
type guardStore interface {
	Strike(ctx context.Context, key string) (n int, last, until time.Time, ok bool, err error)
	PutStrike(ctx context.Context, key string, n int, last, until time.Time) error
	DropStrike(ctx context.Context, key string) error
	Known(ctx context.Context, pair string) (time.Time, error)
	MarkKnown(ctx context.Context, pair string, at time.Time) error
}

type strikes struct {
	n     int
	last  time.Time
	until time.Time // no attempt before this
}

func guardAddress(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	if a = a.Unmap(); a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

func guardAccount(account string) string { return strings.ToLower(strings.TrimSpace(account)) }

// keys returns the counters an attempt is held to: account and address
// together, the address, and the account.
func guardKeys(account, addr string) (pair, address, acct string) {
	a, ad := guardAccount(account), guardAddress(addr)
	return "pair " + a + " " + ad, "addr " + ad, "acct " + a
}

// guardTimeout bounds a shared counter's read or write: a slow database
// must not hold a login longer than the check itself would.
const guardTimeout = 2 * time.Second

// get returns a counter (nil when there is none). A shared counter that
// cannot be read counts as none: the password check that follows reads
// the same database.
func (g *loginGuard) get(key string) *strikes {
	if g.shared == nil {
		return g.strikes[key]
	}
	ctx, cancel := context.WithTimeout(context.Background(), guardTimeout)
	defer cancel()
	n, last, until, ok, err := g.shared.Strike(ctx, key)
	if err != nil || !ok {
		return nil
	}
	return &strikes{n: n, last: last, until: until}
}

func (g *loginGuard) put(key string, st *strikes, now time.Time) {
	if g.shared != nil {
		ctx, cancel := context.WithTimeout(context.Background(), guardTimeout)
		defer cancel()
		g.shared.PutStrike(ctx, key, st.n, st.last, st.until)
		return
	}
	if g.strikes == nil {
		g.strikes = map[string]*strikes{}
	}
	if _, ok := g.strikes[key]; !ok && len(g.strikes) >= guardSize {
		g.sweep(now)
	}
	g.strikes[key] = st
}

func (g *loginGuard) drop(key string) {
	if g.shared != nil {
		ctx, cancel := context.WithTimeout(context.Background(), guardTimeout)
		defer cancel()
		g.shared.DropStrike(ctx, key)
		return
	}
	delete(g.strikes, key)
}

func (g *loginGuard) knownAt(pair string) time.Time {
	if g.shared == nil {
		return g.known[pair]
	}
	ctx, cancel := context.WithTimeout(context.Background(), guardTimeout)
	defer cancel()
	at, _ := g.shared.Known(ctx, pair)
	return at
}

func (g *loginGuard) markKnown(pair string, now time.Time) {
	if g.shared != nil {
		ctx, cancel := context.WithTimeout(context.Background(), guardTimeout)
		defer cancel()
		g.shared.MarkKnown(ctx, pair, now)
		return
	}
	if g.known == nil {
		g.known = map[string]time.Time{}
	}
	if len(g.known) >= guardSize {
		for k, t := range g.known {
			if now.Sub(t) >= knownFor || len(g.known) >= guardSize*3/4 {
				delete(g.known, k)
			}
		}
	}
	g.known[pair] = now
}

// check refuses an attempt that comes before its wait is over.
func (g *loginGuard) check(account, addr string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	pair, address, acct := guardKeys(account, addr)
	for _, k := range []struct{ key, what string }{{pair, "for this account"}, {address, "from your address"}, {acct, "for this account"}} {
		if k.key == acct && now.Sub(g.knownAt(pair)) < knownFor {
			continue // the owner's usual place is not held back by strangers' guesses
		}
		st := g.get(k.key)
		if st == nil || !now.Before(st.until) {
			continue
		}
		wait := st.until.Sub(now)
		secs := int((wait + time.Second - 1) / time.Second)
		e := haven.Errorf(haven.ETOOMANY, "Too many failed logins %s. Wait %s and try again; an administrator can reset a forgotten password.", k.what, waitText(secs))
		e.Details = map[string]any{"retryAfterSeconds": secs}
		return e
	}
	return nil
}

func waitText(secs int) string {
	if secs < 120 {
		return fmt.Sprintf("%d seconds", secs)
	}
	return fmt.Sprintf("%d minutes", (secs+59)/60)
}

// fail counts a failed check against every counter of the attempt.
func (g *loginGuard) fail(account, addr string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	pair, address, acct := guardKeys(account, addr)
	for _, k := range []struct {
		key  string
		free int
	}{{pair, pairFree}, {address, addressFree}, {acct, accountFree}} {
		st := g.get(k.key)
		if st == nil || now.Sub(st.last) >= forgetAfter {
			st = &strikes{}
		}
		st.n++
		st.last = now
		if over := st.n - k.free + 1; over > 0 { // the free-th failure makes the next attempt wait
			st.until = now.Add(delay(over))
		}
		g.put(k.key, st, now)
	}
}

// delay is the wait after the n-th failure past the free ones.
func delay(n int) time.Duration {
	if n > 20 {
		return maxDelay
	}
	return min(time.Duration(1<<(n-1))*time.Second, maxDelay)
}

// succeed clears the account's failures from this address and remembers
// the address as the account's own. (The address's count stays: one good
// account must not reset a guessing run from the same place.)
func (g *loginGuard) succeed(account, addr string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	pair, _, _ := guardKeys(account, addr)
	g.drop(pair)
	g.markKnown(pair, g.now())
}

// sweep forgets old strikes, and when that is not enough, arbitrary ones:
// memory stays bounded under a spray of accounts and addresses.
func (g *loginGuard) sweep(now time.Time) {
	for k, st := range g.strikes {
		if now.Sub(st.last) >= forgetAfter && !now.Before(st.until) {
			delete(g.strikes, k)
		}
	}
	for k := range g.strikes {
		if len(g.strikes) < guardSize*3/4 {
			break
		}
		delete(g.strikes, k)
	}
}

// guarded runs a password check for account from addr under the guard.
func (s *Service) guarded(account, addr string, check func() error) error {
	if err := s.logins.check(account, addr); err != nil {
		return err
	}
	err := check()
	switch {
	case errors.Is(err, errStaleNonce):
		// The password held but the nonce did not: neither a success nor a guess.
	case err == nil:
		s.logins.succeed(account, addr)
	case haven.ErrorCode(err) == haven.EUNAUTHORIZED:
		s.logins.fail(account, addr)
	}
	return err
}

// Digest nonces. A nonce is a time, random bytes and an HMAC of both under
// a server secret: Haven makes them without keeping them. Using one is
// kept, though: the first request that uses a nonce binds it to its
// client's address, and every later use must come from there with a
// higher nonce count (nc), so a captured Authorization header cannot be
// played again. A nonce lives nonceLifetime; after that, or when a use
// does not hold, the client is asked again with stale=true, which ODK
// Collect answers without bothering the enumerator.
const (
	nonceLifetime = 5 * time.Minute
	nonceLogSize  = 200_000
)

type nonceLog struct {
	mu   sync.Mutex
	used map[string]*nonceUse
	now  func() time.Time
}

type nonceUse struct {
	addr   string
	nc     uint64
	issued time.Time
}

// DigestNonce makes a fresh nonce for a Digest challenge.
func (s *Service) DigestNonce() string {
	var b [8 + 8 + 16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(s.now().Unix()))
	rand.Read(b[8:16])
	copy(b[16:], s.nonceMAC(b[:16]))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (s *Service) nonceMAC(b []byte) []byte {
	m := hmac.New(sha256.New, s.Secret("digest nonce"))
	m.Write(b)
	return m.Sum(nil)[:16]
}

// checkNonce reports whether a nonce is one of ours, and when it was made.
func (s *Service) checkNonce(nonce string) (time.Time, bool) {
	b, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(b) != 32 || !hmac.Equal(s.nonceMAC(b[:16]), b[16:]) {
		return time.Time{}, false
	}
	return time.Unix(int64(binary.BigEndian.Uint64(b[:8])), 0), true
}

// useNonce records a use of a nonce: in the database when nodes share it
// (a replay to another node is refused there too), else in memory.
func (s *Service) useNonce(ctx context.Context, nonce string, issued time.Time, nc uint64, addr string) bool {
	if !s.st.DB.Shared() {
		return s.nonces.use(nonce, issued, nc, addr)
	}
	now := s.now()
	if now.Sub(issued) >= nonceLifetime || issued.After(now.Add(time.Minute)) {
		return false
	}
	ok, err := s.st.DB.UseNonce(ctx, nonce, issued, nc, addr, now.Add(-nonceLifetime))
	if err != nil {
		s.log.Warn("recording a Digest nonce's use", "err", err)
		return false // the device is asked again
	}
	return ok
}

// use records a use of a nonce with count nc from addr, and reports
// whether it holds: the nonce is fresh, and bound to addr with a lower count.
func (l *nonceLog) use(nonce string, issued time.Time, nc uint64, addr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Sub(issued) >= nonceLifetime || issued.After(now.Add(time.Minute)) {
		return false
	}
	if l.used == nil {
		l.used = map[string]*nonceUse{}
	}
	u := l.used[nonce]
	if u == nil {
		if len(l.used) >= nonceLogSize {
			for k, v := range l.used {
				if now.Sub(v.issued) >= nonceLifetime {
					delete(l.used, k)
				}
			}
			if len(l.used) >= nonceLogSize {
				return false // more live nonces than any real crowd of devices: ask again
			}
		}
		l.used[nonce] = &nonceUse{addr: addr, nc: nc, issued: issued}
		return true
	}
	if u.addr != addr || nc <= u.nc {
		return false
	}
	u.nc = nc
	return true
}
