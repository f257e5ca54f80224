#!/usr/bin/env python
"""``make gpu-check``: the CUDA test suite and the GPU benchmark, with a log.

Steps, each a child process with a time limit, its output copied to the log:

1. the environment: Python, torch, Triton, GPUs, whether pytest is installed;
2. CPU-side preparation: the 64-bit offset check of the kernels' TTIR
   (``tools/compile_triton_kernels.py --check-int64``) and the interpreter twins of the CUDA
   tests (``tools/run_cuda_tests.py --device interpreter``);
3. with a GPU: ``tests/cuda`` on the GPU (``python -m pytest`` when pytest is installed, else
   ``tools/run_cuda_tests.py --device cuda``, which runs the same test functions), then
   ``tools/benchmark_pwlu.py --device cuda``.

Without a GPU it runs steps 1-2 and says so. It needs only ``python`` with torch and Triton:
no virtual environment, no C++ build, no Detectron2, no network. Exit status 1 if a step fails.

Example::

    python tools/gpu_check.py --out output/gpu-check
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
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
    try:
        for line in proc.stdout:
            log(line.rstrip("\n"))
            if time.perf_counter() - start > timeout:
                proc.kill()
                log(f"--- {name}: killed after {timeout} s")
                break
        code = proc.wait(timeout=max(timeout - (time.perf_counter() - start), 1))
    except subprocess.TimeoutExpired:
        proc.kill()
        code = -9
        log(f"--- {name}: killed after {timeout} s")
    seconds = time.perf_counter() - start
    log(f"--- {name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {seconds:.0f} s")
    return code == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="output/gpu-check", help="folder for the log and JSON")
    args = parser.parse_args()
    out = (ROOT / args.out).resolve()
    log = Log(out / "gpu-check.log")
    python = sys.executable
    base_env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    started = time.perf_counter()

    log(f"gpu-check {time.strftime('%Y-%m-%d %H:%M:%S')}, python {sys.version.split()[0]}")
    try:
        import torch
        import triton
    except Exception as e:
        log(f"torch and Triton are needed: {type(e).__name__}: {e}")
        return 1
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    have_pytest = importlib.util.find_spec("pytest") is not None
    log(f"torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton.__version__}")
    for i in range(gpus):
        props = torch.cuda.get_device_properties(i)
        memory = props.total_memory / 2**30
        log(f"GPU {i}: {props.name}, {memory:.0f} GiB, sm_{props.major}{props.minor}")
    if not gpus:
        log("no GPU found (torch.cuda.is_available() is False): CPU-side preparation only")
    log(f"pytest: {'installed' if have_pytest else 'not installed (the plain runner is used)'}")

    results = {}
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
        [python, "tools/run_cuda_tests.py", "--device", "interpreter"],
        240,
        base_env,
    )
    if gpus:
        if have_pytest:
            cmd = [python, "-m", "pytest", "tests/cuda", "-v", "-rs", "-k", "not interpreter"]
            cmd += ["-p", "no:cacheprovider"]
        else:
            cmd = [python, "tools/run_cuda_tests.py", "--device", "cuda"]
        results["CUDA tests"] = step(log, "CUDA tests", cmd, 240, base_env)
        results["GPU benchmark"] = step(
            log,
            "GPU benchmark",
            [python, "tools/benchmark_pwlu.py", "--device", "cuda", "--json"]
            + [str(out / "benchmark.json")],
            180,
            base_env,
        )

    log(f"\n=== summary ({time.perf_counter() - started:.0f} s)")
    for name, ok in results.items():
        log(f"{'ok    ' if ok else 'FAILED'} {name}")
    if not gpus:
        log("no GPU found: the CUDA tests and the GPU benchmark did not run")
    log(f"log: {out / 'gpu-check.log'}")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
