"""Bake a model into the image: every file it needs to run offline, at a pinned revision.

The Dockerfile runs this when MODEL_NAME is given at build time. It takes, from the repository's
file list, the weights in the format vLLM would load (mistral's consolidated safetensors, else
safetensors, else .bin, else .pt, narrowed to the shards an index names) and every small file
beside them (configs, generation config, tokenizer files, chat templates, custom code for
trust_remote_code), downloads exactly those at the commit the revision resolves to, and records
what it baked in `<dest>/baked.json`. The worker reads that manifest at start-up and serves the
folder offline under the hub id.

`--mirror DIR` reads repositories from a local folder (`DIR/<owner>/<name>/`) instead of the
Hugging Face Hub; tests use it, as the hub is out of reach there. The hub token comes from the
build secret file (`--token-file`), never from an argument, so it lands in no layer.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import glob
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

MANIFEST = "baked.json"
DEFAULT_DEST = Path("/models")
DEFAULT_TOKEN_FILE = Path("/run/secrets/HF_TOKEN")

#: Weight formats in vLLM's order of preference (`load_format=auto`), with their index file.
WEIGHT_FORMATS = (
    ("consolidated*.safetensors", "consolidated.safetensors.index.json"),
    ("*.safetensors", "model.safetensors.index.json"),
    ("*.bin", None),
    ("*.pt", None),
)
#: Training leftovers vLLM never loads, although they match the weight patterns.
NOT_WEIGHTS = ("training_args.bin", "optimizer.bin", "optimizer.pt", "scheduler.pt", "scaler.pt")
#: Small top-level files a model may need besides its weights: configs and indexes (.json),
#: chat templates (.jinja), custom code (.py), tokenizers (.model, .tiktoken, vocab and merges
#: .txt, mistral's tokenizer.model.v3).
SUPPORT_SUFFIXES = (".json", ".jinja", ".py", ".txt", ".model", ".tiktoken")
TOKENIZER_MARKS = ("tokenizer", "tekken", "vocab", "spiece", "sentencepiece")


class DownloadError(Exception):
    """The repository lacks something the model needs, or the download was incomplete."""


@dataclasses.dataclass(frozen=True)
class Repo:
    """A repository at a resolved commit, with its file list."""

    hub_id: str
    revision: str | None
    commit: str
    files: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.hub_id}@{self.revision or 'main'}"


class Hub(Protocol):
    def resolve(self, hub_id: str, revision: str | None) -> Repo: ...

    def fetch(self, repo: Repo, files: list[str], folder: Path) -> None: ...


class HuggingFaceHub:
    """The Hugging Face Hub, through huggingface_hub."""

    def __init__(self, token: str | None) -> None:
        self.token = token

    def resolve(self, hub_id: str, revision: str | None) -> Repo:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError

        try:
            info = HfApi(token=self.token).model_info(hub_id, revision=revision)
        except HfHubHTTPError as error:  # not found, gated, no such revision, bad token
            raise DownloadError(f"{hub_id}@{revision or 'main'}: {error}") from None
        files = tuple(sibling.rfilename for sibling in info.siblings or ())
        return Repo(hub_id, revision, info.sha or "", files)

    def fetch(self, repo: Repo, files: list[str], folder: Path) -> None:
        from huggingface_hub import snapshot_download

        snapshot_download(
            repo.hub_id,
            revision=repo.commit,
            allow_patterns=allow_patterns(files),
            local_dir=folder,
            token=self.token,
        )
        # Download bookkeeping (hashes, locks); the image needs only the files.
        shutil.rmtree(folder / ".cache", ignore_errors=True)


class LocalMirror:
    """A folder standing in for the hub: `<root>/<owner>/<name>/` holds a repository's files."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def resolve(self, hub_id: str, revision: str | None) -> Repo:
        folder = self.root / hub_id
        if not folder.is_dir():
            raise DownloadError(f"{hub_id}: no such repository in {self.root}")
        files = tuple(
            sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        )
        return Repo(hub_id, revision, revision or "local", files)

    def fetch(self, repo: Repo, files: list[str], folder: Path) -> None:
        for name in files:
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.root / repo.hub_id / name, target)


def allow_patterns(files: Iterable[str]) -> list[str]:
    """Patterns matching exactly these files (huggingface_hub matches patterns with fnmatch)."""
    return [glob.escape(name) for name in files]


def support_files(repo: Repo) -> list[str]:
    """The top-level files besides the weights; vLLM reads nothing from subfolders."""
    return [
        name
        for name in repo.files
        if "/" not in name and (name.endswith(SUPPORT_SUFFIXES) or name.startswith("tokenizer"))
    ]


