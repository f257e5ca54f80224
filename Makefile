# pwlu_det: every target sets up .venv/ first (idempotent; fast when already done).
PYTHON ?= python3
VENV_PY := .venv/bin/python

.PHONY: setup test demo compare lint clean

setup:
	@$(PYTHON) tools/setup_env.py

test: setup
	$(VENV_PY) -m pytest

demo: setup
	$(VENV_PY) tools/demo.py

# PWLU, Swish and ReLU demo models x seeds 0-2 (runs in output/compare_shapes, resumable);
# the tables and plot go to benchmarks/results/shapes.
compare: setup
	$(VENV_PY) tools/compare_activations.py --work-dir output/compare_shapes \
		--results-dir benchmarks/results/shapes

lint: setup
	$(VENV_PY) -m ruff check .
	$(VENV_PY) -m ruff format --check .

clean:
	rm -rf .venv build *.egg-info pwlu_det/*.so
