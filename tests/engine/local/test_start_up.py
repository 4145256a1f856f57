"""How the worker starts on settings that do not fit, behind the local endpoint."""

from __future__ import annotations

from vllm_worker.local.testing import LocalEndpoint

#: Too little KV cache for one request of SmolLM2's 8192-token context, enough for a short one.
SMALL_KV_CACHE = str(48 * 2**20)


def test_an_unset_max_model_len_serves_what_the_kv_cache_holds(tmp_path):
    with LocalEndpoint(
        tmp_path / "endpoint.log", KV_CACHE_MEMORY_BYTES=SMALL_KV_CACHE, MAX_MODEL_LEN=None
    ) as endpoint:
        endpoint.wait_ready()
        warning = endpoint.wait_log(
            r"WARNING [\w.]+: MAX_MODEL_LEN is unset and the model's context of 8192 tokens does "
            r"not fit the KV cache: serving at most (\d+) tokens per request"
        )
        served = int(warning[1])
        assert 0 < served < 8192
        short = endpoint.run(
            {"prompt": "Hello", "sampling_params": {"max_tokens": 5, "ignore_eos": True}}
        )
        done = endpoint.wait_final(short)
        assert done["status"] == "COMPLETED", done
        assert done["output"][0]["usage"]["output"] == 5
        too_long = endpoint.run({"prompt": "word " * served, "sampling_params": {"max_tokens": 5}})
        failed = endpoint.wait_final(too_long)
        assert failed["status"] == "FAILED", failed
        assert f"maximum context length is {served} tokens" in failed["error"], failed["error"]
