package storage

import (
	"bytes"
	"io"
	"os"
	"testing"
)

// A spool gives back exactly what was written, leaves no name in its
// folder, and its bytes on disk never hold the plaintext.
func TestSpool(t *testing.T) {
	dir := t.TempDir()
	s, err := NewSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	secret := []byte("Amina Yusuf,+252 61 555 0199,HIV positive\n")
	var want bytes.Buffer
	for i := 0; i < 20_000; i++ { // about 830 KB: many encrypted packages
		want.Write(secret)
		if _, err := s.Write(secret); err != nil {
			t.Fatal(err)
		}
	}
	if names, _ := os.ReadDir(dir); len(names) != 0 {
		t.Fatalf("the spool left %d names in its folder, want none", len(names))
	}
	r, err := s.Reader()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(io.NewSectionReader(s.f, 0, 1<<30))
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) < want.Len() {
		t.Fatalf("%d bytes on disk for %d written", len(raw), want.Len())
	}
	// Markers long enough not to turn up in 830 KB of ciphertext by chance:
	// a 3-byte one ("HIV") does, in about one run in twenty.
	for _, marker := range []string{"Amina Yusuf", "+252 61 555 0199", "HIV positive"} {
		if bytes.Contains(raw, []byte(marker)) {
			t.Fatalf("plaintext %q found in the spool's bytes on disk", marker)
		}
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("read back %d bytes that differ from the %d written", len(got), want.Len())
	}
	if _, err := s.Write(secret); err == nil {
		t.Fatal("a write after Reader was accepted")
	}
}
