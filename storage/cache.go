package storage

import (
	"context"
	gosync "sync"
	"time"

	"github.com/jackc/pgx/v5"
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

// OnChange registers how this node forgets the cached answers a change
// notification names.
func (db *DB) OnChange(name string, forget func()) {
	db.cacheMu.Lock()
	defer db.cacheMu.Unlock()
	if db.caches == nil {
		db.caches = map[string]func(){}
	}
	db.caches[name] = forget
}

// changed tells the other nodes sharing a PostgreSQL database to forget
// what they cached under name (the caller forgets its own). A lost
// notification costs at most cacheTTL: the caches expire anyway.
func (db *DB) changed(name string) {
	if db.pg {
		db.read.db.Exec(`SELECT pg_notify('haven_cache', $1)`, name)
	}
}

func (db *DB) forget(names ...string) {
	db.cacheMu.Lock()
	defer db.cacheMu.Unlock()
	if len(names) == 0 {
		for _, f := range db.caches {
			f()
		}
		return
	}
	for _, n := range names {
		if f := db.caches[n]; f != nil {
			f()
		}
	}
}

// listen, on PostgreSQL, forgets what other nodes say they changed: a
// revoked token, a disabled user, a closed form or project stops working
// on every node at once, not when its cache entry expires. While the
// listening connection is down, and when it comes back, the node forgets
// everything (it may have missed notifications).
func (db *DB) listen(dsn string) {
	defer close(db.listening)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-db.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	for ctx.Err() == nil {
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			if _, err = conn.Exec(ctx, `LISTEN haven_cache`); err == nil {
				db.forget()
				for {
					n, err := conn.WaitForNotification(ctx)
					if err != nil {
						break
					}
					db.forget(n.Payload)
				}
			}
			conn.Close(context.Background())
		}
		db.forget()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
