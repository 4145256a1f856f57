"""Settings from the environment: names derived from vLLM's parser, clear errors."""

import os
from pathlib import Path

import pytest

from vllm_worker import config
from vllm_worker.config import ConfigError, WorkerSettings, vllm_argv, vllm_env_vars


def test_every_engine_argument_has_a_variable():
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    engine_flags = {
        s
        for a in AsyncEngineArgs.add_cli_args(FlexibleArgumentParser())._actions
        for s in a.option_strings
        if s.startswith("--") and not s.startswith("--no-") and s != "--help"
    }
    names = {s[2:].replace("-", "_").upper() for s in engine_flags}
    assert names <= set(vllm_env_vars())
    for name in ["MAX_MODEL_LEN", "GPU_MEMORY_UTILIZATION", "TENSOR_PARALLEL_SIZE", "DTYPE"]:
        assert name in vllm_env_vars()


def test_serve_options_of_the_openai_layer_are_settings():
    for name in ["RESPONSE_ROLE", "CHAT_TEMPLATE", "TOOL_CALL_PARSER", "LORA_MODULES"]:
        assert name in vllm_env_vars()


@pytest.mark.parametrize(
    "name", ["HOST", "PORT", "API_KEY", "SSL_KEYFILE", "ALLOWED_ORIGINS", "ROOT_PATH", "HEADLESS"]
)
def test_http_server_options_are_not_read(name):
    assert name not in vllm_env_vars()


def test_aliases_map_onto_vllm_flags():
    argv = vllm_argv(
        {
            "MODEL_NAME": "org/model",
            "MODEL_REVISION": "abc",
            "TOKENIZER_NAME": "org/tok",
            "TOKENIZER_REVISION": "def",
        }
    )
    pairs = dict(zip(argv[::2], argv[1::2], strict=True))
    assert pairs == {
        "--model": "org/model",
        "--revision": "abc",
        "--tokenizer": "org/tok",
        "--tokenizer-revision": "def",
    }


def test_values_are_converted_to_flags():
    argv = vllm_argv(
        {
            "MAX_MODEL_LEN": "2048",
            "ENFORCE_EAGER": "false",
            "TRUST_REMOTE_CODE": "true",
            "LORA_MODULES": '{"name": "a", "path": "/x", "base_model_name": "m"}',
        }
    )
    assert argv[argv.index("--max-model-len") :][:2] == ["--max-model-len", "2048"]
    assert "--no-enforce-eager" in argv
    assert "--trust-remote-code" in argv
    assert argv[argv.index("--lora-modules") + 1].startswith('{"name": "a"')


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MAX_MODEL_LEN": "abc"}, "MAX_MODEL_LEN='abc'"),
        ({"DTYPE": "float7"}, "DTYPE='float7'"),
        ({"ENFORCE_EAGER": "maybe"}, "ENFORCE_EAGER='maybe': expected true or false"),
        ({"LORA_MODULES": "[{broken"}, "LORA_MODULES='[{broken': malformed JSON"),
        ({"HF_TOKEN": ""}, None),
    ],
)
def test_invalid_values_name_the_variable(env, expected):
    if expected is None:
        assert vllm_argv(env) == []
        return
    with pytest.raises(ConfigError) as caught:
        vllm_argv(env)
    message = str(caught.value)
    assert message.startswith(expected), message
    assert "\n" not in message


def test_secret_values_are_not_echoed():
    class Secrets(config.EnvSettings):
        service_api_key: int = 0

    with pytest.raises(ConfigError) as caught:
        Secrets.from_env({"SERVICE_API_KEY": "sk-secret-value"})
    assert str(caught.value).startswith("SERVICE_API_KEY=<hidden>: Input should be a valid")
    assert "sk-secret-value" not in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        config._to_argv("X_TOKEN", "tok-secret", vllm_env_vars()["ENFORCE_EAGER"])
    assert str(caught.value) == "X_TOKEN=<hidden>: expected true or false"


def test_worker_settings_defaults_and_errors():
    assert WorkerSettings.from_env({}) == WorkerSettings(
        max_concurrency=30,
        default_batch_size=50,
        default_min_batch_size=1,
        default_batch_size_growth_factor=3.0,
    )
    assert (
        WorkerSettings.from_env(
            {"DEFAULT_BATCH_SIZE_GROWTH_FACTOR": "1.5"}
        ).default_batch_size_growth_factor
        == 1.5
    )
    with pytest.raises(ConfigError, match=r"^MAX_CONCURRENCY='zero': "):
        WorkerSettings.from_env({"MAX_CONCURRENCY": "zero"})
    with pytest.raises(ConfigError, match=r"^DEFAULT_BATCH_SIZE='0': .*greater than or equal to 1"):
        WorkerSettings.from_env({"DEFAULT_BATCH_SIZE": "0"})


def test_cpu_defaults_apply_unless_overridden(monkeypatch):
    monkeypatch.setattr(config, "_is_cpu", lambda: True)
    base = {"MODEL_NAME": "org/model"}
    loaded = config.load(base)
    assert loaded.vllm_args.enforce_eager is True
    assert loaded.vllm_args.kv_cache_memory_bytes > 0
    assert loaded.served_model_name == "org/model"

    overrides = {"ENFORCE_EAGER": "false", "GPU_MEMORY_UTILIZATION": "0.3", "DTYPE": "bfloat16"}
    loaded = config.load({**base, **overrides})
    assert loaded.vllm_args.enforce_eager is False
    assert loaded.vllm_args.kv_cache_memory_bytes is None
    assert loaded.vllm_args.dtype == "bfloat16"
    assert loaded.cpu_defaults == {}


