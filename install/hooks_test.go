package install

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestHookScripts runs the hook scripts with sh the way each package manager runs them,
// with the nbdroot they call replaced by a recorder: the right calls for the right events,
// none for the others.
func TestHookScripts(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	prefix := t.TempDir()
	l := Layout{Prefix: prefix}
	record := filepath.Join(t.TempDir(), "calls")
	os.MkdirAll(filepath.Dir(l.Bin()), 0o755)
	// The recorder also writes to standard output, which the dpkg hooks must send to
	// standard error (debconf may own standard output).
	fake := "#!/bin/sh\necho \"$*\" >> " + record + "\necho summary\n"
	if err := os.WriteFile(l.Bin(), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	scripts := t.TempDir()
	for _, name := range []string{"dpkg-postinst", "dpkg-postrm", "alpm-script", "kernel-install"} {
		os.WriteFile(filepath.Join(scripts, name), l.render(name), 0o755)
	}
	for _, tc := range []struct {
		name   string
		script string
		args   []string
		env    []string
		stdin  string
		want   []string // the calls of nbdroot, one line each
	}{
		{"dpkg postinst by run-parts", "dpkg-postinst", []string{"6.1.0-19-amd64", "/boot/vmlinuz-6.1.0-19-amd64"},
			[]string{"DEB_MAINT_PARAMS=configure"}, "", []string{"install --root / --kernel 6.1.0-19-amd64"}},
		{"dpkg postinst by hand", "dpkg-postinst", []string{"6.1.0-19-amd64"}, nil, "", []string{"install --root / --kernel 6.1.0-19-amd64"}},
		{"dpkg postinst abort-upgrade", "dpkg-postinst", []string{"6.1.0-19-amd64", "/boot/vmlinuz-6.1.0-19-amd64"},
			[]string{"DEB_MAINT_PARAMS=abort-upgrade 6.1.0-19"}, "", nil},
		{"dpkg postrm remove", "dpkg-postrm", []string{"6.1.0-19-amd64", "/boot/vmlinuz-6.1.0-19-amd64"},
			[]string{"DEB_MAINT_PARAMS=remove"}, "", []string{"install --root / --remove-kernel 6.1.0-19-amd64"}},
		{"dpkg postrm purge", "dpkg-postrm", []string{"6.1.0-19-amd64", "/boot/vmlinuz-6.1.0-19-amd64"},
			[]string{"DEB_MAINT_PARAMS=purge"}, "", nil},
		{"dpkg postrm upgrade", "dpkg-postrm", []string{"6.1.0-19-amd64", "/boot/vmlinuz-6.1.0-19-amd64"},
			[]string{"DEB_MAINT_PARAMS=upgrade 6.1.76-1"}, "", nil},
		{"pacman install", "alpm-script", []string{"add"}, nil,
			"usr/lib/modules/6.6.1-arch1-1/vmlinuz\nusr/lib/initcpio/hooks/x\nusr/lib/modules/6.1.62-1-lts/vmlinuz\n",
			[]string{"install --root / --kernel 6.6.1-arch1-1", "install --root / --kernel 6.1.62-1-lts"}},
		{"pacman remove", "alpm-script", []string{"remove"}, nil, "usr/lib/modules/6.6.1-arch1-1/vmlinuz\n",
			[]string{"install --root / --remove-kernel 6.6.1-arch1-1"}},
		{"kernel-install add", "kernel-install", []string{"add", "6.5.6-300.fc39.x86_64", "/boot/efi/x", "/usr/lib/modules/6.5.6-300.fc39.x86_64/vmlinuz"},
			nil, "", []string{"install --root / --kernel 6.5.6-300.fc39.x86_64"}},
		{"kernel-install remove", "kernel-install", []string{"remove", "6.5.6-300.fc39.x86_64", "/boot/efi/x"},
			nil, "", []string{"install --root / --remove-kernel 6.5.6-300.fc39.x86_64"}},
		{"kernel-install inspect", "kernel-install", []string{"inspect"}, nil, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(record)
			cmd := exec.Command(sh, append([]string{filepath.Join(scripts, tc.script)}, tc.args...)...)
			cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, tc.env...)
			cmd.Stdin = strings.NewReader(tc.stdin)
			var stdout strings.Builder
			cmd.Stdout = &stdout
			if err := cmd.Run(); err != nil {
				t.Fatalf("%s: %v", tc.script, err)
			}
			b, _ := os.ReadFile(record)
			got := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(b) == 0 {
				got = nil
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("calls (-want +got):\n-%q\n+%q", tc.want, got)
			}
			if strings.HasPrefix(tc.script, "dpkg") && stdout.Len() > 0 {
				t.Errorf("a dpkg hook wrote to standard output: %q", stdout.String())
			}
		})
	}
}

// TestTemplates: every file renders with the layout's paths and no template syntax left.
func TestTemplates(t *testing.T) {
	for _, prefix := range []string{"/usr", "/usr/local"} {
		l := Layout{Prefix: prefix}
		for _, f := range l.Files("/b", "/i") {
			if f.Source != "" {
				continue
			}
			s := string(f.Content)
			if strings.Contains(s, "{{") || strings.Contains(s, "<no value>") {
				t.Errorf("%s (%s): template not filled in:\n%s", f.Path, prefix, s)
			}
			if f.Mode&0o111 != 0 && !strings.HasPrefix(s, "#!/bin/sh\n") {
				t.Errorf("%s: an executable without #!/bin/sh", f.Path)
			}
			if f.Mode&0o111 != 0 && !strings.Contains(s, prefix+"/bin/nbdroot install --root / ") {
				t.Errorf("%s: does not call %s/bin/nbdroot", f.Path, prefix)
			}
		}
	}
}
