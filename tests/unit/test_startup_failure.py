"""Known start-up failures, from vLLM 0.32's and huggingface_hub's own texts, in one sentence."""

from __future__ import annotations

import pytest

from tests.fake_hub import MISSING
from vllm_worker.config import ConfigError, load
from vllm_worker.startup_failure import Reason, StartUpError, StartUpFailure, classify

#: What the worker sees when the engine core fails; the cause is only in the output.
ENGINE_CORE_FAILED = RuntimeError(
    "Engine core initialization failed. See root cause above. Failed core proc(s): "
    "{'EngineCore': 1}"
)
#: vLLM's log line around the engine core's traceback, as captured (v1/engine/core.py).
CORE_LOG = "(EngineCore pid=29549) ERROR 12-01 03:08:42 [core.py:1510] "

KV_CACHE_TEXT = (
    "ValueError: To serve at least one request with the model's max seq len (8192), (0.35 GiB "
    "KV cache is needed, which is larger than the available KV cache memory (0.04 GiB). Based "
    "on the available memory, the estimated maximum model length is 896. Try increasing "
    "`gpu_memory_utilization` (which also controls CPU memory on the CPU backend) or "
    "decreasing `max_model_len` when initializing the engine. See "
    "https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details."
)
MAX_MODEL_LEN_TEXT = (
    "1 validation error for ModelConfig\n  Value error, User-specified max_model_len (100000) "
    "is greater than the derived max_model_len (max_position_embeddings=8192.0 or "
    "model_max_length=None in model's config.json). To allow overriding this maximum, set the "
    "env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1."
)


def classified(error: BaseException, output: str = "", environ=None, config=None):
    return classify(error, output, config, environ or {})


def test_kv_cache_too_small_names_the_length_that_fits():
    output = "\n".join(
        [
            CORE_LOG + "EngineCore failed to start.",
            CORE_LOG + "Traceback (most recent call last):",
            CORE_LOG + KV_CACHE_TEXT,
            "RuntimeError: Engine core initialization failed. See root cause above.",
        ]
    )
    assert classified(ENGINE_CORE_FAILED, output) == StartUpFailure(
        reason=Reason.KV_CACHE_TOO_SMALL,
        variable="MAX_MODEL_LEN",
        message="MAX_MODEL_LEN=8192 does not fit the KV cache, which holds at most 896 tokens "
        "for one request: set MAX_MODEL_LEN=896 or less (or leave it blank to serve what "
        "fits), or give the cache more memory with GPU_MEMORY_UTILIZATION or "
        "KV_CACHE_MEMORY_BYTES.",
    )


def test_no_memory_at_all_for_the_kv_cache():
    output = CORE_LOG + "ValueError: No available memory for the cache blocks. Try increasing"
    failure = classified(ENGINE_CORE_FAILED, output)
    assert failure is not None
    assert failure.reason is Reason.KV_CACHE_TOO_SMALL
    assert failure.variable == "GPU_MEMORY_UTILIZATION"


def test_max_model_len_above_the_models_limit_names_the_limit():
    error = ValueError(MAX_MODEL_LEN_TEXT)
    assert classified(error) == StartUpFailure(
        reason=Reason.MAX_MODEL_LEN_TOO_LONG,
        variable="MAX_MODEL_LEN",
        message="MAX_MODEL_LEN=100000 is more than this model's limit of 8192 tokens: set "
        "MAX_MODEL_LEN=8192 or less, or leave it blank for the model's own.",
    )


def test_a_models_own_max_length_above_its_positions_is_the_limit():
    text = MAX_MODEL_LEN_TEXT.replace("model_max_length=None", "model_max_length=16384")
    text = text.replace("(100000)", "(20000)")
    failure = classified(ValueError(text))
    assert failure is not None
    assert "limit of 16384 tokens: set MAX_MODEL_LEN=16384 or less" in failure.message


def test_a_cause_inside_the_chain_is_found():
    try:
        try:
            raise ValueError(MAX_MODEL_LEN_TEXT)
        except ValueError as inner:
            raise RuntimeError("engine arguments are invalid") from inner
    except RuntimeError as outer:
        failure = classified(outer)
    assert failure is not None and failure.reason is Reason.MAX_MODEL_LEN_TOO_LONG


def test_not_enough_free_gpu_memory_computes_a_utilization_that_fits():
    output = (
        "ValueError: Free memory on device cuda:0 (10.5/23.5 GiB) on startup is less than "
        "desired GPU memory utilization (0.92, 21.62 GiB). Decrease GPU memory utilization or "
        "reduce GPU memory used by other processes."
    )
    failure = classified(ENGINE_CORE_FAILED, output)
    assert failure is not None
    assert failure.variable == "GPU_MEMORY_UTILIZATION"
    # 10.5 / 23.5 = 0.4468: 0.44 would take all that is free; one hundredth less leaves room.
    assert failure.message == (
        "GPU_MEMORY_UTILIZATION=0.92 asks for more GPU memory than is free (10.5 of 23.5 GiB): "
        "set GPU_MEMORY_UTILIZATION=0.43 or less, or stop what else uses the GPU."
    )


