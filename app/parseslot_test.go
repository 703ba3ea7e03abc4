package app

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestParseSlot(t *testing.T) {
	s := &Service{Limits: Limits{ParseBudget: 100}}
	ctx := context.Background()
	// A document larger than the whole budget takes all of it, not forever.
	all, err := s.parseSlot(ctx, 1000)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := s.parseSlot(short, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a full budget let a request in: %v", err)
	}
	all()
	// Once given back, the budget serves two that fit in it together.
	// (Bounded, so that a budget never given back fails instead of hanging.)
	ctx, stop := context.WithTimeout(ctx, 10*time.Second)
	defer stop()
	a, err := s.parseSlot(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.parseSlot(ctx, 40)
	if err != nil {
		t.Fatal(err)
	}
	a()
	b()
	// No budget: nobody waits.
	free := &Service{}
	for range 3 {
		if _, err := free.parseSlot(short, 1<<30); err != nil {
			t.Fatalf("without a budget: %v", err)
		}
	}
}
