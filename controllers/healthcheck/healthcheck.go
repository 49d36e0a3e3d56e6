// Package healthcheck compiles and evaluates a NodeTask's rollout.healthChecks: CEL
// expressions over cluster objects, with the API server's CEL environment and per-call cost
// limit. It reads no object itself: the reconciler reads the objects a check names and
// passes them in, so everything here is tested from literals.
package healthcheck

import (
	"fmt"
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"k8s.io/apimachinery/pkg/util/version"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/cel/environment"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// envSet is the API server's base CEL environment (its libraries: lists, strings, regex,
// quantity, semver...) with `object` bound to the object read, as a dynamic value. Built
// once: Extend is expensive.
var envSet = func() *environment.EnvSet {
	s, err := environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()).Extend(environment.VersionedOptions{
		IntroducedVersion: version.MajorMinor(1, 0),
		EnvOptions:        []cel.EnvOption{cel.Variable("object", cel.DynType)},
	})
	if err != nil {
		panic(err) // a fixed declaration
	}
	return s
}()

// CostLimit is the runtime cost one evaluation may spend: the API server's per-call limit
// for its own CEL rules (about a tenth of a second).
const CostLimit = celconfig.PerCallLimit

// Program is one compiled health check.
type Program struct {
	// Name is the check's name.
	Name string
	prg  cel.Program
	// expr is the expression's text: an error may name what it holds (errorMessage).
	expr string
}

// Compile compiles a task's health checks. The error names the first check that does not
// compile or does not return a bool, with the compiler's message, for the task's condition.
func Compile(checks []ntv1.HealthCheck) ([]*Program, error) {
	env := envSet.NewExpressionsEnv()
	out := make([]*Program, 0, len(checks))
	for _, c := range checks {
		ast, iss := env.Compile(c.Expression)
		if iss.Err() != nil {
			return nil, fmt.Errorf("spec.rollout.healthChecks[%s].expression does not compile: %v", c.Name, iss.Err())
		}
		if !ast.OutputType().IsExactType(types.BoolType) && !ast.OutputType().IsExactType(types.DynType) {
			return nil, fmt.Errorf("spec.rollout.healthChecks[%s].expression must return a bool, not %s", c.Name, ast.OutputType())
		}
		prg, err := env.Program(ast, cel.CostLimit(CostLimit), cel.InterruptCheckFrequency(100))
		if err != nil {
			return nil, fmt.Errorf("spec.rollout.healthChecks[%s].expression: %v", c.Name, err)
		}
		out = append(out, &Program{Name: c.Name, prg: prg, expr: c.Expression})
	}
	return out, nil
}

// Result is one evaluation of a check.
type Result struct {
	Name    string
	Healthy bool
	// Message says why the check did not hold, never what the objects hold.
	Message string
}

// Eval evaluates the check over the objects read for it (one for a check by name; every one
// a selector picked): it holds when the expression returns true for each, and there is at
// least one.
func (p *Program) Eval(objects []map[string]any) Result {
	r := Result{Name: p.Name}
	if len(objects) == 0 {
		r.Message = "no object matches"
		return r
	}
	falses := 0
	for _, obj := range objects {
		v, _, err := p.prg.Eval(map[string]any{"object": obj})
		if err != nil {
			r.Message = errorMessage(err, p.expr)
			return r
		}
		b, ok := v.Value().(bool)
		if !ok {
			r.Message = fmt.Sprintf("the expression returned a %s, not a bool", v.Type())
			return r
		}
		if !b {
			falses++
		}
	}
	switch {
	case falses == 0:
		r.Healthy = true
	case len(objects) == 1:
		r.Message = "the expression is false"
	default:
		r.Message = fmt.Sprintf("the expression is false for %d of the %d objects selected", falses, len(objects))
	}
	return r
}

// errorMessage says why an evaluation failed without what the object holds. Some of CEL's
// messages quote a value they were given, and that value may come from the object: a regular
// expression or URL that does not parse ("error parsing regexp: ...: `value`"), a map key read
// from the object ("no such key: value"), an index out of range. Only messages known to hold
// types, the cost limit, or a key the expression itself spells out are shown; any other is
// replaced by a fixed text.
func errorMessage(err error, expr string) string {
	msg := err.Error()
	const failed = "the expression failed: "
	switch {
	case strings.Contains(msg, "cost limit exceeded"):
		return failed + msg // "operation cancelled: actual cost limit exceeded"
	case strings.HasPrefix(msg, "no such key: "):
		if key := strings.TrimPrefix(msg, "no such key: "); key != "" && strings.Contains(expr, key) {
			return failed + msg // a field the expression names, such as status.numberUnavailable
		}
		return failed + "no such key (a key taken from the object, not shown)"
	case strings.HasPrefix(msg, "type conversion error from "), // types only
		strings.HasPrefix(msg, "no such overload"), strings.HasPrefix(msg, "no matching overload"),
		msg == "division by zero", msg == "modulus by zero":
		return failed + msg
	}
	return failed + "an error whose message could show the object's content, so it is not shown " +
		"(a value from the object that does not parse, an index out of range...)"
}
