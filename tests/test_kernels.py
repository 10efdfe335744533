"""The Triton kernels equal their PyTorch twins: attention (causal, GQA, left padding, packing; values and all
gradients), decode attention (mixed lengths, split counts) and the fused log-prob (value, entropy, gradients).

On CPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set here before triton is imported), at tiny
shapes in fp32/fp16 (bf16 tl.dot is wrong in the interpreter). On a GPU the same checks run in bf16 at
Qwen2.5-0.5B shapes. Tolerances are relative errors ||out - ref|| / ||ref||:
  - fp32: both sides are exact up to float rounding and summation order -> 1e-4 (gradients of the backward
    pass through two more products -> 1e-4 as well; the interpreter does true fp32 dots);
  - fp16 (interpreter): inputs and p are rounded to 10 mantissa bits before each dot -> 5e-3;
  - bf16 (GPU): 7 mantissa bits; the reference runs in fp32 on the same bf16 inputs, so the error is the kernel's
    own rounding of p and of the output -> 2e-2 (FlashAttention's own tests use a few bf16 ulps).
"""
import math
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first `import triton` in this process

import pytest  # noqa: E402

from kernels.attention import attention, attention_ref, key_lower_bound  # noqa: E402
from kernels.decode import decode_attention, decode_attention_ref  # noqa: E402
from kernels.logprob import fused_logprob, logprob_ref  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
gpu_only = pytest.mark.skipif(not CUDA, reason="bf16 at real shapes needs a GPU")
# The tiny fp32/fp16 cases are for the interpreter; on a GPU the bf16 real-shape cases below cover the same
# properties (and each new tiny shape would cost a round of autotuning compiles).
interpreter_only = pytest.mark.skipif(CUDA, reason="tiny interpreter cases; the GPU runs the bf16 ones")


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _attention_case(B, H, K, T, D, dtype, start=None, cu_seqlens=None, seed=0):
    """Forward and q/k/v gradients of the kernel vs the fp32 reference, as relative errors."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, D, generator=g).to(DEVICE, dtype).transpose(1, 2)  # strided like model.py's views
    k = torch.randn(B, T, K, D, generator=g).to(DEVICE, dtype).transpose(1, 2)
    v = torch.randn(B, T, K, D, generator=g).to(DEVICE, dtype).transpose(1, 2)
    do = torch.randn(B, H, T, D, generator=g).to(DEVICE, dtype)
    errs = {}
    outs = []
    for fn, cast in ((attention, lambda x: x), (attention_ref, lambda x: x.float())):
        qq, kk, vv = (cast(x).detach().requires_grad_() for x in (q, k, v))
        o = fn(qq, kk, vv, start=start, cu_seqlens=cu_seqlens)
        o.backward(cast(do))
        outs.append((o, qq.grad, kk.grad, vv.grad))
    for name, a, b in zip("o dq dk dv".split(), *outs):
        assert torch.isfinite(a).all(), name
        errs[name] = rel_err(a, b)
    return errs


def test_key_lower_bound_by_hand():
    """The one masking rule: query i sees keys lo[i] <= j <= i."""
    T = 5
    assert key_lower_bound(1, T, "cpu").tolist() == [[0, 0, 0, 0, 0]]
    # left padding, start = 2: padding queries 0, 1 see only themselves; real queries start at key 2
    assert key_lower_bound(1, T, "cpu", start=torch.tensor([2])).tolist() == [[0, 1, 2, 2, 2]]
    # packing, documents [0, 2) and [2, 5)
    cu = torch.tensor([0, 2, 5], dtype=torch.int32)
    assert key_lower_bound(1, T, "cpu", cu_seqlens=cu).tolist() == [[0, 0, 2, 2, 2]]


def test_bad_shapes_give_one_line_errors():
    q, k = torch.zeros(1, 3, 8, 16), torch.zeros(1, 2, 8, 16)
    with pytest.raises(ValueError, match="H a multiple of K"):
        attention(q, k, k)
    with pytest.raises(ValueError, match="head dim 24 unsupported"):
        attention(torch.zeros(1, 2, 8, 24), torch.zeros(1, 1, 8, 24), torch.zeros(1, 1, 8, 24))
    with pytest.raises(ValueError, match="flatten batch and time first"):
        fused_logprob(torch.zeros(2, 3, 8), torch.zeros(10, 8), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="cast one"):
        fused_logprob(torch.zeros(2, 8), torch.zeros(10, 8, dtype=torch.float16), torch.zeros(2, dtype=torch.long))


ATTN_TOL = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2}


@interpreter_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_attention_causal_gqa_matches_reference(dtype):
    # T = 40 is not a multiple of any block: the last blocks are partly out of range.
    errs = _attention_case(B=2, H=4, K=2, T=40, D=16, dtype=dtype)
    assert max(errs.values()) < ATTN_TOL[dtype], errs


@interpreter_only
def test_attention_left_padding_matches_reference():
    start = torch.tensor([0, 13, 35], device=DEVICE)  # no padding, some, almost all
    errs = _attention_case(B=3, H=4, K=1, T=40, D=16, dtype=torch.float32, start=start)
    assert max(errs.values()) < ATTN_TOL[torch.float32], errs


@interpreter_only
def test_attention_packed_documents_match_reference():
    cu_seqlens = torch.tensor([0, 5, 21, 22, 40], device=DEVICE, dtype=torch.int32)  # a 1-token document too
    errs = _attention_case(B=1, H=2, K=2, T=40, D=32, dtype=torch.float32, cu_seqlens=cu_seqlens)
    assert max(errs.values()) < ATTN_TOL[torch.float32], errs


@interpreter_only
def test_attention_reads_slices_of_a_fused_projection():
    """q, k and v as views into one (B, T, (H + 2K) D) projection output, as model.fused_linear makes them (v's rows
    step over the q and k columns): values and gradients still match the reference."""
    B, H, K, T, D = 2, 4, 2, 9, 16
    g = torch.Generator().manual_seed(1)
    qkv = torch.randn(B, T, (H + 2 * K) * D, generator=g).to(DEVICE)
    do = torch.randn(B, H, T, D, generator=g).to(DEVICE)
    outs = []
    for fn in (attention, attention_ref):
        leaf = qkv.clone().requires_grad_()
        q, k, v = leaf.split([H * D, K * D, K * D], dim=-1)
        q, k, v = (t.view(B, T, -1, D).transpose(1, 2) for t in (q, k, v))
        o = fn(q, k, v)
        o.backward(do)
        outs.append((o, leaf.grad))
    for name, a, b in zip(("o", "dqkv"), *outs):
        assert rel_err(a, b) < ATTN_TOL[torch.float32], name


@interpreter_only
def test_attention_packing_equals_separate_sequences():
    """The property packing exists for: each document gives what it gives alone."""
    torch.manual_seed(0)
    lens = [7, 19]
    q = torch.randn(1, 2, 26, 16, device=DEVICE)
    k, v = torch.randn(1, 1, 26, 16, device=DEVICE), torch.randn(1, 1, 26, 16, device=DEVICE)
    packed = attention(q, k, v, cu_seqlens=torch.tensor([0, 7, 26], device=DEVICE, dtype=torch.int32))
    for s, n in zip([0, 7], lens):
        alone = attention(q[:, :, s:s + n], k[:, :, s:s + n], v[:, :, s:s + n])
        assert rel_err(packed[:, :, s:s + n], alone) < 1e-5


@gpu_only
@pytest.mark.parametrize("D", [64, 128])
def test_attention_bf16_real_shapes(D):
    # Qwen2.5-0.5B heads (14 q, 2 kv) at T = 1000 (not a block multiple). Head dim 128 is checked on the masked
    # path (left padding), which runs every loop of the kernels; 64 on all three layouts.
    cases = [{"start": torch.tensor([0, 300], device=DEVICE)}]
    if D == 64:
        cases += [{}, {"cu_seqlens": torch.tensor([0, 100, 900, 1000], device=DEVICE, dtype=torch.int32)}]
    for kw in cases:
        B = 1 if "cu_seqlens" in kw else 2
        errs = _attention_case(B=B, H=14, K=2, T=1000, D=D, dtype=torch.bfloat16, **kw)
        assert max(errs.values()) < ATTN_TOL[torch.bfloat16], (kw, errs)


def _decode_case(B, H, K, S, D, dtype, lengths, start, num_splits, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, D, generator=g).to(DEVICE, dtype)
    k_cache = torch.randn(B, K, S, D, generator=g).to(DEVICE, dtype)
    v_cache = torch.randn(B, K, S, D, generator=g).to(DEVICE, dtype)
    out = decode_attention(q, k_cache, v_cache, lengths, start, num_splits=num_splits)
    ref = decode_attention_ref(q.float(), k_cache.float(), v_cache.float(), lengths, start)
    assert torch.isfinite(out).all()
    return rel_err(out, ref)


@interpreter_only
@pytest.mark.parametrize("num_splits", [1, 3, 8])
def test_decode_mixed_lengths_and_splits_match_reference(num_splits):
    # Rows end at different slots and start after different amounts of left padding; with 8 splits of a 48-slot
    # cache some chunks hold no valid key at all (their weight in the combine must be 0).
    lengths = torch.tensor([48, 1, 30, 17], device=DEVICE)
    start = torch.tensor([0, 0, 9, 16], device=DEVICE)
    err = _decode_case(B=4, H=6, K=2, S=48, D=16, dtype=torch.float32, lengths=lengths, start=start,
                       num_splits=num_splits)
    assert err < 1e-5, err


@interpreter_only
def test_decode_fp16_int32_lengths_no_start():
    lengths = torch.tensor([5, 40], device=DEVICE, dtype=torch.int32)
    err = _decode_case(B=2, H=8, K=1, S=40, D=32, dtype=torch.float16, lengths=lengths, start=None, num_splits=None)
    assert err < 5e-3, err


@gpu_only
@pytest.mark.parametrize("D", [64, 128])
def test_decode_bf16_real_shapes(D):
    B, S = 64, 8192
    lengths = torch.randint(1, S + 1, (B,), device=DEVICE)
    start = (torch.rand(B, device=DEVICE) * lengths * 0.2).long()
    for ns in (None, 1, 16):
        err = _decode_case(B=B, H=14, K=2, S=S, D=D, dtype=torch.bfloat16, lengths=lengths, start=start,
                           num_splits=ns)
        assert err < 1e-2, (ns, err)  # one bf16 rounding of p and of the output


def _logprob_case(N, C, V, dtype, temperature, entropy, vocab_chunk, seed=0):
    """Values and gradients of the fused path vs log_softmax-then-gather on fp32 logits from the same inputs."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, C, generator=g).to(DEVICE, dtype)
    weight = (torch.randn(V, C, generator=g) / C ** 0.5).to(DEVICE, dtype)
    targets = torch.randint(0, V, (N,), generator=g).to(DEVICE)
    g_logp, g_ent = torch.randn(N, generator=g).to(DEVICE), torch.randn(N, generator=g).to(DEVICE)
    results = []
    for fn, kw in ((fused_logprob, {"vocab_chunk": vocab_chunk}), (logprob_ref, {})):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        out = fn(h, w, targets, temperature, return_entropy=entropy, **kw)
        logp, ent = out if entropy else (out, None)
        loss = (g_logp * logp).sum() + ((g_ent * ent).sum() if entropy else 0)
        loss.backward()
        results.append((logp, ent, h.grad, w.grad))
    (logp, ent, dh, dw), (logp_r, ent_r, dh_r, dw_r) = results
    assert logp.dtype == torch.float32 and logp.shape == (N,)
    errs = {"logp": rel_err(logp, logp_r), "dh": rel_err(dh, dh_r), "dw": rel_err(dw, dw_r)}
    if entropy:
        errs["entropy"] = rel_err(ent, ent_r)
    return errs


