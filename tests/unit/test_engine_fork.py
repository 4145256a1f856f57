"""The engine core forked on CPU: the first fork in the block gets vLLM's thread binding, the
parent's callback runs once, and nothing else is touched (checked in a fresh interpreter)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import gc, json, os, sys
    import torch
    from vllm_worker.engine_fork import METHOD_VARIABLE, forked_engine_core

    os.environ[METHOD_VARIABLE] = "spawn"  # what vLLM's CPU platform sets
    gc.disable()  # as the worker's start-up does
    cpus = json.loads(sys.argv[1])
    calls = []
    report = {}

    def child_state():
        return {
            "affinity": sorted(os.sched_getaffinity(0)),
            "threads": torch.get_num_threads(),
            "gc": gc.isenabled(),
        }

    def fork_and_report(key):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(write, json.dumps(child_state()).encode())
            os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        report[key] = json.loads(os.read(read, 4096))

    with forked_engine_core(cpus, lambda: calls.append(os.getpid())):
        report["method inside"] = os.environ[METHOD_VARIABLE]
        fork_and_report("first child")
        report["calls after the first fork"] = len(calls)
        fork_and_report("second child")
    report["method after"] = os.environ[METHOD_VARIABLE]
    report["calls"] = calls
    report["parent"] = child_state()

    unforked = []
    with forked_engine_core(cpus, lambda: unforked.append(1)):
        pass
    report["calls without a fork"] = len(unforked)
    print(json.dumps(report))
    """
)


def run(cpus: list[int] | None) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(cpus)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to tell them apart")
def test_first_fork_is_bound_to_the_given_cpus_and_the_parent_is_told_once():
    allowed = sorted(os.sched_getaffinity(0))
    report = run([allowed[-1]])

    assert report["method inside"] == "fork"
    assert report["method after"] == "spawn"
    assert report["first child"] == {"affinity": [allowed[-1]], "threads": 1, "gc": True}
    assert report["calls after the first fork"] == 1
    # The parent and later forks (the SDK's heartbeat process, ...) keep their own set-up.
    assert report["parent"]["affinity"] == allowed
    assert report["parent"]["gc"] is False
    assert report["second child"] == report["parent"]
    assert report["calls"] == [report["calls"][0]] and len(report["calls"]) == 1
    assert report["calls without a fork"] == 1


def test_no_cpus_leaves_the_child_unbound():
    allowed = sorted(os.sched_getaffinity(0))
    report = run(None)

    assert report["first child"]["affinity"] == allowed
    assert report["first child"]["threads"] == report["parent"]["threads"]
    assert report["first child"]["gc"] is True
