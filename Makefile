# mptcpgo: Multipath TCP in Go with an eBPF datapath.
SHELL := /bin/bash
GO ?= go
BIN := bin
# Debian packages the build and the tests need; `make deps` installs the missing ones (root).
DEB_PACKAGES := clang-19 llvm-19 libbpf-dev bpftool iproute2 tshark ethtool libc6-dev linux-libc-dev \
	qemu-system-x86 busybox-static kmod
# Fuzzing budgets as execution counts (about 10 s and 60 s here), for `make test` and `make fuzz`.
# A duration budget (-fuzztime 10s) races Go's fuzz coordinator at the deadline (go.dev/issue/75804,
# fixed in Go 1.27): a loaded machine fails the target with "context deadline exceeded" and no input.
FUZZ_SHORT ?= 500000x
FUZZ_TIME ?= 3000000x
# Time to minimize each new interesting input: Go's default (60 s) can take the whole run.
FUZZ_MINIMIZE ?= 1s
FUZZ_TARGETS := ./pkg/wire:FuzzParse ./internal/observer:FuzzBPFOptions ./pkg/control:FuzzConnOptions ./internal/datapath:FuzzSackRewrite ./internal/datapath:FuzzCoupledArithmetic
# Targets slower than FuzzParse get their own budgets (FUZZ_SHORT_<name>, FUZZ_TIME_<name>) so that
# each still runs about 10 s and 60 s: FuzzBPFOptions runs BPF_PROG_TEST_RUN twice an input (~5k/s),
# FuzzConnOptions opens loopback sockets and runs a connection through a sequence (~3k/s).
FUZZ_SHORT_FuzzBPFOptions ?= 50000x
FUZZ_TIME_FuzzBPFOptions ?= 300000x
FUZZ_SHORT_FuzzConnOptions ?= 30000x
FUZZ_TIME_FuzzConnOptions ?= 200000x
# FuzzSackRewrite runs BPF_PROG_TEST_RUN once an input (~17k/s).
FUZZ_SHORT_FuzzSackRewrite ?= 150000x
FUZZ_TIME_FuzzSackRewrite ?= 1000000x
FUZZ_SHORT_FuzzCoupledArithmetic ?= 100000x
FUZZ_TIME_FuzzCoupledArithmetic ?= 1000000x
# fuzz_budgets lists the targets as pkg:name:budget, the budget from $(1)_<name> or else $(1).
fuzz_budgets = $(foreach t,$(FUZZ_TARGETS),$(t):$(or $($(1)_$(lastword $(subst :, ,$(t)))),$($(1))))

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## Install the missing Debian packages (clang, bpftool, iproute2, tshark, ...) when root
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "missing packages: $$missing (run as root to install)"; exit 1; fi; \
		echo "installing:" $$missing; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Packages with bpf2go lines (a gen.go each): the datapath object beside its loader, and the
# objects only tests and the path emulator load. Their generated files end in _bpfel.go and _bpfel.o.
GEN_DIRS := internal/datapath internal/testbpf
GEN_FILES := $(foreach d,$(GEN_DIRS),'$(d)/*_bpfel.go' '$(d)/*_bpfel.o')

.PHONY: generate
generate: deps ## Compile bpf/ with bpf2go into internal/datapath and internal/testbpf (the result is committed)
	$(GO) generate $(addprefix ./,$(GEN_DIRS))

.PHONY: check-generate
check-generate: generate ## Regenerate the bpf2go output and fail when it differs from what is committed
	@if ! git diff --quiet -- $(GEN_FILES) || [ -n "$$(git ls-files --others --exclude-standard -- $(GEN_FILES))" ]; then \
		git status --short -- $(GEN_FILES); echo "generated files differ from the committed ones: run 'make generate' and commit"; exit 1; \
	fi

.PHONY: build
build: ## Build mptcpd and mptcpctl into bin/
	$(GO) build -o $(BIN)/ ./cmd/...

.PHONY: vet
vet: ## go vet
	$(GO) vet ./...

