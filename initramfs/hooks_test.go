package initramfs

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/u-root/u-root/pkg/cpio"

	"github.com/nbdroot/nbdroot/initramfs/inittest"
	"github.com/nbdroot/nbdroot/keymap"
	"github.com/nbdroot/nbdroot/kmod"
)

// stockArch is the HOOKS line of Arch's stock mkinitcpio.conf with the network root hooks
// and encrypt added where a netboot admin adds them.
var stockArch = strings.Fields("base udev autodetect microcode modconf kms keyboard keymap consolefont block net nbd encrypt filesystems fsck")

// TestBuildStockHooks: every hook of a stock mkinitcpio.conf builds, and the summary has
// one line for each hook as written, mapping hooks saying what they map to.
func TestBuildStockHooks(t *testing.T) {
	for _, hooks := range [][]string{
		stockArch,
		strings.Fields("base systemd autodetect microcode modconf kms keyboard sd-vconsole block net nbd sd-encrypt lvm2 filesystems fsck"),
	} {
		t.Run(hooks[1], func(t *testing.T) {
			f := newFixture(t)
			opts := f.opts()
			opts.Hooks = hooks
			sum, err := Build(opts)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, l := range sum.HookLines {
				names = append(names, l.Name)
				if l.Text == "" {
					t.Errorf("hook %s has an empty summary line", l.Name)
				}
			}
			if diff := cmp.Diff(hooks, names); diff != "" {
				t.Errorf("summary lines (-want +got):\n%s", diff)
			}
			var buf bytes.Buffer
			if err := sum.WriteText(&buf); err != nil {
				t.Fatal(err)
			}
			for _, h := range hooks {
				if !strings.Contains(buf.String(), "\n    "+h+" ") {
					t.Errorf("summary has no line for %s:\n%s", h, buf.String())
				}
			}
			if slices.Contains(hooks, "systemd") && !strings.Contains(buf.String(), "systemd      → base udev") {
				t.Errorf("systemd's line does not say what it maps to:\n%s", buf.String())
			}
			for _, n := range sum.Hooks {
				if n == "systemd" || n == "sd-vconsole" || n == "sd-encrypt" {
					t.Errorf("the image's hook list %v has the mapping hook %s", sum.Hooks, n)
				}
			}
		})
	}
}

// TestBuildAutodetect: without a client list nothing is left out; with one, the hooks after
// autodetect keep only the client's drivers, NICs included, while required modules and
// MODULES stay.
func TestBuildAutodetect(t *testing.T) {
	f := newFixture(t)
	opts := f.opts()
	opts.Hooks = stockArch
	full, err := Build(opts)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(full.Modules, "aesni_intel") || !slices.Contains(full.NICs, "e1000e") {
		t.Fatalf("without a client list the image lacks the optional modules: %v / %v", full.Modules, full.NICs)
	}
	list := filepath.Join(t.TempDir(), "client.modules")
	// /proc/modules of a client with a Broadcom NIC, no AES-NI, and an old module.
	procModules := `tg3 217088 0 - Live 0x0000000000000000
libphy 188416 1 tg3, Live 0x0000000000000000
nbd 61440 2 - Live 0x0000000000000000
ext4 1015808 1 - Live 0x0000000000000000
crc32c-intel 24576 2 - Live 0x0000000000000000
floppy 131072 0 - Live 0x0000000000000000
`
	if err := os.WriteFile(list, []byte(procModules), 0o644); err != nil {
		t.Fatal(err)
	}
	opts.AutodetectFrom = list
	opts.AddModules = []string{"e1000"}
	opts.Output = filepath.Join(t.TempDir(), "auto.img")
	sum, err := Build(opts)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"tg3"}, sum.NICs); diff != "" {
		t.Errorf("NIC drivers: want the client's only (-want +got):\n%s", diff)
	}
	for _, m := range []string{"nbd", "dm_crypt", "xts", "ext4", "crc32c_intel", "tg3", "e1000", "virtio_pci"} {
		if !slices.Contains(sum.Modules, m) {
			t.Errorf("image lacks %s (required, the client's, MODULES, or before autodetect): %v", m, sum.Modules)
		}
	}
	for _, m := range []string{"aesni_intel", "e1000e", "r8169", "sha512_generic"} {
		if slices.Contains(sum.Modules, m) {
			t.Errorf("image has %s, which the client does not use", m)
		}
	}
	line := hookLine(sum, "autodetect")
	if !strings.Contains(line, list) || !strings.Contains(line, "6 modules listed, 1 not in this kernel") {
		t.Errorf("autodetect line %q does not name the list and what it found", line)
	}
}

