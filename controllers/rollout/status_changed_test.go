package rollout

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// jsonDiffers is what statusChanged must agree with: whether the stored JSON would differ.
func jsonDiffers(a, b *ntv1.NodeTaskStatus) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) != string(y)
}

func TestStatusChangedMeansTheJSONDiffers(t *testing.T) {
	at := metav1.NewTime(t0)
	base := func() *ntv1.NodeTaskStatus {
		return &ntv1.NodeTaskStatus{
			ObservedGeneration: 2, Revision: "r", Run: 1, StartTime: &at, Targets: 2, Succeeded: 1, Running: 1,
			Conditions: []metav1.Condition{{Type: ntv1.ConditionReady, Status: metav1.ConditionFalse, Reason: "Progressing", LastTransitionTime: at}},
			Nodes: []ntv1.NodeStatus{
				{Name: "a", Phase: ntv1.NodeSucceeded, Attempts: 1, StartTime: &at, FinishTime: &at, Output: "ok"},
				{Name: "b", Phase: ntv1.NodeRunning, Attempts: 1, StartTime: &at},
			},
		}
	}
	for _, tt := range []struct {
		name   string
		mutate func(*ntv1.NodeTaskStatus)
	}{
		{"same", func(*ntv1.NodeTaskStatus) {}},
		{"a time within the same second", func(s *ntv1.NodeTaskStatus) {
			s.Nodes[0].FinishTime = ptr.To(metav1.NewTime(t0.Add(400 * time.Millisecond)))
		}},
		{"a condition's time within the same second", func(s *ntv1.NodeTaskStatus) {
			s.Conditions[0].LastTransitionTime = metav1.NewTime(t0.Add(999 * time.Millisecond))
		}},
		{"a time a second later", func(s *ntv1.NodeTaskStatus) { s.Nodes[1].StartTime = ptr.To(metav1.NewTime(t0.Add(time.Second))) }},
		{"a time in another zone", func(s *ntv1.NodeTaskStatus) {
			s.StartTime = ptr.To(metav1.NewTime(t0.In(time.FixedZone("x", 3600))))
		}},
		{"empty lists instead of none", func(s *ntv1.NodeTaskStatus) { s.Nodes, s.Conditions = []ntv1.NodeStatus{}, []metav1.Condition{} }},
		{"an exit code 0 instead of none", func(s *ntv1.NodeTaskStatus) { s.Nodes[0].ExitCode = ptr.To[int32](0) }},
		{"an output", func(s *ntv1.NodeTaskStatus) { s.Nodes[1].Output = "x" }},
		{"a phase", func(s *ntv1.NodeTaskStatus) { s.Nodes[1].Phase = ntv1.NodeFailed }},
		{"a count", func(s *ntv1.NodeTaskStatus) { s.Running = 0 }},
		{"a condition message", func(s *ntv1.NodeTaskStatus) { s.Conditions[0].Message = "m" }},
		{"a completion time", func(s *ntv1.NodeTaskStatus) { s.CompletionTime = &at }},
		{"an entry less", func(s *ntv1.NodeTaskStatus) { s.Nodes = s.Nodes[:1] }},
		{"a boot ID", func(s *ntv1.NodeTaskStatus) { s.Nodes[0].BootIDAfter = "2" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, b := base(), base()
			tt.mutate(b)
			if got, want := StatusChanged(a, b), jsonDiffers(a, b); got != want {
				t.Errorf("statusChanged = %v, the JSON differs = %v", got, want)
			}
			if got, want := StatusChanged(b, a), jsonDiffers(b, a); got != want {
				t.Errorf("reversed: statusChanged = %v, the JSON differs = %v", got, want)
			}
		})
	}
}

func BenchmarkStatusChanged(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(CountOf(n, "node"), func(b *testing.B) {
			at := metav1.NewTime(t0)
			st := &ntv1.NodeTaskStatus{Run: 1, Revision: "r"}
			for i := range n {
				st.Nodes = append(st.Nodes, ntv1.NodeStatus{Name: nodeNames(n)[i], Phase: ntv1.NodeSucceeded, Attempts: 1,
					StartTime: &at, FinishTime: &at, Output: "simulated run exited 0"})
			}
			other := st.DeepCopy()
			b.Run("statusChanged", func(b *testing.B) {
				for range b.N {
					if StatusChanged(st, other) {
						b.Fatal("changed")
					}
				}
			})
			// What statusChanged replaced: encoding both and comparing the bytes.
			b.Run("encode both", func(b *testing.B) {
				for range b.N {
					if jsonDiffers(st, other) {
						b.Fatal("changed")
					}
				}
			})
		})
	}
}

// TestSameEntryComparesEveryField sets each field of a node entry in turn: sameEntry must
// see every one of them (a field added to NodeStatus and left out of sameEntry fails here),
// and agree with the JSON.
func TestSameEntryComparesEveryField(t *testing.T) {
	typ := reflect.TypeFor[ntv1.NodeStatus]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		t.Run(f.Name, func(t *testing.T) {
			var a, b ntv1.NodeStatus
			v := reflect.ValueOf(&b).Elem().Field(i)
			switch v.Kind() {
			case reflect.String:
				v.SetString("x")
			case reflect.Int32, reflect.Int64:
				v.SetInt(7)
			case reflect.Pointer:
				v.Set(reflect.New(f.Type.Elem()))
				switch e := v.Interface().(type) {
				case *int32:
					*e = 7
				case *metav1.Time:
					*e = metav1.NewTime(t0)
				default:
					t.Fatalf("field %s: a pointer to %s; teach this test to set it", f.Name, f.Type.Elem())
				}
			default:
				t.Fatalf("field %s of kind %s; teach this test to set it", f.Name, v.Kind())
			}
			if sameEntry(&a, &b) {
				t.Errorf("sameEntry does not compare %s", f.Name)
			}
			sa := &ntv1.NodeTaskStatus{Nodes: []ntv1.NodeStatus{a}}
			sb := &ntv1.NodeTaskStatus{Nodes: []ntv1.NodeStatus{b}}
			if !jsonDiffers(sa, sb) {
				t.Errorf("setting %s does not change the JSON", f.Name)
			}
		})
	}
}
