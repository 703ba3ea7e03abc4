package storage

import "testing"

// A read that began before a clear (a revocation) must not be stored after it.
func TestCacheGeneration(t *testing.T) {
	var c ttlCache[string, int]
	gen := c.generation()
	c.put("a", 1, gen)
	if v, ok := c.get("a"); !ok || v != 1 {
		t.Fatal("put then get")
	}
	stale := c.generation()
	c.clear() // e.g. a token revoked while a lookup was in flight
	c.put("a", 2, stale)
	if _, ok := c.get("a"); ok {
		t.Fatal("an answer read before the clear was stored after it")
	}
	c.put("a", 3, c.generation())
	if v, _ := c.get("a"); v != 3 {
		t.Fatal("a fresh answer is stored")
	}
}
