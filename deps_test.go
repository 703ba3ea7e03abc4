package haven_test

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// Haven's layers point one way: cmd/haven wires everything; server (HTTP)
// calls the application layer (app) and nothing below it; app decides
// rights, clearances and the audit trail over storage, formspec and the
// export writers; export, formspec and storage know nothing of the layers
// above them; the domain package at the root imports nothing of Haven's.
//
// allowed lists, for each of Haven's packages, the Haven packages it may
// import directly; a new package must be placed here before the test passes.
var allowed = map[string][]string{
	"":                          {},
	"migrations":                {},
	"formspec":                  {""},
	"formspec/xlsform":          {"", "formspec"},
	"formspec/xlsform/xlsxtest": {"formspec/xlsform"},
	"export":                    {"", "formspec"},
	"storage":                   {"", "migrations"},
	"storage/miniotest":         {"storage"},
	"storage/pgtest":            {"storage/miniotest"}, // Announce, shared with MinIO's installs
	"storage/storagetest":       {"storage/pgtest"},
	"app":                       {"", "formspec", "formspec/xlsform", "export", "storage"},
	"server":                    {"", "app"},
	"clients/collect":           {},
	"clients/rest":              {""},
	"clients/loadgen":           {"clients/collect", "formspec"},
	"cmd/haven":                 {"", "app", "server", "storage", "formspec/xlsform", "clients/loadgen", "clients/rest", "clients/collect"}, // collect: the soak submits as a device
}

// neverBelow are packages that must not reach the named ones even
// indirectly: what is below a layer never depends on what is above it.
var neverBelow = map[string][]string{
	"formspec": {"storage", "app", "server", "export"},
	"export":   {"storage", "app", "server"},
	"storage":  {"formspec", "export", "app", "server"},
	"app":      {"server"},
}

const module = "github.com/haven-org/haven"

func rel(path string) (string, bool) {
	if path == module {
		return "", true
	}
	r, ok := strings.CutPrefix(path, module+"/")
	return r, ok
}

func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for {
		var p struct {
			ImportPath string
			Imports    []string
			Deps       []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		name, _ := rel(p.ImportPath)
		may, known := allowed[name]
		if !known {
			t.Errorf("package %q is not placed in the layers (deps_test.go): add it to allowed", name)
			continue
		}
		seen++
		ok := map[string]bool{}
		for _, a := range may {
			ok[a] = true
		}
		for _, imp := range p.Imports {
			if r, ours := rel(imp); ours && !ok[r] {
				t.Errorf("%q imports %q, which it may not (allowed: %q)", name, r, may)
			}
		}
		for _, dep := range p.Deps {
			r, ours := rel(dep)
			for _, banned := range neverBelow[name] {
				if ours && r == banned {
					t.Errorf("%q depends on %q, even if indirectly: a lower layer must not reach a higher one", name, banned)
				}
			}
		}
	}
	if seen < 10 {
		t.Fatalf("only %d packages listed: go list did not see the module", seen)
	}
}
