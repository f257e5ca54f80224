"""Activation comparison: the runs of several configs over several seeds, and their AP tables.

Every run is one training of a config with ``SEED k`` into its own ``OUTPUT_DIR``
(``<work_dir>/<config stem>/seed<k>``), started by a :data:`Launcher` that the caller gives
(``tools/compare_activations.py`` runs train_net in a child process). A run whose
:data:`RUN_RESULT` file exists is finished and reused as it is; any other run is launched to
resume, so an interrupted one continues from its last checkpoint; the reports name every run
whose training was resumed mid-way (:func:`resumed_at`), since Detectron2 restarts the data order
on resume and such a run is not what one uninterrupted command gives. A run folder whose
``config.yaml`` holds another recipe than the one asked for is refused, neither reused nor
resumed. The reports (:func:`write_reports`) are rebuilt from the run folders.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO

from pwlu_det.utils.file_io import atomic_write
from pwlu_det.utils.machine import MACHINE_KEYS, describe_machine, machine_info

from .cli import FINAL_RESULTS

__all__ = [
    "CSV_COLUMNS",
    "RUN_RESULT",
    "Launcher",
    "RunSpec",
    "activation_label",
    "compare_activations",
    "config_sha",
    "diverged_count",
    "mean_std",
    "parameters_added",
    "plan_runs",
    "rows_by_config",
    "run_metrics",
    "write_reports",
    "write_rows_csv",
]

logger = logging.getLogger(__name__)

#: File a finished run leaves in its OUTPUT_DIR: its evaluation results and wall time.
RUN_RESULT = "compare_result.json"
#: The run's own console output (train_net's log is ``log.txt`` beside it).
RUN_CONSOLE = "compare_console.txt"
#: How Detectron2 stops a diverging run: a FloatingPointError ("Loss became infinite or NaN",
#: "Predicted boxes or scores contain Inf/NaN. Training has diverged.").
_DIVERGED = "FloatingPointError: "
#: Columns of ``results.csv``, in order.
CSV_COLUMNS = (
    "config",
    "activation",
    "seed",
    "iterations",
    "bbox_AP",
    "bbox_AP50",
    "bbox_AP75",
    "segm_AP",
    "segm_AP50",
    "segm_AP75",
    "minutes",
    "parameters_added",
    "resumed",
    "realign_iteration",
    "realign_mean_bound_width",
    "realign_max_function_jump",
    "realign_fallback_units",
    "overrides",
    "diverged",
    "config_sha",
    "output_dir",
    *MACHINE_KEYS,
)
_AP_KEYS = ("AP", "AP50", "AP75")
#: metrics.json scalars that PWLURealignHook writes at the realignment, and their CSV columns.
_REALIGN_SCALARS = {
    "pwlu/mean_bound_width": "realign_mean_bound_width",
    "pwlu/max_function_jump": "realign_max_function_jump",
    "pwlu/fallback_units": "realign_fallback_units",
}


@dataclass(frozen=True)
class RunSpec:
    """One training run of the comparison: ``config_file`` at ``seed`` into ``output_dir``."""

    config_file: str
    seed: int
    output_dir: str

    @property
    def label(self) -> str:
        """The config's file name without ``.yaml``: the row label of the reports."""
        return Path(self.config_file).stem

    @property
    def finished(self) -> bool:
        """Whether the run left its :data:`RUN_RESULT`."""
        return os.path.isfile(os.path.join(self.output_dir, RUN_RESULT))


#: Trains one run: ``launch(spec, opts, console)`` trains ``spec.config_file`` with the
#: overrides ``opts`` (which end with ``SEED`` and ``OUTPUT_DIR``), resuming from the last
#: checkpoint in ``spec.output_dir`` if there is one, writes the console output to ``console``
#: and returns the exit status (Detectron2's FloatingPointError on divergence is not 0).
Launcher = Callable[["RunSpec", list[str], IO[bytes]], int]


