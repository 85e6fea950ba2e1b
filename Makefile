# cowfs: two commands for a newcomer (`make demo`, `make test`); both set up what is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cowfs-installed

APT_PACKAGES := fuse3 libfuse3-dev pkg-config attr zstd gcc python3-dev python3-venv \
	fuse-overlayfs umoci skopeo podman buildah runc docker-registry busybox-static \
	fio debootstrap apache2-utils util-linux iproute2 procps xz-utils bzip2 file

.PHONY: setup apt venv test test-fast demo bench lint clean

setup: apt venv

# Install only the Debian packages that are missing (idempotent, quiet when nothing to do).
apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "setup: need root to apt-get install$$missing" >&2; exit 1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev]'
	@touch $(STAMP)

# Tests run in a private mount namespace: nothing a test mounts can leak into the host,
# and /etc and /usr are read-only there, so a buggy cleanup can never delete host files.
SANDBOX := unshare -m --propagation private sh -c 'for d in /etc /usr; do \
	mount --bind -o ro "$$d" "$$d" || exit 1; done; exec "$$@"' sandbox

test: setup
	$(SANDBOX) $(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(SANDBOX) $(PY) -m pytest -m 'not slow' $(PYTEST_ARGS)

demo: setup
	$(SANDBOX) ./demo/demo.sh

bench: setup
	$(SANDBOX) $(PY) -m benchmarks $(BENCH_ARGS)

lint: setup
	$(VENV)/bin/ruff check cowfs tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info
