"""
The Qwen2-family decoder (Qwen2, Qwen2.5, Qwen2.5-Math, DeepSeek-R1-Distill-Qwen), written from scratch in
plain PyTorch, and the code that loads and saves Hugging Face checkpoints (the file handling is in hf_files.py).

    python -c "from model import Qwen2; m = Qwen2.from_pretrained('qwen2.5-0.5b'); print(m.config)"

Architecture (every size comes from config.json): token embedding -> N x [RMSNorm -> grouped-query attention
with rotary embeddings (q/k/v have a bias, o has none) -> residual -> RMSNorm -> SwiGLU MLP -> residual] ->
RMSNorm -> LM head (tied to the embedding in the small models). Parameter names are the Hugging Face names,
so a checkpoint's state dict is loaded with plain `load_state_dict`.

Two implementations sit behind one switch, `model.use_kernels`: the plain PyTorch below (attention is SDPA with an
explicit boolean mask — the readable path, used on CPU and with --no-kernels) and the fast path (on by default on
CUDA): the Triton attention kernels in kernels/, RMSNorm, RoPE and SwiGLU each fused by torch.compile (`fused`),
and q/k/v and gate/up each as one GEMM (`fused_linear`).
Three masking situations occur:
  - left-padded batches (RL prompts of different lengths): `start[b]` is the first real token of row b;
  - packed documents (SFT): `cu_seqlens` marks document boundaries in a (1, T) batch;
  - decoding with a KV cache: one new token per row attends to cache slots start[b] .. current slot.

Deliberately left out: sliding-window attention (off in every Qwen2.5 config we target), rope scaling
(YaRN; only needed past 32k context), dropout (0 in all Qwen2 configs).

Shape legend: B batch, T time, H query heads, K kv heads, D head dim, C hidden, V vocab, S cache length,
L layers.
"""
import functools
import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from hf_files import (KNOWN_MODELS, atomic_write, checked_state, load_safetensors, read_tokenizer_files,
                      resolve_checkpoint)
from kernels import HEAD_DIMS, key_lower_bound, stacked_linear, visible_keys
from tokenizer import Tokenizer



@dataclass
class ModelConfig:
    vocab_size: int = 151936
    hidden_size: int = 896
    intermediate_size: int = 4864
    num_hidden_layers: int = 24
    num_attention_heads: int = 14
    num_key_value_heads: int = 2
    head_dim: int = 0  # 0: hidden_size // num_attention_heads, as in every Qwen2 config
    rope_theta: float = 1e6
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32768
    bos_token_id: int | None = None
    eos_token_id: int | list | None = None

    def __post_init__(self):
        self.head_dim = self.head_dim or self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                             f"num_key_value_heads ({self.num_key_value_heads})")

    @classmethod
    def from_json(cls, path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config.json not found in {path.parent}: pass a Hugging Face model directory "
                                    f"or a known name: {', '.join(KNOWN_MODELS)}")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:  # invalid JSON or not UTF-8
            raise ValueError(f"{path} is not valid JSON ({e}): restore it from the model's source") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path} holds a JSON {type(raw).__name__}, not an object: restore it from the source")
        if raw.get("model_type", "qwen2") != "qwen2":
            raise ValueError(f"{path}: model_type is {raw['model_type']!r}, this project implements qwen2 only")
        # transformers 5 writes rope_theta inside rope_parameters; older configs have it at the top level.
        rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ValueError(f"{path}: rope scaling {rope.get('rope_type', rope.get('type'))!r} is not implemented")
        raw.setdefault("rope_theta", rope.get("rope_theta", 1e6))
        names = {f.name for f in fields(cls)}
        missing = [n for n in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "num_key_value_heads") if n not in raw]
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)}: is this a Qwen2 config.json?")
        kw = {k: v for k, v in raw.items() if k in names and v is not None}
        wrong = [f.name for f in fields(cls) if f.type in (int, float) and not isinstance(kw.get(f.name, 0),
                                                                                         (int, float))]
        if wrong:
            raise ValueError(f"{path}: {wrong[0]} is {kw[wrong[0]]!r}, not a number: fix it in config.json")
        return cls(**kw)

    def to_hf_dict(self, dtype):
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        # transformers' Qwen2Config reads these; the rest are our fields under their HF names.
        d.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_act="silu", attention_dropout=0.0,
                 use_sliding_window=False, sliding_window=None, max_window_layers=self.num_hidden_layers,
                 torch_dtype=str(dtype).removeprefix("torch."), use_cache=True,
                 rope_parameters=dict(rope_type="default", rope_theta=self.rope_theta))
        return d


