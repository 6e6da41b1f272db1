# krait's whole set-up on a fresh Debian 12 machine: `make run`, `make test`.
SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
KRAIT := $(VENV)/bin/krait
PORT ?= 8080
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := python3 python3-venv qemu-system-x86 linux-source-6.1 build-essential bc \
	flex bison libelf-dev libssl-dev cpio xz-utils binutils curl wrk

.PHONY: deps venv kernel hello run test test-fast lint bench clean

deps: .deps.stamp
.deps.stamp:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive \
			$(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@touch $@

venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $@

kernel: venv
	$(KRAIT) kernel build

examples/hello/hello.krait: kernel $(wildcard examples/hello/*.py examples/hello/*.toml)
	cd examples/hello && ../../$(KRAIT) build

hello: examples/hello/hello.krait

# Build and boot examples/hello, show it answering HTTP, then stop it.
run: hello
	@set -e; \
	$(KRAIT) run examples/hello/hello.krait -p $(PORT):8080 & pid=$$!; \
	trap 'kill -INT $$pid 2>/dev/null; wait $$pid 2>/dev/null' EXIT; \
	for i in $$(seq 1 300); do \
		if curl -fsS http://127.0.0.1:$(PORT)/ 2>/dev/null; then break; fi; sleep 0.1; \
	done; \
	echo "--- curl http://127.0.0.1:$(PORT)/ answered (above); stopping the VM"

test: kernel
	$(VENV)/bin/pytest -q

test-fast: venv
	$(VENV)/bin/pytest -q -m "not vm"

lint: venv
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy

bench: hello
	mkdir -p docs/bench
	$(KRAIT) bench boot examples/hello/hello.krait -n 10 -o docs/bench/boot.json
	$(KRAIT) bench memory examples/hello/hello.krait -o docs/bench/memory.json
	$(KRAIT) bench rebuild examples/hello -n 5 -o docs/bench/rebuild.json

clean:
	rm -rf $(VENV) .deps.stamp examples/*/*.krait
