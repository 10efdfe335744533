"""
The decode step on the fast path: one new token per row through every layer in nine kernels per layer (ten where
decode attention splits the cache into chunks and combines them, at few rows or long caches; more where cuBLAS
runs a projection with its own split-K reduce, above SKINNY_MAX_ROWS).

Per layer, with the residual add of each sublayer folded into the norm that follows it:
    [add +] RMSNorm  -> q/k/v as one GEMM (bias in its epilogue) -> RoPE + KV-cache write -> decode attention
    (one chunk, or split + combine) -> o_proj -> add + RMSNorm -> gate/up as one GEMM -> SiLU * up -> down_proj
where, up to GATE_UP_MAX_ROWS rows, gate/up and SiLU * up are one kernel (eight a layer), and up to
NORM_GEMM_MAX_ROWS rows each add + RMSNorm runs inside the GEMM that reads it (six a layer).
The plain path (model.Qwen2.forward with a cache) runs ~20 kernels for the same layer: three projection GEMMs, two
RoPE calls, two cache copies, two adds, two norms, two MLP GEMMs and the SwiGLU product, each its own launch.
For few rows (SKINNY_MAX_ROWS) q/k/v, o_proj and down_proj can run as kernels/skinny.py's split-K GEMM instead of
cuBLAS's: its fp32 partials are summed by the kernel that reads the projection next (rope_cache_write, which adds
q/k/v's bias, and add_rms_norm), so there is no reduce kernel; and the kernels can launch
with programmatic dependent launch (PDL_MAX_ROWS), each starting while the one before it ends.

Fused weights. q/k/v and gate/up are concatenated once per `pack_weights` call (a copy: ~0.5 GB for Qwen2.5-0.5B in
bf16, well under a millisecond). The model's parameters keep their Hugging Face names and stay the only weights
the trainer updates; sample.generate packs them again at every call, so the sampler always uses the weights the
trainer has at that moment. (The alternative, a fused parameter split into HF names by state-dict hooks, would
change what named_parameters(), optimizers and checkpoints see, for a copy that costs less than one decode step.)

Greedy decoding through this step matches the plain path token for token in fp32 (tests/test_sample.py); in bf16
the two round in different places (RoPE in fp32 here, in bf16 there).
Shapes: N rows, C hidden, H / K query / kv heads, D head dim, S cache slots, V vocab.
"""
import torch
import torch.nn.functional as F

from kernels import stacked_linear
from kernels.decode import decode_attention
from kernels.fused import add_rms_norm, rope_cache_write, silu_mul
from kernels.sampling import record_step, sample_lm_head, sample_race
from kernels.skinny import gate_up_silu, skinny_linear

# Up to SKINNY_MAX_ROWS rows, q/k/v, o_proj and down_proj run as kernels/skinny.py's split-K GEMM (else cuBLAS); up
# to PDL_MAX_ROWS rows the decode kernels launch with programmatic dependent launch. On an H200 (README, "Sampling
# speed", 2026-12-03 14:56 UTC) the two together replayed a step faster than cuBLAS + plain launches at every batch
# measured: 1 / 64 / 128 / 256 rows 0.81 / 1.00 / 1.20 / 1.76 ms against 1.01 / 1.17 / 1.35 / 1.81. Larger batches
# were not measured, hence the bound. bench/bench_sample.py measures the step with and without them at every batch.
SKINNY_MAX_ROWS = 256
PDL_MAX_ROWS = 256
# Up to GATE_UP_MAX_ROWS rows gate/up and SwiGLU run as one Triton GEMM (kernels/skinny.py: gate_up_silu), else as
# cuBLAS's GEMM and silu_mul: the Triton GEMM was faster up to 64 rows and slower at 128 and 256 (README).
GATE_UP_MAX_ROWS = 64
# Up to LM_RACE_MAX_ROWS rows plain temperature sampling runs in the LM head's GEMM (kernels/sampling.py:
# sample_lm_head), else as cuBLAS's LM head and then sample_race: the fused kernel was faster up to 128 rows and
# slower at 256 (README).
LM_RACE_MAX_ROWS = 128
# Up to NORM_GEMM_MAX_ROWS rows (and where the Triton GEMMs run) each add + RMSNorm runs in the prologue of the GEMM
# that reads it (kernels/skinny.py: norm=...): six kernels a layer. Each program then reads its rows' residual and
# partials itself, which is cheap for a few rows only. Not yet timed on a GPU (bench/decode_variants.py step), so
# off.
NORM_GEMM_MAX_ROWS = 0


def pack_weights(model):
    """Per layer: (qkv weight ((H+2K)D, C), qkv bias, gate/up weight (2M, C)), copied from the HF-named params."""
    packed = []
    with torch.no_grad():
        for layer in model.model.layers:
            a, m = layer.self_attn, layer.mlp
            packed.append((*stacked_linear((a.q_proj, a.k_proj, a.v_proj)),
                           stacked_linear((m.gate_proj, m.up_proj))[0]))
    return packed


def inv_freq(config, device):
    """RoPE frequencies (D/2,) fp32, as model.rope_cos_sin computes them."""
    D = config.head_dim
    return 1.0 / config.rope_theta ** (torch.arange(0, D, 2, device=device, dtype=torch.float32) / D)


