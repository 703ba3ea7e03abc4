package main

import (
	"context"
	"fmt"
	"io"

	"github.com/haven-org/haven"
)

// auditCmd runs `haven audit verify`: it recomputes the audit chain from the
// data directory and exits non-zero, naming the first broken event, when it
// does not hold.
func auditCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		return haven.Errorf(haven.EINVALID, "usage: haven audit verify [--data DIR]")
	}
	fs, data := flags("audit verify", stderr)
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	st, err := data.open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	v, err := st.Audit.Verify(ctx)
	if err != nil {
		return err
	}
	if !v.OK {
		return haven.Errorf(haven.ECONFLICT, "The audit trail does not verify: %s. %d events before it verify. Treat the database as tampered with: keep a copy, and compare with a backup.", v.Reason, v.Events)
	}
	fmt.Fprintf(stdout, "The audit trail verifies: %d events, unbroken.\n", v.Events)
	return nil
}
