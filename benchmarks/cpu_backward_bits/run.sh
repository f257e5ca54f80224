#!/bin/sh
# Compare the working tree's CPU backward kernel with that of a baseline revision (default
# f912908, the last one before the kernel's staged loops): bit for bit over 2520 cases, then
# time both on the demo model's shapes (one thread). Needs g++ and git; takes about 10 seconds.
set -eu
BASE=${1:-f912908}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(git -C "$HERE" rev-parse --show-toplevel)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
git -C "$ROOT" show "$BASE:pwlu_det/csrc/pwlu/pwlu_kernels.cpp" > "$WORK/base_kernels.cpp"
git -C "$ROOT" show "$BASE:pwlu_det/csrc/pwlu/pwlu_kernels.h" > "$WORK/pwlu_kernels.h"
printf '#define pwlu_det pwlu_old\n#include "base_kernels.cpp"\n' > "$WORK/base.cpp"
FLAGS="-O3 -std=c++17"  # as setup.py builds the extension
g++ $FLAGS -I"$WORK" -c "$WORK/base.cpp" -o "$WORK/base.o"
g++ $FLAGS -c "$ROOT/pwlu_det/csrc/pwlu/pwlu_kernels.cpp" -o "$WORK/new.o"
g++ $FLAGS -I"$ROOT/pwlu_det/csrc/pwlu" "$HERE/compare_backward.cpp" "$WORK/base.o" "$WORK/new.o" \
  -o "$WORK/compare_backward"
"$WORK/compare_backward"
