"""The worker's own log lines, kept visible whatever other libraries do to the root logger.

Importing vLLM's OpenAI app pulls in a package that sets the root logger to ERROR; giving the
`vllm_worker` logger its own handler and level keeps the per-job lines coming.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(level: int = logging.INFO) -> None:
    """Send `vllm_worker.*` records at `level` and above to stderr, independent of the root."""
    logger = logging.getLogger("vllm_worker")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