def plan_runs(config_files: Sequence[str], seeds: Sequence[int], work_dir: str) -> list[RunSpec]:
    """The runs of a comparison, seed-major (every config at seed 0 first, then seed 1, ...).

    Raises:
        FileNotFoundError: a config file does not exist.
        ValueError: no config or no seed, a seed repeated, or two configs with the same file
            name (their run folders would collide).
    """
    if not config_files or not seeds:
        raise ValueError("compare: give at least one config file and one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"compare: seeds repeat: {list(seeds)}")
    stems = [Path(c).stem for c in config_files]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise ValueError(f"compare: config file names must differ, repeated: {clashes}")
    for config_file in config_files:
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"compare: config file {config_file!r} does not exist")
    return [
        RunSpec(c, seed, os.path.join(work_dir, Path(c).stem, f"seed{seed}"))
        for seed in seeds
        for c in config_files
    ]


#: Detectron2's training loop logs this line each time it starts (v0.6 and main).
_STARTED_AT = re.compile(r"Starting training from iteration (\d+)")


def resumed_at(output_dir: str) -> list[int]:
    """The iterations from which the run's training was resumed, in order; empty for a run
    trained in one go (a finished run re-evaluated from its final checkpoint included).

    Read from train_net's ``log.txt``, which every start appends to. A run resumed mid-way is
    another run than an uninterrupted one: Detectron2 restarts its sampler (the data order)
    and the data workers' random augmentation on resume.
    """
    log = os.path.join(output_dir, "log.txt")
    if not os.path.isfile(log):
        return []
    with open(log, errors="replace") as f:
        starts = [int(m.group(1)) for line in f if (m := _STARTED_AT.search(line))]
    return [start for start in starts if start > 0]


def _divergence(output_dir: str) -> str | None:
    """Detectron2's message if the run in ``output_dir`` stopped because its loss diverged."""
    console = os.path.join(output_dir, RUN_CONSOLE)
    if not os.path.isfile(console):
        return None
    with open(console, errors="replace") as f:
        lines = [line.strip() for line in f if _DIVERGED in line]
    return lines[-1].split(_DIVERGED, 1)[1] if lines else None


def _record(output_dir: str, seconds: float, diverged: str | None = None) -> None:
    """Write :data:`RUN_RESULT` from train_net's :data:`FINAL_RESULTS` (none for a run that
    diverged: then no AP, and the divergence message) and the wall time."""
    if diverged is None:
        with open(os.path.join(output_dir, FINAL_RESULTS)) as f:
            results = json.load(f)["results"]
    else:
        results = {}
    payload = {
        "results": results,
        "seconds": seconds,
        "machine": machine_info(),
        "diverged": diverged,
    }
    path = os.path.join(output_dir, RUN_RESULT)
    atomic_write(path, lambda f: f.write(json.dumps(payload, indent=1).encode()))


def _realign_record(output_dir: str) -> dict:
    """The realignment scalars in ``metrics.json`` (None when the run has none)."""
    record: dict = dict.fromkeys(["realign_iteration", *_REALIGN_SCALARS.values()])
    for entry in run_metrics(output_dir):
        if "pwlu/mean_bound_width" in entry:
            record["realign_iteration"] = entry.get("iteration")
            for key, column in _REALIGN_SCALARS.items():
                record[column] = entry.get(key)
            break
    return record


def run_metrics(output_dir: str) -> list[dict]:
    """The records of ``metrics.json`` (Detectron2 writes one JSON object a line)."""
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _plain(value):
    """Tuples as lists, nested too: a config saved to yaml and loaded back compares equal."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _flat_items(node, prefix: str = ""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _flat_items(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", _plain(value)


def config_sha(cfg) -> str:
    """Fingerprint of a run's recipe: sha256 (12 hex digits) of the config keys whose values
    differ from the defaults (Detectron2's and ``add_pwlu_config``'s), without ``OUTPUT_DIR``
    and ``SEED``. A new config key whose default keeps the old behaviour leaves it unchanged;
    a results table whose rows no longer match their configs' fingerprints is stale."""
    from pwlu_det.config import default_pwlu_config

    defaults = dict(_flat_items(default_pwlu_config()))
    recipe = sorted(
        (key, value)
        for key, value in _flat_items(cfg)
        if key not in ("OUTPUT_DIR", "SEED") and (key not in defaults or defaults[key] != value)
    )
    return hashlib.sha256(json.dumps(recipe, default=repr).encode()).hexdigest()[:12]


