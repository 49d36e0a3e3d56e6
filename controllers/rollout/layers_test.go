package rollout

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"slices"
	"strings"
	"testing"
)

// layers is the package's files from the bottom up: each file uses only names declared in
// files before it, so the package reads from the top (ComputePlan, ComputeStatus) down to
// its vocabulary without ever returning to a file already left. docs/architecture.md says
// what each layer holds; a new file takes its place here.
var layers = []string{
	"requests.go",        // what the decisions ask of the reconciler, and what it observed and did
	"messages.go",        // "a, b, c (N more)"
	"runs.go",            // revision, current run, stored entries
	"window.go",          // spec.window
	"admission.go",       // the API server's verdict on the run's pods
	"node_state.go",      // the values one node's step is made of
	"pods.go",            // the pods a run makes
	"results.go",         // a pod's result as an entry
	"targets.go",         // which nodes are targets, and counts by phase
	"node_lifecycle.go",  // one node's run: its entry, retries, deadlines, deletions
	"maintenance.go",     // the claim, cordon, drain and restart around the run
	"node_patch.go",      // node patches for the maintenance's operations
	"node_step.go",       // one node's step: shouldStart, the entry, the one action
	"status_size.go",     // the status's size budget
	"status_changes.go",  // whether a status write changes anything
	"write_budget.go",    // when progress is written, and where the entries live
	"batches.go",         // rollout.firstBatch and the approval after it
	"health.go",          // rollout.healthChecks: the gate and its status
	"plan.go",            // ComputePlan: every node's step, cut by slots and one gate
	"nodetask_status.go", // ComputeStatus: the whole status
}

// TestFilesUseOnlyFilesBelow keeps the package layered as listed in layers: a use of a
// package-level name (function, type, variable, constant, or a method by its name) declared
// in a file higher up fails, as does a file missing from the list.
func TestFilesUseOnlyFilesBelow(t *testing.T) {
	fset := token.NewFileSet()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]*ast.File{}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		if !slices.Contains(layers, name) {
			t.Errorf("%s is not in layers: give it its place", name)
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = f
	}

	declared, methods := map[string]string{}, map[string]string{}
	for name, f := range files {
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv != nil {
					methods[d.Name.Name] = name
				} else {
					declared[d.Name.Name] = name
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						declared[s.Name.Name] = name
					case *ast.ValueSpec:
						for _, n := range s.Names {
							declared[n.Name] = name
						}
					}
				}
			}
		}
	}

	layer := func(file string) int { return slices.Index(layers, file) }
	for name, f := range files {
		imports := map[string]bool{}
		for _, imp := range f.Imports {
			p := strings.Trim(imp.Path.Value, `"`)
			local := p[strings.LastIndex(p, "/")+1:]
			if imp.Name != nil {
				local = imp.Name.Name
			}
			imports[local] = true
		}
		reported := map[string]bool{}
		use := func(id string, in string) {
			if in == "" || in == name || layer(in) < layer(name) || reported[id] {
				return
			}
			reported[id] = true
			t.Errorf("%s uses %s from %s, a file above it in layers", name, id, in)
		}
		var visit func(n ast.Node) bool
		visit = func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.SelectorExpr:
				if x, ok := n.X.(*ast.Ident); ok && imports[x.Name] {
					return false // another package's name
				}
				use(n.Sel.Name, methods[n.Sel.Name])
			case *ast.KeyValueExpr:
				if _, ok := n.Key.(*ast.Ident); ok {
					// A field's name in a composite literal is not a package-level name.
					ast.Inspect(n.Value, visit)
					return false
				}
			case *ast.Ident:
				use(n.Name, declared[n.Name])
			}
			return true
		}
		ast.Inspect(f, visit)
	}
}
