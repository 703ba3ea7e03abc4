package storage

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// Two processes sharing a key store (nodes on one PostgreSQL database)
// grow the same slot file: one's zeros must never land on a key the other
// wrote after growing it. Two open descriptions of the file stand for the
// two processes; each writes every other slot across several chunks.
func TestSlotFileGrowsUnderTwoWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "project-key-1.submissions")
	var files [2]*slotFile
	for i := range files {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files[i] = &slotFile{f: f}
	}
	slots := int64(3 * slotChunk / slotSize)
	key := func(slot int64) []byte { return bytes.Repeat([]byte{byte(slot%250 + 1)}, slotSize) }
	var wg sync.WaitGroup
	for w := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for slot := int64(w); slot < slots; slot += 2 {
				if err := files[w].reserve(slot); err != nil {
					t.Error(err)
					return
				}
				if _, err := files[w].f.WriteAt(key(slot), slot*slotSize); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for slot := range slots {
		if got := b[slot*slotSize : (slot+1)*slotSize]; !bytes.Equal(got, key(slot)) {
			t.Fatalf("slot %d of %d was overwritten after its key was written", slot, slots)
		}
	}
}
