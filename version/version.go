// Package version says which nbdroot this is: the version the build stamped into the binary
// (`make build` sets Version from `git describe` with -ldflags -X), or else what the Go
// toolchain recorded (a module version for `go install …@vX`, the VCS revision for a build
// in a checkout).
//
// Both programs print it (`nbdroot --version`, `nbdroot-init --version`), the manual page
// carries it, and the Debian package is versioned by the same `git describe`.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is set by the linker: -ldflags "-X github.com/nbdroot/nbdroot/version.Version=V".
// Empty in builds that did not set it.
var Version string

// String is the version: Version when the build set it, else the module version or VCS
// revision from the build information, else "unknown".
func String() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	return fromBuildInfo(bi)
}

// fromBuildInfo is the version a binary without a stamped Version reports: a tagged module
// version (go install github.com/nbdroot/nbdroot/cmd/nbdroot@v1.2.3), else "devel" with the
// commit and whether the tree had uncommitted changes, as `go build` records them
// (-buildvcs, on by default in a checkout).
func fromBuildInfo(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	v := "devel-" + rev
	if modified == "true" {
		v += "-dirty"
	}
	return v
}

// Line is what `PROGRAM --version` prints: the program, its version, the Go release that
// built it and the platform.
func Line(program string) string {
	return fmt.Sprintf("%s %s (%s, %s/%s)", program, String(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
