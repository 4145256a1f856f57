"""The worker exits non-zero once its engine is dead (checked in a child process)."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import time, types
    from vllm_worker.engine import EngineWatch

    resources = types.SimpleNamespace(engine_dead=False)
    engine = types.SimpleNamespace(
        engine_core=types.SimpleNamespace(resources=resources), output_handler=None
    )
    watch = EngineWatch(engine, interval_s=0.05, grace_s=0.2)
    watch.start()
    time.sleep(0.2)
    resources.engine_dead = True
    if {stop}:
        watch.stop()
    time.sleep(3)
    print("still alive")
    """
)


def run(stop: bool) -> subprocess.CompletedProcess:
    code = SCRIPT.format(stop=stop)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_dead_engine_ends_the_process_with_exit_code_one():
    result = run(stop=False)
    assert result.returncode == 1
    assert "still alive" not in result.stdout
    assert "vLLM engine died" in result.stderr


def test_stopped_watch_lets_a_deliberate_shutdown_exit_cleanly():
    result = run(stop=True)
    assert result.returncode == 0
    assert "still alive" in result.stdout
