"""Which routes of vLLM's app jobs may call, read from the app without an engine."""

import argparse
from types import SimpleNamespace

from vllm_worker.serving import job_routes


def _app(config, tasks, model_config=None, **args):
    """vLLM's app as `vllm serve` builds it; routes need no engine."""
    from vllm.entrypoints.launchers.app import build_app

    return build_app(argparse.Namespace(**{**vars(config.vllm_args), **args}), tasks, model_config)


def _routes(config, tasks, model_config=None, **args) -> dict[str, str]:
    return job_routes(_app(config, tasks, model_config, **args))


SERVER_ROUTES = ["/health", "/ping", "/metrics", "/load", "/version", "/invocations", "/docs"]


def test_generative_model_routes(config):
    routes = _routes(config, ("generate",))
    assert routes["/v1/models"] == "GET"
    for path in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/messages",
        "/tokenize",
        "/detokenize",
    ]:
        assert routes[path] == "POST"
    for path in [*SERVER_ROUTES, "/v1/embeddings", "/v1/responses/{response_id}"]:
        assert path not in routes
    # Scale-out routes are stubs unless enabled; their request-aborting route never counts.
    assert "/v1/chat/completions/render" not in routes
    enabled = _routes(config, ("generate",), enable_scale_out=True)
    assert "/v1/chat/completions/render" in enabled
    assert "/inference/v1/generate" in enabled
    assert "/inference/v1/abort_requests" not in enabled


def test_embedding_model_routes(config):
    model_config = SimpleNamespace(get_pooling_task=lambda tasks: "embed")
    routes = _routes(config, ("embed",), model_config)
    assert {"/v1/embeddings", "/v1/models", "/tokenize", "/v1/score"} <= set(routes)
    assert "/v1/chat/completions" not in routes
    assert not set(SERVER_ROUTES) & set(routes)


def test_development_routes_stay_unreachable(config, monkeypatch):
    monkeypatch.setenv("VLLM_SERVER_DEV_MODE", "1")
    app = _app(config, ("generate",))
    routes = job_routes(app)
    for path in ["/sleep", "/wake_up", "/collective_rpc", "/reset_prefix_cache", "/pause"]:
        assert path in {route.path for route in app.routes}
        assert path not in routes
    assert "/v1/chat/completions" in routes
