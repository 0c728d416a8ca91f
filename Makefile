# prewarm — the two commands of the quick start are `make demo` and `make test`.
# Both create the virtual environment (.venv) first when it is missing or out of date.
# pip (not uv) installs it, so that pip picks up the local CPU wheel of torch.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Debian's chromium drives the browser tests (tests/ui/) through Playwright.
CHROMIUM ?= /usr/bin/chromium

.PHONY: venv demo up browser test lint bench lock clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==26.3 setuptools==84.2.1 wheel==0.48.0
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/prewarm demo

# Airflow (api-server, scheduler, dag-processor, triggerer), the MLflow UI and the router on
# localhost, on the demo's home; Ctrl-C stops them all.
up: venv
	$(BIN)/prewarm up

# Install Debian's chromium for the browser tests when it is missing and we may (root).
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium (apt-get) for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "$(CHROMIUM) missing and not root: the browser tests (tests/ui/) will skip"; \
	  fi; \
	fi

test: venv browser
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check .

bench: venv
	$(BIN)/prewarm bench --out benchmarks/results/latest.json

# Re-resolve the environment from pyproject.toml and pin it (needs the registries).
lock:
	rm -rf /tmp/prewarm-lock && $(PYTHON) -m venv /tmp/prewarm-lock
	/tmp/prewarm-lock/bin/python -m pip install --quiet --upgrade pip wheel
	/tmp/prewarm-lock/bin/python -m pip install --quiet torch==2.13.0 '.[dev]'
	(echo "# Fully pinned environment of prewarm (Python 3.11). Regenerate with: make lock"; \
	 /tmp/prewarm-lock/bin/python -m pip freeze --exclude prewarm | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/') > requirements.txt

clean:
	rm -rf var .pytest_cache .ruff_cache
