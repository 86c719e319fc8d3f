# nbdroot — see README.md. `make demo` boots a diskless client; `make test` runs every tier.
GO        ?= go
BUILD     ?= build
export NBDROOT_CACHE ?= $(HOME)/.cache/nbdroot
KERNEL    ?= $(NBDROOT_CACHE)/kernel/current
KMODULES  ?= $(KERNEL)/modules
KERNEL_ARM64 ?= $(NBDROOT_CACHE)/kernel-arm64/current
HOOKS     ?= base udev net nbd encrypt filesystems
OUT       ?= $(BUILD)/kernel26.img
# The version both programs print (nbdroot --version): git describe, see scripts/version.sh.
VERSION   ?= $(shell scripts/version.sh)
GOFLAGS_BUILD := -trimpath -ldflags="-s -X github.com/nbdroot/nbdroot/version.Version=$(VERSION)"

# make install: PREFIX/bin/nbdroot, PREFIX/lib/nbdroot/nbdroot-init (and -tls), the kernel hooks
# (/etc/kernel/…; they act only in client roots, see nbdroot install --help), the systemd
# units naming PREFIX/bin/nbdroot, nbdroot(8) and the documentation; under DESTDIR if set.
PREFIX    ?= /usr/local
DESTDIR   ?=
UNITDIR   ?= $(PREFIX)/lib/systemd/system
MANDIR    ?= $(PREFIX)/share/man
DOCDIR    ?= $(PREFIX)/share/doc/nbdroot
# make deb: $(BUILD)/nbdroot_VERSION_ARCH.deb, the same files for PREFIX=/usr.
DEB_VERSION ?= $(shell scripts/version.sh --deb)
DEB_ARCH  ?= $(shell dpkg --print-architecture 2>/dev/null || $(GO) env GOARCH)
DEB       := $(BUILD)/nbdroot_$(DEB_VERSION)_$(DEB_ARCH).deb
DEB_COMPRESSION ?= xz

.PHONY: all build initramfs deps install deb test test-unit test-qemu test-distro test-deb demo bench storm fuzz clean

all: build

# nbdroot-init leaves TLS out (-tags nbdroot_notls); nbdroot-init-tls has it (crypto/tls,
# +0.75 MB with zstd), for images built with --tls-ca. Both for arm64 clients too, in
# $(BUILD)/arm64: `nbdroot initramfs` takes ARCH/nbdroot-init beside itself for a kernel of
# another architecture.
build:
	@mkdir -p $(BUILD)
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BUILD)/nbdroot ./cmd/nbdroot
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -tags nbdroot_notls -o $(BUILD)/nbdroot-init ./cmd/nbdroot-init
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BUILD)/nbdroot-init-tls ./cmd/nbdroot-init
	CGO_ENABLED=0 GOARCH=arm64 $(GO) build $(GOFLAGS_BUILD) -tags nbdroot_notls -o $(BUILD)/arm64/nbdroot-init ./cmd/nbdroot-init
	CGO_ENABLED=0 GOARCH=arm64 $(GO) build $(GOFLAGS_BUILD) -o $(BUILD)/arm64/nbdroot-init-tls ./cmd/nbdroot-init

install: build
	$(BUILD)/nbdroot install --destdir "$(DESTDIR)/" --prefix "$(PREFIX)" --init $(BUILD)/nbdroot-init
	install -m 755 $(BUILD)/nbdroot-init-tls "$(DESTDIR)$(PREFIX)/lib/nbdroot/"
	install -d "$(DESTDIR)$(UNITDIR)" "$(DESTDIR)$(MANDIR)/man8" "$(DESTDIR)$(DOCDIR)/docs"
	sed 's|@BINDIR@|$(PREFIX)/bin|g' dist/nbdroot-serve.service.in > "$(DESTDIR)$(UNITDIR)/nbdroot-serve.service"
	install -m 644 dist/nbdroot-serve.socket "$(DESTDIR)$(UNITDIR)/"
	$(BUILD)/nbdroot help --man > "$(DESTDIR)$(MANDIR)/man8/nbdroot.8"
	install -m 644 README.md "$(DESTDIR)$(DOCDIR)/"
	install -m 644 docs/*.md "$(DESTDIR)$(DOCDIR)/docs/"

deb: build
	rm -rf $(BUILD)/deb
	$(MAKE) --no-print-directory install DESTDIR=$(abspath $(BUILD))/deb PREFIX=/usr VERSION=$(VERSION)
	scripts/deb.sh $(BUILD)/deb $(DEB_VERSION) $(DEB_ARCH) $(DEB) $(DEB_COMPRESSION)

deps:
	scripts/deps.sh all

$(KERNEL)/vmlinuz:
	scripts/deps.sh kernel

initramfs: build $(KERNEL)/vmlinuz
	$(BUILD)/nbdroot initramfs --modules $(KMODULES) --hooks "$(HOOKS)" --init $(BUILD)/nbdroot-init -o $(OUT)

# Every tier: unit tests (any machine), privileged host tests (skip unless root) and the QEMU
# boot tests in test/ (real kernel, real server).
test: deps build
	$(GO) vet ./...
	NBDROOT_REQUIRE_PEERS=1 $(GO) test -count=1 -timeout 15m $$($(GO) list ./... | grep -v '/test$$')
	NBDROOT_REQUIRE_PEERS=1 NBDROOT_KERNEL=$(KERNEL) NBDROOT_KERNEL_ARM64=$(KERNEL_ARM64) NBDROOT_BUILD=$(abspath $(BUILD)) \
		$(GO) test -count=1 -timeout 25m -v ./test/
	$(MAKE) test-distro

# Real distributions: stock Debian 12 and 13 systemd roots (debootstrapped once per machine,
# cached in $(NBDROOT_CACHE)/roots) boot through our initramfs to a login. Part of `make test`.
test-distro: deps build
	NBDROOT_DISTRO=1 NBDROOT_REQUIRE_PEERS=1 NBDROOT_KERNEL=$(KERNEL) NBDROOT_BUILD=$(abspath $(BUILD)) \
		$(GO) test -count=1 -timeout 25m -v -run 'Distro' ./test/

# The install path alone: make install into a DESTDIR; the Debian package built, installed
# into a scratch root with dpkg, checked, purged. Part of `make test` (the QEMU tier runs
# every test in test/).
test-deb:
	NBDROOT_REQUIRE_PEERS=1 $(GO) test -count=1 -timeout 10m -v -run 'TestMakeInstall|TestDeb' ./test/

test-unit:
	$(GO) test ./...

demo: deps build
	NBDROOT_KERNEL=$(KERNEL) $(GO) run ./test/cmd/demo -build $(abspath $(BUILD))

bench: deps build
	NBDROOT_KERNEL=$(KERNEL) $(GO) run ./test/cmd/bench -build $(abspath $(BUILD)) -out docs/bench.md

# The boot-storm section alone (N clients replaying a recorded boot against nbdroot, nbdkit
# and nbd-server); it updates its part of docs/bench.md. At nice -10 (all servers and
# clients alike), so other work on a shared machine disturbs the comparison less.
storm: deps build
	$(GO) build -o $(BUILD)/bench ./test/cmd/bench
	nice -n -10 $(BUILD)/bench -build $(abspath $(BUILD)) -only storm -out docs/bench.md

# Short fuzzing of every parser fed by the network or the user; the seed corpora also run as
# plain tests in `make test`.
fuzz:
	scripts/fuzz.sh 20s

clean:
	rm -rf $(BUILD)