func hookLine(sum *Summary, name string) string {
	for _, l := range sum.HookLines {
		if l.Name == name {
			return l.Text
		}
	}
	return ""
}

func TestReadClientModules(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
		err      string
	}{
		{"proc modules", "nbd 61440 2 - Live 0x0\ndm_crypt 57344 0 - Live 0x0\n", []string{"dm_crypt", "nbd"}, ""},
		{"lsmod", "Module                  Size  Used by\nnbd                    61440  2\ncrc32c-intel 24576 1\n", []string{"crc32c_intel", "nbd"}, ""},
		{"names with comments", "# captured on a t640\n\nr8169\n  igc  \n", []string{"igc", "r8169"}, ""},
		{"not a list", "<html>\n", nil, "not a module name"},
		{"empty", "# nothing\n", nil, "no module names"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ReadClientModules(strings.NewReader(tt.in), "list")
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, c.Names); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzReadClientModules feeds arbitrary module lists (a file the user gives): no panic, and
// every name read is a module name.
func FuzzReadClientModules(f *testing.F) {
	f.Add("nbd 61440 2 - Live 0x0\n")
	f.Add("Module Size Used by\next4 1 0\n")
	f.Add("#x\n\n a-b \n")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ReadClientModules(strings.NewReader(s), "fuzz")
		if err != nil {
			return
		}
		for _, n := range c.Names {
			if !moduleName(n) || strings.Contains(n, "-") {
				t.Errorf("name %q", n)
			}
		}
	})
}

// TestBuildMicrocode: the updates of the firmware directory go into an uncompressed cpio in
// front of the compressed image, as kernel/x86/microcode/VENDOR.bin, each vendor's files
// concatenated in name order; the rest of the file is the usual compressed archive.
func TestBuildMicrocode(t *testing.T) {
	f := newFixture(t)
	fw := filepath.Join(f.root, "lib", "firmware")
	for name, data := range map[string]string{
		"intel-ucode/06-55-04":                "intel-A",
		"intel-ucode/06-9e-0a":                "intel-B",
		"amd-ucode/microcode_amd_fam17h.bin":  "amd-17",
		"amd-ucode/microcode_amd_fam19h.bin":  "amd-19",
		"amd-ucode/README":                    "not microcode",
		"intel-ucode/sub/ignored-directory/x": "dir",
	} {
		p := filepath.Join(fw, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	opts := f.opts()
	opts.Hooks = stockArch
	sum, err := Build(opts)
	if err != nil {
		t.Fatal(err)
	}
	raw := mustRead(t, f.out)
	r := cpio.Newc.Reader(bytes.NewReader(raw))
	recs, err := cpio.ReadAllRecords(r)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, rec := range recs {
		if rec.Mode&cpio.S_IFMT == cpio.S_IFREG {
			got[rec.Name] = content(t, rec)
		}
	}
	want := map[string]string{
		"kernel/x86/microcode/GenuineIntel.bin": "intel-Aintel-B",
		"kernel/x86/microcode/AuthenticAMD.bin": "amd-17amd-19",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("early archive (-want +got):\n%s", diff)
	}
	// The compressed archive follows the early one's trailer, 4-byte aligned.
	end := bytes.Index(raw, []byte("TRAILER!!!"))
	rest := raw[end:]
	start := bytes.Index(rest, []byte{0x28, 0xb5, 0x2f, 0xfd}) // zstd magic
	if start < 0 || (end+start)%4 != 0 {
		t.Fatalf("no 4-byte aligned zstd stream after the early archive (at %d)", end+start)
	}
	main := decompress(t, rest[start:], Zstd)
	mrecs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(main)))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(mrecs, func(r cpio.Record) bool { return r.Name == "init" }) {
		t.Error("the compressed archive has no /init")
	}
	if len(sum.Microcode) != 2 || !strings.Contains(hookLine(sum, "microcode"), "GenuineIntel.bin") {
		t.Errorf("summary: %q, line %q", sum.Microcode, hookLine(sum, "microcode"))
	}
}

