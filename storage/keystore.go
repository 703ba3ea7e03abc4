package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// keyStore keeps what opens the data and must never be in the database nor
// in its backups: project keys (wrapped by the master key) and the slots of
// submission keys (masked under their project's key). One node keeps them
// in a folder of its data directory (dirKeys); nodes on several machines
// keep them in a bucket of their own on the object store (objectKeys).
type keyStore interface {
	// putKey stores a wrapped project key durably.
	putKey(ctx context.Context, id int64, wrapped []byte) error
	// getKey reads a wrapped project key; errNoKey when it is not there.
	getKey(ctx context.Context, id int64) ([]byte, error)
	// shredKey destroys a project key and every slot of its submissions,
	// reporting whether there was a key to destroy.
	shredKey(ctx context.Context, id int64) (bool, error)

	// putSlot writes a submission key's slot; syncSlots makes every slot
	// written since durable (before the commit that names them).
	putSlot(keyID, slot int64, b []byte) error
	syncSlots(ctx context.Context) error
	// getSlot reads a slot: nil when it was zeroed or never written.
	getSlot(ctx context.Context, keyID, slot int64) ([]byte, error)
	// zeroSlots destroys slots durably.
	zeroSlots(ctx context.Context, keyID int64, slots []int64) error
	// forget drops whatever the store holds in memory (another node
	// destroyed keys).
	forget()
	close()
	// where names the store in messages.
	where() string
}

var errNoKey = errors.New("no such key")

// dirKeys is the key store of one node: a folder of files.
type dirKeys struct {
	dir   string
	mu    sync.Mutex
	files map[int64]*slotFile // by project key id
}

func newDirKeys(dir string) (*dirKeys, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the key store: %w", err)
	}
	return &dirKeys{dir: dir, files: map[int64]*slotFile{}}, nil
}

func (d *dirKeys) where() string { return "the key store folder of the data directory" }

func (d *dirKeys) keyFile(id int64) string {
	return filepath.Join(d.dir, fmt.Sprintf("project-key-%d", id))
}

func (d *dirKeys) slotPath(id int64) string {
	return filepath.Join(d.dir, fmt.Sprintf("project-key-%d.submissions", id))
}

func (d *dirKeys) putKey(_ context.Context, id int64, wrapped []byte) error {
	return writeFileDurably(d.keyFile(id), wrapped, 0o600)
}

func (d *dirKeys) getKey(_ context.Context, id int64) ([]byte, error) {
	b, err := os.ReadFile(d.keyFile(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, errNoKey
	}
	return b, err
}

// shredKey overwrites and removes the key's file and its slot file, and
// flushes the folder.
func (d *dirKeys) shredKey(_ context.Context, id int64) (bool, error) {
	found, err := shredFile(d.keyFile(id))
	if err != nil {
		return found, err
	}
	d.mu.Lock()
	if sf := d.files[id]; sf != nil {
		sf.f.Close()
		delete(d.files, id)
	}
	d.mu.Unlock()
	if _, err := shredFile(d.slotPath(id)); err != nil {
		return found, err
	}
	if found {
		return true, syncDir(d.dir)
	}
	return false, nil
}

// shredFile overwrites a file with zeros, flushes it and removes it.
func shredFile(path string) (bool, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if f, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
		zero := make([]byte, 1<<16)
		for off := int64(0); off < fi.Size(); off += int64(len(zero)) {
			f.WriteAt(zero[:min(int64(len(zero)), fi.Size()-off)], off)
		}
		f.Sync()
		f.Close()
	}
	return true, os.Remove(path)
}

// slotFile opens (creating it) the slot file of a project key.
func (d *dirKeys) slotFile(id int64) (*slotFile, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if sf := d.files[id]; sf != nil {
		return sf, nil
	}
	f, err := os.OpenFile(d.slotPath(id), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the submission keys of project key %d: %w", id, err)
	}
	sf := &slotFile{f: f}
	d.files[id] = sf
	return sf, nil
}

func (d *dirKeys) putSlot(keyID, slot int64, b []byte) error {
	sf, err := d.slotFile(keyID)
	if err != nil {
		return err
	}
	if err := sf.reserve(slot); err != nil {
		return err
	}
	if _, err := sf.f.WriteAt(b, slot*slotSize); err != nil {
		return fmt.Errorf("writing a submission key: %w", err)
	}
	sf.mu.Lock()
	sf.dirty = true
	sf.mu.Unlock()
	return nil
}

func (d *dirKeys) syncSlots(context.Context) error {
	d.mu.Lock()
	files := make([]*slotFile, 0, len(d.files))
	for _, sf := range d.files {
		files = append(files, sf)
	}
	d.mu.Unlock()
	var errs []error
	for _, sf := range files {
		sf.mu.Lock()
		if sf.dirty {
			if err := datasync(sf.f); err != nil {
				errs = append(errs, err)
			} else {
				sf.dirty = false
			}
		}
		sf.mu.Unlock()
	}
	return errors.Join(errs...)
}

func (d *dirKeys) getSlot(_ context.Context, keyID, slot int64) ([]byte, error) {
	sf, err := d.slotFile(keyID)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, slotSize)
	if _, err := sf.f.ReadAt(buf, slot*slotSize); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	return buf, nil
}

func (d *dirKeys) zeroSlots(_ context.Context, keyID int64, slots []int64) error {
	sf, err := d.slotFile(keyID)
	if err != nil {
		return err
	}
	zero := make([]byte, slotSize)
	for _, s := range slots {
		if _, err := sf.f.WriteAt(zero, s*slotSize); err != nil {
			return err
		}
	}
	return sf.f.Sync()
}

func (d *dirKeys) forget() {}

func (d *dirKeys) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, sf := range d.files {
		sf.f.Close()
		delete(d.files, id)
	}
}

// slotCount is how many slots the key's slot file reaches (zeros included).
func (d *dirKeys) slotCount(id int64) (int64, error) {
	fi, err := os.Stat(d.slotPath(id))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	return fi.Size() / slotSize, nil
}