@interpreter_only
@pytest.mark.parametrize("dtype,entropy,tol", [(torch.float32, True, 1e-5), (torch.float16, False, 5e-3)])
def test_fused_logprob_matches_log_softmax_gather(dtype, entropy, tol):
    # V = 300: neither a multiple of the Triton block (64 in the interpreter) nor of the vocab slice (128), so the
    # last block and the last slice are partial. fp32: summation order only; fp16: the gradient dz is rounded to
    # fp16 before its two matmuls, in both paths but at different points.
    errs = _logprob_case(N=12, C=32, V=300, dtype=dtype, temperature=0.7, entropy=entropy, vocab_chunk=128)
    assert max(errs.values()) < tol, errs


@interpreter_only
def test_fused_logprob_target_just_past_a_slice():
    # Slices of 96 columns walked in blocks of 64: a slice's last block reaches 32 columns into the next slice.
    # Targets placed there (96..127, 192..199) must be read from their own slice, not as the -inf padding.
    g = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(6, 16, generator=g), torch.randn(200, 16, generator=g) / 4
    targets = torch.tensor([96, 100, 127, 192, 199, 5])
    got = fused_logprob(hidden, weight, targets, 1.0, vocab_chunk=96)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, logprob_ref(hidden, weight, targets), atol=1e-5, rtol=0)


