"""Pre-flight checks against a fake Hugging Face Hub on loopback, through the real client."""

from __future__ import annotations

import logging

import pytest

from tests import fake_hub
from vllm_worker import preflight
from vllm_worker.config import load
from vllm_worker.startup_failure import Reason, StartUpError, StartUpFailure


def failure_of(environ: dict[str, str]) -> StartUpFailure | None:
    """The failure the pre-flight reports for these settings, or None when it passes."""
    try:
        preflight.check(load(environ), environ)
    except StartUpError as error:
        return error.failure
    return None


@pytest.fixture
def hub(fake_hub, monkeypatch):
    """Settings that point the Hub client at the fake Hub, with no token of this shell."""
    for var in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_IMPLICIT_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return {"HF_ENDPOINT": fake_hub}


def test_a_public_model_at_an_existing_revision_passes(hub):
    assert failure_of({**hub, "MODEL_NAME": fake_hub.PUBLIC}) is None
    assert failure_of({**hub, "MODEL_NAME": fake_hub.PUBLIC, "MODEL_REVISION": "v1"}) is None


def test_a_missing_repository_names_model_name(hub):
    failure = failure_of({**hub, "MODEL_NAME": fake_hub.MISSING})
    assert failure is not None
    assert failure.reason is Reason.MODEL_NOT_FOUND
    assert failure.variable == "MODEL_NAME"
    assert failure.message.startswith(f"MODEL_NAME={fake_hub.MISSING} is not a repository on")
    assert "HF_TOKEN is unset" in failure.message


def test_a_missing_tokenizer_repository_names_tokenizer_name(hub):
    failure = failure_of({**hub, "MODEL_NAME": fake_hub.PUBLIC, "TOKENIZER_NAME": fake_hub.MISSING})
    assert failure is not None
    assert failure.variable == "TOKENIZER_NAME"
    assert failure.message.startswith(f"TOKENIZER_NAME={fake_hub.MISSING} is not a repository")


def test_a_gated_model_without_a_token_asks_for_hf_token(hub):
    failure = failure_of({**hub, "MODEL_NAME": fake_hub.GATED})
    assert failure == StartUpFailure(
        reason=Reason.NOT_AUTHORISED,
        variable="HF_TOKEN",
        message=f"MODEL_NAME={fake_hub.GATED} is a gated model and HF_TOKEN is unset: accept "
        "its terms on huggingface.co and set HF_TOKEN to a token of that account.",
    )


def test_a_gated_model_with_a_token_without_access(hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", fake_hub.OTHER_TOKEN)  # huggingface_hub reads it here
    environ = {**hub, "MODEL_NAME": fake_hub.GATED, "HF_TOKEN": fake_hub.OTHER_TOKEN}
    failure = failure_of(environ)
    assert failure is not None
    assert failure.reason is Reason.NOT_AUTHORISED
    assert "the account of HF_TOKEN has no access" in failure.message
    assert fake_hub.OTHER_TOKEN not in failure.message


def test_a_gated_model_with_a_granted_token_passes(hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", fake_hub.GRANTED_TOKEN)
    environ = {**hub, "MODEL_NAME": fake_hub.GATED, "HF_TOKEN": fake_hub.GRANTED_TOKEN}
    assert failure_of(environ) is None


def test_a_wrong_token_is_named(hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    failure = failure_of({**hub, "MODEL_NAME": fake_hub.PUBLIC, "HF_TOKEN": "hf_wrong"})
    assert failure is not None
    assert failure.reason is Reason.NOT_AUTHORISED
    assert failure.message.startswith("The Hugging Face Hub refused HF_TOKEN for MODEL_NAME=")
    assert "hf_wrong" not in failure.message


def test_a_missing_revision_names_model_revision(hub):
    failure = failure_of({**hub, "MODEL_NAME": fake_hub.PUBLIC, "MODEL_REVISION": "v9"})
    assert failure is not None
    assert failure.reason is Reason.REVISION_NOT_FOUND
    assert failure.message == (
        f"MODEL_REVISION is not a branch, tag or commit of {fake_hub.PUBLIC}: set it to one "
        "that exists, or leave it blank for the default branch."
    )


def test_a_missing_tokenizer_revision_names_tokenizer_revision(hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", fake_hub.GRANTED_TOKEN)
    environ = {
        **hub,
        "MODEL_NAME": fake_hub.PUBLIC,
        "TOKENIZER_NAME": fake_hub.GATED,
        "TOKENIZER_REVISION": "v9",
        "HF_TOKEN": fake_hub.GRANTED_TOKEN,
    }
    failure = failure_of(environ)
    assert failure is not None
    assert failure.variable == "TOKENIZER_REVISION"
    assert failure.message.startswith(
        f"TOKENIZER_REVISION is not a branch, tag or commit of {fake_hub.GATED}"
    )


def test_a_server_error_or_no_hub_at_all_is_let_through(hub, caplog, monkeypatch):
    # Listen on the module's own logger: earlier tests in a session may have stopped the
    # worker's loggers from propagating (`logs.setup`) or disabled them (a logging config).
    monkeypatch.setattr(preflight.logger, "disabled", False)
    monkeypatch.setattr(preflight.logger, "level", logging.WARNING)
    preflight.logger.addHandler(caplog.handler)
    try:
        assert failure_of({**hub, "MODEL_NAME": fake_hub.BROKEN}) is None
    finally:
        preflight.logger.removeHandler(caplog.handler)
    assert "could not check acme/broken on the Hugging Face Hub" in caplog.text
    closed = {"HF_ENDPOINT": "http://127.0.0.1:9", "MODEL_NAME": fake_hub.MISSING}
    assert failure_of(closed) is None


def test_offline_mode_skips_the_hub(hub):
    assert failure_of({**hub, "MODEL_NAME": fake_hub.MISSING, "HF_HUB_OFFLINE": "1"}) is None


def test_a_model_folder_that_does_not_exist(tmp_path, hub):
    missing = tmp_path / "no-such-model"
    failure = failure_of({**hub, "MODEL_NAME": str(missing)})
    assert failure is not None
    assert failure.reason is Reason.MODEL_NOT_FOUND
    assert failure.message.startswith(
        f"MODEL_NAME={missing} is neither a folder on this machine nor a Hugging Face Hub id"
    )
    tokenizer = failure_of({**hub, "MODEL_NAME": str(tmp_path), "TOKENIZER_NAME": str(missing)})
    assert tokenizer is not None and tokenizer.variable == "TOKENIZER_NAME"


def test_an_existing_folder_is_not_asked_of_the_hub(tmp_path):
    # No HF_ENDPOINT that answers: only a local check can pass this.
    environ = {"HF_ENDPOINT": "http://127.0.0.1:9", "MODEL_NAME": str(tmp_path)}
    assert failure_of(environ) is None


def test_a_tool_parser_plugin_must_exist(tmp_path):
    plugin = tmp_path / "my_parser.py"
    environ = {"MODEL_NAME": str(tmp_path), "TOOL_PARSER_PLUGIN": str(plugin)}
    failure = failure_of(environ)
    assert failure is not None
    assert failure.reason is Reason.TOOL_PARSER_MISSING
    assert failure.message.startswith(f"TOOL_PARSER_PLUGIN={plugin} is neither a Python file")
    plugin.write_text("")
    assert failure_of(environ) is None
    assert failure_of({**environ, "TOOL_PARSER_PLUGIN": "json"}) is None  # an importable module
