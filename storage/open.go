package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/haven-org/haven"
)

// Store is everything Haven keeps in a data directory: the database
// (haven.db), the key store (keys/, project keys wrapped by the master key,
// which is kept outside: see LoadMasterKey) and the encrypted blobs
// (blobs/, or an object store).
type Store struct {
	Dir         string
	DB          *DB
	Keys        *Keyring
	Blobs       *Blobs
	Users       *Users
	Projects    *Projects
	Forms       *Forms
	Submissions *Submissions
	Entities    *Entities
	ExportJobs  *ExportJobs
	Audit       *Audit
	MasterKey   []byte
	// KeyCreated is the master key file this start made (the first start
	// on the defaults), to be shown once; "" otherwise.
	KeyCreated string

	head headWriter
	// sharedKeys is the key bucket when nodes share one (the audit
	// trail's head is kept there too); nil otherwise.
	sharedKeys *objectKeys
}

// Options are how a data directory is opened.
type Options struct {
	// S3, when set, keeps new objects in an S3-compatible object store; the
	// local directory stays readable for objects already there.
	S3 *S3Config
	// Key says where the master key comes from (default: a key file in the
	// user's configuration folder).
	Key KeySource
	// WALCeiling bounds the database's write-ahead log, in bytes (0:
	// DefaultWALCeiling).
	WALCeiling int64
	// Database, when set (postgres://...), keeps the records in PostgreSQL
	// instead of the directory's SQLite file; keys and files stay as they
	// are configured.
	Database string
}

// OpenDir opens (creating it on first use) the data directory dir.
func OpenDir(ctx context.Context, dir string, opts ...Options) (*Store, error) {
	var opt Options
	if len(opts) > 0 {
		opt = opts[0]
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	mk, err := LoadMasterKey(dir, opt.Key)
	if err != nil {
		return nil, err
	}
	master := mk.Key
	local, err := NewLocalStore(filepath.Join(dir, "blobs"))
	if err != nil {
		return nil, err
	}
	blobs := &Blobs{Stores: map[string]BlobStore{StoreLocal: local}, Current: StoreLocal, Inline: DefaultInline}
	if opt.S3 != nil {
		s3, err := NewS3Store(ctx, *opt.S3)
		if err != nil {
			return nil, err
		}
		// Everything goes to the object store, small files too.
		blobs.Stores[StoreS3], blobs.Current, blobs.Inline = s3, StoreS3, 0
	}
	var db *DB
	if opt.Database != "" {
		db, err = OpenPostgresDB(ctx, opt.Database)
	} else {
		db, err = Open(ctx, filepath.Join(dir, "haven.db"))
	}
	if err != nil {
		return nil, err
	}
	db.Dir = dir
	if opt.WALCeiling > 0 {
		if err := db.SetWALCeiling(opt.WALCeiling); err != nil {
			db.Close()
			return nil, err
		}
	}
	ks, err := openKeyStore(ctx, db, dir, opt.S3, master)
	if err != nil {
		db.Close()
		if haven.ErrorCode(err) == haven.EINVALID {
			mk.undo(dir) // refused: the next start, with the right key, finds nothing in its way
		}
		return nil, err
	}
	keys, err := newKeyring(db, master, ks)
	if err != nil {
		db.Close()
		return nil, err
	}
	blobs.Keys, blobs.DB = keys, db
	// Before a commit that names new files or submission keys, both are
	// made durable: what a commit names is never lost to a crash.
	db.BeforeCommit = func(ctx context.Context) error {
		return errors.Join(blobs.SyncAll(ctx), keys.SyncSlots(ctx))
	}
	if _, err := keys.ReconcileSlots(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("checking the submission keys: %w", err)
	}
	audit := NewAudit(db, master)
	st := &Store{
		Dir: dir, DB: db, Keys: keys, MasterKey: master, KeyCreated: mk.Created, Blobs: blobs,
		Users:       &Users{DB: db, Keys: keys},
		Projects:    &Projects{DB: db, Keys: keys},
		Forms:       &Forms{DB: db},
		Submissions: &Submissions{DB: db, Keys: keys, Audit: audit},
		Entities:    &Entities{DB: db, Keys: keys, Audit: audit},
		ExportJobs:  &ExportJobs{DB: db, Blobs: blobs},
		Audit:       audit,
	}
	db.OnChange("basic", st.Users.basic.clear)
	db.OnChange("tokens", st.Users.tokens.clear)
	db.OnChange("forms", st.Forms.forget)
	db.OnChange("projects", st.Projects.cache.clear)
	if db.pg {
		db.listening = make(chan struct{})
		go db.listen(opt.Database)
	}
	st.sharedKeys, _ = ks.(*objectKeys)
	st.startHead()
	return st, nil
}

// Close writes the audit trail's head a last time and closes the database.
func (s *Store) Close() error {
	s.stopHead()
	err := s.DB.Close()
	s.Keys.closeSlots()
	return err
}