@gpu_only
def test_fused_logprob_bf16_real_shapes():
    errs = _logprob_case(N=2048, C=896, V=151936, dtype=torch.bfloat16, temperature=0.6, entropy=True,
                         vocab_chunk=None)
    assert max(errs.values()) < 2e-2, errs  # bf16 logits and bf16 dz in both paths, rounded differently


@gpu_only
def test_model_use_kernels_matches_reference_path():
    """model.use_kernels swaps these kernels in: a left-padded prefill, a packed batch and a decode step of
    model.forward give the logits of the PyTorch path (bf16; two attention implementations rounding differently
    through two layers -> 2e-2)."""
    from conftest import TINY
    from model import KVCache, ModelConfig, Qwen2
    from decode_step import decode_forward
    cfg = ModelConfig(**{**TINY, "vocab_size": 1024, "hidden_size": 256, "intermediate_size": 512,
                         "num_attention_heads": 4, "num_key_value_heads": 2})  # head dim 64
    torch.manual_seed(0)
    model = Qwen2(cfg).to(DEVICE, torch.bfloat16)
    B, T = 3, 200
    idx = torch.randint(0, 1024, (B, T), device=DEVICE)
    start = torch.tensor([0, 50, 150], device=DEVICE)
    results = {}
    for use in (False, True):
        model.use_kernels = use
        with torch.no_grad():
            padded = model(idx, start=start).float()
            packed = model(idx[:1], cu_seqlens=torch.tensor([0, 60, T], device=DEVICE, dtype=torch.int32)).float()
            cache = KVCache(cfg, B, 256, DEVICE, torch.bfloat16)
            model(idx, start=start, cache=cache, slots=torch.arange(T, device=DEVICE))
            decoded = decode_forward(model, idx[:, -1], torch.tensor([T], device=DEVICE), start, cache).float()
        results[use] = (padded, packed, decoded)
    for name, a, b in zip(("padded", "packed", "decoded"), results[True], results[False]):
        assert rel_err(a, b) < 2e-2, (name, rel_err(a, b))


