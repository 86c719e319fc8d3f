package hooks

import (
	"context"
	"errors"
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type stubHook struct {
	name string
	err  error
	ran  *[]string
	pan  bool
}

func (h stubHook) Name() string { return h.name }
func (h stubHook) Run(ctx context.Context, s *State) error {
	*h.ran = append(*h.ran, h.name)
	if h.pan {
		panic("boom")
	}
	return h.err
}

func TestRun(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name     string
		hooks    []stubHook
		brk      string
		wantRan  []string
		wantHook string // hook named in the failure; "" = success
		wantErr  error
	}{
		{name: "all succeed", hooks: []stubHook{{name: "a"}, {name: "b"}}, wantRan: []string{"a", "b"}},
		{name: "second fails", hooks: []stubHook{{name: "a"}, {name: "b", err: boom}, {name: "c"}},
			wantRan: []string{"a", "b"}, wantHook: "b", wantErr: boom},
		{name: "panic becomes a failure", hooks: []stubHook{{name: "a", pan: true}, {name: "b"}},
			wantRan: []string{"a"}, wantHook: "a"},
		{name: "break before b", hooks: []stubHook{{name: "a"}, {name: "b"}}, brk: "b",
			wantRan: []string{"a"}, wantHook: "b", wantErr: ErrBreak},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ran []string
			var hooks []Hook
			for _, h := range tt.hooks {
				h.ran = &ran
				hooks = append(hooks, h)
			}
			s, buf, err := newTestState("ip=::::::dhcp nbd_server=10.0.0.1 root=/dev/nbd0", newFakes())
			if err != nil {
				t.Fatal(err)
			}
			s.Plan.Break = tt.brk
			err = Run(context.Background(), hooks, s)
			if diff := cmp.Diff(tt.wantRan, ran); diff != "" {
				t.Errorf("hooks run (-want +got):\n%s", diff)
			}
			if tt.wantHook == "" {
				if err != nil {
					t.Fatalf("Run = %v", err)
				}
			} else {
				var f *Failure
				if !errors.As(err, &f) || f.Hook != tt.wantHook {
					t.Fatalf("Run = %v, want a failure of %s", err, tt.wantHook)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Fatalf("Run = %v, want %v", err, tt.wantErr)
				}
			}
			// One timeline line per hook that ran: name, duration, uptime.
			lines := regexp.MustCompile(`(?m)^nbdroot: \[ +1\.500\] stage (\S+) +\d+\.\d{3}s`).FindAllStringSubmatch(buf.String(), -1)
			if len(lines) != len(ran) {
				t.Errorf("timeline has %d stage lines for %d hooks:\n%s", len(lines), len(ran), buf)
			}
		})
	}
}

func TestFailureMessage(t *testing.T) {
	f := &Failure{Hook: "nbd", Param: "nbd_server=10.0.0.1:10809", Tried: "connect", Err: errors.New("connection refused")}
	want := "nbd hook failed: connect: connection refused (parameter nbd_server=10.0.0.1:10809)"
	if got := f.Error(); got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}
