"""A stand-in for the Hugging Face Hub on loopback, answering file requests as the Hub does.

The real huggingface_hub client talks to it (`HF_ENDPOINT`), so its own error handling runs:
`hf_raise_for_status` (huggingface_hub `utils/_http.py`) reads the status and the
`X-Error-Code` / `X-Error-Message` headers the Hub sends.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import threading
from urllib.parse import unquote

#: A public model with the revisions `main` and `v1`.
PUBLIC = "acme/public"
#: A gated model; `GRANTED_TOKEN` has accepted its terms, `OTHER_TOKEN` has not.
GATED = "acme/gated"
#: A repository whose server fails (HTTP 500): the check itself fails, not the repository.
BROKEN = "acme/broken"
#: An id the Hub has no repository for.
MISSING = "acme/no-such-model"
GRANTED_TOKEN = "hf_granted_token"
OTHER_TOKEN = "hf_other_token"
REVISIONS = frozenset({"main", "v1"})
FILES = {"config.json": b'{"architectures": ["LlamaForCausalLM"]}'}
COMMIT = "0123456789abcdef0123456789abcdef01234567"
#: A public LoRA adapter for `ADAPTER_BASE` (its weights are stand-in bytes) and one for
#: another model; each also has a README no adapter download should fetch.
ADAPTER = "acme/lora-adapter"
OTHER_ADAPTER = "acme/other-lora-adapter"
ADAPTER_BASE = "acme/base-model"


def _adapter_files(base: str) -> dict[str, bytes]:
    settings = {"peft_type": "LORA", "r": 8, "base_model_name_or_path": base}
    return {
        "adapter_config.json": json.dumps(settings).encode(),
        "adapter_model.safetensors": b"stand-in weights",
        "README.md": b"# an adapter",
    }


#: Repository -> its files, for the repositories listed through the API (`snapshot_download`).
REPOS = {
    PUBLIC: FILES,
    ADAPTER: _adapter_files(ADAPTER_BASE),
    OTHER_ADAPTER: _adapter_files("acme/other-model"),
}


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes = b""


def answer(repo: str, revision: str, filename: str, token: str | None) -> Answer:
    """What the Hub answers for `/{repo}/resolve/{revision}/{filename}` with `token`."""
    if token is not None and token not in (GRANTED_TOKEN, OTHER_TOKEN):
        return _error(401, None, "Invalid credentials in Authorization header")
    if repo == BROKEN:
        return _error(500, None, "Internal Error")
    if repo not in (*REPOS, GATED):
        return _error(404, "RepoNotFound", "Repository not found")
    if repo == GATED and token != GRANTED_TOKEN:
        status = 401 if token is None else 403
        return _error(status, "GatedRepo", f"Access to model {repo} is restricted.")
    if revision not in (*REVISIONS, COMMIT):
        return _error(404, "RevisionNotFound", "Invalid rev id: " + revision)
    files = REPOS.get(repo, FILES)
    if filename not in files:
        return _error(404, "EntryNotFound", "Entry not found")
    body = files[filename]
    return Answer(
        200,
        {"X-Repo-Commit": COMMIT, "ETag": f'"{_oid(body)}"', "Content-Length": str(len(body))},
        body,
    )


def api_answer(repo: str, what: str) -> Answer:
    """The Hub API's repository info (`revision/<rev>`) or file listing (`tree/<rev>`) for a
    repository of `REPOS` or the gated one (listed as an adapter), as `snapshot_download` reads
    them."""
    # As on the Hub, a gated repository's listing is public; its files are not.
    files = _adapter_files(ADAPTER_BASE) if repo == GATED else REPOS.get(repo)
    if files is None:
        return _error(404, "RepoNotFound", "Repository not found")
    if what == "revision":
        data: object = {"id": repo, "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]}
    else:
        data = [
            {"type": "file", "path": f, "size": len(b), "oid": _oid(b)} for f, b in files.items()
        ]
    body = json.dumps(data).encode()
    return Answer(200, {"Content-Type": "application/json", "Content-Length": str(len(body))}, body)


def _oid(body: bytes) -> str:
    return hashlib.sha1(body).hexdigest()


def _error(status: int, code: str | None, message: str) -> Answer:
    headers = {"X-Error-Message": message, "Content-Length": "0"}
    if code is not None:
        headers["X-Error-Code"] = code
    return Answer(status, headers)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def _answer(self, with_body: bool) -> None:
        parts = unquote(self.path.split("?")[0]).strip("/").split("/")
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() or None
        if len(parts) >= 5 and parts[2] == "resolve":
            reply = answer("/".join(parts[:2]), parts[3], "/".join(parts[4:]), token)
        elif (
            len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] in ("revision", "tree")
        ):
            reply = api_answer("/".join(parts[2:4]), parts[4])
        else:
            reply = _error(404, None, "Not found")
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if with_body:
            self.wfile.write(reply.body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the tests assert on what the client saw


class FakeHub:
    """The fake Hub served from a thread on a free loopback port; `url` is its HF_ENDPOINT."""

    def __init__(self) -> None:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
