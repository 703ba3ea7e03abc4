package export

import (
	"encoding/json"
	"math/rand"
	"strings"
	"testing"
)

// lines calls fn with every line of the cube (one dimension varying over
// its categories, the others fixed, margins included) and the line's margin.
func (c *cube) lines(fn func(cells [][3]int, margin [3]int)) {
	for _, key := range c.cells() {
		for d := range c.sizes {
			if key[d] != 0 {
				continue // visit each line once, from its first cell
			}
			margin := key
			margin[d] = -1
			var cells [][3]int
			for j := 0; j < c.sizes[d]; j++ {
				cell := key
				cell[d] = j
				cells = append(cells, cell)
			}
			fn(cells, margin)
		}
	}
}

// checkSuppression asserts the small-cell rule on a suppressed cube: no
// shown count under k, and no line with exactly one hidden cell (which
// subtraction from the margin would reveal).
func checkSuppression(t *testing.T, c *cube, hidden map[[3]int]bool, k int) {
	t.Helper()
	for key, n := range c.count {
		if n > 0 && n < k && !hidden[key] {
			t.Fatalf("count %d under k=%d shown at %v", n, k, key)
		}
	}
	c.lines(func(cells [][3]int, margin [3]int) {
		h := 0
		if hidden[margin] {
			h++
		}
		for _, cell := range cells {
			if hidden[cell] {
				h++
			}
		}
		if h == 1 {
			t.Fatalf("line %v (margin %v) has exactly one hidden cell: it can be recovered by subtraction", cells, margin)
		}
	})
}

func TestSmallCellSuppression(t *testing.T) {
	// One dimension: 2 is hidden, and so is the next smallest, 10.
	c := newCube([]int{3})
	for i, n := range []int{2, 10, 12} {
		c.add([3]int{i, -1, -1}, n)
	}
	hidden := c.suppress(5, false)
	if !hidden[[3]int{0, -1, -1}] || !hidden[[3]int{1, -1, -1}] || hidden[[3]int{2, -1, -1}] || len(hidden) != 2 {
		t.Fatalf("1-D: hidden %v", hidden)
	}
	checkSuppression(t, c, hidden, 5)

	// Random tables of two and three dimensions.
	rng := rand.New(rand.NewSource(1))
	for trial := 0; trial < 300; trial++ {
		dims := 2 + trial%2
		sizes := make([]int, dims)
		for i := range sizes {
			sizes[i] = 2 + rng.Intn(3)
		}
		c := newCube(sizes)
		for _, key := range c.cells() {
			full := true
			for i := range sizes {
				full = full && key[i] >= 0
			}
			if full {
				c.add(key, []int{0, 1, 2, 3, 4, 6, 9, 15}[rng.Intn(8)])
			}
		}
		k := 3 + rng.Intn(3)
		checkSuppression(t, c, c.suppress(k, false), k)
	}
}

// Differencing: the same data asked by district alone and by district and
// sex hides the same district totals, so subtracting one answer from the
// other reveals nothing the rule hides.
func TestSuppressionDifferencing(t *testing.T) {
	counts := [][]int{{1, 9}, {7, 8}, {3, 3}, {20, 2}} // district x sex
	two := newCube([]int{4, 2})
	one := newCube([]int{4})
	for d, row := range counts {
		for s, n := range row {
			two.add([3]int{d, s, -1}, n)
			one.add([3]int{d, -1, -1}, n)
		}
	}
	h2, h1 := two.suppress(5, false), one.suppress(5, false)
	checkSuppression(t, two, h2, 5)
	checkSuppression(t, one, h1, 5)
	for d := -1; d < 4; d++ {
		if h1[[3]int{d, -1, -1}] != h2[[3]int{d, -1, -1}] {
			t.Fatalf("district %d is hidden in one query and shown in the other", d)
		}
	}
	// The district with 1 and 9: 1 is hidden; 9 must be too, or 10 - 9 = 1.
	if !h2[[3]int{0, 0, -1}] || !h2[[3]int{0, 1, -1}] {
		t.Fatalf("district 0: hidden %v", h2)
	}
}

// In JSON, counts and measures are numbers; a suppressed cell says so.
func TestAggregateCellJSON(t *testing.T) {
	v := "12.5"
	for _, c := range []struct {
		cell AggregateCell
		want string
	}{
		{AggregateCell{Keys: []string{"north", ""}, Count: "12", Value: &v}, `{"keys":["north",""],"count":12,"suppressed":false,"value":12.5}`},
		{AggregateCell{Keys: []string{"south", ""}, Count: "<5"}, `{"keys":["south",""],"count":null,"suppressed":true,"shown":"<5"}`},
		{AggregateCell{Keys: []string{"east", ""}, Count: "0"}, `{"keys":["east",""],"count":0,"suppressed":false}`},
	} {
		b, err := json.Marshal(c.cell)
		if err != nil || strings.ReplaceAll(string(b), `\u003c`, "<") != c.want {
			t.Errorf("%+v: %s %v, want %s", c.cell, b, err, c.want)
		}
	}
}
