package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/haven-org/haven"
)

// auditCmd runs `haven audit verify`: it recomputes the audit chain from the
// data directory and exits non-zero, naming the first broken event, when it
// does not hold.
func auditCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		return haven.Errorf(haven.EINVALID, "usage: haven audit verify [--data DIR] [--head FILE]")
	}
	fs, data := flags("audit verify", stderr)
	head := fs.String("head", "", "check against a copy of the trail's signed head (audit-head.json) kept elsewhere")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	st, err := data.openExisting(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	v, err := st.VerifyAudit(ctx, *head)
	if err != nil {
		return err
	}
	if !v.OK {
		return haven.Errorf(haven.ECONFLICT, "The audit trail does not verify: %s. %d events before it verify. Treat the database as tampered with: keep a copy, and compare with a backup.", v.Reason, v.Events)
	}
	fmt.Fprintf(stdout, "The audit trail verifies: %d events, unbroken", v.Events)
	if v.Head != nil {
		fmt.Fprintf(stdout, ", reaching its head (event %d, signed %s)", v.Head.ID, v.Head.At.Format(time.RFC3339))
	}
	fmt.Fprintln(stdout, ".")
	return nil
}
