"""Every documented sampling parameter on the real engine, its effect checked where visible."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.helpers import run_job, text_of, until, wait_idle

PROMPT = "Once upon a time, in a small village,"


QUESTION = "What is the capital of France?"  # with the chat template: a short answer


async def job(handler, stream=False, prompt=PROMPT, chat=False, **params) -> list[dict]:
    body = {
        "prompt": prompt,
        "stream": stream,
        "apply_chat_template": chat,
        "sampling_params": params,
    }
    items = await run_job(handler, body)
    assert "error" not in items[0], items[0]
    return items


def total(choice_logprobs: list[dict]) -> float:
    return sum(position["logprob"] for position in choice_logprobs)


async def test_stop_cuts_the_text(handler):
    free = text_of(await job(handler, temperature=0, max_tokens=30))
    word = free.split()[3]
    cut = await job(handler, temperature=0, max_tokens=30, stop=[word])
    assert text_of(cut) == free[: free.index(word)]
    assert cut[0]["choices"][0]["finish_reason"] == "stop"
    kept = await job(
        handler, temperature=0, max_tokens=30, stop=word, include_stop_str_in_output=True
    )
    assert text_of(kept).endswith(word)


async def test_stop_token_ids_cut_the_tokens(handler, tokenizer):
    free = await job(handler, temperature=0, max_tokens=20, logprobs=0)
    ids = [p["token_id"] for p in free[0]["choices"][0]["logprobs"]]
    cut = await job(handler, temperature=0, max_tokens=20, logprobs=0, stop_token_ids=[ids[5]])
    assert [p["token_id"] for p in cut[0]["choices"][0]["logprobs"]] == ids[: ids.index(ids[5]) + 1]
    assert cut[0]["choices"][0]["finish_reason"] == "stop"


async def test_ignore_eos_reaches_max_tokens(handler):
    short = await job(handler, prompt=QUESTION, chat=True, temperature=0, max_tokens=200)
    assert short[0]["usage"]["output"] < 200  # the model ends its answer on its own
    forced = await job(
        handler, prompt=QUESTION, chat=True, temperature=0, max_tokens=200, ignore_eos=True
    )
    assert forced[0]["usage"]["output"] == 200
    assert forced[0]["choices"][0]["finish_reason"] == "length"


async def test_seed_reproduces(handler):
    first = await job(handler, temperature=1.0, max_tokens=20, seed=42)
    again = await job(handler, temperature=1.0, max_tokens=20, seed=42)
    other = await job(handler, temperature=1.0, max_tokens=20, seed=43)
    assert text_of(first) == text_of(again)
    assert text_of(first) != text_of(other)


async def test_n_gives_n_choices(handler):
    items = await job(handler, n=3, max_tokens=5, seed=1)
    assert len(items[0]["choices"]) == 3


async def test_logprobs_per_choice(handler):
    items = await job(handler, n=2, max_tokens=6, logprobs=2, seed=3)
    for choice in items[0]["choices"]:
        assert len(choice["logprobs"]) == 6
        for position in choice["logprobs"]:
            assert position["logprob"] <= 0
            assert 2 <= len(position["top_logprobs"]) <= 3
    streamed = await job(handler, stream=True, max_tokens=6, logprobs=1, ignore_eos=True)
    assert sum(len(i["choices"][0]["logprobs"]) for i in streamed) == 6


async def test_min_tokens_is_respected(handler):
    early = await job(handler, prompt=QUESTION, chat=True, temperature=0, max_tokens=100)
    at_least = early[0]["usage"]["output"] + 10
    items = await job(
        handler, prompt=QUESTION, chat=True, temperature=0, max_tokens=100, min_tokens=at_least
    )
    assert items[0]["usage"]["output"] >= at_least


async def test_json_schema_gives_parseable_json(handler):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    items = await job(handler, max_tokens=60, structured_outputs={"json": schema}, temperature=0)
    data = json.loads(text_of(items))
    assert isinstance(data["city"], str) and isinstance(data["population"], int)


@pytest.mark.parametrize(
    ("legacy", "check"),
    [
        ({"guided_choice": ["yes", "no"]}, lambda text: text in ("yes", "no")),
        ({"guided_regex": "[0-9]{3}"}, lambda text: len(text) == 3 and text.isdigit()),
        (
            {
                "guided_json": {"type": "string", "enum": ["yes", "no"]},
            },
            lambda text: json.loads(text) in ("yes", "no"),
        ),
    ],
)
async def test_legacy_guided_names_still_constrain(handler, legacy, check):
    items = await job(handler, max_tokens=100, temperature=0, **legacy)
    assert check(text_of(items)), text_of(items)


async def test_penalties_logit_bias_allowed_and_bad_words(handler, tokenizer):
    plain = text_of(await job(handler, temperature=0, max_tokens=15))
    penalised = text_of(
        await job(
            handler,
            temperature=0,
            max_tokens=15,
            repetition_penalty=1.8,
            presence_penalty=1.0,
            frequency_penalty=1.0,
        )
    )
    assert penalised != plain
    (x,) = tokenizer.encode(" X", add_special_tokens=False)
    biased = await job(handler, temperature=0, max_tokens=5, logit_bias={str(x): 100.0})
    assert text_of(biased) == " X" * 5
    allowed = [tokenizer.encode(w, add_special_tokens=False)[0] for w in (" yes", " no")]
    only = await job(handler, temperature=0.8, max_tokens=6, allowed_token_ids=allowed, seed=5)
    assert set(text_of(only).split()) <= {"yes", "no"}
    first_word = plain.split()[0]
    avoided = text_of(await job(handler, temperature=0, max_tokens=15, bad_words=[first_word]))
    assert not avoided.startswith(" " + first_word)


async def test_sampling_knobs_are_accepted(handler):
    for params in (
        {"top_p": 0.5},
        {"top_k": 5},
        {"top_k": -1},
        {"min_p": 0.2},
        {"skip_special_tokens": False},
        {"spaces_between_special_tokens": False},
        {"prompt_logprobs": 1},
        {"detokenize": True},
    ):
        items = await job(handler, max_tokens=4, ignore_eos=True, **params)
        assert items[0]["usage"]["output"] == 4, params


async def test_best_of_returns_the_candidates_with_highest_cumulative_logprob(handler):
    params = {"temperature": 1.0, "max_tokens": 8, "seed": 11, "logprobs": 0, "ignore_eos": True}
    all_four = (await job(handler, n=4, **params))[0]["choices"]
    scores = sorted((total(c["logprobs"]), c["tokens"][0]) for c in all_four)
    assert len({text for _, text in scores}) == 4, "the four candidates should differ"
    best = (await job(handler, n=2, best_of=4, **params))[0]["choices"]
    assert [c["tokens"][0] for c in best] == [text for _, text in reversed(scores[-2:])]
    assert [round(total(c["logprobs"]), 4) for c in best] == [
        round(s, 4) for s, _ in reversed(scores[-2:])
    ]
    streamed = await job(handler, stream=True, n=2, best_of=4, **params)
    assert len(streamed) == 1 and [c["tokens"][0] for c in streamed[0]["choices"]] == [
        c["tokens"][0] for c in best
    ]


async def vllm_beam_search(
    engine, prompt_ids: list[int], width: int, max_tokens: int, length_penalty: float = 1.0
):
    """vLLM's own beam search (its OpenAI layer's), for comparison."""
    from vllm.entrypoints.generate.beam_search.online import BeamSearchOnlineMixin
    from vllm.inputs import tokens_input
    from vllm.sampling_params import BeamSearchParams

    class Searcher(BeamSearchOnlineMixin):
        engine_client = engine
        renderer = engine.renderer

    params = BeamSearchParams(
        beam_width=width, max_tokens=max_tokens, length_penalty=length_penalty
    )
    outputs = [
        o async for o in Searcher().beam_search(tokens_input(prompt_ids), "vllm-beam", params)
    ]
    return outputs[-1].outputs


@pytest.mark.parametrize("early_stopping", ["never", False])
async def test_beam_search_matches_vllm(handler, engine, tokenizer, early_stopping):
    ids = tokenizer.encode(PROMPT)
    expected = await vllm_beam_search(engine, ids, width=3, max_tokens=12)
    items = await job(
        handler,
        n=3,
        use_beam_search=True,
        temperature=0,
        max_tokens=12,
        early_stopping=early_stopping,
    )
    texts = [c["tokens"][0] for c in items[0]["choices"]]
    assert texts[0] == expected[0].text
    if early_stopping == "never":
        assert texts == [o.text for o in expected]


async def test_early_stopping_variants_differ_where_they_should(handler):
    base = {
        "prompt": "Hi",
        "temperature": 0,
        "use_beam_search": True,
        "best_of": 4,
        "n": 4,
        "max_tokens": 60,
    }
    results = {}
    for variant in (True, False, "never"):
        items = await job(handler, **base, early_stopping=variant)
        results[variant] = [c["tokens"][0] for c in items[0]["choices"]]
    # Stopping as soon as 4 beams finished keeps the first 4 to end; "never" searches on and
    # finds at least one better-scoring (longer) sequence that early stop never reached.
    assert results[True] != results["never"]
    assert all(len(results[v]) == 4 for v in results)


async def test_beam_search_length_penalty_changes_the_ranking(handler):
    base = {
        "prompt": QUESTION,
        "chat": True,
        "temperature": 0,
        "use_beam_search": True,
        "n": 3,
        "max_tokens": 40,
        "early_stopping": "never",
    }
    short = await job(handler, **base, length_penalty=0.0)
    long = await job(handler, **base, length_penalty=3.0)
    assert [c["tokens"][0] for c in short[0]["choices"]] != [
        c["tokens"][0] for c in long[0]["choices"]
    ]


async def test_aborting_a_beam_search_stops_it(handler, engine):
    body = {
        "prompt": PROMPT,
        "sampling_params": {
            "temperature": 0,
            "use_beam_search": True,
            "n": 4,
            "max_tokens": 500,
            "ignore_eos": True,
        },
    }
    task = asyncio.create_task(run_job(handler, body, "beam-cancel"))
    await until(
        lambda: engine.get_num_unfinished_requests() > 0 or task.done(),
        10,
        "the beam search's requests should reach the engine",
    )
    assert not task.done(), "the search ended before it could be cancelled"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_idle(engine)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"use_beam_search": True}, "use_beam_search needs temperature 0"),
        ({"use_beam_search": True, "temperature": 0, "top_p": 0.5}, "does not support top_p"),
        ({"use_beam_search": True, "temperature": 0, "top_k": 3}, "does not support top_k"),
        ({"use_beam_search": True, "temperature": 0, "min_p": 0.1}, "does not support min_p"),
        ({"n": 3, "best_of": 2}, "best_of (2) must be at least n (3)"),
    ],
)
async def test_invalid_combinations_are_rejected(handler, params, message):
    items = await run_job(handler, {"prompt": "Hi", "sampling_params": params})
    assert message in items[0]["error"]
