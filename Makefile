# pwlu_det: every target sets up .venv/ first (idempotent; fast when already done).
PYTHON ?= python3
VENV_PY := .venv/bin/python

.PHONY: setup test demo lint clean

setup:
	@$(PYTHON) tools/setup_env.py

test: setup
	$(VENV_PY) -m pytest

demo: setup
	$(VENV_PY) tools/demo.py

lint: setup
	$(VENV_PY) -m ruff check .
	$(VENV_PY) -m ruff format --check .

clean:
	rm -rf .venv build *.egg-info pwlu_det/*.so
