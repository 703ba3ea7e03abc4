package storage

import (
	gosync "sync"
	"time"
)

// cacheTTL bounds how long a cached answer may outlive a change made by
// another process (an administration command); changes made through this
// process clear the cache at once.
const cacheTTL = 5 * time.Second

// ttlCache is a small concurrent map whose entries expire after cacheTTL.
// clear also starts a new generation: an answer read from the database
// before a clear is not stored after it (put with the generation taken
// before the read), so a revocation cannot be undone by a read in flight.
type ttlCache[K comparable, V any] struct {
	mu  gosync.RWMutex
	m   map[K]ttlEntry[V]
	gen uint64
}

type ttlEntry[V any] struct {
	v       V
	expires time.Time
}

func (c *ttlCache[K, V]) get(k K) (V, bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || time.Now().After(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

// generation is to be taken before reading what will be put.
func (c *ttlCache[K, V]) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// put stores v unless the cache was cleared since generation gen.
func (c *ttlCache[K, V]) put(k K, v V, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if c.m == nil || len(c.m) > 10000 {
		c.m = map[K]ttlEntry[V]{}
	}
	c.m[k] = ttlEntry[V]{v: v, expires: time.Now().Add(cacheTTL)}
}

func (c *ttlCache[K, V]) clear() {
	c.mu.Lock()
	c.m = nil
	c.gen++
	c.mu.Unlock()
}