@pytest.mark.parametrize("native_bf16", [True, False])
def test_cpus_without_native_bf16_default_to_float32(monkeypatch, native_bf16):
    import torch

    monkeypatch.setattr(config, "_is_cpu", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native_bf16)
    loaded = config.load({"MODEL_NAME": "org/model"})
    assert loaded.vllm_args.dtype == ("auto" if native_bf16 else "float32")
    assert ("dtype" in loaded.cpu_defaults) is not native_bf16


def test_loading_settings_has_no_side_effects(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    before = dict(os.environ)
    loaded = config.load({"WORKER_CACHE_DIR": str(tmp_path / "cache")})
    assert not (tmp_path / "cache").exists()  # the default model is prepared later
    assert loaded.vllm_args.model == vllm_env_vars()["MODEL_NAME"].default
    assert dict(os.environ) == before


def test_an_empty_variable_means_unset():
    blank = {name: "" for name in WorkerSettings.env_names()} | {"RUNPOD_LOG_LEVEL": "  "}
    assert WorkerSettings.from_env(blank) == WorkerSettings()
    assert config.load({"MAX_MODEL_LEN": "", "MAX_CONCURRENCY": ""}).worker.max_concurrency == 30


def test_cache_dir_follows_the_setting_then_xdg(tmp_path):
    assert WorkerSettings(worker_cache_dir=tmp_path).cache_dir("/xdg") == tmp_path
    assert WorkerSettings().cache_dir("/xdg") == Path("/xdg/vllm-worker")
    assert WorkerSettings().cache_dir(None) == Path.home() / ".cache" / "vllm-worker"


def test_runpod_log_level_is_checked_and_case_insensitive():
    assert WorkerSettings.from_env({"RUNPOD_LOG_LEVEL": "debug"}).runpod_log_level == "DEBUG"
    with pytest.raises(ConfigError, match=r"^RUNPOD_LOG_LEVEL='LOUD': "):
        WorkerSettings.from_env({"RUNPOD_LOG_LEVEL": "loud"})


def test_openai_aliases_map_onto_vllm_flags():
    argv = vllm_argv(
        {
            "OPENAI_RESPONSE_ROLE": "bot",
            "CUSTOM_CHAT_TEMPLATE": "{{ messages }}",
            "OPENAI_SERVED_MODEL_NAME_OVERRIDE": "my-model",
        }
    )
    pairs = dict(zip(argv[::2], argv[1::2], strict=True))
    assert pairs == {
        "--response-role": "bot",
        "--chat-template": "{{ messages }}",
        "--served-model-name": "my-model",
    }


def test_openai_serve_options_are_settings():
    argv = vllm_argv(
        {
            "ENABLE_AUTO_TOOL_CHOICE": "true",
            "TOOL_CALL_PARSER": "hermes",
            "REASONING_PARSER": "deepseek_r1",
            "MAX_LORAS": "2",
            "ENABLE_PREFIX_CACHING": "false",
        }
    )
    assert argv == [
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
        "--reasoning-parser",
        "deepseek_r1",
        "--no-enable-prefix-caching",
        "--max-loras",
        "2",
    ]


@pytest.mark.parametrize(
    "modules",
    [
        '{"name": "a", "path": "/x", "base_model_name": "org/model"}',
        '[{"name": "a", "path": "/x"}, {"name": "b", "path": "/y", "base_model_name": "org/m"}]',
    ],
)
def test_lora_modules_take_one_object_or_a_list(modules):
    loaded = config.load(
        {"MODEL_NAME": "org/model", "ENABLE_LORA": "true", "LORA_MODULES": modules}
    )
    assert loaded.vllm_args.lora_modules[0].name == "a"
    assert loaded.vllm_args.lora_modules[0].path == "/x"


@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("true", True), ("0", False), ("false", False)]
)
def test_raw_openai_output_is_a_switch(value, expected):
    assert WorkerSettings.from_env({}).raw_openai_output is True
    assert WorkerSettings.from_env({"RAW_OPENAI_OUTPUT": value}).raw_openai_output is expected


def test_raw_openai_output_rejects_other_words():
    with pytest.raises(ConfigError, match=r"^RAW_OPENAI_OUTPUT='maybe': "):
        WorkerSettings.from_env({"RAW_OPENAI_OUTPUT": "maybe"})


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ENABLE_AUTO_TOOL_CHOICE": "true"}, "ENABLE_AUTO_TOOL_CHOICE requires TOOL_CALL_PARSER"),
        ({"CUSTOM_CHAT_TEMPLATE": "no/such/template.jinja"}, "CHAT_TEMPLATE: The supplied chat"),
    ],
)
def test_vllm_serve_checks_stop_start_up(env, expected):
    with pytest.raises(ConfigError) as caught:
        config.load({"MODEL_NAME": "org/model", **env})
    assert str(caught.value).startswith(expected), str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_literal_chat_template_is_accepted():
    loaded = config.load({"MODEL_NAME": "org/model", "CUSTOM_CHAT_TEMPLATE": "{{ messages }}"})
    assert loaded.vllm_args.chat_template == "{{ messages }}"
