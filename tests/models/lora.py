"""LoRA adapters for the default model, built locally with peft (nothing is downloaded).

Each adapter has random, non-zero weights from a fixed seed, so it changes the model's greedy
output in a way that repeats from run to run. Adapters are built once into the worker cache
(atomic rename, as `bench/tiny_model.py` builds its model), apart from the hub downloads of
`LORA_LOAD_ON_DEMAND` (WORKER_CACHE_DIR/lora).
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.tiny_model import built_once
from tests.helpers import default_model_folder
from vllm_worker.default_model import HUB_ID

#: Rank of the built adapters; vLLM's default `MAX_LORA_RANK` (16) serves it.
RANK = 8
#: Scale of the random weights: large enough to change greedy text, small enough to keep it text.
SCALE = 0.08


def ensure_adapter(name: str, seed: int, base: str | None = None) -> Path:
    """The adapter `name`'s folder under the worker cache, built on first use (seconds).

    `base` is the `base_model_name_or_path` the adapter declares: the default model's folder
    if None (what peft writes), or a name such as its hub id (what a downloaded adapter says).
    """
    relative = Path("models") / "lora-adapters" / name  # apart from LORA_LOAD_ON_DEMAND downloads
    return built_once(relative, lambda folder: _build(folder, seed, base))


def hub_named_adapter(name: str, seed: int) -> Path:
    """An adapter declaring the default model's hub id as its base, as adapters trained on
    the hub model do (vLLM's own file-system resolver refuses those for a local folder)."""
    return ensure_adapter(name, seed, base=HUB_ID)


def _build(out: Path, seed: int, base: str | None) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(default_model_folder(), dtype=torch.float32)
    config = LoraConfig(
        r=RANK,
        lora_alpha=2 * RANK,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False,  # lora_B random too: the adapter changes the output
    )
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, weight in peft_model.named_parameters():
            if "lora_" in name:
                weight.copy_(torch.randn_like(weight) * SCALE)
    peft_model.save_pretrained(out)
    if base is not None:
        settings_path = out / "adapter_config.json"
        settings = json.loads(settings_path.read_text())
        settings["base_model_name_or_path"] = base
        settings_path.write_text(json.dumps(settings, indent=2))


def peft_greedy_text(adapter: Path, prompt: str, max_tokens: int) -> str:
    """The greedy continuation of `prompt` by the default model with `adapter`, computed by
    transformers and peft in this process (float32): the reference vLLM's output should match."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = default_model_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(model, adapter)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = adapted.generate(ids, max_new_tokens=max_tokens, do_sample=False)
    return str(tokenizer.decode(out[0][ids.shape[1] :], skip_special_tokens=True))
