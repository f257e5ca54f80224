#!/usr/bin/env bash
# `make check-install`: pwlu_det as a regular (not editable) install works from any directory.
#
# Installs the checkout with `pip install .` into a fresh virtual environment that borrows
# PyTorch, Detectron2 and the other requirements from $(VENV) (a .pth line, so that .venv's own
# editable pwlu_det is not seen), then, from an empty working directory:
#   1. trains the demo config for 2 iterations (python -m pwlu_det.engine.cli), the config
#      found through pwlu_det.model_zoo, the shapes data generated into $DETECTRON2_DATASETS;
#   2. exports that checkpoint to ONNX with the repository's tools/export_model.py;
#   3. finds the demo's documented row (python -m pwlu_det.engine.demo reads it from the
#      installed package) and checks that the comparison accepts its own figures.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-.venv}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
log() { echo "[check-install] $*"; }

SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$VENV/bin/python" -m venv --without-pip "$WORK/venv"  # pip and setuptools: .venv's, as below
PY="$WORK/venv/bin/python"
echo "$SITE" > "$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/requirements_from_venv.pth"
log "pip install . into $WORK/venv (builds the C++ extension)"
"$PY" -m pip install --quiet --no-deps --no-build-isolation "$ROOT"

mkdir "$WORK/run"
cd "$WORK/run"
export DETECTRON2_DATASETS="$WORK/datasets"
"$PY" - "$ROOT" <<'EOF'
import os, sys
import pwlu_det, pwlu_det._C  # noqa: E401,F401
root = os.path.realpath(sys.argv[1])
assert not os.path.realpath(pwlu_det.__file__).startswith(root), pwlu_det.__file__
print(f"[check-install] pwlu_det {pwlu_det.__version__} imported from {pwlu_det.__file__}")
EOF
CONFIG=$("$PY" -c "from pwlu_det.model_zoo import get_config_file as g; print(g('Shapes/mask_rcnn_R_18_FPN_pwlu.yaml'))")
log "training $CONFIG for 2 iterations"
"$PY" -m pwlu_det.engine.cli --config-file "$CONFIG" SOLVER.MAX_ITER 2 SOLVER.CHECKPOINT_PERIOD 2 \
    MODEL.PWLU.STATISTICS_ITERS 1 DATASETS.TEST "()" DATALOADER.NUM_WORKERS 0 OUTPUT_DIR out/train \
    > train.log 2>&1 || { tail -n 30 train.log; exit 1; }
test -f out/train/model_final.pth
log "exporting out/train/model_final.pth to ONNX"
"$PY" "$ROOT/tools/export_model.py" --config-file "$CONFIG" --format onnx --output out/export \
    MODEL.WEIGHTS out/train/model_final.pth > export.log 2>&1 || { tail -n 30 export.log; exit 1; }
ls out/export/*.onnx > /dev/null
"$PY" -m pwlu_det.engine.demo --help > /dev/null
"$PY" - <<'EOF'
from pwlu_det.config import load_pwlu_config
from pwlu_det.engine.demo import DEFAULT_DEMO_CONFIG, compare_with_documented, documented_result
from pwlu_det.model_zoo import get_config_file

config = get_config_file(DEFAULT_DEMO_CONFIG)
seed = load_pwlu_config(config).SEED
row = documented_result(config, seed)
assert row is not None, f"no documented row for {DEFAULT_DEMO_CONFIG} at seed {seed}"
figures = {task: {"AP": row[f"{task}_AP"]} for task in ("bbox", "segm")}
same, message = compare_with_documented(figures, config, seed)
assert same, message
print(f"[check-install] the demo's documented row: box AP {row['bbox_AP']:.2f}, {message}")
EOF
log "ok: install, training, export and the demo's documented row, outside the repository"
