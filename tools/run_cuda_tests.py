#!/usr/bin/env python
"""Run the CUDA test suite (``tests/cuda``) without pytest, on one device.

Each test is a plain function ``test_*(device)``; this calls every one of them with
``--device cuda`` (skipped, with the reason, where no GPU is found) or ``--device interpreter``
(the twins: CPU tensors, Triton's interpreter; ``TRITON_INTERPRET=1`` is set before Triton is
imported). pytest runs the same functions (``tests/cuda/conftest.py``); this runner exists for
machines without pytest (``make gpu-check``) and for the interpreter child process of a pytest
session. Needs no Detectron2 and no C++ extension.

Example::

    python tools/run_cuda_tests.py --device cuda
    python tools/run_cuda_tests.py --device interpreter -k dtypes
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "tests" / "cuda"
if str(ROOT) not in sys.path:  # the tests import pwlu_det from the checkout
    sys.path.insert(0, str(ROOT))


def collect(pattern: str) -> list[tuple[str, str, object]]:
    """``(module, name, function)`` of every ``test_*`` in ``tests/cuda/test_*.py``, in order."""
    sys.path.insert(0, str(SUITE))
    tests = []
    for path in sorted(SUITE.glob("test_*.py")):
        module = importlib.import_module(path.stem)
        for name, fn in vars(module).items():
            if name.startswith("test_") and callable(fn) and pattern in f"{path.stem}::{name}":
                tests.append((path.stem, name, fn))
    return tests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "interpreter"), required=True)
    parser.add_argument("-k", default="", help="run only tests whose module::name contains this")
    parser.add_argument(
        "--json", metavar="FILE", help="write the verdicts as JSON to FILE ('-': stdout)"
    )
    args = parser.parse_args()
    if args.device == "interpreter":
        os.environ["TRITON_INTERPRET"] = "1"  # before anything imports triton
    else:
        os.environ.pop("TRITON_INTERPRET", None)
    log = sys.stderr if args.json == "-" else sys.stdout

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no GPU found (torch.cuda.is_available() is False): every test skips", file=log)
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}", file=log)
    results: dict[str, dict[str, str]] = {}
    start = time.perf_counter()
    for module, name, fn in collect(args.k):
        key = f"{module}::{name}"
        t0 = time.perf_counter()
        torch.manual_seed(0)
        try:
            fn(args.device)
        except unittest.SkipTest as e:
            status, detail = "skipped", str(e)
        except Exception:
            status, detail = "failed", traceback.format_exc()
        else:
            status, detail = "passed", ""
        seconds = time.perf_counter() - t0
        results[key] = {"status": status, "detail": detail, "seconds": f"{seconds:.2f}"}
        line = f"{status.upper():<8} {key} [{args.device}] ({seconds:.1f} s)"
        print(line + (f": {detail}" if status == "skipped" else ""), file=log)
        if status == "failed":
            print(detail, file=log)
    counts = {s: sum(r["status"] == s for r in results.values()) for s in ("passed", "failed")}
    counts["skipped"] = len(results) - counts["passed"] - counts["failed"]
    total = time.perf_counter() - start
    print(
        f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped "
        f"on {args.device} in {total:.1f} s",
        file=log,
    )
    report = {"device": args.device, "results": results, "counts": counts}
    if args.json == "-":
        print(json.dumps(report))
    elif args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 1 if counts["failed"] or not results else 0


if __name__ == "__main__":
    sys.exit(main())
