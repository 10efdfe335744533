"""Shared test helpers: the in-repo fixture and data, and tiny random checkpoints written like downloaded ones."""
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # Triton kernels run in its interpreter on CPU (before import)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURE = ROOT / "tests" / "fixtures" / "qwen2.5-0.5b"  # config + tokenizer of the real checkpoint, no weights
# tokenizer_config.json (with its chat template) of checkpoints whose tokenizer.json is Qwen2.5's.
TOKENIZER_CONFIGS = {name: ROOT / "tests" / "fixtures" / name / "tokenizer_config.json"
                     for name in ("qwen2.5-0.5b", "qwen2.5-math-1.5b-instruct", "deepseek-r1-distill-qwen-1.5b")}
DATA = ROOT / "data"
NO_COMPILER = not (shutil.which("g++") or shutil.which("c++"))  # torch.compile on CPU needs one

from model import ModelConfig, Qwen2  # noqa: E402

# Small enough for a 2-core CPU, with the real vocabulary so the real tokenizer's ids fit.
TINY = dict(vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0, tie_word_embeddings=True,
            max_position_embeddings=512, eos_token_id=151643)


def write_checkpoint(out_dir, seed=0, std=0.02, tokenizer="qwen2.5-0.5b", **overrides):
    """A checkpoint directory as a download leaves it: config.json, model.safetensors (random weights, written
    with safetensors directly, not through our save code) and the fixture's tokenizer files (tokenizer_config.json
    and so the chat template from TOKENIZER_CONFIGS[tokenizer])."""
    from safetensors.torch import save_file
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = ModelConfig(**{**TINY, **overrides})
    torch.manual_seed(seed)
    model = Qwen2(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in name else std * torch.randn_like(p))
    state = {n: t.contiguous() for n, t in model.state_dict().items()}
    if config.tie_word_embeddings:
        del state["lm_head.weight"]
    save_file(state, out_dir / "model.safetensors")

    (out_dir / "config.json").write_text(json.dumps(config.to_hf_dict(torch.float32)))
    write_tokenizer(out_dir, tokenizer)
    return out_dir


def write_tokenizer(out_dir, name="qwen2.5-0.5b"):
    """Qwen2.5's tokenizer.json beside the tokenizer_config.json of fixture `name` (TOKENIZER_CONFIGS)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURE / "tokenizer.json", out_dir / "tokenizer.json")
    shutil.copy(TOKENIZER_CONFIGS[name], out_dir / "tokenizer_config.json")
    return out_dir


@pytest.fixture
def tiny_checkpoint(tmp_path):
    return write_checkpoint(tmp_path / "tiny")
