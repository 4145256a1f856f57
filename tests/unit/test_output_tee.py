"""The output tee: what spawned children print reaches the real output and is kept."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import vllm_worker

SRC = str(Path(vllm_worker.__file__).parents[1])

#: Started in a process of its own: the tee replaces file descriptors 1 and 2.
SCRIPT = textwrap.dedent(
    """
    import multiprocessing, os, sys
    from vllm_worker.output_tee import OutputTee

    def child():
        print("child says hello on stdout", flush=True)
        print("Traceback: child failed on stderr", file=sys.stderr, flush=True)

    if __name__ == "__main__":
        tee = OutputTee(limit=int(sys.argv[1])).start()
        process = multiprocessing.get_context("spawn").Process(target=child)
        process.start()
        process.join()
        print("parent line", flush=True)
        kept = tee.text(drain_s=60)  # a loaded machine may take long to run the relays
        tee.forget()
        print("after forget", flush=True)
        forgotten = tee.text()
        tee.stop()
        sys.stderr.write("KEPT=" + repr(kept) + "\\n")
        sys.stderr.write("FORGOTTEN=" + repr(forgotten) + "\\n")
    """
)


def run(tmp_path: Path, limit: int) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "tee_script.py"  # a file: spawned children import their target
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, str(script), str(limit)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_children_output_is_relayed_and_kept(tmp_path):
    done = run(tmp_path, limit=1 << 16)
    assert done.returncode == 0, done.stderr
    # Everything still reaches the real descriptors, each on its own.
    assert "child says hello on stdout" in done.stdout
    assert "parent line" in done.stdout and "after forget" in done.stdout
    assert "Traceback: child failed on stderr" in done.stderr
    kept = next(line for line in done.stderr.splitlines() if line.startswith("KEPT="))
    assert "child says hello on stdout" in kept
    assert "Traceback: child failed on stderr" in kept
    assert "parent line" in kept
    assert "FORGOTTEN=''" in done.stderr


def test_only_the_last_bytes_are_kept(tmp_path):
    done = run(tmp_path, limit=16)
    assert done.returncode == 0, done.stderr
    kept = next(line for line in done.stderr.splitlines() if line.startswith("KEPT="))
    text = ast.literal_eval(kept.removeprefix("KEPT="))
    assert len(text) == 16
    assert text.endswith("parent line\n")  # the last thing printed before `text()`
