"""A native job on a pooling model is told which OpenAI route serves the model instead."""

import pytest

from vllm_worker.pooling_models import refusal, route_for


@pytest.mark.parametrize(
    ("tasks", "route"),
    [
        (("embed", "token_embed"), "/v1/embeddings"),
        (("token_embed", "embed"), "/v1/embeddings"),
        (("classify", "token_classify"), "/classify"),
        (("embed&token_classify",), "/pooling"),
        (("token_classify",), "/pooling"),
        (("plugin",), "/pooling"),
    ],
)
def test_route_for_each_kind_of_pooling_model(tasks, route):
    assert route_for(tasks) == route


def test_embedding_model_refuses_with_one_line_naming_the_field_and_route():
    message = refusal("prompt", ("token_embed", "embed"))  # listed in a stable order
    assert message == (
        "prompt: this model does not generate text (vLLM serves it for embed, token_embed): "
        'send {"openai_route": "/v1/embeddings", "openai_input": {...}} instead'
    )
    assert "\n" not in message


def test_messages_field_is_named():
    message = refusal("messages", ("classify",))
    assert message is not None
    assert message.startswith("messages: this model does not generate text")
    assert '"openai_route": "/classify"' in message


@pytest.mark.parametrize(
    "tasks",
    [("generate",), ("generate", "embed"), ("transcription",), ()],
)
def test_generating_or_non_pooling_models_are_not_refused(tasks):
    assert refusal("prompt", tasks) is None
