# Drilling telemetry appliance. `make run` and `make test` set themselves up.
# Needs Python 3.11+ and make; everything else is installed into .venv from the
# hash-locked requirements files.

PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
PREFIX  := var/dev
CONF    := $(PREFIX)/etc/rigtel/supervisord.conf
STAMP   := $(VENV)/.installed
# The offline bundle's target: CPython version, oldest glibc (2.17 = manylinux2014), machine
BUNDLE_PYTHON ?= 3.11
BUNDLE_GLIBC  ?= 2.28
BUNDLE_ARCH   ?= x86_64

.PHONY: help run status stop config test bench chaos soak lock clean bundle

help:
	@echo "make run     start the whole appliance (supervisord, dev prefix $(PREFIX)); Ctrl-C stops"
	@echo "make status  show every program's state (supervisorctl status)"
	@echo "make stop    stop a running 'make run' from another terminal"
	@echo "make config  print the effective settings of the dev prefix"
	@echo "make test    run the whole test suite"
	@echo "make bench   run the benchmarks (figures and ratios against a bare baseline)"
	@echo "make chaos   kill programs at random for CHAOS_MINUTES (10), then check nothing was lost"
	@echo "make soak    run at 100 Hz with the dashboard streaming for SOAK_MINUTES (60): memory, files, threads flat?"
	@echo "make bundle  the offline installation bundle in dist/ (needs the registry once; BUNDLE_PYTHON=$(BUNDLE_PYTHON) BUNDLE_GLIBC=$(BUNDLE_GLIBC) BUNDLE_ARCH=$(BUNDLE_ARCH))"
	@echo "make lock    re-resolve requirements*.lock from requirements*.in (needs the registry)"

$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed; set PYTHON=python3.x")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock -r requirements-dev.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

run: $(STAMP)
	$(PY) -m appliance dev --prefix $(PREFIX)

status: $(STAMP)
	@test -S $(PREFIX)/run/rigtel/supervisor.sock || { echo "not running: start it with 'make run'"; exit 1; }
	$(VENV)/bin/supervisorctl -c $(CONF) status

stop: $(STAMP)
	@if test -S $(PREFIX)/run/rigtel/supervisor.sock; then $(VENV)/bin/supervisorctl -c $(CONF) shutdown; \
	else echo "not running: nothing to stop"; fi

config: $(STAMP)
	$(PY) -m appliance config --config $(PREFIX)/etc/rigtel/appliance.ini

test: $(STAMP) browser-deps
	$(PY) -m pytest

# The browser tests drive Debian's Chromium (Playwright never downloads a browser here).
.PHONY: browser-deps
browser-deps:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	else \
		echo "NOTE: /usr/bin/chromium is missing, so the browser tests (tests/test_browser.py) will be skipped."; \
		echo "      Install it as root: 'sudo apt-get install chromium' (or 'sudo make browser-deps')."; \
	fi

bench: $(STAMP)
	$(PY) tests/bench/run.py

chaos: $(STAMP)
	$(PY) tests/chaos.py

soak: $(STAMP) browser-deps
	$(PY) tests/soak.py

bundle: $(STAMP)
	$(PY) installer/bundle.py --python $(BUNDLE_PYTHON) --glibc $(BUNDLE_GLIBC) --arch $(BUNDLE_ARCH)

lock: $(STAMP)
	$(PY) -m pip install --quiet pip-tools
	$(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras -o requirements.lock requirements.in
	$(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras -o requirements-dev.lock requirements-dev.in

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