// TestBuildModconf: modprobe.d of the root, /etc over /usr/lib for one file name, becomes
// options and blacklist records of the image's index for its modules.
func TestBuildModconf(t *testing.T) {
	f := newFixture(t)
	for name, data := range map[string]string{
		"etc/modprobe.d/nbd.conf":      "# nbd devices\noptions nbd nbds_max=4 \\\n  max_part=8\nblacklist e1000\ninstall pcspkr /bin/true\n",
		"usr/lib/modprobe.d/nbd.conf":  "options nbd nbds_max=99\n",
		"usr/lib/modprobe.d/ext4.conf": "options ext4 debug=1\noptions zfs zfs_arc_max=1\nsoftdep ext4 pre: crc32c\n",
	} {
		p := filepath.Join(f.root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	opts := f.opts()
	opts.Hooks = stockArch
	opts.Root = f.root
	opts.Compression = None
	sum, err := Build(opts)
	if err != nil {
		t.Fatal(err)
	}
	recs, _, _ := readImage(t, f.out, None)
	ix, err := kmod.ReadIndex(strings.NewReader(content(t, recs["lib/modules/6.1.0-test/"+kmod.IndexName])))
	if err != nil {
		t.Fatal(err)
	}
	if ix.ModuleParams("nbd") != "nbds_max=4 max_part=8" || ix.ModuleParams("ext4") != "debug=1" || !ix.Blacklisted("e1000") {
		t.Errorf("index: nbd %q, ext4 %q, e1000 blacklisted %v", ix.ModuleParams("nbd"), ix.ModuleParams("ext4"), ix.Blacklisted("e1000"))
	}
	line := hookLine(sum, "modconf")
	for _, w := range []string{"2 files", "options for ", " ext4", " nbd", "blacklisted e1000", "1 install", "1 softdep"} {
		if !strings.Contains(line, w) {
			t.Errorf("modconf line %q lacks %q", line, w)
		}
	}
}

// FuzzModprobeConf feeds arbitrary modprobe.d files: no panic, and only module names are
// recorded.
func FuzzModprobeConf(f *testing.F) {
	f.Add("options nbd nbds_max=4\nblacklist pcspkr\n")
	f.Add("options a \\\n b=1\n# c\ninstall x /bin/y\n")
	f.Add("\\\n\\\n")
	f.Fuzz(func(t *testing.T, s string) {
		c := &ModprobeConf{Options: map[string][]string{}, Blacklist: map[string]bool{}, Ignored: map[string]int{}}
		if err := c.read(strings.NewReader(s), "fuzz"); err != nil {
			return
		}
		for m, o := range c.Options {
			if !moduleName(m) || len(o) == 0 {
				t.Errorf("options %q %q", m, o)
			}
		}
		for m := range c.Blacklist {
			if !moduleName(m) {
				t.Errorf("blacklist %q", m)
			}
		}
	})
}

func TestCheckInit(t *testing.T) {
	amd64, _ := ParseArch("amd64")
	dir := t.TempDir()
	write := func(name string, o inittest.Options) string {
		p := filepath.Join(dir, name)
		if err := inittest.Write(p, o); err != nil {
			t.Fatal(err)
		}
		return p
	}
	text := filepath.Join(dir, "passwd")
	os.WriteFile(text, []byte("root:x:0:0:root:/root:/bin/bash\n"), 0o644)
	tests := []struct {
		name    string
		path    string
		problem string // "" accepted
		warning string
	}{
		{"nbdroot-init", write("init", inittest.Init), "", ""},
		{"another Go program", write("go", inittest.Options{GoMain: "example.com/cmd/other"}), "", "the Go program example.com/cmd/other, not nbdroot-init"},
		{"not a Go program", write("c", inittest.Options{}), "", "not a Go program"},
		{"a text file", text, "not an ELF executable", ""},
		{"a directory", dir, "not a regular file", ""},
		{"missing", filepath.Join(dir, "nope"), "no such file", ""},
		{"dynamic", write("dyn", inittest.Options{Interp: "/lib64/ld-linux-x86-64.so.2", GoMain: inittest.Init.GoMain}), "dynamically linked (program interpreter /lib64/ld-linux-x86-64.so.2)", ""},
		{"arm64", write("arm", inittest.Options{Machine: elf.EM_AARCH64, GoMain: inittest.Init.GoMain}), "an executable for arm64, but the image is for amd64", ""},
		{"shared library", write("so", inittest.Options{Type: elf.ET_DYN}), "a shared library", ""},
		{"relocatable object", write("o", inittest.Options{Type: elf.ET_REL}), "not an executable", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			warns, err := CheckInit(tt.path, amd64)
			if tt.problem != "" {
				var ie *InitError
				if !errors.As(err, &ie) || !strings.Contains(err.Error(), tt.problem) || !strings.HasPrefix(err.Error(), "--init "+tt.path+": ") {
					t.Fatalf("err = %v, want an InitError naming --init %s and %q", err, tt.path, tt.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.warning == "" && len(warns) > 0 || tt.warning != "" && (len(warns) != 1 || !strings.Contains(warns[0], tt.warning)) {
				t.Errorf("warnings %q, want %q", warns, tt.warning)
			}
		})
	}
}

// TestCheckInitRealPrograms runs the check on real programs of this machine, not only on
// synthetic ELF files: a distribution's PIE program (dynamically linked) is refused, a
// static busybox (scripts/deps.sh installs busybox-static) is accepted with the warning
// that it is not nbdroot-init, and the same busybox is refused for arm64.
func TestCheckInitRealPrograms(t *testing.T) {
	host := HostArch()
	if host.Name != "amd64" {
		t.Skipf("the programs below are amd64 ones; this is %s", host.Name)
	}
	arm64, _ := ParseArch("arm64")
	for _, p := range []string{"/bin/true", "/bin/busybox"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s: %v", p, err)
		}
	}
	if _, err := CheckInit("/bin/true", host); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("CheckInit(/bin/true) = %v, want a refusal: dynamically linked", err)
	}
	warns, err := CheckInit("/bin/busybox", host)
	if err != nil || len(warns) != 1 || !strings.Contains(warns[0], "not a Go program") {
		t.Errorf("CheckInit(/bin/busybox) = %q, %v; want it accepted with one warning", warns, err)
	}
	if _, err := CheckInit("/bin/busybox", arm64); err == nil || !strings.Contains(err.Error(), "for amd64, but the image is for arm64") {
		t.Errorf("CheckInit(/bin/busybox, arm64) = %v, want a refusal naming both architectures", err)
	}
}

// TestBinaryClosureMatchesLdd compares the libraries BINARIES adds for programs of this
// machine with what the dynamic loader itself resolves (ldd).
func TestBinaryClosureMatchesLdd(t *testing.T) {
	if _, err := exec.LookPath("ldd"); err != nil {
		t.Skip("no ldd on this machine")
	}
	for _, prog := range []string{"/usr/sbin/cryptsetup", "/usr/sbin/mkfs.ext4", "/usr/bin/ls", "/usr/bin/ssh"} {
		if _, err := os.Stat(prog); err != nil {
			continue
		}
		t.Run(filepath.Base(prog), func(t *testing.T) {
			f, err := elf.Open(prog)
			if err != nil {
				t.Skip(err)
			}
			arch, ok := archOf(f)
			f.Close()
			if !ok {
				t.Skip("unknown architecture")
			}
			c := newBinaryClosure("/", arch)
			if err := c.add(prog); err != nil {
				t.Fatal(err)
			}
			var ours []string
			for dst := range c.files {
				if dst != prog {
					ours = append(ours, filepath.Base(dst))
				}
			}
			out, err := exec.Command("ldd", prog).Output()
			if err != nil {
				t.Fatal(err)
			}
			var theirs []string
			for _, l := range strings.Split(string(out), "\n") {
				fields := strings.Fields(l)
				switch {
				case len(fields) >= 3 && fields[1] == "=>":
					theirs = append(theirs, fields[0])
				case len(fields) == 2 && strings.HasPrefix(fields[0], "/"):
					theirs = append(theirs, filepath.Base(fields[0])) // the interpreter
				}
			}
			sort.Strings(ours)
			sort.Strings(theirs)
			if diff := cmp.Diff(theirs, ours); diff != "" {
				t.Errorf("libraries of %s (-ldd +ours):\n%s", prog, diff)
			}
		})
	}
}

// TestBuildBinariesInRoot: a program of a client root with a usrmerge layout (lib → usr/lib,
// an absolute symlink for the interpreter) goes into the image with its interpreter at the
// path the program names and its libraries where the root's loader finds them, read
// inside the root, never from this machine.
func TestBuildBinariesInRoot(t *testing.T) {
	if _, err := exec.LookPath("ldd"); err != nil {
		t.Skip("no ldd on this machine")
	}
	prog := "/usr/bin/ls"
	out, err := exec.Command("ldd", prog).Output()
	if err != nil {
		t.Skip(err)
	}
	f := newFixture(t)
	root := f.root
	multi := "usr/lib/x86_64-linux-gnu"
	mustMkdir := func(p string) {
		if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mustMkdir(multi)
	mustMkdir("usr/bin")
	mustMkdir("etc/ld.so.conf.d")
	copyIn := func(src, dst string) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, dst), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyIn(prog, "usr/bin/ls")
	interp := ""
	for _, l := range strings.Split(string(out), "\n") {
		fields := strings.Fields(l)
		switch {
		case len(fields) >= 3 && fields[1] == "=>":
			copyIn(fields[2], filepath.Join(multi, fields[0]))
		case len(fields) == 2 && strings.HasPrefix(fields[0], "/"):
			interp = fields[0]
			copyIn(fields[0], filepath.Join(multi, filepath.Base(fields[0])))
		}
	}
	if interp == "" {
		t.Skip("ls is not dynamic here")
	}
	// lib is a symlink (usrmerge) and the interpreter an absolute symlink into it: both
	// must resolve inside the root.
	os.RemoveAll(filepath.Join(root, "lib", "x86_64-linux-gnu"))
	os.Symlink("/"+multi, filepath.Join(root, "lib", "x86_64-linux-gnu"))
	mustMkdir(filepath.Dir(interp))
	os.Symlink("/lib/x86_64-linux-gnu/"+filepath.Base(interp), filepath.Join(root, interp))
	os.WriteFile(filepath.Join(root, "etc/ld.so.conf"), []byte("include /etc/ld.so.conf.d/*.conf\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/ld.so.conf.d/x86_64-linux-gnu.conf"), []byte("# multiarch\n/lib/x86_64-linux-gnu\n"), 0o644)

	opts := f.opts()
	opts.Root = root
	opts.Binaries = []string{"ls"}
	opts.Compression = None
	sum, err := Build(opts)
	if err != nil {
		t.Fatal(err)
	}
	recs, _, _ := readImage(t, f.out, None)
	if r, ok := recs[strings.TrimPrefix(interp, "/")]; !ok || r.Mode&cpio.S_IFMT != cpio.S_IFREG {
		t.Errorf("interpreter %s is not a file of the image: %v", interp, sum.Binaries)
	}
	if _, ok := recs["usr/bin/ls"]; !ok {
		t.Errorf("no /usr/bin/ls: %v", sum.Binaries)
	}
	if _, ok := recs["lib/x86_64-linux-gnu/libc.so.6"]; !ok {
		t.Errorf("no libc.so.6 in /lib/x86_64-linux-gnu: %v", sum.Binaries)
	}
}

// TestRootFSResolve: symlinks resolve inside the root — absolute targets and ".." never
// leave it.
func TestRootFSResolve(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("inside"), 0o644)
	os.Symlink("/etc/passwd", filepath.Join(root, "abs"))
	os.Symlink("../../../../../etc/passwd", filepath.Join(root, "etc/up"))
	os.Symlink("loop", filepath.Join(root, "loop"))
	r := rootFS{root}
	for _, p := range []string{"/abs", "/etc/up", "abs"} {
		res, ok := r.regular(p)
		if !ok || res != "/etc/passwd" {
			t.Errorf("resolve %s = %q, %v; want /etc/passwd inside the root", p, res, ok)
		}
		if b, _ := os.ReadFile(r.host(res)); string(b) != "inside" {
			t.Errorf("%s read %q", p, b)
		}
	}
	if _, _, err := r.resolve("/loop"); err == nil || !strings.Contains(err.Error(), "too many levels") {
		t.Errorf("a symlink loop: %v", err)
	}
}

// gz writes data gzip-compressed to path, making its directory.
func gz(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(data))
	w.Close()
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBuildKeymap: the keymap comes from --keymap, KEYMAP= of the root's vconsole.conf
// (a kbd tree with includes) or Debian's console-setup cache, compiled into the image.
func TestBuildKeymap(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(t *testing.T, root string) Options
		line   string
		err    string
		noFile bool
	}{
		{name: "vconsole.conf and kbd's tree", setup: func(t *testing.T, root string) Options {
			gz(t, filepath.Join(root, "usr/share/kbd/keymaps/i386/qwertz/de-latin1.map.gz"), "keymaps 0-1\ninclude \"qwertz-layout\"\n")
			gz(t, filepath.Join(root, "usr/share/kbd/keymaps/i386/include/qwertz-layout.inc.gz"), "keycode 21 = +z\nkeycode 44 = +y\n")
			os.WriteFile(filepath.Join(root, "etc/vconsole.conf"), []byte("# systemd\nKEYMAP=\"de-latin1\"\nFONT=eurlatgr\n"), 0o644)
			return Options{Root: root}
		}, line: "de-latin1 ("},
		{name: "Debian's console-setup", setup: func(t *testing.T, root string) Options {
			os.MkdirAll(filepath.Join(root, "etc/default"), 0o755)
			os.WriteFile(filepath.Join(root, "etc/default/keyboard"), []byte("XKBMODEL=\"pc105\"\nXKBLAYOUT=\"de\"\n"), 0o644)
			gz(t, filepath.Join(root, "etc/console-setup/cached_UTF-8_del.kmap.gz"), "keymaps 0-1\nkeycode 21 = +z\n")
			gz(t, filepath.Join(root, "etc/console-setup/cached_ISO-8859-15_del.kmap.gz"), "keymaps 0-1\nkeycode 21 = +y\n")
			return Options{Root: root}
		}, line: "cached_UTF-8_del.kmap.gz, from XKBLAYOUT=de of /etc/default/keyboard"},
		{name: "Debian without the cache", setup: func(t *testing.T, root string) Options {
			os.MkdirAll(filepath.Join(root, "etc/default"), 0o755)
			os.WriteFile(filepath.Join(root, "etc/default/keyboard"), []byte("XKBLAYOUT=de\n"), 0o644)
			return Options{Root: root}
		}, err: "setupcon --save-only"},
		{name: "--keymap FILE", setup: func(t *testing.T, root string) Options {
			p := filepath.Join(root, "my.map")
			os.WriteFile(p, []byte("keycode 21 = +z\n"), 0o644)
			return Options{Keymap: p}
		}, line: "from --keymap"},
		{name: "--keymap NAME not found", setup: func(t *testing.T, root string) Options {
			os.MkdirAll(filepath.Join(root, "usr/share/keymaps"), 0o755)
			return Options{Root: root, Keymap: "xx"}
		}, err: `keymap "xx" not found`},
		{name: "a bad keymap", setup: func(t *testing.T, root string) Options {
			p := filepath.Join(root, "bad.map")
			os.WriteFile(p, []byte("keycode 21 = NoSuchKey\n"), 0o644)
			return Options{Keymap: p}
		}, err: "bad.map:1: unknown keysym 'NoSuchKey'"},
		{name: "nothing configured", setup: func(t *testing.T, root string) Options { return Options{} },
			line: "no keymap configured", noFile: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			os.MkdirAll(filepath.Join(f.root, "etc"), 0o755)
			o := tt.setup(t, f.root)
			opts := f.opts()
			opts.Hooks = []string{"base", "keymap"}
			opts.Root, opts.Keymap = o.Root, o.Keymap
			opts.Compression = None
			sum, err := Build(opts)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l := hookLine(sum, "keymap"); !strings.Contains(l, tt.line) {
				t.Errorf("keymap line %q lacks %q", l, tt.line)
			}
			recs, _, _ := readImage(t, f.out, None)
			r, ok := recs["etc/nbdroot/keymap"]
			if ok == tt.noFile {
				t.Fatalf("keymap in the image: %v", ok)
			}
			if !ok {
				return
			}
			km, err := keymap.Decode([]byte(content(t, r)))
			if err != nil {
				t.Fatal(err)
			}
			if len(km.Entries) == 0 {
				t.Error("the compiled keymap sets no key")
			}
		})
	}
	f := newFixture(t)
	opts := f.opts()
	opts.Keymap = "de"
	if _, err := Build(opts); err == nil || !strings.Contains(err.Error(), "--keymap needs the keymap hook") {
		t.Errorf("--keymap without the hook: %v", err)
	}
}
