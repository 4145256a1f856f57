"""A real sentence-embedding model (all-MiniLM-L6-v2) behind the local endpoint: the worker
starts cleanly on a pooling model, serves `/v1/embeddings` and the other pooling routes vLLM
offers for it (through the official OpenAI client, the endpoint's OpenAI routes and native
`openai_route` jobs), with vectors checked against the model run by transformers alone, and a
generation job fails with the route to use while the worker keeps serving."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.models.embeddings import DIMENSIONS, HUB_ID, minilm_folder, reference_embeddings
from vllm_worker.local.testing import LocalEndpoint

CAT = "A cat is sitting on a mat."
KITTEN = "A kitten is lying on a rug."
TAX = "The deadline for filing your income tax return is April 15."
SENTENCES = [CAT, KITTEN, TAX]

#: README's request (Models > Embedding models), exactly.
EMBEDDINGS_REQUEST = {"model": HUB_ID, "input": SENTENCES, "encoding_format": "float"}


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory) -> Iterator[LocalEndpoint]:
    log = tmp_path_factory.mktemp("embeddings") / "endpoint.log"
    with LocalEndpoint(
        log, MODEL_NAME=str(minilm_folder()), OPENAI_SERVED_MODEL_NAME_OVERRIDE=HUB_ID
    ) as running:
        running.wait_ready()
        yield running


@pytest.fixture(scope="module")
def client(endpoint):
    from openai import OpenAI

    return OpenAI(
        api_key=endpoint.api_key, base_url=f"{endpoint.url}/openai/v1", timeout=60, max_retries=0
    )


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """The three sentences' vectors from transformers, not vLLM."""
    return np.array(reference_embeddings(SENTENCES))


def cosine(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def runsync(endpoint: LocalEndpoint, job_input: dict[str, Any]) -> dict[str, Any]:
    response = endpoint.request("POST", "runsync", {"input": job_input}, timeout_s=60)
    assert response.status_code == 200, response.text
    return response.json()


def native_route(endpoint: LocalEndpoint, route: str, body: dict[str, Any]) -> Any:
    """The response body of a native `openai_route` job through `/runsync`."""
    done = runsync(endpoint, {"openai_route": route, "openai_input": body})
    assert done["status"] == "COMPLETED", done
    return done["output"][0]


def test_worker_starts_without_generation_or_tracebacks(endpoint):
    start = endpoint.log_text().split("ready for jobs")[0]
    assert "Resolved `--runner auto` to `--runner pooling`" in start
    assert "Traceback" not in start
    assert "ERROR" not in start
    assert "warm-up" not in start  # no one-token generate request on a pooling model
    routes = endpoint.wait_log(r"OpenAI routes for jobs: (.*)").group(1).split(", ")
    assert {"/v1/embeddings", "/pooling", "/score", "/v1/score", "/rerank", "/tokenize"} <= set(
        routes
    )
    assert "/v1/chat/completions" not in routes
    assert "/v1/completions" not in routes


def test_models_lists_the_served_name(client):
    assert [model.id for model in client.models.list().data] == [HUB_ID]


def test_embeddings_match_the_model_and_rank_related_sentences_closer(client, reference):
    response = client.embeddings.create(**EMBEDDINGS_REQUEST)
    assert [item.index for item in response.data] == [0, 1, 2]
    vectors = np.array([item.embedding for item in response.data])
    assert vectors.shape == (3, DIMENSIONS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, reference, atol=2e-4)
    related, unrelated = cosine(vectors[0], vectors[1]), cosine(vectors[0], vectors[2])
    assert 0.45 < related < 0.75, related
    assert -0.1 < unrelated < 0.2, unrelated
    assert related > unrelated + 0.3
    # One vector per input, in input order: each equals that sentence embedded alone.
    for sentence, vector in zip(SENTENCES, vectors, strict=True):
        alone = client.embeddings.create(model=HUB_ID, input=sentence, encoding_format="float")
        np.testing.assert_allclose(alone.data[0].embedding, vector, atol=1e-5)
    assert response.model == HUB_ID
    assert response.usage.prompt_tokens == sum(len(model_tokens(s)) for s in SENTENCES)


@functools.cache
def model_tokens(text: str) -> list[int]:
    """The token ids of the model's own tokenizer (transformers, the same local folder)."""
    from transformers import AutoTokenizer

    return list(AutoTokenizer.from_pretrained(minilm_folder())(text)["input_ids"])


def test_base64_decodes_to_the_same_floats(endpoint, client):
    body = {"model": HUB_ID, "input": [CAT, TAX]}
    as_floats = endpoint.request(
        "POST", "openai/v1/embeddings", {**body, "encoding_format": "float"}
    )
    as_base64 = endpoint.request(
        "POST", "openai/v1/embeddings", {**body, "encoding_format": "base64"}
    )
    assert as_floats.status_code == as_base64.status_code == 200, as_base64.text
    for plain, packed in zip(as_floats.json()["data"], as_base64.json()["data"], strict=True):
        decoded = np.frombuffer(base64.b64decode(packed["embedding"]), dtype="<f4")
        assert decoded.shape == (DIMENSIONS,)
        np.testing.assert_array_equal(decoded, np.array(plain["embedding"], dtype=np.float32))
    # The OpenAI client asks for base64 by default and decodes it itself.
    by_default = client.embeddings.create(model=HUB_ID, input=[CAT, TAX])
    for plain, item in zip(as_floats.json()["data"], by_default.data, strict=True):
        np.testing.assert_array_equal(
            np.array(item.embedding, dtype=np.float32), np.array(plain["embedding"], np.float32)
        )


def test_dimensions_is_refused_for_a_model_without_matryoshka(client):
    import openai

    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model=HUB_ID, input=CAT, dimensions=128)
    assert refused.value.status_code == 400
    message = refused.value.body["message"]  # type: ignore[index]
    assert message == (
        f"Model {HUB_ID!r} does not support Matryoshka embeddings; dimensions must be unset "
        "(received dimensions=128)."
    )


