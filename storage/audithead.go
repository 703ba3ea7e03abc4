package storage

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// The audit trail's signed head. The chain proves that no event was changed,
// removed or inserted before the last one; it cannot prove that the last
// ones are still there. So the newest event's id and hash, signed with a key
// derived from the master key, are kept outside the database, in
// audit-head.json: written on opening, about every second while events
// arrive, and on closing. A head is replaced only by a newer one on the same
// trail, so cutting the tail of the trail (with the head written after it)
// shows at every verification from then on. Events newer than the last written head (at most
// about a second of them) are not covered. The head can also be kept
// elsewhere (haven audit verify --head FILE checks against a copy).

// AuditHead is the signed head of the audit trail.
type AuditHead struct {
	ID        int64     `json:"id"`   // the newest event
	Hash      []byte    `json:"hash"` // its chain hash
	At        time.Time `json:"at"`   // when the head was written
	Signature []byte    `json:"signature"`
}

const auditHeadFile = "audit-head.json"

// headInterval is how often the head is brought up to date while events arrive.
const headInterval = time.Second

func (s *Store) headKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(DeriveSecret(s.MasterKey, "audit head signing")[:ed25519.SeedSize])
}

func (h *AuditHead) signed() []byte {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(h.ID))
	binary.BigEndian.PutUint64(b[8:], uint64(h.At.UnixMilli()))
	return append(append([]byte("haven audit head\x00"), b[:]...), h.Hash...)
}

// headWriter keeps audit-head.json up to date.
type headWriter struct {
	mu      sync.Mutex
	written int64 // the id of the head on disk
	// kept is set once the head on disk was found off the trail: it is the
	// evidence of a cut, and nothing replaces it while Haven runs.
	kept bool
	stop chan struct{}
	done chan struct{}
}

// lastEvent reads the newest event's id and hash; 0 when there is none.
func (s *Store) lastEvent(ctx context.Context) (int64, []byte, error) {
	var id int64
	var hash []byte
	err := s.DB.read.QueryRowContext(ctx, `SELECT id, hash FROM audits ORDER BY id DESC LIMIT 1`).Scan(&id, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, nil
	}
	return id, hash, err
}

// ReadAuditHead reads a signed head: the deployment's (beside the
// database, or in the key bucket when nodes share one), or the file at path.
func (s *Store) ReadAuditHead(path string) (*AuditHead, error) {
	var b []byte
	var err error
	switch {
	case path == "" && s.sharedKeys != nil:
		path = auditHeadFile
		if b, err = s.sharedKeys.get(context.Background(), auditHeadFile); err == errNoKey {
			err = os.ErrNotExist
		}
	case path == "":
		path = filepath.Join(s.Dir, auditHeadFile)
		fallthrough
	default:
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	var h AuditHead
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("%s is not an audit head: %v", filepath.Base(path), err)
	}
	return &h, nil
}

// WriteAuditHead brings the signed head up to date with the newest event.
// It never writes a head older than the one on disk.
func (s *Store) WriteAuditHead(ctx context.Context) error {
	s.head.mu.Lock()
	defer s.head.mu.Unlock()
	if s.head.kept {
		return nil
	}
	id, hash, err := s.lastEvent(ctx)
	if err != nil || id == 0 || id <= s.head.written {
		return err
	}
	cur, err := s.ReadAuditHead("")
	if err == nil && s.sharedKeys != nil && cur.ID >= id {
		// Nodes write the one head in turn: never replace a newer one.
		s.head.written = id
		return nil
	}
	if err == nil && s.head.written == 0 {
		// The first write since opening: the head on disk must still lie on
		// the trail, or it is the evidence of a cut and stays for Verify.
		var at []byte
		if cur.ID > id || s.DB.read.QueryRowContext(ctx, `SELECT hash FROM audits WHERE id = ?`, cur.ID).Scan(&at) != nil || !hmac.Equal(at, cur.Hash) {
			s.head.kept = true
			return nil
		}
		if cur.ID == id {
			s.head.written = id
			return nil
		}
	}
	h := &AuditHead{ID: id, Hash: hash, At: s.DB.Now().UTC().Truncate(time.Millisecond)}
	h.Signature = ed25519.Sign(s.headKey(), h.signed())
	b, _ := json.MarshalIndent(h, "", "  ")
	if s.sharedKeys != nil {
		err = s.sharedKeys.put(ctx, auditHeadFile, b)
	} else {
		err = writeFileDurably(filepath.Join(s.Dir, auditHeadFile), b, 0o600)
	}
	if err != nil {
		return err
	}
	s.head.written = id
	return nil
}

// startHead writes the head now and then about every second until Close.
func (s *Store) startHead() {
	s.head.stop, s.head.done = make(chan struct{}), make(chan struct{})
	s.WriteAuditHead(context.Background())
	go func() {
		defer close(s.head.done)
		t := time.NewTicker(headInterval)
		defer t.Stop()
		for {
			select {
			case <-s.head.stop:
				return
			case <-t.C:
				s.WriteAuditHead(context.Background())
			}
		}
	}()
}

// stopHead stops the writer and writes the head a last time.
func (s *Store) stopHead() {
	if s.head.stop == nil {
		return
	}
	close(s.head.stop)
	<-s.head.done
	s.head.stop = nil
	s.WriteAuditHead(context.Background())
}

// VerifyAudit checks the audit trail: its chain, and that it still reaches
// its signed head (the data directory's, or the copy at headPath). The head
// is read first, so events that arrive meanwhile only lengthen the chain.
func (s *Store) VerifyAudit(ctx context.Context, headPath ...string) (*Verification, error) {
	path := ""
	if len(headPath) > 0 {
		path = headPath[0]
	}
	if err := s.WriteAuditHead(ctx); err != nil { // the head may lag by a second: bring it up to now first
		return nil, err
	}
	h, herr := s.ReadAuditHead(path)
	if herr != nil && !errors.Is(herr, os.ErrNotExist) {
		return nil, herr
	}
	v, err := s.Audit.Verify(ctx)
	if err != nil || !v.OK {
		return v, err
	}
	if h == nil {
		if v.Events == 0 {
			return v, nil
		}
		return &Verification{Events: v.Events, Broken: v.Events, Reason: "the trail's signed head (audit-head.json) is missing, so whether its newest events are all there cannot be checked"}, nil
	}
	if !ed25519.Verify(s.headKey().Public().(ed25519.PublicKey), h.signed(), h.Signature) {
		return &Verification{Events: v.Events, Broken: h.ID, Reason: "the trail's signed head does not verify: it was changed, or made with another master key"}, nil
	}
	v.Head = h
	if h.ID > v.Events {
		return &Verification{Events: v.Events, Broken: v.Events + 1, Head: h, Reason: fmt.Sprintf(
			"the trail ends at event %d, but its head, signed %s, names event %d: the newest %d event(s) were removed", v.Events, h.At.Format(time.RFC3339), h.ID, h.ID-v.Events)}, nil
	}
	var hash []byte
	if err := s.DB.read.QueryRowContext(ctx, `SELECT hash FROM audits WHERE id = ?`, h.ID).Scan(&hash); err != nil {
		return nil, err
	}
	if !hmac.Equal(hash, h.Hash) {
		return &Verification{Events: v.Events, Broken: h.ID, Head: h, Reason: fmt.Sprintf("event %d is not the one the trail's signed head names: the trail was rewritten from there", h.ID)}, nil
	}
	return v, nil
}
