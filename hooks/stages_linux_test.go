package hooks

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestFilesystems(t *testing.T) {
	tests := []struct {
		name      string
		cmdline   string
		crypt     string
		sys       func(f *fakes)
		wantMount fakeMount
		wantErr   string
	}{
		{
			name:      "read-only by default, fstype probed",
			cmdline:   "ip=dhcp nbd_server=10.0.0.1 root=/dev/nbd0",
			wantMount: fakeMount{"/dev/nbd0", "/newroot", "ext4", unix.MS_RDONLY, ""},
		},
		{
			name:      "rw with flags and fstype",
			cmdline:   "ip=dhcp nbd_server=10.0.0.1 root=/dev/nbd0 rw rootfstype=xfs rootflags=noatime",
			wantMount: fakeMount{"/dev/nbd0", "/newroot", "xfs", 0, "noatime"},
		},
		{
			name:      "the unlocked mapper device",
			cmdline:   "ip=dhcp nbd_server=10.0.0.1 cryptdevice=/dev/nbd0:nbdcrypt root=/dev/mapper/nbdcrypt",
			crypt:     "/dev/mapper/nbdcrypt",
			wantMount: fakeMount{"/dev/mapper/nbdcrypt", "/newroot", "ext4", unix.MS_RDONLY, ""},
		},
		{
			name:      "by label",
			cmdline:   "ip=dhcp nbd_server=10.0.0.1 root=LABEL=thin",
			sys:       func(f *fakes) { f.blocks.find = func(spec string) (string, error) { return "/dev/nbd0p2", nil } },
			wantMount: fakeMount{"/dev/nbd0p2", "/newroot", "ext4", unix.MS_RDONLY, ""},
		},
		{
			name:    "device never appears",
			cmdline: "ip=dhcp nbd_server=10.0.0.1 root=/dev/nbd0p1 rootdelay=1",
			sys:     func(f *fakes) { f.blocks.ready = func(string) (bool, error) { return false, os.ErrNotExist } },
			wantErr: "filesystems hook failed: wait for the root device (rootdelay= waits longer): /dev/nbd0p1 did not appear within 1s: no such device (parameter root=/dev/nbd0p1)",
		},
		{
			name:    "mount refused",
			cmdline: "ip=dhcp nbd_server=10.0.0.1 root=/dev/nbd0",
			sys:     func(f *fakes) { f.files.mountErr = func(string, string, string) error { return unix.EINVAL } },
			wantErr: "filesystems hook failed: mount /dev/nbd0 (ext4, ro) on /newroot: invalid argument (parameter root=/dev/nbd0)",
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
			s.CryptDevice = tt.crypt
			err = Filesystems{Probe: func(string) (string, error) { return "ext4", nil }}.Run(context.Background(), s)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("got error %v\nwant        %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]fakeMount{tt.wantMount}, sys.files.mounts); diff != "" {
				t.Errorf("mounts (-want +got):\n%s", diff)
			}
		})
	}
}

func TestResolveIn(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"sbin", "lib/systemd", "usr/bin"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.WriteFile(filepath.Join(root, "lib/systemd/systemd"), []byte("#!"), 0o755)
	os.WriteFile(filepath.Join(root, "usr/bin/data"), []byte("x"), 0o644)
	os.Symlink("/lib/systemd/systemd", filepath.Join(root, "sbin/init"))  // absolute, as Debian has it
	os.Symlink("../lib/systemd/systemd", filepath.Join(root, "sbin/rel")) // relative
	os.Symlink("/sbin/loop", filepath.Join(root, "sbin/loop"))
	os.Symlink("usr/bin", filepath.Join(root, "bin")) // merged /usr
	tests := []struct {
		path, want, wantErr string
	}{
		{"/sbin/init", "/lib/systemd/systemd", ""},
		{"/sbin/rel", "/lib/systemd/systemd", ""},
		{"/bin/data", "", "not an executable file"},
		{"/sbin/none", "", "does not exist"},
		{"/sbin/loop", "", "too many levels"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, err := resolveIn(root, tt.path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("resolveIn(%s) = %q, %v; want error containing %q", tt.path, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("resolveIn(%s) = %q, %v; want %q", tt.path, got, err, tt.want)
			}
		})
	}
}

func TestInitEnv(t *testing.T) {
	got := initEnv([]string{"HOME=/", "TERM=vt100", "nbd_server=10.0.0.1"})
	want := []string{"HOME=/", "TERM=vt100", "nbd_server=10.0.0.1", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