def rms_norm(x, weight, eps):
    # Normalise in fp32 and scale in the input dtype, as the reference implementation does (bit-parity).
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def swiglu(gate, up):
    return F.silu(gate) * up


_FUSED = {}


def fused(fn):
    """The fast twin of an elementwise function of this file (rms_norm, apply_rope, swiglu): torch.compile fuses its
    4-8 PyTorch kernels into one generated Triton kernel forward and one backward. Eager, each reads and writes the
    whole activation, every layer (docs/bench/bench_grpo_h100_2026-11-23*.json measure the step with and without).
    Inside a compile already (compiled_block) it is fn itself: the enclosing compile fuses it with its neighbours."""
    if torch.compiler.is_compiling():
        return fn
    # One compile serves every batch and sequence length; dtype, grad mode and size-1 dims still make variants (a
    # run meets about a dozen). The layer index is never an argument, so the 24 layers share one compile
    # (tests/test_model.py counts them).
    if fn not in _FUSED:
        _FUSED[fn] = strict_compile(fn, dynamic=True)
    return _FUSED[fn]


def strict_compile(fn, **kw):
    """torch.compile(fn, **kw) that never falls back to eager in silence: past its recompile limit (8 variants by
    default) Dynamo stops compiling a function and runs it eagerly without a word. Here the limit is 64, and
    reaching it is an error rather than a run gone slow."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    return torch.compile(fn, **kw)


def swiglu_packed(gu):
    """swiglu of the fused gate/up GEMM's output [gate | up] (.., 2M) -> (.., M). Compiled whole (`fused`), its
    backward writes the gradient of gu as one tensor; split views would make autograd concatenate two."""
    gate, up = gu.chunk(2, dim=-1)
    return swiglu(gate, up)


def fused_linear(x, linears):
    """The fast twin of applying several nn.Linear layers to the same input (q/k/v, gate/up): one GEMM over their
    weights concatenated on the fly -> the outputs side by side (.., sum of out_features). One wide GEMM keeps
    the GPU busier than three narrow ones (k and v are 128 columns wide in Qwen2.5-0.5B) and is one kernel
    forward and two backward where three projections are nine. The parameters stay the separate Hugging
    Face-named ones, so checkpoints, optimizers and the sampler's packed copy (kernels/step.py) see no change;
    autograd hands each its slice of the gradient. The concatenation copies ~20 MB of weights per layer per
    forward (Qwen2.5-0.5B, bf16), ~10 us at HBM speed."""
    return F.linear(x, *stacked_linear(linears))


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x, fast=False):
        return (fused(rms_norm) if fast else rms_norm)(x, self.weight, self.eps)


def rope_cos_sin(positions, head_dim, theta, dtype):
    """Rotary embedding tables for integer positions (B, T) -> cos, sin (B, 1, T, D), computed in fp32."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    freqs = positions.float()[..., None] * inv_freq  # (B, T, D/2)
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # (B, 1, T, D): the "rotate half" layout, not interleaved
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def attention_mask(B, T, device, start=None, cu_seqlens=None):
    """Boolean (B, 1, T, T) mask for causal self-attention, True = may attend: query i sees keys lo_i <= j <= i,
    the rule kernels.key_lower_bound writes once for this path and the Triton kernel (left padding, packing, and a
    padding query seeing only itself so that no row is empty)."""
    return visible_keys(key_lower_bound(B, T, device, start, cu_seqlens))[:, None]


