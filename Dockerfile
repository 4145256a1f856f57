# GPU image: the official vLLM OpenAI image at the vLLM version the CPU build pins.
FROM vllm/vllm-openai:v0.32.0

WORKDIR /worker
COPY builder/requirements.txt builder/requirements.txt
RUN python3 -m pip install --no-cache-dir -r builder/requirements.txt

COPY pyproject.toml README.md ./
COPY src ./src
RUN python3 -m pip install --no-cache-dir --no-deps .

ENTRYPOINT ["python3", "-m", "vllm_worker"]