def decode_hidden(model, packed, freqs, tok, slot, start, cache):
    """tok (N,) written to cache slot (1,) (a device tensor: a CUDA graph replays with its new value) ->
    final-normed hidden state (N, C). start (N,) or None: each row's first real cache slot."""
    cfg = model.config
    H, K, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    layers = model.model.layers
    x = model.model.embed_tokens(tok)  # (N, C) the residual stream
    lengths = (slot + 1).expand(tok.shape[0])  # (N,) every row attends up to and including this slot
    few = tok.shape[0] <= SKINNY_MAX_ROWS  # few rows: skinny GEMMs, PDL launches
    pdl = tok.shape[0] <= PDL_MAX_ROWS
    eps = cfg.rms_norm_eps

    def project(v, w):  # (N, C) or split-K partials (S, N, C), summed by the kernel that reads them next
        return skinny_linear(v, w, pdl=pdl) if few else F.linear(v, w)

    gate_up = tok.shape[0] <= GATE_UP_MAX_ROWS  # gate/up and SwiGLU as one Triton GEMM
    fold = few and gate_up and tok.shape[0] <= NORM_GEMM_MAX_ROWS  # the norms in the GEMMs' prologues
    mlp = None  # the last sublayer's output (partials) that the next norm adds to x
    for i, layer in enumerate(layers):
        w_qkv, b_qkv, w_gu = packed[i]
        norm = (mlp, layer.input_layernorm.weight, eps)
        if fold:  # x + mlp normed by each program of the q/k/v GEMM itself
            qkv, x = skinny_linear(x, w_qkv, pdl=pdl, norm=norm)
        else:
            h, x = add_rms_norm(x, *norm, pdl)
            qkv = project(h, w_qkv) if few else F.linear(h, w_qkv, b_qkv)
        q = rope_cache_write(qkv, freqs, cache.k[i], cache.v[i], slot, start, H, K, b_qkv if few else None,
                             pdl)  # (N, H, D); with partials, the bias is added here
        y = decode_attention(q, cache.k[i], cache.v[i], lengths, start, pdl=pdl).view(-1, H * D)  # (N, H D)
        norm = (project(y, layer.self_attn.o_proj.weight), layer.post_attention_layernorm.weight, eps)
        if fold:
            act, x = gate_up_silu(x, w_gu, pdl, norm=norm)
        else:
            h, x = add_rms_norm(x, *norm, pdl)
            act = gate_up_silu(h, w_gu, pdl) if gate_up else silu_mul(F.linear(h, w_gu), pdl)  # else cuBLAS's GEMM
        mlp = project(act, layer.mlp.down_proj.weight)
    h, _ = add_rms_norm(x, mlp, model.model.norm.weight, eps, pdl)
    return h


class FastDecode:
    """The fast decode step of one generate call: its packed weights, logits (N, V) from the hidden state above,
    plain temperature sampling on logits (sample) or inside the LM head (sample_next), and the token's booking
    (record), each in kernels/sampling.py."""

    def __init__(self, model):
        self.model, self.packed = model, pack_weights(model)
        self.freqs = inv_freq(model.config, model.lm_head.weight.device)

    def repack(self):
        """Pack the model's current weights into the same tensors (a captured graph reads them there)."""
        with torch.no_grad():
            for old, new in zip(self.packed, pack_weights(self.model)):
                for a, b in zip(old, new):
                    if a is not None:
                        a.copy_(b)

    def __call__(self, tok, slot, start, cache):
        h = decode_hidden(self.model, self.packed, self.freqs, tok, slot, start, cache)  # (N, C)
        return self.model.lm_head(h)  # (N, V) in the weights' dtype: sample_race reads bf16 as is

    def sample_next(self, tok, slot, start, cache, temperature, seed, step):
        """The decode step with plain temperature sampling: what sample(self(tok, slot, start, cache), ...) draws,
        with the LM head and the race as one pass over the vocabulary (sample_lm_head: no logits tensor) up to
        LM_RACE_MAX_ROWS rows -> token (N,), log-prob (N,)."""
        h = decode_hidden(self.model, self.packed, self.freqs, tok, slot, start, cache)  # (N, C)
        pdl = tok.shape[0] <= PDL_MAX_ROWS
        if tok.shape[0] <= LM_RACE_MAX_ROWS:
            return sample_lm_head(h, self.model.lm_head.weight, temperature, seed, step, pdl)
        return sample_race(self.model.lm_head(h), temperature, seed, step, pdl)

    @staticmethod
    def record(tok, lp, eos, t, slot, tokens, logprobs, lengths, done, tok_next, advance_slot):
        """decode_step.record_step_ref as one kernel (kernels/sampling.py: record_step)."""
        record_step(tok, lp, eos, t, slot, tokens, logprobs, lengths, done, tok_next, advance_slot,
                    pdl=tok.shape[0] <= PDL_MAX_ROWS)

    @staticmethod
    def sample(logits, temperature, seed, step):
        """sample_token's exponential race, its Exp(1) noise drawn in the kernel from (seed, step) (int64 (1,)
        device tensors) -> token (N,), log-prob (N,)."""
        return sample_race(logits, temperature, seed, step, pdl=logits.shape[0] <= PDL_MAX_ROWS)
