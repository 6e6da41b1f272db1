# krait's whole set-up on a fresh Debian 12 machine: `make run`, `make test`.
SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
KRAIT := $(VENV)/bin/krait
PORT ?= 8080
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := python3 python3-venv qemu-system-x86 linux-source-6.1 build-essential bc \
	flex bison libelf-dev libssl-dev cpio xz-utils binutils patch curl wrk erofs-utils \
	crun slirp4netns debootstrap e2fsprogs util-linux \
	python3.11 python3.11-venv postgresql openssl testssl.sh \
	libvirt-daemon-system libvirt-dev pkg-config python3-dev openssh-server openssh-client docker-registry skopeo \
	netcat-openbsd libpython3.11-testsuite

.PHONY: deps venv kernel hello run test test-fast fuzz lint bench clean examples bench-examples \
	bench-backends fidelity bench-compare

deps: .deps.stamp
.deps.stamp: Makefile
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

# The property tests of tests/test_fuzz.py with 50x the examples `make test` gives them.
fuzz: venv
	KRAIT_FUZZ=1 $(VENV)/bin/pytest -q tests/test_fuzz.py

lint: venv
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy

# Every figure of the README's Measured tables: one run, JSON and charts in docs/bench/.
bench: hello
	mkdir -p docs/bench
	$(KRAIT) bench boot examples/hello/hello.krait -n 10 -o docs/bench/boot.json \
		--timeline docs/bench/boot-timeline.png
	$(KRAIT) bench boot examples/hello/hello.krait --wall -n 10 -o docs/bench/boot-wall.json
	$(KRAIT) bench memory examples/hello/hello.krait -o docs/bench/memory.json
	$(KRAIT) bench rebuild examples/hello -n 5 -o docs/bench/rebuild.json
	$(KRAIT) bench serve examples/hello/hello.krait -n 5 -o docs/bench/serve.json
	$(MAKE) bench-compare
	$(MAKE) bench-examples

# The same apps as a process, a crun container, a Debian VM (gunicorn/uvicorn) and a krait
# unikernel: docs/bench/compare-{hello,flask,fastapi}.json, compare-hello-flask-fastapi.md/.png.
# Part of `make bench`.
bench-compare: kernel
	$(KRAIT) bench compare examples/hello examples/flask examples/fastapi -n 5 --out docs/bench

# Build every example (krait installs what each declares, from its krait.lock).
EXAMPLES := hello asyncio flask fastapi aiohttp website notes
examples: kernel
	for x in $(EXAMPLES); do (cd examples/$$x && ../../$(KRAIT) build) || exit 1; done

# Size, boot to first correct answer (10 boots), guest memory, wrk requests/s per example.
# `make bench` ends with it.
bench-examples: kernel
	$(VENV)/bin/python scripts/bench_examples.py -n 10 -o docs/bench/examples.json

# CPython's own tests of the modules that face the OS, in the guest and on the host:
# docs/bench/fidelity.json and .md (not part of `make test`: minutes under TCG).
fidelity: kernel
	$(VENV)/bin/python -m krait.bench.fidelity --out docs/bench

# QEMU started by krait beside libvirt (here, and over qemu+ssh), on hosts it starts.
bench-backends: hello
	$(VENV)/bin/python -m scripts.bench_backends examples/hello/hello.krait -n 10 \
		-o docs/bench/backends.json

clean:
	rm -rf $(VENV) .deps.stamp examples/*/*.krait
