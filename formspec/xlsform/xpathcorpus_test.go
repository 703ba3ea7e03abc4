package xlsform

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/haven-org/haven/formspec"
)

// Every form of the corpus that pyxform converts has expressions a device
// reads: the publishing check must accept all of them.
func TestCorpusExpressionsParse(t *testing.T) {
	dirs, err := os.ReadDir(corpus)
	if err != nil {
		t.Skipf("no conformance corpus at %s", corpus)
	}
	checked := 0
	for _, d := range dirs {
		expected, err := os.ReadFile(filepath.Join(corpus, d.Name(), "expected.xml"))
		if err != nil {
			continue
		}
		f, err := formspec.Parse(expected)
		if err != nil {
			continue // a form Haven refuses for its own reasons (encryption...)
		}
		checked++
		for _, p := range f.CheckExpressions() {
			t.Errorf("%s: pyxform's output refused: %s %s", d.Name(), p.Path, p.Message)
		}
	}
	t.Logf("%d forms checked", checked)
}