def test_reference_path_imports_without_triton():
    # Triton has no wheel for macOS or Windows: the CPU path (GRPO's log-probs through logprob_ref) must still load.
    import subprocess
    import sys
    from conftest import ROOT as root
    code = ("import sys; sys.modules['triton'] = sys.modules['triton.language'] = None; import torch, grpo; "
            "from kernels.logprob import logprob_ref; "
            "print(float(logprob_ref(torch.ones(1, 2), torch.eye(2), torch.tensor([0])).exp()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert r.returncode == 0, r.stderr
    assert abs(float(r.stdout) - 0.5) < 1e-6  # equal logits for both tokens


# --------------------------------------------------------------- the fused decode kernels (kernels/fused.py)
from kernels.fused import (add_rms_norm, add_rms_norm_ref, rope_cache_write, rope_cache_write_ref,  # noqa: E402
                           silu_mul, silu_mul_ref)
from kernels.sampling import race_noise, sample_race, sample_race_ref  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16] if not CUDA else [torch.bfloat16])
def test_rope_cache_write_matches_reference(dtype):
    """q rotated, k rotated and v copied into the cache at the slot, each row at its own position (start)."""
    g = torch.Generator().manual_seed(0)
    B, H, K, D, S = 3, 4, 2, 16, 40
    qkv = torch.randn(B, (H + 2 * K) * D, generator=g).to(DEVICE, dtype)
    freqs = 1.0 / 1e4 ** (torch.arange(0, D, 2, device=DEVICE).float() / D)
    slot, start = torch.tensor([21], device=DEVICE), torch.tensor([0, 5, 30], device=DEVICE)  # row 2: pos 0
    caches = {}
    for fn in (rope_cache_write, rope_cache_write_ref):
        kc, vc = (torch.full((B, K, S, D), float("nan"), device=DEVICE, dtype=dtype) for _ in range(2))
        caches[fn] = (fn(qkv, freqs, kc, vc, slot, start, H, K), kc[:, :, 21], vc[:, :, 21])
        assert torch.isnan(kc[:, :, :21]).all() and torch.isnan(vc[:, :, 22:]).all()  # no other slot written
    for a, b in zip(caches[rope_cache_write], caches[rope_cache_write_ref]):
        assert rel_err(a, b) < (1e-5 if dtype == torch.float32 else 1e-2)