def test_an_unsupported_architecture_names_the_model():
    error = ValueError(
        "Model architectures ['FooForCausalLM'] are not supported for now. Supported "
        "architectures: dict_keys(['LlamaForCausalLM'])"
    )
    failure = classified(error, environ={"MODEL_NAME": "acme/foo"})
    assert failure is not None
    assert failure.reason is Reason.UNSUPPORTED_ARCHITECTURE
    assert failure.variable == "MODEL_NAME"
    assert failure.message.startswith(
        "MODEL_NAME=acme/foo has the architecture ['FooForCausalLM'], which vLLM 0.32"
    )


def test_out_of_memory_while_loading_suggests_more_gpus():
    output = CORE_LOG + "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB."
    config = load({"MODEL_NAME": "/models/m", "TENSOR_PARALLEL_SIZE": "2"})
    failure = classified(ENGINE_CORE_FAILED, output, config=config)
    assert failure is not None
    assert failure.reason is Reason.OUT_OF_MEMORY
    assert "TENSOR_PARALLEL_SIZE=4" in failure.message
    assert "QUANTIZATION=fp8" in failure.message


def test_a_full_disk():
    failure = classified(OSError(28, "No space left on device"))
    assert failure is not None
    assert failure.reason is Reason.DISK_FULL
    assert failure.variable == "HF_HOME"


def test_a_lora_adapter_that_cannot_load_is_named_with_its_path():
    # vLLM hides the path in its message; the settings have it.
    error = RuntimeError(
        "vLLM's OpenAI server could not start: Loading lora missing failed: No adapter found "
        "for <path>"
    )
    modules = '{"name": "missing", "path": "/adapters/none"}'
    config = load({"MODEL_NAME": "/models/m", "ENABLE_LORA": "true", "LORA_MODULES": modules})
    assert classified(error, config=config) == StartUpFailure(
        reason=Reason.BAD_LORA_MODULES,
        variable="LORA_MODULES",
        message="LORA_MODULES names the adapter missing at /adapters/none, which could not be "
        "loaded: give it an existing adapter folder or Hub id, or leave LORA_MODULES blank.",
    )
    without_settings = classified(error)
    assert without_settings is not None
    assert without_settings.message.startswith(
        "LORA_MODULES names the adapter missing, which could not be loaded"
    )


def test_an_unregistered_tool_parser():
    error = TypeError(
        "Error: --enable-auto-tool-choice requires tool_parser:'mine' which has not been registered"
    )
    failure = classified(error)
    assert failure is not None
    assert failure.reason is Reason.TOOL_PARSER_MISSING
    assert failure.message.startswith("TOOL_CALL_PARSER=mine is not a tool parser of this vLLM")
    assert "TOOL_PARSER_PLUGIN" in failure.message


def test_an_invalid_setting_names_its_variable():
    error = ConfigError("MAX_CONCURRENCY='many': Input should be a valid integer")
    assert classified(error) == StartUpFailure(
        reason=Reason.INVALID_SETTING,
        variable="MAX_CONCURRENCY",
        message="Invalid setting MAX_CONCURRENCY='many': Input should be a valid integer; "
        "correct it, or leave it blank for the default.",
    )


def test_a_known_failure_is_returned_as_is():
    failure = StartUpFailure(reason=Reason.MODEL_NOT_FOUND, variable="MODEL_NAME", message="m.")
    assert classified(StartUpError(failure)) is failure


def test_a_hub_error_raised_while_loading_names_the_repository(fake_hub):
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(MISSING, "config.json", endpoint=fake_hub)
    try:
        try:
            get_hf_file_metadata(url, token=False)
        except Exception as hub_error:  # transformers wraps it so
            raise OSError("We could not find the model") from hub_error
    except OSError as error:
        failure = classified(error)
    assert failure is not None
    assert failure.reason is Reason.MODEL_NOT_FOUND
    assert failure.message.startswith(f"MODEL_NAME={MISSING} is not a repository")


@pytest.mark.parametrize(
    "error, output",
    [
        (ENGINE_CORE_FAILED, CORE_LOG + "RuntimeError: something nobody foresaw"),
        (OSError("We couldn't connect to 'https://huggingface.co' to load the files"), ""),
        (ConnectionError("Connection refused"), ""),
        (KeyError("weights"), ""),
    ],
)
def test_unknown_or_passing_failures_are_not_classified(error, output):
    assert classified(error, output) is None


def test_a_hub_error_in_a_childs_traceback():
    output = (
        "(Worker pid=7) ERROR huggingface_hub.errors.GatedRepoError: 403 Client Error.\n"
        "Cannot access gated repo for url https://huggingface.co/acme/gated/resolve/main/x."
    )
    failure = classified(ENGINE_CORE_FAILED, output, environ={"MODEL_NAME": "acme/gated"})
    assert failure is not None
    assert failure.reason is Reason.NOT_AUTHORISED
    assert failure.message.startswith("MODEL_NAME=acme/gated is a gated model and HF_TOKEN")
