package collect

import (
	"fmt"
	"testing"
)

func sizes(batches [][]File) [][]int64 {
	var out [][]int64
	for _, b := range batches {
		var s []int64
		for _, f := range b {
			s = append(s, f.Size)
		}
		out = append(out, s)
	}
	return out
}

func TestBatches(t *testing.T) {
	f := func(n int64) File { return File{Size: n} }
	got := sizes(Batches(10, []File{f(40), f(40), f(40), f(200), f(10)}, 100))
	want := "[[40 40] [40] [200] [10]]"
	if fmt.Sprint(got) != want {
		t.Fatalf("got %v, want %s", got, want)
	}
	var many []File
	for i := 0; i < 250; i++ {
		many = append(many, f(1))
	}
	b := Batches(10, many, 1<<30)
	if len(b) != 3 || len(b[0]) != 100 || len(b[1]) != 100 || len(b[2]) != 50 {
		t.Fatalf("100-file split: %d batches", len(b))
	}
	if b := Batches(10, nil, 100); len(b) != 1 || len(b[0]) != 0 {
		t.Fatal("a submission without files is one request")
	}
}
