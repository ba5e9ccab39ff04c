# The README's two commands are `make run` and `make test`; the rest serve CI and development.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install node sshd run test lint format typecheck contracts schema schema-check ci bench bench-ledger bench-metering bench-placement bench-provisioning bench-terminal bench-fanout lock graphiql-assets browser test-browser

# Create the venv if missing and install exactly what the lock file pins (hash-checked).
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)

# The unmodified JS clients the suite drives (graphql-ws, Apollo, xterm.js, relay-compiler) and
# the GraphiQL assets, exactly as package-lock.json pins them.
NODE_STAMP := node_modules/.package-lock.json
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)

node: $(NODE_STAMP)

# Copy GraphiQL's files from the pinned packages in node_modules into gpucloud/static/graphiql/
# (committed: production needs no node). Run after changing their versions in package.json and
# gpucloud/graphiql_assets.py; tests/api/test_graphiql.py checks the copies are byte-identical.
graphiql-assets: install node
	$(PY) -m gpucloud.graphiql_assets node_modules

# Tests run a real OpenSSH sshd on 127.0.0.1 as a GPU node. The system's is used when installed;
# otherwise Debian's openssh-server package is unpacked under .tools/ (no service is started,
# nothing outside the repository changes).
SSHD := .tools/openssh/usr/sbin/sshd
$(SSHD):
	@mkdir -p .tools/deb
	@if [ -x /usr/sbin/sshd ]; then mkdir -p $(dir $(SSHD)) && ln -sf /usr/sbin/sshd $(SSHD); \
	else cd .tools/deb && { apt-get download openssh-server 2>/dev/null \
	     || { apt-get update -qq && apt-get download openssh-server; }; } \
	     && dpkg-deb -x openssh-server_*.deb ../openssh; fi
	@test -x $(SSHD)

# As root, sshd separates privileges into the `sshd` user, as the package's own setup creates it.
sshd: $(SSHD)
	@if [ "$$(id -u)" = 0 ] && ! id sshd >/dev/null 2>&1; then \
	    useradd --system --no-create-home --home-dir /run/sshd --shell /usr/sbin/nologin sshd; fi

run: install
	exec $(VENV)/bin/gpucloud dev

test: install sshd node
	$(PY) -m pytest

# GraphiQL in a real headless Chromium, installed from Debian's package when missing (as root);
# kept out of `make test` so the README's test command needs no browser, and run by .ci/run.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq \
	    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

test-browser: install node browser
	GPUCLOUD_BROWSER_TESTS=1 $(PY) -m pytest tests/browser

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: install
	$(VENV)/bin/mypy domain infra schema resolvers jobs gpucloud

contracts: install
	$(VENV)/bin/lint-imports

schema: install
	$(VENV)/bin/gpucloud export-schema

schema-check: install
	$(VENV)/bin/gpucloud export-schema --check

ci: test lint typecheck contracts schema-check

bench: install sshd
	$(PY) -m bench.graphql_read
	$(PY) -m bench.auth_overhead
	$(PY) -m bench.ledger
	$(PY) -m bench.placement

# Placement decisions/s on 1,000 nodes x 8 GPUs, and bootstrap overhead on a loopback sshd.
bench-placement: install sshd
	$(PY) -m bench.placement

# create -> running on loopback sshd vs the same script sent directly; 200 allocations with 4
# workers. Makes real Linux users (random prefix, removed after): run as root.
bench-provisioning: install sshd
	$(PY) -m bench.provisioning

# 10,000 graphql-transport-ws subscribers on one API process: commit -> delivery p50/p99 and memory
# per idle subscriber, against a bare Starlette + Redis fan-out in the same run.
bench-fanout: install
	$(PY) -m bench.fanout

# Keystroke round trip and bulk output through /terminal vs a direct asyncssh PTY session to
# the same loopback sshd. Makes a real Linux user (random prefix, removed after): run as root.
bench-terminal: install sshd
	$(PY) -m bench.terminal

# The ledger alone: transfers/s vs plain INSERT commits, and one metering tick on 10,000 holds.
bench-ledger: install
	$(PY) -m bench.ledger

# One metering tick over 10,000 RUNNING allocations with open holds, against the old
# per-allocation tick measured in the same run (on a 1,000 sample, scaled).
bench-metering: install
	$(PY) -m bench.metering

# Re-pin after changing dependencies in pyproject.toml (needs `uv` on PATH).
lock:
	uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes -o requirements.lock