def attention_sdpa(q, k, v, start=None, cu_seqlens=None):
    """The model's readable attention path (--no-kernels, CPU): torch SDPA under attention_mask. q (B, H, T, D),
    k/v (B, K, T, D) -> (B, H, T, D). (kernels.attention.attention_ref is the kernel's fp32 test oracle.)"""
    B, H, T, D = q.shape
    mask = attention_mask(B, T, q.device, start, cu_seqlens)  # (B, 1, T, T)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)


def decode_attention_sdpa(q, k_cache, v_cache, lengths, start=None):
    """The model's readable decode path: one new token per row over the cache through torch SDPA. q (B, H, D),
    k/v_cache (B, K, S, D); valid keys: start <= j < length. (kernels.decode.decode_attention_ref: the fp32 oracle.)"""
    B, H, D = q.shape
    S = k_cache.shape[2]
    j = torch.arange(S, device=q.device)[None]  # (1, S)
    valid = j < lengths[:, None]
    if start is not None:
        valid = valid & (j >= start[:, None])
    out = F.scaled_dot_product_attention(q[:, :, None], k_cache, v_cache, attn_mask=valid[:, None, None],
                                         enable_gqa=True)  # (B, H, 1, D)
    return out[:, :, 0]


class KVCache:
    """A static, preallocated cache: (L, B, K, S, D) keys and values, written slot by slot while decoding."""

    def __init__(self, config, batch_size, max_len, device, dtype):
        shape = (config.num_hidden_layers, batch_size, config.num_key_value_heads, max_len, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)

    def update(self, layer, slots, k, v):
        """Write k/v (b, K, T, D) into cache slots (T,). When b < B (a prompt prefilled once for G samples),
        each row is copied to the B // b consecutive cache rows that share that prompt."""
        if k.shape[0] != self.k.shape[1]:
            reps = self.k.shape[1] // k.shape[0]
            k, v = k.repeat_interleave(reps, 0), v.repeat_interleave(reps, 0)
        self.k[layer].index_copy_(2, slots, k)
        self.v[layer].index_copy_(2, slots, v)
        return self.k[layer], self.v[layer]


# The Triton attention kernels are called through these: torch.compile (of `fused` functions, of whole blocks) runs
# around them, since Inductor cannot compile an autotuned Triton kernel.
@torch.compiler.disable
def _decode_kernel(q, k_cache, v_cache, lengths, start):
    from kernels.decode import decode_attention
    return decode_attention(q, k_cache, v_cache, lengths, start)