def test_an_input_longer_than_the_model_takes_is_refused_unless_truncated(endpoint, client):
    import openai

    long_text = " ".join(["cat"] * 300)  # 302 tokens with [CLS] and [SEP]; the model takes 256
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model=HUB_ID, input=long_text)
    message = refused.value.body["message"]  # type: ignore[index]
    assert message.startswith("This model's maximum context length is 256 tokens."), message
    body = {"model": HUB_ID, "input": long_text, "truncate_prompt_tokens": 256}
    truncated = endpoint.request("POST", "openai/v1/embeddings", body)
    assert truncated.status_code == 200, truncated.text
    assert truncated.json()["usage"]["prompt_tokens"] == 256
    assert len(truncated.json()["data"][0]["embedding"]) == DIMENSIONS


def test_score_and_rerank_are_the_embeddings_cosines(endpoint, reference):
    expected = [cosine(reference[0], reference[1]), cosine(reference[0], reference[2])]
    score = endpoint.request(
        "POST", "openai/v1/score", {"model": HUB_ID, "text_1": CAT, "text_2": [KITTEN, TAX]}
    )
    assert score.status_code == 200, score.text
    scores = [item["score"] for item in score.json()["data"]]
    np.testing.assert_allclose(scores, expected, atol=2e-4)

    rerank = endpoint.request(
        "POST", "openai/v1/rerank", {"model": HUB_ID, "query": CAT, "documents": [TAX, KITTEN]}
    )
    assert rerank.status_code == 200, rerank.text
    results = rerank.json()["results"]
    assert [result["index"] for result in results] == [1, 0]  # most relevant first
    assert [result["document"]["text"] for result in results] == [KITTEN, TAX]
    np.testing.assert_allclose([r["relevance_score"] for r in results], expected, atol=2e-4)

    # Jina's and Cohere's rerank shapes, through native jobs, rank and score the same.
    for route in ("/rerank", "/v2/rerank"):
        body = {"model": HUB_ID, "query": CAT, "documents": [TAX, KITTEN]}
        assert native_route(endpoint, route, body)["results"] == results, route

    # The same scores through a native job on the route vLLM now prefers (no `/v1`).
    native = native_route(
        endpoint, "/score", {"model": HUB_ID, "text_1": CAT, "text_2": [KITTEN, TAX]}
    )
    np.testing.assert_allclose([item["score"] for item in native["data"]], scores, atol=1e-6)


