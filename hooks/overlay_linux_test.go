package hooks

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestOverlay(t *testing.T) {
	ext4 := func(string) (string, error) { return "ext4", nil }
	tests := []struct {
		name       string
		cmdline    string
		sys        func(f *fakes)
		wantMounts []fakeMount
		wantCalls  []string // the mkdir and rm calls, in order
		summary    string
		wantErr    string
	}{
		{
			name:    "tmpfs",
			cmdline: "nbd_server=10.0.0.1 root=/dev/nbd0 rw nbdroot.overlay=tmpfs",
			wantMounts: []fakeMount{
				{"tmpfs", "/run/nbdroot/overlay", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
				{"/newroot", "/run/nbdroot/lower", "", unix.MS_MOVE, ""},
				{"overlay", "/newroot", "overlay", 0, "lowerdir=/run/nbdroot/lower,upperdir=/run/nbdroot/overlay/upper,workdir=/run/nbdroot/overlay/work"},
			},
			wantCalls: []string{"mkdir /run/nbdroot/overlay", "mkdir /run/nbdroot/overlay/upper", "mkdir /run/nbdroot/overlay/work", "mkdir /run/nbdroot/lower"},
			summary:   "/ = overlay of /dev/nbd0 (read-only) and tmpfs",
		},
		{
			name:    "tmpfs with a size",
			cmdline: "nbd_server=10.0.0.1 root=/dev/nbd0p1 nbdroot.overlay=tmpfs:512M",
			wantMounts: []fakeMount{
				{"tmpfs", "/run/nbdroot/overlay", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755,size=512m"},
				{"/newroot", "/run/nbdroot/lower", "", unix.MS_MOVE, ""},
				{"overlay", "/newroot", "overlay", 0, "lowerdir=/run/nbdroot/lower,upperdir=/run/nbdroot/overlay/upper,workdir=/run/nbdroot/overlay/work"},
			},
			summary: "/ = overlay of /dev/nbd0p1 (read-only) and tmpfs of 512m",
		},
		{
			name:    "a local disk, emptied",
			cmdline: "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.overlay=LABEL=scratch",
			sys:     func(f *fakes) { f.blocks.find = func(string) (string, error) { return "/dev/vda1", nil } },
			wantMounts: []fakeMount{
				{"/dev/vda1", "/run/nbdroot/overlay", "ext4", unix.MS_NOSUID | unix.MS_NODEV, ""},
				{"/newroot", "/run/nbdroot/lower", "", unix.MS_MOVE, ""},
				{"overlay", "/newroot", "overlay", 0, "lowerdir=/run/nbdroot/lower,upperdir=/run/nbdroot/overlay/nbdroot-overlay/upper,workdir=/run/nbdroot/overlay/nbdroot-overlay/work"},
			},
			wantCalls: []string{"mkdir /run/nbdroot/overlay", "rm -r /run/nbdroot/overlay/nbdroot-overlay",
				"mkdir /run/nbdroot/overlay/nbdroot-overlay/upper", "mkdir /run/nbdroot/overlay/nbdroot-overlay/work", "mkdir /run/nbdroot/lower"},
			summary: "/ = overlay of /dev/nbd0 (read-only) and /dev/vda1 (ext4)",
		},
		{
			name:    "the disk never appears",
			cmdline: "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.overlay=/dev/vda rootdelay=1",
			sys: func(f *fakes) {
				f.blocks.ready = func(p string) (bool, error) { return p != "/dev/vda", nil }
			},
			wantErr: "overlay hook failed: wait for the overlay's disk (rootdelay= waits longer): /dev/vda did not appear within 1s: no such device (parameter nbdroot.overlay=/dev/vda)",
		},
		{
			name:    "overlayfs refused: the root goes back",
			cmdline: "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.overlay=tmpfs",
			sys: func(f *fakes) {
				f.files.mountErr = func(_, _, fstype string) error {
					if fstype == "overlay" {
						return unix.ENODEV
					}
					return nil
				}
			},
			wantMounts: []fakeMount{
				{"tmpfs", "/run/nbdroot/overlay", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
				{"/newroot", "/run/nbdroot/lower", "", unix.MS_MOVE, ""},
				{"/run/nbdroot/lower", "/newroot", "", unix.MS_MOVE, ""},
			},
			wantErr: "overlay hook failed: mount overlayfs (lowerdir=/run/nbdroot/lower,upperdir=/run/nbdroot/overlay/upper,workdir=/run/nbdroot/overlay/work) on /newroot: no such device (parameter nbdroot.overlay=tmpfs)",
		},
		{
			name:    "no overlay asked",
			cmdline: "nbd_server=10.0.0.1 root=/dev/nbd0",
			summary: "no nbdroot.overlay=",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys := newFakes()
			if tt.sys != nil {
				tt.sys(sys)
			}
			s, _, err := newTestState(tt.cmdline, sys)
			if err != nil {
				t.Fatal(err)
			}
			s.NewRoot = "/newroot"
			if s.Plan.Overlay != nil && s.Root().RW {
				t.Error("the root is to be mounted read-write under an overlay")
			}
			err = Overlay{Probe: ext4}.Run(context.Background(), s)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v\nwant %s", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantMounts, sys.files.mounts); diff != "" {
				t.Errorf("mounts (-want +got):\n%s", diff)
			}
			if tt.wantCalls != nil {
				var calls []string
				for _, c := range sys.files.calls {
					if strings.HasPrefix(c, "mkdir") || strings.HasPrefix(c, "rm") {
						calls = append(calls, c)
					}
				}
				if diff := cmp.Diff(tt.wantCalls, calls); diff != "" {
					t.Errorf("calls (-want +got):\n%s", diff)
				}
			}
			if tt.wantErr == "" {
				if got := (Overlay{}).Summary(s); got != tt.summary {
					t.Errorf("summary %q, want %q", got, tt.summary)
				}
			}
		})
	}
}

func TestOverlayNeedsAMountedRoot(t *testing.T) {
	s, _, err := newTestState("nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.overlay=tmpfs", newFakes())
	if err != nil {
		t.Fatal(err)
	}
	err = Overlay{}.Run(context.Background(), s)
	if err == nil || !strings.Contains(err.Error(), "the overlay hook must come after filesystems") {
		t.Errorf("err = %v", err)
	}
}

func TestCheckImageHooks(t *testing.T) {
	s, _, err := newTestState("nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.overlay=tmpfs:1g", newFakes())
	if err != nil {
		t.Fatal(err)
	}
	s.Hooks = []string{"base", "udev", "net", "nbd", "filesystems"}
	err = checkImageHooks(s)
	var f *Failure
	if !errors.As(err, &f) || f.Hook != "overlay" || f.Param != "nbdroot.overlay=tmpfs:1g" || !strings.Contains(err.Error(), "this image has no overlay hook") {
		t.Errorf("err = %v", err)
	}
	s.Hooks = append(s.Hooks, "overlay")
	if err := checkImageHooks(s); err != nil {
		t.Errorf("with the hook: %v", err)
	}
}