def test_rope_cache_write_equals_model_rope():
    """The twin computes what model.apply_rope does to a row at position slot - start."""
    from model import apply_rope, rope_cos_sin
    B, H, K, D = 2, 2, 1, 8
    qkv = torch.randn(B, (H + 2 * K) * D)
    freqs = 1.0 / 1e4 ** (torch.arange(0, D, 2).float() / D)
    kc, vc = torch.zeros(B, K, 16, D), torch.zeros(B, K, 16, D)
    q = rope_cache_write_ref(qkv, freqs, kc, vc, torch.tensor([9]), torch.tensor([0, 4]), H, K)
    cos, sin = rope_cos_sin(torch.tensor([[9], [5]]), D, 1e4, torch.float32)  # (B, 1, 1, D)
    x = qkv.view(B, H + 2 * K, 1, D)
    torch.testing.assert_close(q, apply_rope(x[:, :H], cos, sin)[:, :, 0])
    torch.testing.assert_close(kc[:, :, 9], apply_rope(x[:, H:H + K], cos, sin)[:, :, 0])
    torch.testing.assert_close(vc[:, :, 9], x[:, H + K:, 0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16] if not CUDA else [torch.bfloat16])
@pytest.mark.parametrize("with_residual", [True, False])
def test_add_rms_norm_matches_reference(dtype, with_residual):
    g = torch.Generator().manual_seed(1)
    x, r = (torch.randn(5, 96, generator=g).to(DEVICE, dtype) for _ in range(2))  # 96: not a power of two
    w = (1 + 0.1 * torch.randn(96, generator=g)).to(DEVICE, dtype)
    r = r if with_residual else None
    (h, s), (h_ref, s_ref) = add_rms_norm(x, r, w, 1e-6), add_rms_norm_ref(x, r, w, 1e-6)
    assert torch.equal(s, s_ref)  # one rounded add on both sides
    assert rel_err(h, h_ref) < (1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16] if not CUDA else [torch.bfloat16])
def test_silu_mul_matches_reference(dtype):
    gu = torch.randn(3, 2 * 200, generator=torch.Generator().manual_seed(2)).to(DEVICE, dtype)  # M = 200
    assert rel_err(silu_mul(gu), silu_mul_ref(gu)) < (1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("B,N,K", [(3, 40, 96), (1, 16, 100), (70, 48, 64)])  # K not a multiple of the chunk
def test_skinny_linear_partials_sum_to_the_product(B, N, K):
    """The split-K GEMM's partials (several, each fp32) sum to x @ W^T, as its twin's single partial does; with
    PDL (on Hopper) they are the same bits."""
    from kernels.skinny import skinny_linear, skinny_linear_ref
    g = torch.Generator().manual_seed(5)
    dtype = torch.bfloat16 if CUDA else torch.float32
    x, w = torch.randn(B, K, generator=g).to(DEVICE, dtype), torch.randn(N, K, generator=g).to(DEVICE, dtype)
    for splits in (None, 3):  # its own choice for the shape, and 3 (the last chunk past K)
        parts = skinny_linear(x, w, splits)
        assert parts.dtype == torch.float32 and parts.shape[1:] == (B, N) and parts.shape[0] == (splits or len(parts))
        assert torch.equal(skinny_linear(x, w, splits, pdl=True), parts)
        assert rel_err(parts.sum(0), skinny_linear_ref(x, w).sum(0)) < (1e-5 if not CUDA else 1e-3)


@pytest.mark.parametrize("B,M,C", [(3, 40, 96), (1, 24, 50), (20, 48, 32)])  # M, C not multiples of the block
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16] if not CUDA else [torch.bfloat16])
def test_gate_up_silu_matches_its_twin_and_the_two_kernels_it_replaces(B, M, C, dtype):
    """One GEMM over [gate | up] with SwiGLU in its epilogue = silu(x gate^T) * (x up^T), as the twin and as the
    packed GEMM followed by silu_mul compute it; with PDL (on Hopper) the same bits."""
    from kernels.skinny import gate_up_silu, gate_up_silu_ref
    g = torch.Generator().manual_seed(8)
    x = torch.randn(B, C, generator=g).to(DEVICE, dtype)
    w = (0.3 * torch.randn(2 * M, C, generator=g)).to(DEVICE, dtype)
    out = gate_up_silu(x, w)
    assert out.shape == (B, M) and out.dtype == dtype
    assert torch.equal(gate_up_silu(x, w, pdl=True), out)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert rel_err(out, gate_up_silu_ref(x, w)) < tol
    assert rel_err(out, silu_mul_ref(torch.nn.functional.linear(x, w))) < tol
    with pytest.raises(ValueError, match="gate_up_silu"):
        gate_up_silu(x, w[:, 1:])


