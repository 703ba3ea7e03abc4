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
type ttlCache[K comparable, V any] struct {
	mu gosync.RWMutex
	m  map[K]ttlEntry[V]
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

func (c *ttlCache[K, V]) put(k K, v V) {
	c.mu.Lock()
	if c.m == nil || len(c.m) > 10000 {
		c.m = map[K]ttlEntry[V]{}
	}
	c.m[k] = ttlEntry[V]{v: v, expires: time.Now().Add(cacheTTL)}
	c.mu.Unlock()
}

func (c *ttlCache[K, V]) clear() {
	c.mu.Lock()
	c.m = nil
	c.mu.Unlock()
}
