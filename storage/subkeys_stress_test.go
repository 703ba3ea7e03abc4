package storage_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
)

// Erasures while submissions keep arriving never touch another
// submission's key, and reads under way meanwhile leave the erased out.
func TestErasuresAmidArrivals(t *testing.T) {
	st := open(t, t.TempDir())
	pr, f := filled(t, st, 1, "BUSY", time.Now().AddDate(1, 0, 0))
	u := int64(1)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 150; i++ {
				id := fmt.Sprintf("uuid:w%d-%d", w, i)
				xml := fmt.Sprintf(`<d id="d" version="1"><name>N</name><meta><instanceID>%s</instanceID></meta></d>`, id)
				_, err := st.Submissions.Ingest(ctx, &storage.Incoming{ProjectID: pr.ID, FormID: f.ID, FormVersionID: f.CurrentVersionID,
					InstanceID: id, XML: []byte(xml), SubmitterID: u, DeviceID: "d", Subject: fmt.Sprintf("S-%d-%d", w, i),
					Consent: &haven.ConsentRecord{Outcome: haven.ConsentGiven, LegalBasis: "consent", DeviceUserID: u}})
				if err != nil {
					t.Error(err)
					return
				}
				if i%3 == 2 {
					if _, err := st.Submissions.EraseSubject(ctx, st.Blobs, pr.ID, fmt.Sprintf("S-%d-%d", w, i-1), u, nil); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}(w)
	}
	// Readers all along: a submission erased while a read is under way
	// is left out of it, never an error.
	done := make(chan struct{})
	var rg sync.WaitGroup
	for r := 0; r < 2; r++ {
		rg.Add(1)
		go func() {
			defer rg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				if _, _, err := st.Submissions.List(ctx, pr.ID, f.ID, -1, 0); err != nil {
					t.Errorf("listing during erasures: %v", err)
					return
				}
				err := st.Submissions.Each(ctx, pr.ID, f.ID, storage.Filter{}, func(*haven.Submission, storage.SealedXML, *haven.ConsentRecord) error { return nil })
				if err != nil {
					t.Errorf("walking during erasures: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	rg.Wait()
	subs, n, err := st.Submissions.List(ctx, pr.ID, f.ID, -1, 0)
	if err != nil {
		t.Fatalf("listing after erasures: %v", err)
	}
	for _, s := range subs {
		if _, err := st.Submissions.XML(ctx, pr.ID, &s.Current); err != nil {
			t.Fatalf("%s: %v", s.InstanceID, err)
		}
	}
	if n != 1+4*100 {
		t.Fatalf("%d submissions left", n)
	}
}