def _check_same_recipe(spec: RunSpec, opts: Sequence[str]) -> None:
    """Refuse a run folder that was trained with another recipe (its ``config.yaml``)."""
    from pwlu_det.config import load_pwlu_config

    saved = os.path.join(spec.output_dir, "config.yaml")
    if not os.path.isfile(saved):
        return
    wanted = config_sha(load_pwlu_config(spec.config_file, [*opts, "SEED", str(spec.seed)]))
    found = config_sha(load_pwlu_config(saved))
    if wanted != found:
        raise RuntimeError(
            f"compare: {spec.output_dir} holds a run of another recipe (config fingerprint "
            f"{found}, asked for {wanted} by {spec.config_file} and the overrides); it was "
            "neither reused nor resumed. Delete that folder or pass another --work-dir."
        )


def activation_label(cfg) -> str:
    """The activation of a config as the reports name it: ``MODEL.ACTIVATION.NAME``, and
    "PWLU (frozen)" for PWLU units that do not train (``MODEL.PWLU.LR_FACTOR`` 0)."""
    name = cfg.MODEL.ACTIVATION.NAME
    return f"{name} (frozen)" if name == "PWLU" and cfg.MODEL.PWLU.LR_FACTOR == 0 else name


def _parameter_count(cfg) -> int:
    from pwlu_det.engine.trainer import PWLUTrainer

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    return sum(p.numel() for p in PWLUTrainer.build_model(cfg).parameters())


@lru_cache(maxsize=64)
def _parameters_added(config_file: str, opts: tuple[str, ...]) -> int:
    from pwlu_det.config import load_pwlu_config

    cfg = load_pwlu_config(config_file, list(opts))
    relu = load_pwlu_config(config_file, [*opts, "MODEL.ACTIVATION.NAME", "ReLU"])
    return _parameter_count(cfg) - _parameter_count(relu)


def parameters_added(config_file: str, opts: Sequence[str] = ()) -> int:
    """Parameters the config's activations add to its model: its parameter count less that of
    the same config with ReLU (PWLU's heights and slopes, FReLU's convolutions and norms...)."""
    return _parameters_added(config_file, tuple(opts))


def _row(spec: RunSpec, opts: Sequence[str]) -> dict:
    from pwlu_det.config import load_pwlu_config

    cfg = load_pwlu_config(spec.config_file, [*opts, "SEED", str(spec.seed)])
    with open(os.path.join(spec.output_dir, RUN_RESULT)) as f:
        stored = json.load(f)
    results = stored["results"]
    row = {
        "config": spec.label,
        "activation": activation_label(cfg),
        "seed": spec.seed,
        "iterations": cfg.SOLVER.MAX_ITER,
        "minutes": round(stored["seconds"] / 60, 2),
        "parameters_added": parameters_added(spec.config_file, opts),
        "resumed": " ".join(str(i) for i in resumed_at(spec.output_dir)),
        "config_sha": config_sha(cfg),
        "output_dir": spec.output_dir,
    }
    for task in ("bbox", "segm"):
        for key in _AP_KEYS:
            value = results.get(task, {}).get(key)
            row[f"{task}_{key}"] = None if value is None else round(float(value), 3)
    row.update(_realign_record(spec.output_dir))
    row.update(stored.get("machine", {}))
    row["diverged"] = stored.get("diverged")
    return row


def _eta_text(done_minutes: list[float], runs_left: int) -> str:
    if not done_minutes:
        return "ETA known after the first run"
    per_run = statistics.median(done_minutes)
    finish = time.strftime("%H:%M", time.localtime(time.time() + 60 * per_run * runs_left))
    return f"this run ~{per_run:.1f} min, all done ~{finish}"