@pytest.mark.parametrize("B,C,N", [(1, 96, 40), (3, 50, 24)] if not CUDA else [(1, 896, 1152), (16, 896, 4864)])
@pytest.mark.parametrize("r_kind", ["none", "tensor", "partials"])
def test_gemms_with_the_norm_in_their_prologue_equal_the_norm_then_the_gemm(B, C, N, r_kind):
    """skinny_linear and gate_up_silu given norm=(r, weight, eps) compute RMSNorm(x + r) in each program and
    multiply it: the new residual s is add_rms_norm's bit for bit, the output that of the GEMM on add_rms_norm's h
    (the twin: normed_ref) up to the order of the sum of squares; r is none (the first layer), a tensor or split-K
    partials. With PDL (on Hopper) the same bits."""
    from kernels.skinny import gate_up_silu, gate_up_silu_ref, normed_ref, skinny_linear, skinny_linear_ref
    g = torch.Generator().manual_seed(9)
    dtype = torch.bfloat16 if CUDA else torch.float16
    x = torch.randn(B, C, generator=g).to(DEVICE, dtype)
    nw = (1 + 0.1 * torch.randn(C, generator=g)).to(DEVICE, dtype)
    r = {"none": None, "tensor": torch.randn(B, C, generator=g).to(DEVICE, dtype),
         "partials": torch.randn(4, B, C, generator=g).to(DEVICE)}[r_kind]
    w, w_gu = ((0.3 * torch.randn(n, C, generator=g)).to(DEVICE, dtype) for n in (N, 2 * N))
    tol = 2e-2 if CUDA else 1e-3
    for fast, ref, weight in ((lambda *a, **k: skinny_linear(*a, splits=3, **k), skinny_linear_ref, w),
                              (gate_up_silu, gate_up_silu_ref, w_gu)):
        out, s = fast(x, weight, norm=(r, nw, 1e-6))
        out_ref, s_ref = normed_ref(ref, x, r, nw, 1e-6, weight)
        assert torch.equal(s, add_rms_norm(x, r, nw, 1e-6)[1]) and torch.equal(s, s_ref)
        assert rel_err(out.sum(0) if out.dim() == 3 else out, out_ref.sum(0) if out_ref.dim() == 3 else out_ref) < tol
        assert all(torch.equal(a, b) for a, b in zip(fast(x, weight, pdl=True, norm=(r, nw, 1e-6)), (out, s)))
    with pytest.raises(ValueError, match="normed GEMM"):
        skinny_linear(x, w, norm=(r, nw[1:], 1e-6))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16] if not CUDA else [torch.bfloat16])
