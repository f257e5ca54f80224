#!/usr/bin/env python
"""``make gpu-check``: the CUDA test suite and the GPU benchmark, with a log.

Steps, each a child process with a time limit, its output copied to the log:

1. the environment: Python, torch, Triton, the GPUs and their clocks;
2. CPU-side preparation: the 64-bit offset check of the kernels' TTIR
   (``tools/compile_triton_kernels.py --check-int64``) and ``tests/triton`` in Triton's
   interpreter (``TRITON_INTERPRET=1 python -m pytest tests/triton``);
3. with a GPU: ``python -m pytest tests/triton`` on the GPU (verdicts in ``cuda-tests.xml``),
   then ``tools/benchmark_pwlu.py --device cuda`` (``benchmark.json``).

Without a GPU it runs steps 1-2 and says so. ``--gpu-only`` skips step 2 (it needs no GPU, so
it is done before a lease, where device time is not spent on it). A summary goes to
``gpu-check.json``. It needs only ``python`` with torch, Triton and pytest: no virtual
environment, no C++ build, no Detectron2, no network. Exit status 1 if a step fails.

Example::

    python tools/gpu_check.py --out output/gpu-check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Log:
    """Writes each line to stdout and to the log file."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("w")

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.file.write(text + "\n")
        self.file.flush()


def step(log: Log, name: str, cmd: list[str], timeout: int, env: dict | None = None) -> bool:
    """Run one step; its output goes to the log as it comes. True if it exited with 0."""
    log(f"\n=== {name}: {' '.join(cmd)} (limit {timeout} s)")
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env or dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # A watchdog kills the step at its limit even when it prints nothing.
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        for line in proc.stdout:
            log(line.rstrip("\n"))
        code = proc.wait()
    finally:
        watchdog.cancel()
    if time.perf_counter() - start >= timeout:
        log(f"--- {name}: killed after {timeout} s")
    seconds = time.perf_counter() - start
    log(f"--- {name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {seconds:.0f} s")
    return code == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="output/gpu-check", help="folder for the log and JSON")
    parser.add_argument(
        "--gpu-only", action="store_true", help="skip the CPU-side checks (run them beforehand)"
    )
    args = parser.parse_args()
    out = (ROOT / args.out).resolve()
    log = Log(out / "gpu-check.log")
    python = sys.executable
    base_env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    base_env["PYTHONUNBUFFERED"] = "1"  # the log gets each line as it is printed
    started = time.perf_counter()

    log(f"gpu-check {time.strftime('%Y-%m-%d %H:%M:%S')}, python {sys.version.split()[0]}")
    try:
        import torch
        import triton
    except Exception as e:
        log(f"torch and Triton are needed: {type(e).__name__}: {e}")
        return 1
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    log(f"torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton.__version__}")
    for i in range(gpus):
        props = torch.cuda.get_device_properties(i)
        memory = props.total_memory / 2**30
        log(f"GPU {i}: {props.name}, {memory:.0f} GiB, sm_{props.major}{props.minor}")
    if not gpus:
        log("no GPU found (torch.cuda.is_available() is False): CPU-side preparation only")
    if gpus and shutil.which("nvidia-smi"):
        query = "name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit"
        smi = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv"], capture_output=True, text=True
        )
        log(smi.stdout.strip() or smi.stderr.strip())

    results: dict[str, bool] = {}
    if not args.gpu_only:
        results["TTIR 64-bit offsets"] = step(
            log,
            "TTIR 64-bit offsets",
            [python, "tools/compile_triton_kernels.py", "--check-int64", "--arch", "90"],
            120,
            base_env,
        )
        results["interpreter twins"] = step(
            log,
            "interpreter twins",
            [python, "-m", "pytest", "tests/triton", "-q", "-rs", "-p", "no:cacheprovider"],
            300,
            {**base_env, "TRITON_INTERPRET": "1"},
        )
    if gpus:
        results["CUDA tests"] = step(
            log,
            "CUDA tests",
            [python, "-m", "pytest", "tests/triton", "-v", "-rs", "-p", "no:cacheprovider"]
            + ["--junitxml", str(out / "cuda-tests.xml")],
            240,
            base_env,
        )
        results["GPU benchmark"] = step(
            log,
            "GPU benchmark",
            [python, "tools/benchmark_pwlu.py", "--device", "cuda", "--json"]
            + [str(out / "benchmark.json")],
            240,
            base_env,
        )
    summary = {"gpus": gpus, "seconds": round(time.perf_counter() - started), "steps": results}
    (out / "gpu-check.json").write_text(json.dumps(summary, indent=1))

    log(f"\n=== summary ({time.perf_counter() - started:.0f} s)")
    for name, ok in results.items():
        log(f"{'ok    ' if ok else 'FAILED'} {name}")
    if not gpus:
        log("no GPU found: the CUDA tests and the GPU benchmark did not run")
    log(f"log: {out / 'gpu-check.log'}")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
