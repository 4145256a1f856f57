"""OpenAI jobs without the engine: whole SSE events, job input, counts for the log."""

import json
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vllm_worker import sse
from vllm_worker.batching import BatchPolicy
from vllm_worker.kinds import JobStats
from vllm_worker.openai_jobs import Events, OpenAIError, OpenAIKind, parse_openai

POLICY = BatchPolicy(min_size=1, max_size=4, growth=2)


def _stream(payloads: list[dict]) -> bytes:
    """An SSE stream as vLLM writes it: one `data:` event per chunk, then `[DONE]`."""
    events = [f"data: {json.dumps(p, ensure_ascii=False)}\n\n" for p in payloads]
    return "".join([*events, "data: [DONE]\n\n"]).encode()


def _items(stream: bytes, cuts: list[int]) -> list[list[bytes]]:
    """What `Events` hands on when the stream arrives cut at `cuts`, then its rest."""
    events = Events()
    bounds = [0, *sorted(cuts), len(stream)]
    return [*(events.feed(stream[lo:hi]) for lo, hi in pairwise(bounds)), events.rest()]


payloads = st.lists(
    st.fixed_dictionaries({"delta": st.text(max_size=8), "index": st.integers(0, 3)}),
    max_size=30,
)


@given(payloads, st.data())
def test_events_survive_any_chunk_boundaries(chunk_payloads, data):
    stream = _stream(chunk_payloads)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40))
    batches = _items(stream, cuts)
    # Whole events only: each yield decodes on its own (no split character) and the
    # concatenated yields are the stream itself.
    texts = [sse.encode(batch) for batch in batches]
    assert "".join(texts).encode() == stream
    assert all(text.endswith("\n\n") for text in texts if text)
    parsed = [obj for batch in batches for obj in sse.values(batch)]
    assert parsed == chunk_payloads


def test_what_arrives_together_leaves_together():
    stream = _stream([{"n": i} for i in range(3)])
    assert [len(batch) for batch in _items(stream, [])] == [4, 0]


def test_role_only_opening_chunks_ride_along_with_the_first_batch():
    """vLLM opens a chat stream with one role-only chunk per choice; they hold no token."""

    def chunk(index, **delta):
        return {"choices": [{"index": index, "delta": delta, "finish_reason": None}]}

    opening = _stream([chunk(0, role="assistant", content=""), chunk(1, role="assistant")])
    events = Events()
    assert events.feed(opening.removesuffix(b"data: [DONE]\n\n")) == []
    first = events.feed(_stream([chunk(0, content="Hi")]))
    assert [v["choices"][0]["delta"] for v in sse.values(first)] == [
        {"role": "assistant", "content": ""},
        {"role": "assistant"},
        {"content": "Hi"},
    ]
    # A first chunk that carries a token is handed on at once.
    assert len(Events().feed(_stream([chunk(0, role="assistant", content="Hi")]))) == 2


def test_an_unterminated_tail_is_kept_as_the_last_event():
    events = Events()
    assert events.feed(b'data: {"a": 1}\n\ndata: {"b"') == [b'data: {"a": 1}']
    assert events.feed(b": 2}") == []
    assert events.rest() == [b'data: {"b": 2}']
    assert sse.encode([]) == ""


def test_job_takes_batch_fields_beside_the_route():
    job = parse_openai(
        {"openai_route": "/v1/models", "min_batch_size": 2, "batch_size_growth_factor": 1.5}
    )
    assert job.openai_input is None
    assert (job.min_batch_size, job.max_batch_size, job.batch_size_growth_factor) == (2, None, 1.5)


@pytest.mark.parametrize(
    ("job_input", "expected"),
    [
        ({"openai_route": "/v1/models", "openai_input": "text"}, "openai_input: "),
        ({"openai_route": 3}, "openai_route: "),
        ({"openai_route": "/v1/models", "max_batch_size": 0}, "max_batch_size: "),
        ({"openai_route": "/v1/models", "openai_inputs": {}}, "openai_inputs: unknown field"),
    ],
)
def test_bad_job_input_is_an_openai_error(job_input, expected):
    with pytest.raises(OpenAIError) as caught:
        parse_openai(job_input)
    error = json.loads(str(caught.value))["error"]
    assert error["message"].startswith(expected), error
    assert (error["type"], error["code"]) == ("BadRequestError", 400)


def _usage_stream(finish: list[str], usage: dict | None) -> list[bytes]:
    chunks = [
        {"choices": [{"index": i, "delta": {"content": "x"}, "finish_reason": None}]}
        for i in range(len(finish))
    ]
    chunks += [
        {"choices": [{"index": i, "delta": {}, "finish_reason": reason}]}
        for i, reason in enumerate(finish)
    ]
    if usage is not None:
        chunks.append({"choices": [], "usage": usage})
    return sse.split(_stream(chunks))[0]


def test_stream_counts_come_from_its_last_events():
    from vllm_worker.openai_jobs import _count_stream

    stats = JobStats(route="/v1/chat/completions")
    usage = {"prompt_tokens": 7, "completion_tokens": 12, "total_tokens": 19}
    _count_stream(_usage_stream(["stop", "length"], usage), stats)
    assert (stats.prompt_tokens, stats.output_tokens) == (7, 12)
    assert stats.finish_reasons == ["stop", "length"]  # one finish chunk per choice, by index
    bare = JobStats(route="/v1/completions")
    _count_stream(_usage_stream(["stop"], None), bare)
    assert (bare.prompt_tokens, bare.output_tokens, bare.finish_reasons) == (None, None, ["stop"])


def test_route_claims_only_inputs_with_openai_route():
    kind = OpenAIKind(serving=None, settings=None)  # type: ignore[arg-type]
    assert kind.route({"openai_route": "/v1/models"}) == "/v1/models"
    assert kind.route({"prompt": "Hi"}) is None
    assert kind.route(["openai_route"]) is None


def test_error_bodies_name_variables_and_keep_vllms_shape():
    from vllm_worker.openai_jobs import in_worker_terms

    body = {
        "error": {
            "message": 'tool_choice="required" requires --tool-call-parser to be set',
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    }
    rewritten = json.loads(in_worker_terms(json.dumps(body).encode()))
    message = 'tool_choice="required" requires TOOL_CALL_PARSER (--tool-call-parser) to be set'
    assert rewritten["error"] == {**body["error"], "message": message}
    assert in_worker_terms(b"not json") == "not json"
    assert in_worker_terms(b'{"detail": "x"}') == '{"detail": "x"}'