def test_fused_kernels_read_split_k_partials(dtype):
    """rope_cache_write (with the projection's bias) and add_rms_norm given partials (S, B, W) fp32 give what
    they give for the projection's output rounded once (sum + bias, then the dtype), and so do their twins."""
    g = torch.Generator().manual_seed(6)
    B, H, K, D, S, C = 3, 4, 2, 16, 24, 96
    parts = torch.randn(3, B, (H + 2 * K) * D, generator=g).to(DEVICE)
    bias = torch.randn((H + 2 * K) * D, generator=g).to(DEVICE, dtype)
    whole = (parts.sum(0) + bias.float()).to(dtype)
    freqs = 1.0 / 1e4 ** (torch.arange(0, D, 2, device=DEVICE).float() / D)
    slot, start = torch.tensor([7], device=DEVICE), torch.tensor([0, 2, 5], device=DEVICE)
    out = {}
    for name, fn, args in (("partials", rope_cache_write, (parts,)), ("twin", rope_cache_write_ref, (parts,)),
                           ("whole", rope_cache_write, (whole,))):
        kc, vc = (torch.zeros(B, K, S, D, device=DEVICE, dtype=dtype) for _ in range(2))
        q = fn(*args, freqs, kc, vc, slot, start, H, K, bias if name != "whole" else None)
        out[name] = torch.cat([q.flatten(), kc.flatten(), vc.flatten()]).float()
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert rel_err(out["partials"], out["whole"]) < tol and rel_err(out["twin"], out["whole"]) < tol
    x, w = torch.randn(B, C, generator=g).to(DEVICE, dtype), (1 + 0.1 * torch.randn(C, generator=g)).to(DEVICE, dtype)
    r_parts = torch.randn(4, B, C, generator=g).to(DEVICE)
    h, s = add_rms_norm(x, r_parts, w, 1e-6)
    h_ref, s_ref = add_rms_norm_ref(x, r_parts.sum(0).to(dtype), w, 1e-6)
    assert torch.equal(s, s_ref) and rel_err(h, h_ref) < tol
    assert torch.equal(add_rms_norm_ref(x, r_parts, w, 1e-6)[1], s_ref)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sample_race_picks_the_tokens_its_twin_picks_on_the_same_noise(temperature):
    """The one-pass kernel (noise drawn inside) against its twin on race_noise's tensor of that noise: the same
    token in every row, which is sample_token's rule argmax(softmax(z / T) / E), and the log-prob
    log_softmax(z / T) at that token."""
    B, V = 6, 1000 if not CUDA else 151936  # V not a multiple of the kernel's block
    logits = (3 * torch.randn(B, V, generator=torch.Generator().manual_seed(3))).to(DEVICE)
    seed, step = torch.tensor([2**40 + 17], device=DEVICE), torch.tensor([9], device=DEVICE)
    noise = race_noise(seed, step, B, V)
    tok, lp = sample_race(logits, temperature, seed, step)
    tok_ref, lp_ref = sample_race_ref(logits, noise, temperature)
    assert torch.equal(tok, tok_ref)
    assert torch.equal(tok, ((logits / temperature).softmax(-1) / noise).argmax(-1))
    torch.testing.assert_close(lp, (logits / temperature).log_softmax(-1).gather(1, tok[:, None])[:, 0],
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("B,V,C", [(3, 1000, 32), (20, 2100, 48)])  # rows past one row tile, V past a column tile
def test_sample_lm_head_draws_what_the_race_draws_on_the_lm_heads_logits(B, V, C):
    """The LM head's GEMM with the race in its epilogue (no logits tensor) against its twin: sample_race_ref on
    F.linear's logits and race_noise's tensor: the same tokens, the log-prob of the token under softmax(z / T)."""
    from kernels.sampling import sample_lm_head
    g = torch.Generator().manual_seed(4)
    dtype = torch.bfloat16 if CUDA else torch.float32
    h, w = torch.randn(B, C, generator=g).to(DEVICE, dtype), torch.randn(V, C, generator=g).to(DEVICE, dtype)
    seed, step = torch.tensor([2**40 + 17], device=DEVICE), torch.tensor([9], device=DEVICE)
    logits = torch.nn.functional.linear(h.float(), w.float()).to(dtype)  # exact sums, rounded once: as the kernel
    tok, lp = sample_lm_head(h, w, 0.7, seed, step)
    tok_ref, lp_ref = sample_race_ref(logits, race_noise(seed, step, B, V), 0.7)
    assert torch.equal(tok, tok_ref)
    torch.testing.assert_close(lp, lp_ref, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="sample_lm_head"):
        sample_lm_head(h, w[:, 1:], 0.7, seed, step)


def test_race_noise_is_exp1_repeatable_and_new_at_every_step_row_and_seed():
    """The Philox noise: Exp(1) (mean, tail, Kolmogorov-Smirnov distance), the same for the same (seed, step),
    and unrelated across steps, rows, columns and seeds."""
    B, V = 8, 4096
    seed, other_seed = torch.tensor([123], device=DEVICE), torch.tensor([124], device=DEVICE)
    step = lambda t: torch.tensor([t], device=DEVICE)
    e = race_noise(seed, step(5), B, V).cpu()
    n = e.numel()
    assert torch.equal(e, race_noise(seed, step(5), B, V).cpu())
    assert (e > 0).all() and abs(e.mean() - 1) < 4 / n**0.5 and abs((e > 1).float().mean() - math.exp(-1)) < 0.012
    x = e.flatten().sort().values.double()
    ks = ((1 - (-x).exp()) - torch.arange(1, n + 1, dtype=torch.float64) / n).abs().max()
    assert ks < 1.63 / n**0.5  # the 1% critical value
    corr = lambda a, b: torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].abs()
    for other in (race_noise(seed, step(6), B, V).cpu(), race_noise(other_seed, step(5), B, V).cpu(),
                  e.roll(1, 0), e.roll(1, 1)):
        assert corr(e, other) < 4 / n**0.5


