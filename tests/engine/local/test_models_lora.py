"""LoRA adapters behind the local endpoint, on native jobs and through the official OpenAI client.

One endpoint serves a configured adapter (`LORA_MODULES`) with `LORA_LOAD_ON_DEMAND` on and
`MAX_LORAS=1`; a second, with the setting off, shows that an unconfigured adapter is refused
with the setting named. The adapters are built with peft on the default model (random weights
from fixed seeds, see `tests.models.lora`), so each changes the greedy text in its own way.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import openai
import pytest
from vllm.entrypoints.serve.exception_handling.utils import sanitize_message

from tests.models.lora import ensure_adapter, hub_named_adapter, peft_greedy_text
from vllm_worker.default_model import HUB_ID
from vllm_worker.local.testing import LocalEndpoint

PROMPT = "The capital of France is"
MAX_TOKENS = 12
#: The adapter served by name from `LORA_MODULES`.
CONFIGURED = "lora-c"


@pytest.fixture(scope="module")
def folders() -> dict[str, Path]:
    """Three adapters: `a` declares the hub id as its base (as downloaded adapters do), `b`
    and the configured one the default model's folder (as peft writes it)."""
    return {
        "a": hub_named_adapter("test-lora-a", seed=1),
        "b": ensure_adapter("test-lora-b", seed=2),
        CONFIGURED: ensure_adapter("test-lora-c", seed=3),
    }


def lora_env(folders: dict[str, Path], **env: str) -> dict[str, str]:
    return {
        "ENABLE_LORA": "true",
        "LORA_MODULES": f"{CONFIGURED}={folders[CONFIGURED]}",
        "MAX_LORAS": "1",
        "MAX_LORA_RANK": "8",
        "MAX_MODEL_LEN": "512",
        **env,
    }


@pytest.fixture(scope="module")
def endpoint(folders, tmp_path_factory):
    log = tmp_path_factory.mktemp("lora") / "endpoint.log"
    with LocalEndpoint(log, **lora_env(folders, LORA_LOAD_ON_DEMAND="true")) as running:
        running.wait_ready()
        yield running


def client_of(endpoint: LocalEndpoint) -> openai.OpenAI:
    return openai.OpenAI(
        api_key=endpoint.api_key,
        base_url=f"{endpoint.url}/openai/v1",
        timeout=120,
        max_retries=0,  # a retry would hide a failure
    )


@pytest.fixture(scope="module")
def client(endpoint):
    return client_of(endpoint)


def native_job(model: str | None) -> dict:
    """The job of a test; `native_job(CONFIGURED)` is README's recipe (Models > LoRA adapters)."""
    job: dict = {"prompt": PROMPT, "sampling_params": {"temperature": 0, "max_tokens": MAX_TOKENS}}
    if model is not None:
        job["model"] = model
    return job


def native_text(endpoint: LocalEndpoint, model: str | None) -> str:
    done = endpoint.wait_final(endpoint.run(native_job(model)))
    assert done["status"] == "COMPLETED", done
    return "".join(done["output"][0]["choices"][0]["tokens"])


def openai_text(client: openai.OpenAI, model: str) -> str:
    response = client.completions.create(
        model=model, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0
    )
    assert response.model == model
    return response.choices[0].text


@pytest.fixture(scope="module")
def base_text(endpoint):
    return native_text(endpoint, None)


def test_models_lists_the_configured_adapter(client, folders):
    cards = {card.id: card for card in client.models.list().data}
    assert set(cards) >= {HUB_ID, CONFIGURED}
    assert cards[CONFIGURED].root == str(folders[CONFIGURED])
    assert cards[CONFIGURED].parent == HUB_ID


def test_configured_adapter_changes_the_text_alike_on_both_apis(endpoint, client, base_text):
    assert openai_text(client, HUB_ID) == base_text
    assert native_text(endpoint, HUB_ID) == base_text  # the base model's own name
    adapted = native_text(endpoint, CONFIGURED)
    assert adapted != base_text
    assert openai_text(client, CONFIGURED) == adapted
    # The worker's own beam search runs on the adapter too: one beam is the greedy text.
    beam = {"use_beam_search": True, "temperature": 0, "max_tokens": MAX_TOKENS, "ignore_eos": True}
    done = endpoint.wait_final(endpoint.run({**native_job(CONFIGURED), "sampling_params": beam}))
    assert done["status"] == "COMPLETED", done
    assert done["output"][0]["choices"][0]["tokens"] == [adapted]


