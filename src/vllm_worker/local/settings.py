"""Settings of the local endpoint that `make run` puts in front of the worker."""

from __future__ import annotations

from pydantic import Field, SecretStr

from vllm_worker.config import EnvSettings


class LocalEndpointSettings(EnvSettings):
    """Where the local endpoint listens, who may call it, and how it treats jobs."""

    local_endpoint: bool = Field(
        False,
        description="Make `python -m vllm_worker` (the image's entrypoint) serve a local endpoint.",
    )
    host: str = Field("127.0.0.1", description="Address the local endpoint listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port of the local endpoint.")
    runpod_api_key: SecretStr | None = Field(
        None, description="When set, every request needs `Authorization: Bearer <key>`."
    )
    endpoint_id: str | None = Field(
        None, description="The only endpoint id accepted in paths; any id when unset."
    )
    restart_worker: bool = Field(False, description="Restart the worker when it dies.")
    execution_timeout: float = Field(
        600, gt=0, description="Seconds a job may run before it ends TIMED_OUT."
    )
    max_request_bytes: int | None = Field(
        None,
        ge=1024,
        description="Lowers every operation's request size limit to this many bytes (413 above).",
    )