def compare_activations(
    config_files: Sequence[str],
    seeds: Sequence[int],
    work_dir: str,
    opts: Sequence[str] = (),
    *,
    launch: Launcher,
    machine_rank: int = 0,
    progress: Callable[[str], None] = logger.info,
) -> list[dict]:
    """Train (or reuse) every run of ``config_files`` x ``seeds``; returns one row per run.

    Args:
        config_files: yaml configs to compare; they should differ only in the activation.
        seeds: values of ``SEED`` (one run of every config per seed).
        work_dir: parent of the runs' OUTPUT_DIRs.
        opts: ``KEY VALUE ...`` overrides applied to every run (before SEED and OUTPUT_DIR).
        launch: trains one run (see :data:`Launcher`).
        machine_rank: this machine's rank in a multi-machine launch: only machine 0 records
            the runs and returns rows.
        progress: called with one line per run (which run, its ETA, runs left).

    Returns:
        Rows with the keys of :data:`CSV_COLUMNS` (AP values ``None`` for a task not evaluated).
    """
    runs = plan_runs(config_files, seeds, work_dir)
    rows, minutes = [], []
    for index, spec in enumerate(runs):
        head = f"[{index + 1}/{len(runs)}] {spec.label} seed {spec.seed}"
        left = len(runs) - index - 1
        _check_same_recipe(spec, opts)
        if spec.finished:
            progress(f"{head}: finished earlier, reused ({spec.output_dir}); {left} runs left")
            rows.append(_row(spec, opts))
            continue
        has_checkpoint = os.path.isfile(os.path.join(spec.output_dir, "last_checkpoint"))
        state = "resuming" if has_checkpoint else "training"
        progress(
            f"{head}: {state} in {spec.output_dir}; {_eta_text(minutes, left + 1)}; "
            f"{left} runs left after it"
        )
        start = time.perf_counter()
        os.makedirs(spec.output_dir, exist_ok=True)
        with open(os.path.join(spec.output_dir, RUN_CONSOLE), "ab") as console:
            run_opts = [*opts, "SEED", str(spec.seed), "OUTPUT_DIR", spec.output_dir]
            code = launch(spec, run_opts, console)
        seconds = time.perf_counter() - start
        diverged = _divergence(spec.output_dir) if code != 0 else None
        if code != 0 and diverged is None:
            raise RuntimeError(
                f"compare: {head} failed (exit code {code}); its output is in "
                f"{os.path.join(spec.output_dir, RUN_CONSOLE)}"
            )
        if diverged is not None:
            progress(f"{head}: diverged ({diverged}); recorded without AP")
        if machine_rank == 0:
            _record(spec.output_dir, seconds, diverged)
        minutes.append(seconds / 60)
        if machine_rank != 0:  # the reports are machine 0's
            continue
        row = _row(spec, opts)
        rows.append(row)
        progress(
            f"{head}: done in {minutes[-1]:.1f} min, box AP {row['bbox_AP']}, "
            f"mask AP {row['segm_AP']}"
        )
        if row["resumed"]:
            progress(
                f"{head}: its training was resumed from iteration {row['resumed']}, so it "
                "trained on another data order than an uninterrupted run (results.md lists "
                f"it); delete {spec.output_dir} and run again to reproduce the command"
            )
    return rows


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the deviation is NaN for one value, and
    both are NaN if a value is (COCO gives NaN AP when nothing is detected)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std: no values")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def rows_by_config(rows: Sequence[dict]) -> dict[str, list[dict]]:
    """``rows`` grouped by their config, in order of first appearance."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["config"], []).append(row)
    return groups


def diverged_count(rows: Sequence[dict]) -> int:
    """How many of ``rows`` are runs that diverged (they have no AP)."""
    return sum(bool(r.get("diverged")) for r in rows)


def _markdown(rows: Sequence[dict], command: str, commit: str) -> str:
    from tabulate import tabulate

    groups = rows_by_config(rows)
    metric_names = [f"{t}_{k}" for t in ("bbox", "segm") for k in _AP_KEYS]
    summary = []
    for config, group in groups.items():
        # A diverged run has no AP: the means are over the runs that finished, and the
        # "diverged" column says how many did not, so a mean never hides a failed seed.
        line = [config, group[0]["activation"], len(group), diverged_count(group)]
        for name in metric_names:
            values = [r[name] for r in group if r[name] is not None]
            line.append(_fmt(*mean_std(values)) if values else "-")
        line.append(_fmt(*mean_std([r["minutes"] for r in group])))
        line.append(f"{group[0]['parameters_added']:,}")
        summary.append(line)
    header = ["config", "activation", "seeds", "diverged"]
    header += [
        f"{'box' if n.startswith('bbox') else 'mask'} {n.split('_')[1]}" for n in metric_names
    ]
    header += ["minutes", "parameters added"]
    per_seed = [
        [
            r["config"],
            r["seed"],
            r["iterations"],
            *(
                ("diverged", "", "", "")
                if r.get("diverged")
                else (r["bbox_AP"], r["bbox_AP50"], r["segm_AP"], r["segm_AP50"])
            ),
            r["minutes"],
        ]
        for r in rows
    ]
    realign = [
        [
            r["config"],
            r["seed"],
            r["realign_iteration"],
            r["realign_mean_bound_width"],
            r["realign_max_function_jump"],
            r["realign_fallback_units"],
        ]
        for r in rows
        if r.get("realign_mean_bound_width") is not None
    ]
    parts = [
        "# Activation comparison",
        "",
        f"Commit `{commit}`; command: `{command}`.",
        "",
        "Machine: "
        + "; ".join(sorted({describe_machine(r) for r in rows if r.get("cpu")}) or ["not recorded"])
        + ".",
        "",
        "Mean ± sample standard deviation (n - 1) over the seeds that finished (a run that "
        "diverged has no AP: see the diverged column); COCO AP in percent; minutes per run; "
        "parameters the activations add to the ReLU model.",
        "",
        tabulate(summary, header, tablefmt="github", disable_numparse=True),
        "",
        "## Per seed",
        "",
        tabulate(
            per_seed,
            [
                "config",
                "seed",
                "iterations",
                "box AP",
                "box AP50",
                "mask AP",
                "mask AP50",
                "minutes",
            ],
            tablefmt="github",
        ),
    ]
    resumed = [r for r in rows if r.get("resumed")]
    if resumed:
        parts += [
            "",
            "## Resumed runs",
            "",
            "Stopped and resumed mid-training: Detectron2 restarts the data order on resume, so "
            "these runs differ from what the command gives uninterrupted (their minutes count "
            "the last part only). Delete their folders and run again to reproduce it.",
            "",
            *(f"- {r['config']} seed {r['seed']}: from iteration {r['resumed']}" for r in resumed),
        ]
    if realign:
        parts += [
            "",
            "## PWLU realignment statistics",
            "",
            "At the end of Phase I (pwlu/* scalars of metrics.json): mean bound width over "
            "units, largest change of a unit's function, units left on fallback bounds.",
            "",
            tabulate(
                realign,
                [
                    "config",
                    "seed",
                    "iteration",
                    "mean bound width",
                    "max function jump",
                    "fallback units",
                ],
                tablefmt="github",
            ),
        ]
    return "\n".join(parts) + "\n"


def write_rows_csv(rows: Sequence[dict], columns: Sequence[str], path: str) -> None:
    """Write ``rows`` as CSV with ``columns`` (others ignored), output folders relative."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "output_dir": os.path.relpath(row["output_dir"])})
    atomic_write(path, lambda f: f.write(text.getvalue().encode()))


def write_reports(
    rows: Sequence[dict], results_dir: str, command: str, commit: str = "unknown"
) -> dict[str, str]:
    """Write ``results.csv`` and ``results.md`` into ``results_dir``.

    Args:
        command: the command line that made the comparison, quoted in results.md.
        commit: the code's version (e.g. ``git describe``), quoted in results.md.

    Returns:
        ``{"csv": path, "md": path}``.
    """
    os.makedirs(results_dir, exist_ok=True)
    paths = {ext: os.path.join(results_dir, f"results.{ext}") for ext in ("csv", "md")}
    write_rows_csv(rows, CSV_COLUMNS, paths["csv"])
    atomic_write(paths["md"], lambda f: f.write(_markdown(rows, command, commit).encode()))
    return paths
