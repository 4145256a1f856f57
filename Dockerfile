# syntax=docker/dockerfile:1
# The GPU image: the official vLLM OpenAI image at the vLLM version the CPU build pins, plus
# the worker. With MODEL_NAME given, the model is baked in (see "Deploying" in the README):
#   DOCKER_BUILDKIT=1 docker build --secret id=HF_TOKEN,env=HF_TOKEN \
#     --build-arg MODEL_NAME=org/model -t my-worker .
FROM vllm/vllm-openai:v0.32.0

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The Hugging Face cache lives under BASE_PATH: RunPod mounts a network volume at
# /runpod-volume, so what one worker downloads, the next one finds. The default model
# (MODEL_NAME unset) is prepared there too.
ARG BASE_PATH=/runpod-volume
ENV BASE_PATH=${BASE_PATH} \
    HF_HOME=${BASE_PATH}/huggingface-cache \
    WORKER_CACHE_DIR=${BASE_PATH}/vllm-worker \
    PYTHONUNBUFFERED=1

# The worker's requirements. pip changes an installed package only where they need it; if
# that broke one of vLLM's own requirements, the build stops here and prints which.
RUN --mount=type=bind,source=builder/requirements.txt,target=/tmp/requirements.txt \
    python3 -m pip install --no-cache-dir -r /tmp/requirements.txt \
    && (python3 -m pip check || true) > /tmp/pip-check.txt \
    && ! grep -E '^vllm ' /tmp/pip-check.txt \
    && rm /tmp/pip-check.txt

# The image runs as root by default: RunPod's network volume at /runpod-volume belongs to
# root. On your own machine, `docker run --user worker` runs it without root.
RUN useradd --create-home --shell /usr/sbin/nologin worker \
    && mkdir -p /models "${HF_HOME}" "${WORKER_CACHE_DIR}" \
    && chown worker "${HF_HOME}" "${WORKER_CACHE_DIR}"

# The baked model, in its own layer before the worker's code, so code changes reuse it. The
# hub token is a build secret: mounted for this step only, it lands in no layer, and neither
# does the download cache.
ARG MODEL_NAME=""
ARG MODEL_REVISION=""
# A tokenizer's name is no secret (the rule matches "TOKEN").
# hadolint ignore=DL3064
ARG TOKENIZER_NAME=""
# hadolint ignore=DL3064
ARG TOKENIZER_REVISION=""
RUN --mount=type=secret,id=HF_TOKEN \
    --mount=type=bind,source=builder/download_model.py,target=/tmp/download_model.py \
    --mount=type=cache,target=/root/.cache/huggingface \
    if [ -n "${MODEL_NAME}" ]; then \
        HF_HOME=/root/.cache/huggingface python3 /tmp/download_model.py --dest /models \
            --model "${MODEL_NAME}" --revision "${MODEL_REVISION}" \
            --tokenizer "${TOKENIZER_NAME}" --tokenizer-revision "${TOKENIZER_REVISION}"; \
    fi

# A quantization method given at build time is the image's default; QUANTIZATION at run time
# still overrides it.
ARG QUANTIZATION=""
ENV QUANTIZATION=${QUANTIZATION}

WORKDIR /worker
COPY pyproject.toml README.md ./
COPY src ./src
RUN python3 -m pip install --no-cache-dir --no-deps . \
    && rm -rf build src/*.egg-info

# The local endpoint's port (LOCAL_ENDPOINT=true); RunPod's serverless jobs need none.
EXPOSE 8000
ENTRYPOINT ["python3", "-m", "vllm_worker"]
CMD []