def test_native_embeddings_job_through_runsync(endpoint, reference):
    output = native_route(endpoint, "/v1/embeddings", {"model": HUB_ID, "input": CAT})
    assert output["object"] == "list"
    assert len(output["data"]) == 1
    np.testing.assert_allclose(output["data"][0]["embedding"], reference[0], atol=2e-4)


def test_cohere_embed_route(endpoint, reference):
    body = {"model": HUB_ID, "texts": [CAT, TAX], "embedding_types": ["float"]}
    output = native_route(endpoint, "/v2/embed", body)
    np.testing.assert_allclose(output["embeddings"]["float"], reference[[0, 2]], atol=2e-4)
    assert output["meta"]["billed_units"]["input_tokens"] == sum(
        len(model_tokens(s)) for s in (CAT, TAX)
    )


def test_structured_decisions_route_is_refused_by_vllm(endpoint):
    """vLLM's app lists `/v1/systemone` for every model but serves it for no BERT model."""
    body = {"model": HUB_ID, "state": CAT, "questions": {"animal": {"type": "yes_no"}}}
    failed = runsync(endpoint, {"openai_route": "/v1/systemone", "openai_input": body})
    assert failed["status"] == "FAILED", failed
    error = json.loads(failed["error"])["error"]
    assert error["message"] == "The model does not support the structured decision API", error


def test_pooling_tokenize_and_detokenize_routes(endpoint, reference):
    pooled = native_route(endpoint, "/pooling", {"model": HUB_ID, "input": KITTEN})
    np.testing.assert_allclose(pooled["data"][0]["data"], reference[1], atol=2e-4)

    tokenized = native_route(endpoint, "/tokenize", {"model": HUB_ID, "prompt": KITTEN})
    assert tokenized["tokens"] == model_tokens(KITTEN)
    assert tokenized["count"] == len(tokenized["tokens"])
    text = native_route(endpoint, "/detokenize", {"model": HUB_ID, "tokens": tokenized["tokens"]})
    assert text["prompt"] == f"[CLS] {KITTEN.lower()} [SEP]"


def test_generation_jobs_fail_with_the_route_to_use_and_the_worker_keeps_serving(endpoint):
    for job, field in (
        ({"prompt": CAT, "sampling_params": {"max_tokens": 5}}, "prompt"),
        ({"messages": [{"role": "user", "content": CAT}]}, "messages"),
    ):
        failed = runsync(endpoint, job)
        assert failed["status"] == "FAILED", failed
        assert failed["error"] == (
            f"{field}: this model does not generate text (vLLM serves it for embed, "
            'token_embed): send {"openai_route": "/v1/embeddings", "openai_input": {...}} '
            "instead"
        )
    output = native_route(endpoint, "/v1/embeddings", {"model": HUB_ID, "input": [CAT]})
    assert len(output["data"][0]["embedding"]) == DIMENSIONS
    workers = endpoint.health()["workers"]
    assert workers["idle"] + workers["running"] == 1


def test_generation_routes_are_refused_by_name(client):
    import openai

    with pytest.raises(openai.NotFoundError) as refused:
        client.chat.completions.create(
            model=HUB_ID, messages=[{"role": "user", "content": CAT}], max_tokens=5
        )
    assert "openai_route /v1/chat/completions is not served" in str(refused.value)
    assert "/v1/embeddings" in str(refused.value)


def test_log_has_no_traceback(endpoint):
    assert "Traceback" not in endpoint.log_text()
