# pwlu_det: every target sets up .venv/ first (idempotent; fast when already done).
PYTHON ?= python3
# The environment, and the Detectron2 source set up in it: a source tree or .tar.gz of one, or
# v0.6 (the tested release, the default of a new environment); unset keeps what VENV has.
VENV ?= .venv
DETECTRON2_SRC ?=
VENV_PY := $(VENV)/bin/python

.PHONY: setup test demo compare pretrain compare-pretrained lint clean gpu-check check-install

setup:
	@$(PYTHON) dev/setup_env.py --venv "$(VENV)" $(if $(DETECTRON2_SRC),--detectron2-src "$(DETECTRON2_SRC)")

# Two pytest sessions: the suite, then tests/triton with the Triton kernels in Triton's
# interpreter on CPU (TRITON_INTERPRET must be set before Triton loads, so it is its own
# session). Exit status 5 means every test was deselected (PYTEST_ADDOPTS="-m 'not layers'").
# The suite runs in TEST_WORKERS pytest-xdist workers of one thread each: most of its time is
# single-threaded Python and the 3-s start-up of tools run as subprocesses. On 2 cores: 6.0 min
# with 2 workers of 1 thread, 8.8 min in one process, 10.2 min with 2 workers of 2 threads.
# For -x or --pdb, run `.venv/bin/python -m pytest ...` directly (one process).
TEST_WORKERS ?= 2
test: setup
	OMP_NUM_THREADS=1 $(VENV_PY) -m pytest -n $(TEST_WORKERS)
	TRITON_INTERPRET=1 $(VENV_PY) -m pytest tests/triton || [ $$? -eq 5 ]

demo: setup
	$(VENV_PY) tools/demo.py

# The Shapes activation comparison with equal tuning: every config at base LR 0.02, 0.04 and
# 0.08 on shapes_tune, then each at its best LR x seeds 0-2 on shapes_val. Runs go to
# benchmarks/results/shapes/runs and resume; their small records are committed, so that the
# comparison continues across sessions. The tables and plot go to benchmarks/results/shapes.
COMPARE_GRID ?= SOLVER.BASE_LR=0.02,0.04,0.08
compare: setup
	$(VENV_PY) tools/compare_activations.py --grid $(COMPARE_GRID) \
		--work-dir benchmarks/results/shapes/runs --results-dir benchmarks/results/shapes

# From ReLU-pretrained weights (the COCO user's path, on a CPU proxy): pretrain the ReLU
# ResNet-18 on the embedded classification data (output/pretrain_backbone/R-18.pkl, about
# 11 min on 2 cores), then compare ReLU, Swish, PWLU (chosen recipe) and PWLU (old COCO
# settings) fine-tuned from it: every config at 4 base LRs on shapes_tune (seed 1 too at a
# config's two best LRs where they are within 2 AP), then each at its best LR x seeds 0-2 on
# shapes_val. Runs go to benchmarks/results/shapes_pretrained/runs and resume.
PRETRAINED_CONFIGS := $(foreach a,relu swish pwlu pwlu_old_coco,configs/ShapesPretrained/mask_rcnn_R_18_FPN_$(a).yaml)
PRETRAINED_GRID ?= SOLVER.BASE_LR=0.0025,0.005,0.01,0.02
pretrain: setup
	$(VENV_PY) tools/pretrain_backbone.py

compare-pretrained: pretrain
	$(VENV_PY) tools/compare_activations.py --config-file $(PRETRAINED_CONFIGS) \
		--grid $(PRETRAINED_GRID) \
		--work-dir benchmarks/results/shapes_pretrained/runs \
		--results-dir benchmarks/results/shapes_pretrained

# On a GPU machine: tests/triton on the GPU and the GPU benchmark (under 8 minutes), log in
# $(GPU_CHECK_DIR)/gpu-check.log. A `python` with torch, Triton and pytest: no .venv, no C++
# build, no Detectron2 needed. Without a GPU: the CPU-side checks only, and says so.
GPU_CHECK_PYTHON ?= python
GPU_CHECK_DIR ?= output/gpu-check
GPU_CHECK_ARGS ?=
gpu-check:
	$(GPU_CHECK_PYTHON) tools/gpu_check.py --out $(GPU_CHECK_DIR) $(GPU_CHECK_ARGS)

# pip install . (not editable) into a fresh environment, then train, export and read the demo's
# documented row from an empty folder (dev/check_install.sh).
check-install: setup
	VENV="$(VENV)" dev/check_install.sh

lint: setup
	$(VENV_PY) -m ruff check .
	$(VENV_PY) -m ruff format --check .

clean:
	rm -rf .venv .venv-d2main $(VENV) build *.egg-info pwlu_det/*.so pwlu_det/model_zoo/configs \
		pwlu_det/model_zoo/documented