def weight_files(repo: Repo, folder: Path) -> list[str]:
    """The weights vLLM would load, in the first format the repository has.

    An index file (already downloaded into `folder`) narrows them to the shards it names, as
    vLLM does; a shard it names that the repository lacks is an error here, not at start-up.
    """
    top = [name for name in repo.files if "/" not in name and not name.endswith(NOT_WEIGHTS)]
    for pattern, index in WEIGHT_FORMATS:
        found = fnmatch.filter(top, pattern)
        if not found:
            continue
        if index is None or not (folder / index).is_file():
            return sorted(found)
        shards = set(json.loads((folder / index).read_text())["weight_map"].values())
        if missing := sorted(shards - set(found)):
            raise DownloadError(f"{repo}: {index} names {', '.join(missing)}, not in the repo")
        return sorted(shards)
    raise DownloadError(f"{repo}: no weights (*.safetensors, *.bin or *.pt) at the top level")


def has_tokenizer(files: Iterable[str]) -> bool:
    return any(
        name.startswith(TOKENIZER_MARKS) or name.endswith((".tiktoken", ".model")) for name in files
    )


def download(hub: Hub, repo: Repo, folder: Path, *, weights: bool) -> list[str]:
    """Download the support files, then (with `weights`) the weights; check all arrived."""
    support = support_files(repo)
    if weights and not {"config.json", "params.json"} & set(support):
        raise DownloadError(f"{repo}: no config.json (nor mistral's params.json)")
    hub.fetch(repo, support, folder)
    shards = weight_files(repo, folder) if weights else []  # reads an index fetched above
    if shards:
        hub.fetch(repo, shards, folder)
    files = support + shards
    if missing := [name for name in files if not (folder / name).is_file()]:
        raise DownloadError(f"{repo}: the download is missing {', '.join(missing)}")
    return files


def bake(
    hub: Hub,
    dest: Path,
    model: str,
    revision: str | None = None,
    tokenizer: str | None = None,
    tokenizer_revision: str | None = None,
) -> dict:
    """Download the model (and a tokenizer from another repository) and write the manifest."""
    dest.mkdir(parents=True, exist_ok=True)
    repo = hub.resolve(model, revision)
    folder = dest / model.replace("/", "--")
    files = download(hub, repo, folder, weights=True)
    baked_tokenizer = None
    if tokenizer and tokenizer != model:
        tokenizer_repo = hub.resolve(tokenizer, tokenizer_revision)
        tokenizer_folder = dest / tokenizer.replace("/", "--")
        tokenizer_files = download(hub, tokenizer_repo, tokenizer_folder, weights=False)
        if not has_tokenizer(tokenizer_files):
            raise DownloadError(f"{tokenizer_repo}: no tokenizer files")
        baked_tokenizer = _entry(tokenizer_repo, tokenizer_folder, dest)
    elif not has_tokenizer(files):
        raise DownloadError(f"{repo}: no tokenizer files; give TOKENIZER_NAME to bake one")
    manifest = {"model": _entry(repo, folder, dest), "tokenizer": baked_tokenizer}
    # Written last and atomically: a manifest means a complete model.
    with tempfile.NamedTemporaryFile("w", dir=dest, delete=False, suffix=".tmp") as out:
        json.dump(manifest, out, indent=2)
    os.chmod(out.name, 0o644)
    os.replace(out.name, dest / MANIFEST)
    return manifest


def _entry(repo: Repo, folder: Path, dest: Path) -> dict:
    return {
        "hub_id": repo.hub_id,
        "revision": repo.revision,
        "commit": repo.commit,
        "folder": folder.relative_to(dest).as_posix(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="hub id of the model")
    parser.add_argument("--revision", help="branch, tag or commit (default: main)")
    parser.add_argument("--tokenizer", help="hub id of a tokenizer from another repository")
    parser.add_argument("--tokenizer-revision")
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    parser.add_argument("--token-file", type=Path, default=DEFAULT_TOKEN_FILE)
    parser.add_argument("--mirror", type=Path, help="a local folder standing in for the hub")
    args = parser.parse_args(argv)
    token_file: Path = args.token_file
    token = token_file.read_text().strip() if token_file.is_file() else None
    hub = LocalMirror(args.mirror) if args.mirror else HuggingFaceHub(token or None)
    try:
        manifest = bake(
            hub,
            args.dest,
            args.model,
            args.revision or None,
            args.tokenizer or None,
            args.tokenizer_revision or None,
        )
    except DownloadError as error:
        sys.exit(f"download_model: {error}")
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
