# Quick start: `make demo` serves a sample image on http://127.0.0.1:8000 ; `make test` runs everything.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
VALIDATOR := .venv-validator/bin/python
DEMO_ROOT ?= demo-images
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: demo test lint typecheck unit sample clean bench browser-setup

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

sample: $(STAMP)
	$(PY) examples/make_pyramid.py --sample $(DEMO_ROOT)

# viewer pages use the local npm packages when npm could install them, else the pinned CDN builds
demo: sample
	-bash tests/browser/setup.sh --packages-only
	@echo "tileserver: open http://$(HOST):$(PORT)/viewer/sample.tif  (index: http://$(HOST):$(PORT)/)"
	assets=.cache/viewer-node/node_modules; [ -d $$assets ] || assets=; \
	  TILESERVER_VIEWER_ASSETS=$$assets $(VENV)/bin/tileserver serve $(DEMO_ROOT) --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# the IIIF validator (iiif-validator-ng needs Python >= 3.12) lives in its own venv
$(VALIDATOR): tests/conformance/setup_validator.sh
	bash tests/conformance/setup_validator.sh

unit: $(STAMP) $(VALIDATOR)
	$(VENV)/bin/pytest

# Debian chromium, Playwright in .venv, the pinned viewer npm packages in .cache/viewer-node
browser-setup: $(STAMP)
	VENV=$(VENV) bash tests/browser/setup.sh

test: lint typecheck browser-setup unit

bench: $(STAMP)
	bash bench/run.sh

clean:
	rm -rf $(VENV) .venv-validator .cache $(DEMO_ROOT) .pytest_cache .mypy_cache .ruff_cache test-artifacts