.PHONY: lint
lint: vet ## gofmt, go vet and clang-format-free checks of the tree
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The netns tests run on their own, after every other package: `go test ./...` runs packages in
# parallel, and beside another package's tests the path emulator's forwarder falls behind on two
# CPUs (tests/netns/emu_test.go). The other packages take about 30 s, mostly building. The
# kernel smoke test (tests/kernels: Linux 6.1 in qemu, about two minutes) runs alone after them,
# for the same reason: the emulated guest needs both CPUs.
NETNS_PKG := ./tests/netns
KERNELS_PKG := ./tests/kernels

.PHONY: test
test: deps check-generate lint ## All tests: unit, BPF, netns integration against the kernel (root), brief fuzzing
	@set -o pipefail; pkgs=$$($(GO) list ./... | grep -v '/tests/netns$$\|/tests/kernels$$') || exit 1; \
		echo "$(GO) test -count=1 -timeout 30m (every package but $(NETNS_PKG) and $(KERNELS_PKG))"; \
		$(GO) test -count=1 -timeout 30m $$pkgs
	$(GO) test -count=1 -timeout 30m $(NETNS_PKG)
	$(GO) test -count=1 -timeout 30m -run '^TestKernelSmoke$$' -v $(KERNELS_PKG)
	@for t in $(call fuzz_budgets,FUZZ_SHORT); do pkg=$${t%%:*}; rest=$${t#*:}; fn=$${rest%%:*}; budget=$${rest#*:}; \
		echo "fuzz $$fn ($$budget)"; \
		$(GO) test $$pkg -run '^$$' -fuzz "^$$fn$$" -fuzztime $$budget -fuzzminimizetime $(FUZZ_MINIMIZE) || exit 1; done

.PHONY: test-kernels
test-kernels: deps ## Boot each supported older kernel (Debian packages, in qemu) and run the kernel matrix there (root, ~20 min)
	MPTCPGO_KERNEL_MATRIX=1 $(GO) test -count=1 -timeout 90m -run '^TestKernelMatrix$$' -v $(KERNELS_PKG)

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZ_TIME executions (about 60 s)
	@for t in $(call fuzz_budgets,FUZZ_TIME); do pkg=$${t%%:*}; rest=$${t#*:}; fn=$${rest%%:*}; budget=$${rest#*:}; \
		echo "fuzz $$fn ($$budget)"; \
		$(GO) test $$pkg -run '^$$' -fuzz "^$$fn$$" -fuzztime $$budget -fuzzminimizetime $(FUZZ_MINIMIZE) || exit 1; done

.PHONY: demo
demo: deps build ## Build everything and run the demonstration between network namespaces (root)
	@set -o pipefail; $(GO) test -count=1 -v -run '^TestDemo$$' ./tests/netns | grep -v '^=== RUN\|^    demo_test.go'

.PHONY: bench
bench: deps ## Benchmarks: Go micro-benchmarks, then goodput/setup rate/memory/multipath/scenario cases beside the kernel's MPTCP (root)
	$(GO) test -run '^$$' -bench . -benchmem ./pkg/... ./internal/...
	set -o pipefail; $(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 30m ./tests/netns 2>&1 | grep -v '^    \|^goos\|^goarch\|^pkg\|^cpu'

.PHONY: scenarios
scenarios: deps ## Multipath scenarios on emulated paths beside the kernel's MPTCP, and the fairness experiments (root, ~50 min): docs/scenarios.md, docs/*.png
	@set -o pipefail; $(GO) test -count=1 -v -run '^TestScenario' -timeout 60m ./tests/netns -scenarios 2>&1 | grep -v '^=== \|netns: A=mpg'
	@echo "results: docs/scenarios.md"

.PHONY: fairness
fairness: deps ## The fairness experiments of the congestion controls alone (root, ~25 min): their section of docs/scenarios.md
	@set -o pipefail; $(GO) test -count=1 -v -run '^TestScenarioFairness$$' -timeout 40m ./tests/netns -scenarios 2>&1 | grep -v '^=== \|netns: A=mpg'
	@echo "results: docs/scenarios.md"

.PHONY: soak
soak: deps ## Ten minutes of hostile peers attacking mptcpgo while kernel clients echo data through it: every byte exact, memory flat (root)
	@set -o pipefail; $(GO) test -count=1 -v -run '^TestSoak$$' -timeout 30m ./tests/netns -soak $(or $(SOAK),10m) 2>&1 | grep -v '^=== '

.PHONY: clean
clean: ## Remove build output
	rm -rf $(BIN)
