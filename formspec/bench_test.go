package formspec_test

import (
	"math/rand/v2"
	"testing"

	"github.com/haven-org/haven/clients/loadgen"
	"github.com/haven-org/haven/formspec"
)

// BenchmarkParseValidate parses and validates a 2 KB submission of the
// 30-question benchmark form: the CPU the submission path spends on XML.
func BenchmarkParseValidate(b *testing.B) {
	f, err := formspec.Parse(loadgen.BenchForm("1"))
	if err != nil {
		b.Fatal(err)
	}
	doc := loadgen.Instance(f, formspec.NewInstanceID(), "p.jpg", rand.New(rand.NewPCG(1, 2)))
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		inst, err := formspec.ParseInstance(doc, formspec.DefaultLimits)
		if err != nil {
			b.Fatal(err)
		}
		if v := f.Validate(inst); len(v.Problems) > 0 {
			b.Fatal(v.Problems)
		}
	}
}

// BenchmarkParseForm parses the benchmark XForm (done once per form version).
func BenchmarkParseForm(b *testing.B) {
	x := loadgen.BenchForm("1")
	b.SetBytes(int64(len(x)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := formspec.Parse(x); err != nil {
			b.Fatal(err)
		}
	}
}