@torch.compiler.disable
def _attention_kernel(q, k, v, start, cu_seqlens):
    from kernels.attention import attention
    return attention(q, k, v, start=start, cu_seqlens=cu_seqlens)


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        C, H, K, D = config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim
        self.n_head, self.n_kv_head, self.head_dim = H, K, D
        self.q_proj = nn.Linear(C, H * D, bias=True)
        self.k_proj = nn.Linear(C, K * D, bias=True)
        self.v_proj = nn.Linear(C, K * D, bias=True)
        self.o_proj = nn.Linear(H * D, C, bias=False)

    def forward(self, x, cos, sin, start, cu_seqlens, cache, slots, layer, use_kernels):
        B, T, _ = x.shape
        if use_kernels:
            q, k, v = fused_linear(x, (self.q_proj, self.k_proj, self.v_proj)).split(
                [self.q_proj.out_features, self.k_proj.out_features, self.v_proj.out_features], dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        rope = fused(apply_rope) if use_kernels else apply_rope
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        if cache is not None and T == 1:
            # Decode: attend over the cache up to and including the slot just written.
            k_cache, v_cache = cache.update(layer, slots, k, v)
            lengths = (slots[-1] + 1).expand(cache.k.shape[1])  # (B,) same write slot for every row
            if use_kernels:
                y = _decode_kernel(q[:, :, 0], k_cache, v_cache, lengths, start)
            else:
                y = decode_attention_sdpa(q[:, :, 0], k_cache, v_cache, lengths, start)
            y = y[:, :, None]  # (B, H, 1, D)
        else:
            # Training or prefill. A multi-token call with a cache is a prefill from slot 0: the cache holds
            # nothing older, so attending over the fresh k/v is the whole story.
            if cache is not None:
                cache.update(layer, slots, k, v)
            if use_kernels:
                y = _attention_kernel(q, k, v, start, cu_seqlens)
            else:
                y = attention_sdpa(q, k, v, start=start, cu_seqlens=cu_seqlens)
        y = y.transpose(1, 2).reshape(y.shape[0], y.shape[2], -1)  # (B, T, H*D)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        C, M = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(C, M, bias=False)
        self.up_proj = nn.Linear(C, M, bias=False)
        self.down_proj = nn.Linear(M, C, bias=False)

    def forward(self, x, fast=False):
        if fast:
            return self.down_proj(fused(swiglu_packed)(fused_linear(x, (self.gate_proj, self.up_proj))))
        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, start, cu_seqlens, cache, slots, layer, use_kernels):
        h = self.input_layernorm(x, use_kernels)
        x = x + self.self_attn(h, cos, sin, start, cu_seqlens, cache, slots, layer, use_kernels)
        return x + self.mlp(self.post_attention_layernorm(x, use_kernels), use_kernels)


# On the fast path, each training call of a decoder layer (gradients on, no cache) runs the whole Block.forward as
# one torch.compile'd function (split only around the Triton attention), so Inductor fuses across the norms, RoPE,
# SwiGLU and residual adds, forward and backward, beyond the per-function `fused` twins (GRPO's training phase
# measured with and without: README, "GRPO step"). Sampling and scoring calls (no gradients) keep the
# per-function path.
COMPILE_BLOCKS = True


@functools.cache
def compiled_block():
    """Block.forward through torch.compile, one compile for every layer (the layer index is not an argument that
    changes: training calls pass 0, which only indexes a cache they do not have) and every shape."""
    return strict_compile(Block.forward, dynamic=True)


