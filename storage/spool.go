package storage

import (
	"bufio"
	"crypto/rand"
	"errors"
	"io"
	"os"

	"github.com/minio/sio"
)

// Spool is scratch space on disk for data that is written once, read back
// once and must never be readable there: an export's later tables, while
// its first streams to the client. It is encrypted (DARE, as blobs are)
// under a key that exists only in this process, and its file is unlinked
// as soon as it is created, so neither a crash nor a forgotten Close leaves
// anything that can be read.
type Spool struct {
	f   *os.File
	enc io.WriteCloser
	cfg sio.Config
}

// Spool creates an empty spool in the data directory.
func (db *DB) Spool() (*Spool, error) {
	return NewSpool(db.Dir)
}

// NewSpool creates an empty spool in dir.
func NewSpool(dir string) (*Spool, error) {
	f, err := os.CreateTemp(dir, ".spool-*")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	key := make([]byte, 32)
	rand.Read(key)
	s := &Spool{f: f, cfg: sio.Config{Key: key, MinVersion: sio.Version20, MaxVersion: sio.Version20}}
	// The encrypting writer writes whole 64 KiB packages: no buffer needed.
	if s.enc, err = sio.EncryptWriter(onlyWriter{f}, s.cfg); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Write appends p to the spool.
func (s *Spool) Write(p []byte) (int, error) {
	if s.enc == nil {
		return 0, errors.New("spool: write after Reader")
	}
	return s.enc.Write(p)
}

// Reader ends writing and returns a reader of everything written, from the
// start. It can be called once.
func (s *Spool) Reader() (io.Reader, error) {
	if s.enc == nil {
		return nil, errors.New("spool: Reader called twice")
	}
	err := s.enc.Close()
	s.enc = nil
	if err == nil {
		_, err = s.f.Seek(0, io.SeekStart)
	}
	if err != nil {
		return nil, err
	}
	return sio.DecryptReader(bufio.NewReaderSize(s.f, 64<<10), s.cfg)
}

// Close releases the spool's file and forgets its key.
func (s *Spool) Close() error {
	clear(s.cfg.Key)
	return s.f.Close()
}

// onlyWriter hides the file's Close from the encrypting writer, which would
// otherwise close it on finishing.
type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }
