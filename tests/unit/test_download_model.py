"""builder/download_model.py against local folders standing in for hub repositories."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "builder" / "download_model.py"

# builder/ is no package: load the script as the module `download_model`.
_spec = importlib.util.spec_from_file_location("download_model", SCRIPT)
download_model = sys.modules["download_model"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(download_model)

CONFIG = {"config.json": "{}", "generation_config.json": "{}"}
TOKENIZER = {"tokenizer.json": "{}", "tokenizer_config.json": "{}"}
NOT_NEEDED = {"README.md": "#", "images/logo.png": "png", "original/consolidated.00.pth": "w"}


def make_repo(root: Path, hub_id: str, files: dict[str, str]) -> None:
    for name, content in files.items():
        path = root / hub_id / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def baked_files(dest: Path, folder: str) -> list[str]:
    base = dest / folder
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())


def bake(tmp_path: Path, files: dict[str, str], hub_id: str = "acme/model", **kwargs) -> dict:
    make_repo(tmp_path / "hub", hub_id, files)
    hub = download_model.LocalMirror(tmp_path / "hub")
    return download_model.bake(hub, tmp_path / "models", hub_id, **kwargs)


def test_sharded_safetensors_are_narrowed_to_the_index(tmp_path):
    index = {
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        }
    }
    files = {
        **CONFIG,
        **TOKENIZER,
        **NOT_NEEDED,
        "model.safetensors.index.json": json.dumps(index),
        "model-00001-of-00002.safetensors": "w1",
        "model-00002-of-00002.safetensors": "w2",
        "model-old.safetensors": "stale, not in the index",
        "pytorch_model.bin": "the same weights again, as .bin",
    }
    manifest = bake(tmp_path, files, revision="v1")
    assert manifest == {
        "model": {
            "hub_id": "acme/model",
            "revision": "v1",
            "commit": "v1",
            "folder": "acme--model",
        },
        "tokenizer": None,
    }
    assert json.loads((tmp_path / "models" / "baked.json").read_text()) == manifest
    assert baked_files(tmp_path / "models", "acme--model") == sorted(
        [*CONFIG, *TOKENIZER, "model.safetensors.index.json", *index["weight_map"].values()]
    )


def test_bin_weights_when_there_are_no_safetensors(tmp_path):
    files = {
        **CONFIG,
        **TOKENIZER,
        "pytorch_model.bin": "w",
        "training_args.bin": "not weights",
        "merges.txt": "m",
        "vocab.json": "{}",
    }
    bake(tmp_path, files)
    assert baked_files(tmp_path / "models", "acme--model") == sorted(
        [*CONFIG, *TOKENIZER, "pytorch_model.bin", "merges.txt", "vocab.json"]
    )


def test_custom_code_and_chat_template_are_baked(tmp_path):
    files = {
        **CONFIG,
        "modeling_acme.py": "code",
        "configuration_acme.py": "code",
        "tokenization_acme.py": "code",
        "chat_template.jinja": "{{ messages }}",
        "tokenizer.model": "sentencepiece",
        "tokenizer_config.json": "{}",
        "model.safetensors": "w",
    }
    bake(tmp_path, files)
    assert baked_files(tmp_path / "models", "acme--model") == sorted(files)


def test_mistral_consolidated_weights_win_as_in_vllm(tmp_path):
    files = {
        "params.json": "{}",
        "tekken.json": "{}",
        "consolidated.safetensors": "w",
        "model.safetensors": "the same weights in HF layout",
    }
    bake(tmp_path, files)
    assert baked_files(tmp_path / "models", "acme--model") == sorted(
        ["params.json", "tekken.json", "consolidated.safetensors"]
    )


def test_a_tokenizer_from_another_repository(tmp_path):
    make_repo(
        tmp_path / "hub", "acme/tok", {**TOKENIZER, "config.json": "{}", "big.safetensors": "w"}
    )
    manifest = bake(
        tmp_path,
        {**CONFIG, "model.safetensors": "w"},
        tokenizer="acme/tok",
        tokenizer_revision="t1",
    )
    assert manifest["tokenizer"] == {
        "hub_id": "acme/tok",
        "revision": "t1",
        "commit": "t1",
        "folder": "acme--tok",
    }
    assert baked_files(tmp_path / "models", "acme--tok") == sorted([*TOKENIZER, "config.json"])


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {
                **CONFIG,
                **TOKENIZER,
                "model.safetensors.index.json": json.dumps(
                    {"weight_map": {"a": "m-1.safetensors", "b": "m-2.safetensors"}}
                ),
                "m-1.safetensors": "w",
            },
            "acme/model@main: model.safetensors.index.json names m-2.safetensors, not in the repo",
        ),
        ({**TOKENIZER, "model.safetensors": "w"}, "acme/model@main: no config.json"),
        ({**CONFIG, **TOKENIZER, "weights/model.safetensors": "w"}, "acme/model@main: no weights"),
        ({**CONFIG, "model.safetensors": "w"}, "acme/model@main: no tokenizer files"),
    ],
)
def test_a_missing_file_is_a_clear_error(tmp_path, files, message):
    with pytest.raises(download_model.DownloadError, match=f"^{message}"):
        bake(tmp_path, files)
    assert not (tmp_path / "models" / "baked.json").exists()


def test_an_incomplete_download_is_an_error(tmp_path):
    class Lossy(download_model.LocalMirror):
        def fetch(self, repo, files, folder):
            super().fetch(repo, [f for f in files if f != "tokenizer.json"], folder)

    make_repo(tmp_path / "hub", "acme/model", {**CONFIG, **TOKENIZER, "model.safetensors": "w"})
    with pytest.raises(
        download_model.DownloadError, match=r"the download is missing tokenizer\.json$"
    ):
        download_model.bake(Lossy(tmp_path / "hub"), tmp_path / "models", "acme/model")


def test_the_hub_is_asked_for_exactly_the_chosen_files(tmp_path, monkeypatch):
    """The real path: the patterns given to snapshot_download select exactly the files."""
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    names = [*CONFIG, *TOKENIZER, "model.safetensors", "weird[1].json", "onnx/model.json", "x.md"]
    make_repo(tmp_path / "hub", "acme/model", dict.fromkeys(names, "{}"))
    mirror = download_model.LocalMirror(tmp_path / "hub")
    requested = []

    def model_info(self, hub_id, revision=None):
        assert (hub_id, revision, self.token) == ("acme/model", "main", "hf_secret")
        siblings = [{"rfilename": name} for name in names]
        return huggingface_hub.hf_api.ModelInfo(id=hub_id, sha="0123abc", siblings=siblings)

    def snapshot_download(hub_id, *, revision, allow_patterns, local_dir, token):
        assert (revision, token) == ("0123abc", "hf_secret")
        chosen = list(filter_repo_objects(names, allow_patterns=allow_patterns))
        requested.append(chosen)
        mirror.fetch(mirror.resolve(hub_id, None), chosen, Path(local_dir))
        (Path(local_dir) / ".cache" / "huggingface").mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    hub = download_model.HuggingFaceHub("hf_secret")
    manifest = download_model.bake(hub, tmp_path / "models", "acme/model", "main")
    assert manifest["model"]["commit"] == "0123abc"
    assert requested == [[*CONFIG, *TOKENIZER, "weird[1].json"], ["model.safetensors"]]
    assert not (tmp_path / "models" / "acme--model" / ".cache").exists()


def test_hub_errors_are_one_line(tmp_path, monkeypatch):
    import httpx2
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    def model_info(self, hub_id, revision=None):
        url = f"https://huggingface.co/api/models/{hub_id}"
        response = httpx2.Response(401, request=httpx2.Request("GET", url))
        raise GatedRepoError(f"Access to model {hub_id} is restricted.", response=response)

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    with pytest.raises(download_model.DownloadError, match=r"^acme/gated@main: Access to model"):
        download_model.bake(download_model.HuggingFaceHub(None), tmp_path, "acme/gated")


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False
    )


def test_command_line_as_the_dockerfile_runs_it(tmp_path):
    make_repo(tmp_path / "hub", "acme/model", {**CONFIG, **TOKENIZER, "model.safetensors": "w"})
    common = ["--mirror", str(tmp_path / "hub"), "--dest", str(tmp_path / "models")]
    # Empty build args arrive as empty strings and mean "unset".
    blanks = ["--revision", "", "--tokenizer", "", "--tokenizer-revision", ""]
    result = run_script("--model", "acme/model", *blanks, *common, "--token-file", "/nonexistent")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "models" / "baked.json").read_text())
    assert manifest["model"]["hub_id"] == "acme/model" and manifest["tokenizer"] is None

    result = run_script("--model", "acme/absent", *common)
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        "acme/absent: no such repository in " + str(tmp_path / "hub")
    )
