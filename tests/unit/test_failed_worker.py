"""A worker that could not start: every job fails at once with the reason."""

from __future__ import annotations

import logging

from vllm_worker import failed_worker
from vllm_worker.startup_failure import Reason, StartUpFailure

FAILURE = StartUpFailure(
    reason=Reason.INVALID_SETTING, variable="MAX_CONCURRENCY", message="MAX_CONCURRENCY is bad."
)


async def test_every_job_fails_with_the_sentence():
    handle = failed_worker.handler(FAILURE)
    for job in ({"id": "a", "input": {"prompt": "hi"}}, {"id": "b", "input": None}):
        assert [item async for item in handle(job)] == [{"error": "MAX_CONCURRENCY is bad."}]


def test_report_logs_once_and_writes_the_file_for_the_local_endpoint(tmp_path, caplog):
    path = tmp_path / "failure.txt"
    with caplog.at_level(logging.ERROR, logger="vllm_worker"):
        failed_worker.report(FAILURE, {failed_worker.FAILURE_FILE_VAR: str(path)})
    assert [r.getMessage() for r in caplog.records] == [
        "the worker cannot start: MAX_CONCURRENCY is bad."
    ]
    assert path.read_text() == "MAX_CONCURRENCY is bad."


def test_wrong_worker_settings_fall_back_to_the_defaults():
    assert failed_worker.settings({"MAX_CONCURRENCY": "many"}).max_concurrency == 30
    assert failed_worker.settings({"MAX_CONCURRENCY": "4"}).max_concurrency == 4
