package faulttest

import (
	"fmt"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"
)

// registerModel is one key as a register: a Store sets it, a Store whose
// outcome is unknown sets it or not, a Get reads it ("" when NotFound).
var registerModel = porcupine.NondeterministicModel{
	Init: func() []any { return []any{""} },
	Step: func(state, input, output any) []any {
		in := input.(Op)
		switch {
		case in.Indeterminate():
			return []any{state, in.Val}
		case in.Store:
			return []any{in.Val}
		case output.(string) == state.(string):
			return []any{state}
		}
		return nil
	},
	DescribeOperation: func(input, output any) string {
		in := input.(Op)
		if in.Store {
			return fmt.Sprintf("store(%q)", in.Val)
		}
		return fmt.Sprintf("get() -> %q", output)
	},
}

// Linearizable checks every key's history that no replica fault excused
// (v.Excused) with porcupine, the checker of etcd's robustness tests: a
// Store that timed out took effect within its call or never (a replica
// applies no call whose deadline passed; a second is added for the
// deadline's trip to the server); a Store refused, or a Get that failed,
// did nothing. It returns the keys whose history is not
// linearizable, and how many it checked and could not decide in time.
func (w Workload) Linearizable(h *History, v Verdict, timeout time.Duration) (illegal []string, checked, unknown int) {
	h.mu.Lock()
	byKey := map[string][]porcupine.Operation{}
	for _, o := range h.Ops {
		k := o.Tenant + "/" + o.Key
		if v.Excused[k] {
			continue
		}
		op := porcupine.Operation{Input: o, Call: o.Start.UnixNano(), Return: o.End.UnixNano(), Output: o.Val}
		switch {
		case o.Acked():
		case o.Indeterminate():
			op.Return = o.End.Add(time.Second).UnixNano()
		case !o.Store && (o.Code == codes.OK || o.Code == codes.NotFound):
		default:
			continue
		}
		byKey[k] = append(byKey[k], op)
	}
	h.mu.Unlock()
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		checked++
		switch porcupine.CheckOperationsTimeout(registerModel.ToModel(), byKey[k], timeout) {
		case porcupine.Illegal:
			illegal = append(illegal, k)
		case porcupine.Unknown:
			unknown++
		}
	}
	return illegal, checked, unknown
}
