"""``launch``: Detectron2's multi-process launcher, extended to CPU-only machines (gloo).

Detectron2 v0.6's ``launch`` requires CUDA and NCCL; with CUDA available this delegates to it.
(Detectron2 main's ``launch`` falls back to gloo on CPU, but starts every process with one thread
per core; this launcher shares the cores between them, on both versions.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

__all__ = ["launch"]

DEFAULT_TIMEOUT = timedelta(minutes=30)


def launch(
    main_func: Callable,
    num_processes_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    args: tuple = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Run ``main_func(*args)`` in ``num_machines * num_processes_per_machine`` processes.

    Args:
        main_func: the function each process runs.
        num_processes_per_machine: processes on this machine (``--num-gpus``); on a CPU-only
            machine each process trains on the CPU and they communicate through gloo.
        num_machines, machine_rank: as in Detectron2.
        dist_url: ``tcp://host:port`` (or ``"auto"`` for a free local port, one machine only).
        args: arguments of ``main_func``.
        timeout: of the process group's collective operations.
    """
    if torch.cuda.is_available():
        d2_launch(
            main_func,
            num_processes_per_machine,
            num_machines,
            machine_rank,
            dist_url,
            args=args,
            timeout=timeout,
        )
        return
    world_size = num_machines * num_processes_per_machine
    if world_size == 1:
        main_func(*args)
        return
    if dist_url in (None, "auto"):
        if num_machines != 1:
            raise ValueError(
                "launch: dist_url='auto' only works on one machine; pass "
                "--dist-url tcp://<host of machine 0>:<port>"
            )
        from detectron2.engine.launch import _find_free_port

        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    mp.start_processes(
        _cpu_worker,
        nprocs=num_processes_per_machine,
        args=(
            main_func,
            world_size,
            num_processes_per_machine,
            machine_rank,
            dist_url,
            args,
            timeout,
        ),
        daemon=False,
        start_method="spawn",
    )


def _cpu_worker(
    local_rank, main_func, world_size, per_machine, machine_rank, dist_url, args, timeout
):
    rank = machine_rank * per_machine + local_rank
    # Share the cores: every process would otherwise start one thread per core.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_machine))
    dist.init_process_group(
        "gloo", init_method=dist_url, world_size=world_size, rank=rank, timeout=timeout
    )
    if hasattr(comm, "create_local_process_group"):  # Detectron2 main
        comm.create_local_process_group(per_machine)
    else:  # v0.6: its launch sets the (private) group itself
        for machine in range(world_size // per_machine):
            ranks = list(range(machine * per_machine, (machine + 1) * per_machine))
            group = dist.new_group(ranks)
            if machine == machine_rank:
                comm._LOCAL_PROCESS_GROUP = group
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()