@pytest.mark.parametrize("n_eos", [0, 1, 3])
def test_record_step_books_what_its_twin_books(n_eos):
    """The one-kernel booking of a sampled token (kernels/sampling.py: record_step) against decode_step's ops, over
    three steps: output columns (padding once a row is done), EOS hits (lengths, done), the next input token and
    the counters t and slot."""
    from decode_step import record_step_ref
    from kernels.sampling import record_step
    g = torch.Generator().manual_seed(9)
    N, T = 21, 5  # rows: not a power of two
    eos = torch.tensor([7, 3, 11][:n_eos], dtype=torch.long, device=DEVICE)
    state = {}
    for fn in (record_step, record_step_ref):
        torch.manual_seed(0)
        buf = dict(t=torch.zeros(1, dtype=torch.long), slot=torch.tensor([30]),
                   tokens=torch.zeros(N, T, dtype=torch.long), logprobs=torch.zeros(N, T),
                   lengths=torch.full((N,), T), done=torch.zeros(N, dtype=torch.bool),
                   tok_next=torch.zeros(N, dtype=torch.long))
        buf = {k: v.to(DEVICE) for k, v in buf.items()}
        buf["done"][[2, 5]] = True  # rows finished before these steps
        for i in range(3):
            tok = torch.randint(0, 14, (N,), generator=g.manual_seed(i)).to(DEVICE)
            lp = -torch.rand(N, generator=g).to(DEVICE)
            fn(tok, lp, eos, buf["t"], buf["slot"], buf["tokens"], buf["logprobs"], buf["lengths"], buf["done"],
               buf["tok_next"], i > 0)
        state[fn] = buf
    for k, v in state[record_step_ref].items():
        assert torch.equal(state[record_step][k], v), k
    assert state[record_step_ref]["t"].item() == 3 and state[record_step_ref]["slot"].item() == 32
    if n_eos:
        assert state[record_step_ref]["done"].sum() > 2  # some rows hit an EOS


@pytest.mark.parametrize("triton_rows,norm_rows", [(64, 0), (0, 0), (64, 64)])  # kernels/skinny.py's GEMMs (the
# norms in their prologues or not) or cuBLAS (+ silu_mul)
def test_fast_decode_step_matches_plain_step(triton_rows, norm_rows, monkeypatch):
    """kernels/step.py (packed q/k/v and gate/up, the fused kernels, decode attention) gives the logits of the
    plain model forward for a decode step over a left-padded cache (fp32 in the interpreter, bf16 on a GPU)."""
    import kernels.step
    monkeypatch.setattr(kernels.step, "SKINNY_MAX_ROWS", triton_rows)
    monkeypatch.setattr(kernels.step, "GATE_UP_MAX_ROWS", triton_rows)
    monkeypatch.setattr(kernels.step, "NORM_GEMM_MAX_ROWS", norm_rows)
    from conftest import TINY
    from kernels.step import FastDecode
    from model import KVCache, ModelConfig, Qwen2
    from decode_step import decode_forward
    dtype = torch.bfloat16 if CUDA else torch.float32
    cfg = ModelConfig(**{**TINY, "vocab_size": 512, "hidden_size": 64, "intermediate_size": 96})  # head dim 16
    torch.manual_seed(0)
    model = Qwen2(cfg).to(DEVICE, dtype).eval()
    with torch.no_grad():
        for layer in model.model.layers:  # non-trivial biases and norm weights
            for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                lin.bias.normal_(0, 0.5)
            layer.post_attention_layernorm.weight.normal_(1, 0.2)
    B, T = 3, 11
    idx = torch.randint(0, 512, (B, T), device=DEVICE)
    start = torch.tensor([0, 4, 9], device=DEVICE)
    out, caches = [], []
    for fn in (FastDecode(model), lambda *a: decode_forward(model, *a)):
        cache = KVCache(cfg, B, 32, DEVICE, dtype)
        with torch.no_grad():
            model(idx, start=start, cache=cache, slots=torch.arange(T, device=DEVICE))
            out.append(fn(idx[:, -1], torch.tensor([T], device=DEVICE), start, cache).float())
        caches.append(cache)
    tol = 2e-2 if CUDA else 1e-5
    assert rel_err(out[0], out[1]) < tol
    assert rel_err(caches[0].k[:, :, :, T], caches[1].k[:, :, :, T]) < tol  # the step's own cache write
