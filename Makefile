# ctfhost: `make demo` runs a whole ctfhost on this machine; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: demo demo-system demo-stop test test-sqlite test-postgresql system venv clean

$(VENV)/.installed: setup.cfg pyproject.toml plugins/docker_runtime/setup.cfg plugins/traefik/setup.cfg plugins/ctfd/setup.cfg plugins/kctf_runtime/setup.cfg plugins/kata_runtime/setup.cfg dev/setup.cfg clients/python/setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[postgresql,serve,test,mcp]' -e 'plugins/docker_runtime[test]' -e 'plugins/traefik[test]' -e 'plugins/ctfd[test]' -e 'plugins/kctf_runtime[test]' -e 'plugins/kata_runtime[test]' -e 'clients/python[test]' -e dev
	touch $@

venv: $(VENV)/.installed

system:
	scripts/system.sh deps
	scripts/system.sh services

# demo-stop stops what demo started: instances (through the API), worker, Traefik, app, the demo's
# network, and Redis/dockerd only if this demo's `system.sh services` started them (.demo/system-started).
demo: demo-system venv
	$(PY) -m ctfhost_dev demo

demo-system:
	scripts/system.sh deps
	scripts/system.sh services .demo/system-started

demo-stop:
	$(PY) -m ctfhost_dev demo-stop
	scripts/system.sh stop-started .demo/system-started

test-sqlite: system venv
	$(PY) -m pytest

test-postgresql: system venv
	CTFHOST_TEST_DATABASE_URL="$$(scripts/system.sh postgres)" $(PY) -m pytest

# The whole suite, on SQLite and then on PostgreSQL.
test: test-sqlite test-postgresql

clean:
	rm -rf $(VENV) .demo *.egg-info plugins/*/*.egg-info
