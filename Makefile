# Local set-up, server and tests. `make serve` and `make test` each set up the venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
# The local install is CPU torch; the Modal image pins its own CUDA build (functions/app.py).
TORCH ?= torch==2.13.0

.PHONY: setup serve test
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[test]'
	touch $@

serve: setup
	$(VENV)/bin/sdgate serve

test: setup
	$(PY) -m pytest -q -p no:cacheprovider