def test_unknown_name_fails_listing_the_served_names(endpoint, client):
    failed = endpoint.wait_final(endpoint.run(native_job("no-such-adapter")))
    assert failed["status"] == "FAILED", failed
    served_prefix = "'no-such-adapter' is not served; served: "
    assert failed["error"].startswith(f"model: {served_prefix}{HUB_ID}, {CONFIGURED}"), failed

    with pytest.raises(openai.NotFoundError) as raised:
        openai_text(client, "no-such-adapter")
    error = raised.value.body
    assert isinstance(error, dict)
    assert error["message"].startswith(f"{served_prefix}{HUB_ID}, {CONFIGURED}"), error
    assert error["param"] == "model"


def test_unconfigured_adapter_folder_loads_on_demand_on_both_apis(
    endpoint, client, folders, base_text
):
    by_path = str(folders["a"])  # declares the hub id, the served name, as its base
    adapted = native_text(endpoint, by_path)
    assert adapted != base_text
    # vLLM applies the adapter as peft does: the same greedy text from transformers + peft.
    assert adapted == peft_greedy_text(folders["a"], PROMPT, MAX_TOKENS)
    assert openai_text(client, by_path) == adapted
    listed = {card.id: card for card in client.models.list().data}
    assert listed[by_path].root == by_path

    first_by_openai = str(folders["b"])  # declares the served model's folder as its base
    text_b = openai_text(client, first_by_openai)
    assert text_b not in (base_text, adapted)
    assert native_text(endpoint, first_by_openai) == text_b


def test_a_folder_that_is_no_adapter_fails_clearly(endpoint, tmp_path):
    failed = endpoint.wait_final(endpoint.run(native_job(str(tmp_path))))
    assert failed["status"] == "FAILED", failed
    assert failed["error"] == (
        f"model: {str(tmp_path)!r} has no adapter_config.json: not a peft adapter folder"
    )


def test_two_adapters_alternate_with_one_slot(endpoint, folders):
    """With MAX_LORAS=1 the engine holds one adapter at a time: jobs naming two adapters at
    once each get their own adapter's text (as when run alone)."""
    names = [str(folders["a"]), str(folders["b"])]
    alone = {name: native_text(endpoint, name) for name in names}
    assert alone[names[0]] != alone[names[1]]
    order = names * 3
    with concurrent.futures.ThreadPoolExecutor(len(order)) as pool:
        ids = list(pool.map(lambda name: endpoint.run(native_job(name)), order))
    for name, job_id in zip(order, ids, strict=True):
        done = endpoint.wait_final(job_id)
        assert done["status"] == "COMPLETED", done
        assert "".join(done["output"][0]["choices"][0]["tokens"]) == alone[name], name


def test_unconfigured_adapter_is_refused_naming_the_setting(folders, tmp_path, request):
    """The setting off (a second endpoint, started after the first one stopped)."""
    request.getfixturevalue("endpoint").stop()  # one engine at a time on this machine
    by_path = str(folders["a"])
    reason = (
        f"{by_path!r} is not served; served: {HUB_ID}, {CONFIGURED} "
        "(set LORA_LOAD_ON_DEMAND=true to load an adapter by folder path or hub id)"
    )
    with LocalEndpoint(tmp_path / "off.log", **lora_env(folders)) as endpoint:
        endpoint.wait_ready()
        failed = endpoint.wait_final(endpoint.run(native_job(by_path)))
        assert failed["status"] == "FAILED", failed
        assert failed["error"] == f"model: {reason}"
        with pytest.raises(openai.NotFoundError) as raised:
            openai_text(client_of(endpoint), by_path)
        assert isinstance(raised.value.body, dict)
        # vLLM's OpenAI errors hide server paths, the one the job named too.
        assert raised.value.body["message"] == sanitize_message(reason)
        assert "<path>" in sanitize_message(reason)
        assert native_text(endpoint, CONFIGURED) != native_text(endpoint, None)
