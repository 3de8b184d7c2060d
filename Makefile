# The two set-up commands: `make run` serves on 127.0.0.1:8080 (PORT overrides); `make test` runs every suite.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test fuzz generate install clean

$(STAMP): pyproject.toml package-lock.json
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	npm ci --no-audit --no-fund
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

generate: $(STAMP)
	$(PY) -m tools.generate

clean:
	rm -rf $(VENV) .tiris .pytest_cache
