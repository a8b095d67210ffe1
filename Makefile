# circusd developer tasks. `make help` lists them.
#
# Everything lives in local virtualenvs: .venv (circusd itself, editable, with
# the test tools) and .peers/ (Circus 0.19 and supervisor 4.3, the daemons we
# test and benchmark against). Each is built once; a stamp file inside it
# records that the install finished, so re-running a target is quick.

PYTHON ?= python3
VENV := .venv
PEERS := .peers
CIRCUS_PEER := circus==0.19.0 pyzmq==27.3.0 tornado==6.6.1 psutil==7.2.2
SUPERVISOR_PEER := supervisor==4.3.0
PYTEST_ARGS ?=
BENCH_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv peers run test lint bench clean distclean preflight

help:
	@echo "make venv       create .venv with circusd (editable) and the test tools"
	@echo "make peers      create .peers/circus (circus 0.19.0), .peers/supervisor (4.3.0)"
	@echo "make run        run the example deployment (examples/web) in the foreground"
	@echo "make test       run the test suite (PYTEST_ARGS='-k name' to narrow it)"
	@echo "make lint       ruff check, ruff format --check, mypy circusd"
	@echo "make bench      compare circusd, Circus and supervisor (BENCH_ARGS='--only respawn')"
	@echo "make deb        build the Debian package into dist/ (docs/install.md)"
	@echo "make clean      remove caches, example state and bench results"
	@echo "make distclean  clean, then remove .venv and .peers"

# One line per problem, naming the Debian package that fixes it.
preflight:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	  || { echo "error: $(PYTHON) is missing or older than 3.11 (circusd needs 3.11+)"; exit 1; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null \
	  || { echo "error: $(PYTHON) cannot create virtualenvs: apt-get install python3-venv"; exit 1; }
	@$(PYTHON) -c 'import os, sysconfig; p = sysconfig.get_paths()["include"]; os.stat(p + "/Python.h")' 2>/dev/null \
	  || { echo "error: Python headers missing (circusd._spawn and python-prctl are compiled): apt-get install python3-dev"; exit 1; }
	@test -e /usr/include/sys/capability.h \
	  || { echo "error: libcap headers missing (python-prctl is built from source): apt-get install libcap-dev"; exit 1; }
	@command -v cc >/dev/null \
	  || { echo "error: no C compiler (circusd._spawn and python-prctl are compiled): apt-get install build-essential"; exit 1; }

venv: $(VENV)/.installed

# setup.py builds circusd/_spawn.c in place (an editable install).
$(VENV)/.installed: pyproject.toml setup.py circusd/_spawn.c
	@$(MAKE) --no-print-directory preflight
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

peers: $(PEERS)/circus/.installed $(PEERS)/supervisor/.installed

$(PEERS)/circus/.installed:
	@$(MAKE) --no-print-directory preflight
	test -x $(PEERS)/circus/bin/python || $(PYTHON) -m venv $(PEERS)/circus
	$(PEERS)/circus/bin/python -m pip install --quiet --disable-pip-version-check $(CIRCUS_PEER)
	@touch $@

$(PEERS)/supervisor/.installed:
	@$(MAKE) --no-print-directory preflight
	test -x $(PEERS)/supervisor/bin/python || $(PYTHON) -m venv $(PEERS)/supervisor
	$(PEERS)/supervisor/bin/python -m pip install --quiet --disable-pip-version-check $(SUPERVISOR_PEER)
	@touch $@

run: venv
	$(VENV)/bin/circusd examples/web/circus.ini

test: venv peers
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy circusd

bench: venv peers
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

# Debian's own tools and /usr/bin/python3 only, whatever PATH says
# (packaging/build-deb sets PATH=/usr/sbin:/usr/bin:/sbin:/bin).
.PHONY: deb
deb:
	packaging/build-deb --out dist

clean:
	rm -rf .pytest_cache .ruff_cache .mypy_cache build dist bench/results
	find . -path ./$(VENV) -prune -o -path ./$(PEERS) -prune -o \
	  -name __pycache__ -type d -prune -exec rm -rf {} +
	find examples/web/var -mindepth 1 ! -name .gitignore -delete

distclean: clean
	rm -rf $(VENV) $(PEERS) *.egg-info
