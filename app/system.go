package app

import (
	"context"
	"runtime"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
)

// SystemStats is how the server is doing, for its operator (and the soak
// test, which watches that none of it grows).
type SystemStats struct {
	Goroutines    int              `json:"goroutines"`
	HeapBytes     uint64           `json:"heapBytes"`
	DatabaseBytes int64            `json:"databaseBytes"`
	WALBytes      int64            `json:"walBytes"`
	WAL           storage.WALStats `json:"wal"`
}

// SystemStats answers site administrators.
func (s *Service) SystemStats(ctx context.Context, p *haven.Principal) (*SystemStats, error) {
	if err := admin(p); err != nil {
		return nil, err
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	out := &SystemStats{Goroutines: runtime.NumGoroutine(), HeapBytes: ms.HeapAlloc, WAL: s.st.DB.WALStats()}
	var err error
	if out.DatabaseBytes, out.WALBytes, err = s.st.DB.Sizes(ctx); err != nil {
		return nil, err
	}
	return out, nil
}

// Healthy answers a load balancer's health check, without credentials:
// whether this node can read its database (a node that cannot is taken
// out of rotation). It says nothing else.
func (s *Service) Healthy(ctx context.Context) error {
	if err := s.st.DB.QueryRow(ctx, `SELECT 1`).Scan(new(int)); err != nil {
		return &haven.Error{Code: haven.EUNAVAILABLE, Err: err, Message: "This node cannot reach its database."}
	}
	return nil
}
