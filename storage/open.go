package storage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// Store is everything Haven keeps in a data directory: the database
// (haven.db), the master key (master.key, unless HAVEN_MASTER_KEY is set) and
// the encrypted blobs (blobs/).
type Store struct {
	Dir         string
	DB          *DB
	Keys        *Keyring
	Blobs       *Blobs
	Users       *Users
	Projects    *Projects
	Forms       *Forms
	Submissions *Submissions
	MasterKey   []byte
}

// OpenDir opens (creating it on first use) the data directory dir.
func OpenDir(ctx context.Context, dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	master, err := LoadMasterKey(dir)
	if err != nil {
		return nil, err
	}
	db, err := Open(ctx, filepath.Join(dir, "haven.db"))
	if err != nil {
		return nil, err
	}
	keys, err := NewKeyring(db, master)
	if err != nil {
		db.Close()
		return nil, err
	}
	local, err := NewLocalStore(filepath.Join(dir, "blobs"))
	if err != nil {
		db.Close()
		return nil, err
	}
	db.BeforeCommit = local.Sync
	return &Store{
		Dir: dir, DB: db, Keys: keys, MasterKey: master,
		Blobs:       &Blobs{Store: local, Keys: keys, DB: db, Inline: DefaultInline},
		Users:       &Users{DB: db, Keys: keys},
		Projects:    &Projects{DB: db, Keys: keys},
		Forms:       &Forms{DB: db},
		Submissions: &Submissions{DB: db, Keys: keys},
	}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.DB.Close() }