class Qwen2(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = nn.ModuleDict(dict(
            embed_tokens=nn.Embedding(config.vocab_size, config.hidden_size),
            layers=nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers)),
            norm=RMSNorm(config.hidden_size, config.rms_norm_eps),
        ))
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.use_kernels = False  # the fast path: Triton attention, fused RMSNorm/RoPE/SwiGLU (CUDA only)
        self.gradient_checkpointing = False  # recompute each layer's activations in the backward pass
        self.source_dir = None  # where from_pretrained found the checkpoint
        # Its tokenizer files, read at load time: save_pretrained writes these bytes, so a checkpoint saved after
        # the source directory is gone (a resumed run's rotation deletes it) still has its tokenizer.
        self.tokenizer_files = {}

    def forward(self, idx, positions=None, start=None, cu_seqlens=None, cache=None, slots=None, return_hidden=False):
        """idx (B, T) token ids -> logits (B, T, V), or final-normed hidden states (B, T, C) if return_hidden.

        positions (B, T): RoPE positions; by default 0.. for each row, counted from `start` for left-padded rows.
        start (B,): first real token of each left-padded row.  cu_seqlens (n+1,): packed documents (B == 1;
        pass positions that restart at each document).  cache + slots (T,): KV cache and the slots to write;
        a call with T > 1 is a prefill from slot 0, a call with T == 1 decodes one token per row.
        """
        B, T = idx.shape
        if positions is None:
            positions = torch.arange(T, device=idx.device)[None].expand(B, T)
            if slots is not None:
                positions = slots[None].expand(B, T)
            if start is not None:
                positions = (positions - start[:, None]).clamp(min=0)
        x = self.model.embed_tokens(idx)  # (B, T, C)
        cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta, x.dtype)
        # Head dims the Triton kernels are not written for take the plain path.
        use_kernels = self.use_kernels and idx.is_cuda and self.config.head_dim in HEAD_DIMS
        whole = use_kernels and COMPILE_BLOCKS and cache is None and torch.is_grad_enabled()
        for i, layer in enumerate(self.model.layers):
            args = (cos, sin, start, cu_seqlens, cache, slots, 0 if whole else i, use_kernels)
            run = functools.partial(compiled_block(), layer) if whole else layer
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(run, x, *args, use_reentrant=False)
            else:
                x = run(x, *args)
        x = self.model.norm(x, use_kernels)
        return x if return_hidden else self.lm_head(x)

    # ---------------------------------------------------------------- checkpoints in the Hugging Face format

    @classmethod
    def from_pretrained(cls, name_or_dir, device="cpu", dtype=torch.float32):
        path = resolve_checkpoint(name_or_dir)
        config = ModelConfig.from_json(path / "config.json")
        with torch.device("meta"):
            model = cls(config)
        expected = model.state_dict()
        if config.tie_word_embeddings:
            expected.pop("lm_head.weight")
        state = checked_state(load_safetensors(path), expected, path, device, dtype)  # (a clear error if not)
        model.load_state_dict(state, strict=False, assign=True)
        if config.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight  # assign=True replaced the shared Parameter
        model.source_dir = path
        model.tokenizer_files = read_tokenizer_files(path)
        return model

    def save_pretrained(self, out_dir, tokenizer_dir=None):
        """Write config.json, model.safetensors and the tokenizer files (tokenizer_dir's, else those read at load
        time): a directory `transformers` (and so vLLM) loads unchanged. Each file is written to a temporary name,
        then renamed, so a crash leaves no torn file. Refuses weights with NaN or inf: no such checkpoint exists."""
        from safetensors.torch import save_file
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        bad = next((n for n, t in self.state_dict().items() if not torch.isfinite(t).all()), None)
        if bad is not None:
            raise ValueError(f"not saving {out_dir}: tensor {bad} holds NaN or inf (the run diverged): lower "
                             f"--learning-rate, or resume from the last checkpoint")
        state = {n: t.detach().contiguous().cpu() for n, t in self.state_dict().items()}
        if self.config.tie_word_embeddings:
            state.pop("lm_head.weight")  # safetensors refuses shared storage; transformers re-ties on load
        dtype = next(iter(state.values())).dtype
        atomic_write(out_dir / "model.safetensors", lambda p: save_file(state, p, metadata={"format": "pt"}))
        config = json.dumps(self.config.to_hf_dict(dtype), indent=2)
        atomic_write(out_dir / "config.json", lambda p: Path(p).write_text(config))
        for name, data in (read_tokenizer_files(tokenizer_dir) if tokenizer_dir else self.tokenizer_files).items():
            atomic_write(out_dir / name, lambda p: Path(p).write_bytes(data))


def load_model(name_or_dir, device=None, dtype=None, kernels=True):
    """The one way every command sets up a model: (model, tokenizer) from a directory, a short name or a Hub id,
    on `device` (default CUDA when present) in `dtype` (default bf16 on GPU, fp32 on CPU), with the Triton
    kernels on where they can run (CUDA) unless `kernels=False` (--no-kernels: the PyTorch reference path)."""
    device = pick_device(device)
    model = Qwen2.from_pretrained(name_or_dir, device=device, dtype=pick_dtype(device, dtype))
    model.use_kernels = device.type == "cuda" and kernels
    return model, Tokenizer.from_dir(model.source_dir)


def pick_device(name=None):
    """The one place the device is chosen: the one asked for, else CUDA when present."""
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def pick_dtype(device, name=None):
    """bf16 weights on GPU, fp32 on CPU (CPU bf16 matmuls are slow and imprecise), unless asked otherwise."""
    if name:
        return getattr(torch, name)
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
