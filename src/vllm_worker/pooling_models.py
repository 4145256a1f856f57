"""What a native job learns when the model does not generate text (an embedding model, a
classifier, a reward model): which OpenAI route serves it instead.

vLLM decides what a model does once its engine runs: `AsyncLLM.get_supported_tasks()` lists
`generate` for a text generator and pooling tasks (`embed`, `classify`, `token_embed`, ...,
`vllm.tasks.POOLING_TASKS`) for a pooling model. A native job only generates, so on a pooling
model it fails at once, pointing at the route, instead of at vLLM's
"This model does not support generation" or a missing chat template.
"""

from __future__ import annotations

from collections.abc import Collection

#: The route of vLLM's server for a pooling task, in order of preference; every pooling
#: task is served by `/pooling` (vllm/entrypoints/pooling/*/api_router.py).
_ROUTES = (("embed", "/v1/embeddings"), ("classify", "/classify"))
_ANY_POOLING_ROUTE = "/pooling"


def route_for(tasks: Collection[str]) -> str:
    """The OpenAI route a pooling model with `tasks` is best asked through: `/v1/embeddings`
    for an embedding model, `/classify` for a classifier, else vLLM's generic `/pooling`."""
    for task, route in _ROUTES:
        if task in tasks:
            return route
    return _ANY_POOLING_ROUTE


def refusal(field: str, tasks: Collection[str]) -> str | None:
    """The one-line error of a native job on a model with `tasks`, or None when it generates.

    Args:
        field: the job field that asked for generation (`prompt` or `messages`).
        tasks: the engine's supported tasks (`generate`, `embed`, ...).

    Returns:
        None for a model that generates (or serves no pooling task, whose own errors stand);
        else `<field>: this model does not generate text ... send {"openai_route": ...}`.
    """
    from vllm.tasks import POOLING_TASKS

    pooling = sorted(task for task in tasks if task in POOLING_TASKS)  # vLLM's order varies
    if "generate" in tasks or not pooling:
        return None
    route = route_for(pooling)
    return (
        f"{field}: this model does not generate text (vLLM serves it for "
        f"{', '.join(pooling)}): send "
        f'{{"openai_route": "{route}", "openai_input": {{...}}}} instead'
    )
