"""vLLM's messages in the worker's terms, without the engine."""

from vllm_worker import vllm_errors


def test_flags_become_the_variables_users_set():
    message = vllm_errors.in_worker_terms(
        '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
    )
    assert message == (
        '"auto" tool choice requires ENABLE_AUTO_TOOL_CHOICE (--enable-auto-tool-choice) and '
        "TOOL_CALL_PARSER (--tool-call-parser) to be set"
    )


def test_a_documented_alias_wins_and_unknown_flags_stay():
    message = vllm_errors.in_worker_terms("set --chat-template or --no-such-flag")
    assert message == "set CUSTOM_CHAT_TEMPLATE (--chat-template) or --no-such-flag"


def test_a_missing_chat_template_names_the_setting():
    vllm_message = (
        "As of transformers v4.44, default chat template is no longer allowed, so you must "
        "provide a chat template if the tokenizer does not define one."
    )
    assert vllm_errors.in_worker_terms(vllm_message) == vllm_errors.NO_CHAT_TEMPLATE
    assert "CUSTOM_CHAT_TEMPLATE" in vllm_errors.NO_CHAT_TEMPLATE


def test_the_parameter_comes_from_the_error_or_its_first_word():
    from vllm.exceptions import VLLMValidationError

    fields = ["logprobs", "stop_token_ids", "thinking_token_budget"]
    named = VLLMValidationError("Requested sample logprobs of 50", parameter="logprobs")
    assert vllm_errors.parameter_of(named, fields) == "logprobs"
    assert vllm_errors.message_of(named) == "Requested sample logprobs of 50"
    worded = VLLMValidationError("thinking_token_budget is set but reasoning is off")
    assert vllm_errors.parameter_of(worded, fields) == "thinking_token_budget"
    assert vllm_errors.parameter_of(VLLMValidationError("Choice [] is empty"), fields) is None


def test_parameter_checks_are_told_from_prompt_checks():
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError

    params = SamplingParams(stop_token_ids=[10**9])

    class Config:  # the one attribute the stop-token check reads
        @staticmethod
        def get_vocab_size() -> int:
            return 100

    try:
        params._validate_stop_token_ids(Config())  # type: ignore[arg-type]
    except VLLMValidationError as error:
        assert vllm_errors.from_parameter_checks(error)
    else:
        raise AssertionError("vLLM accepted an out-of-vocabulary stop token")
    try:
        raise ValueError("The decoder prompt cannot be empty")
    except ValueError as error:
        assert not vllm_errors.from_parameter_checks(error)
