package server

import (
	"encoding/csv"
	"io"
	"sort"
	"strings"

	"github.com/haven-org/haven/app"
	"rsc.io/qr"
)

// qrPNG draws text as a QR code, at the error correction level Central's
// app-user codes use (L), large enough to scan from a screen.
func qrPNG(text string) ([]byte, error) {
	code, err := qr.Encode(text, qr.L)
	if err != nil {
		return nil, err
	}
	code.Scale = 6
	return code.PNG(), nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// writeInventoryCSV writes a record of processing as CSV, one field a line.
func writeInventoryCSV(w io.Writer, inv *app.Inventory) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"form", "version", "field", "type", "purpose", "sensitivity", "effective_sensitivity", "legal_basis", "retention", "who_may_read", "where_stored"})
	for _, it := range inv.Items {
		cw.Write([]string{it.Form, it.Version, it.Field, it.Type, it.Purpose, string(it.Sensitivity), string(it.Effective), it.LegalBasis, it.Retention, strings.Join(it.Readers, "; "), it.Storage})
	}
	cw.Flush()
	return cw.Error()
}
