# nbdroot — see README.md. `make demo` boots a diskless client; `make test` runs every tier.
GO        ?= go
BUILD     ?= build
export NBDROOT_CACHE ?= $(HOME)/.cache/nbdroot
KERNEL    ?= $(NBDROOT_CACHE)/kernel/current
KMODULES  ?= $(KERNEL)/modules
HOOKS     ?= base udev net nbd encrypt filesystems
OUT       ?= $(BUILD)/kernel26.img
GOFLAGS_BUILD := -trimpath -ldflags=-s

.PHONY: all build initramfs deps test test-unit test-qemu test-distro demo bench fuzz clean

all: build

build:
	@mkdir -p $(BUILD)
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BUILD)/nbdroot ./cmd/nbdroot
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BUILD)/nbdroot-init ./cmd/nbdroot-init

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
	NBDROOT_REQUIRE_PEERS=1 NBDROOT_KERNEL=$(KERNEL) NBDROOT_BUILD=$(abspath $(BUILD)) \
		$(GO) test -count=1 -timeout 25m -v ./test/
	$(MAKE) test-distro

# Real distributions: stock Debian 12 and 13 systemd roots (debootstrapped once per machine,
# cached in $(NBDROOT_CACHE)/roots) boot through our initramfs to a login. Part of `make test`.
test-distro: deps build
	NBDROOT_DISTRO=1 NBDROOT_REQUIRE_PEERS=1 NBDROOT_KERNEL=$(KERNEL) NBDROOT_BUILD=$(abspath $(BUILD)) \
		$(GO) test -count=1 -timeout 25m -v -run 'Distro' ./test/

test-unit:
	$(GO) test ./...

demo: deps build
	NBDROOT_KERNEL=$(KERNEL) $(GO) run ./test/cmd/demo -build $(abspath $(BUILD))

bench: deps build
	NBDROOT_KERNEL=$(KERNEL) $(GO) run ./test/cmd/bench -build $(abspath $(BUILD)) -out docs/bench.md

# Short fuzzing of every parser fed by the network or the user; the seed corpora also run as
# plain tests in `make test`.
fuzz:
	scripts/fuzz.sh 20s

clean:
	rm -rf $(BUILD)
