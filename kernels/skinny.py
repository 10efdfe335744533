"""
The decode step's projections with few outputs (q/k/v, o_proj, down_proj) as a split-K GEMM for few rows, in Triton.

At decode time a projection multiplies a few rows (one token per sequence: B = 1 .. 128) by a weight of a few MB.
On an H200 at B = 64, with cold weights, cuBLAS reads q/k/v's 2 MB in 4.7 us, o_proj's 1.6 MB in 4.4 and
down_proj's 8.7 MB in 8.5 (with its own split-K reduce kernel): well under the memory bandwidth, because 14-36
output tiles cannot keep 132 SMs busy. Here the reduction dimension is cut too, so that there are enough programs:
    out = x @ W^T = sum_s x[:, K_s] @ W[:, K_s]^T          (K_s: the s-th of `splits` chunks of the K columns)
Program (n, m, s) computes one (BLOCK_M, BLOCK_N) tile of partial s in fp32. The partials are not summed here:
the kernel that reads the projection next sums them as it loads them (kernels/fused.py: rope_cache_write adds the
bias too, add_rms_norm the residual), so split-K costs no extra kernel and no extra rounding (the sum is rounded
once to the weights' dtype, as a GEMM rounds its output).

Measured (docs/bench/skinny_gemm_sweep_h200_2026-12-03.json): 3.8 / 3.3 / 5.6 us at B = 64 for the three. At
B = 256 it only ties cuBLAS. gate/up (9,728 outputs: enough tiles, no split-K) has its own kernel below, a plain
GEMM over [gate | up] whose epilogue applies SwiGLU, for up to 64 rows.

Both GEMMs can also take the residual add + RMSNorm that precedes them (norm=(r, weight, eps); the twin is
normed_ref): each program first sums its rows' squares over the whole row of s = x + r (r: the previous
projection's partials), storing s on its own chunk's columns, then normalises the tiles it multiplies. For a few
rows that is little extra reading, and one kernel less per norm (kernels/step.py, NORM_GEMM_MAX_ROWS).
Shapes: B rows, N outputs, K inputs (the reduction), S splits.
Run `python kernels/skinny.py` on a GPU for the comparison with cuBLAS.
"""
import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernels import pdl_options
from kernels.fused import add_rms_norm_ref, pdl_wait, residual_add, rms_normed, swiglu_rounded

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def skinny_linear_ref(x, weight):
    """The twin: x (B, K), weight (N, K) -> the whole product as one partial (1, B, N) fp32 (its readers sum
    over the first dim, so they cannot tell one partial from several)."""
    return (x.float() @ weight.float().T)[None]


@triton.jit
def _norm_prologue(X, R, S, NP: tl.constexpr, srp, offs_m, rows, K, lo, hi, eps, HAS_R: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """The first pass of a GEMM that normalises its own input: 1 / rms(s) of each of its rows (BLOCK_M,) over all
    K columns (a program of a split-K GEMM multiplies only its chunk lo..hi of the row, but the norm needs all of
    it). With r, the program also stores s at the columns of its chunk into S, the residual stream's next value,
    which its K loop reads back (bf16 tiles, as a GEMM's input: the fp32 partials never enter that loop, whose
    loads the compiler stages through shared memory). Every program that covers a column stores the same bits
    there, so the order in which they do is of no account; the barrier makes this program's stores visible to
    all of its threads."""
    sq = tl.zeros((BLOCK_M,), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        in_k = offs_k < K
        offs, mask = offs_m[:, None] * K + offs_k[None, :], rows[:, None] & in_k[None, :]
        s = residual_add(X, R, NP, srp, offs, mask, HAS_R)
        if HAS_R:  # (without r, s is x: nothing new to store)
            if (k0 >= lo) & (k0 < hi):
                tl.store(S + offs, s, mask=mask)
        sf = s.to(tl.float32)
        sq += tl.sum(sf * sf, 1)
    tl.debug_barrier()
    return 1.0 / tl.sqrt(sq / K + eps)


@triton.jit
def _gemm_input(X, S, NW, sxb, offs_m, rows, offs_k, in_k, K, rstd, NORM: tl.constexpr):
    """The GEMM's input tile (BLOCK_M, BLOCK_K): X's rows as they are, or (NORM) RMSNorm(s) of the residual S
    that _norm_prologue left, with the norm's weight NW, rounded as add_rms_norm rounds (the normalised value in
    S's dtype, then the scaled one)."""
    if NORM:
        s = tl.load(S + offs_m[:, None] * K + offs_k[None, :], mask=rows[:, None] & in_k[None, :], other=0.0)
        nw = tl.load(NW + offs_k, mask=in_k, other=0.0)
        return rms_normed(s, rstd[:, None], nw[None, :]).to(s.dtype)
    return tl.load(X + offs_m[:, None] * sxb + offs_k[None, :], mask=rows[:, None] & in_k[None, :], other=0.0)


@triton.jit
def _skinny_linear(X, W, OUT, R, NW, S_OUT, B, N, K, sxb, swn, CHUNK, NP: tl.constexpr, srp, eps,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, NORM: tl.constexpr,
                   HAS_R: tl.constexpr, USE_GDC: tl.constexpr):
    pdl_wait(USE_GDC)
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    split = tl.program_id(2)  # this program's columns: split * CHUNK .. (split + 1) * CHUNK
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows, outs = offs_m < B, offs_n < N
    rstd = tl.zeros((BLOCK_M,), tl.float32)
    if NORM:
        rstd = _norm_prologue(X, R, S_OUT, NP, srp, offs_m, rows, K, split * CHUNK, (split + 1) * CHUNK, eps,
                              HAS_R, BLOCK_M, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(split * CHUNK, (split + 1) * CHUNK, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        in_k = offs_k < K  # (the last chunk may run past K)
        x = _gemm_input(X, S_OUT, NW, sxb, offs_m, rows, offs_k, in_k, K, rstd, NORM)
        w = tl.load(W + offs_n[:, None] * swn + offs_k[None, :], mask=outs[:, None] & in_k[None, :], other=0.0)
        acc = tl.dot(x, tl.trans(w), acc)  # (BLOCK_M, BLOCK_N)
    tl.store(OUT + (split * B + offs_m[:, None]) * N + offs_n[None, :], acc, mask=rows[:, None] & outs[None, :])


def skinny_config(B, N, K):
    """(splits, BLOCK_M, BLOCK_N, BLOCK_K, num_stages), from a sweep on an H200 at the Qwen2.5-0.5B shapes with
    cold weights (24 layers' worth): ~100-130 programs, the long reduction of down_proj in 64-wide tiles and 8
    splits (5.6 us against cuBLAS's 8.5 at B = 64), q/k/v and o_proj in 32-wide tiles (3.8 and 3.3 us against
    4.7 and 4.4)."""
    if INTERPRET:
        return max(1, min(3, K // 16)), 16, 16, 16, 1
    block_m = 16 if B <= 16 else 64
    block_n = 64 if K > 2048 else 32
    tiles = triton.cdiv(N, block_n) * triton.cdiv(B, block_m)
    return max(1, min(8, 128 // tiles, K // 128)), block_m, block_n, 128, 4 if K > 2048 else 3


def skinny_linear(x, weight, splits=None, pdl=False, norm=None):
    """The kernel behind skinny_linear_ref: x (B, K), weight (N, K), last dims contiguous -> (S, B, N) fp32.
    splits=None: skinny_config's. pdl: programmatic dependent launch (kernels.pdl_options). norm=(r, weight, eps):
    the GEMM of add_rms_norm(x, r, weight, eps)'s h, the norm done in the GEMM's prologue (normed_ref) ->
    (partials, s)."""
    (B, K), N = x.shape, weight.shape[0]
    if weight.shape[1] != K or x.stride(1) != 1 or weight.stride(1) != 1:
        raise ValueError(f"skinny_linear: x {tuple(x.shape)} and weight {tuple(weight.shape)} need the same K "
                         "(contiguous rows)")
    s, block_m, block_n, block_k, stages = skinny_config(B, N, K)
    splits = splits or s
    chunk = triton.cdiv(triton.cdiv(K, splits), block_k) * block_k
    out = torch.empty(splits, B, N, device=x.device, dtype=torch.float32)
    grid = (triton.cdiv(N, block_n), triton.cdiv(B, block_m), splits)
    r, nw, s_out, np_, srp, eps = _norm_args(x, norm)
    _skinny_linear[grid](x, weight, out, r, nw, s_out, B, N, K, x.stride(0), weight.stride(0), chunk, np_, srp, eps,
                         BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, NORM=norm is not None,
                         HAS_R=norm is not None and norm[0] is not None, num_warps=4, num_stages=stages,
                         **pdl_options(x.device, pdl))
    return out if norm is None else (out, s_out)


# ------------------------------------------------------------------------------------------ the norm in the prologue
def normed_ref(gemm_ref, x, r, norm_weight, eps, weight):
    """The twin of a GEMM given norm=(r, norm_weight, eps): add_rms_norm_ref, then gemm_ref on its h -> (the
    GEMM's output, s = x + r)."""
    h, s = add_rms_norm_ref(x, r, norm_weight, eps)
    return gemm_ref(h, weight), s


def _norm_args(x, norm):
    """The kernels' norm arguments for norm=(r, weight, eps) or None: (r as partials (NP, B, C), norm weight,
    s's buffer, NP, r's partial stride, eps); placeholders (x) where a tensor is not used."""
    if norm is None:
        return x, x, x, 1, 0, 0.0
    r, weight, eps = norm
    if x.stride(0) != x.shape[1] or weight.shape != x.shape[1:] or (r is not None and r.shape[-2:] != x.shape):
        raise ValueError(f"normed GEMM: the residual x {tuple(x.shape)} (contiguous), r "
                         f"{None if r is None else tuple(r.shape)} and the norm weight {tuple(weight.shape)} "
                         "do not fit")
    if r is None:  # the first layer's norm: s is x itself, nothing to store
        return x, weight, x, 1, 0, eps
    r = (r if r.dim() == 3 else r[None]).contiguous()
    return r, weight, torch.empty_like(x), r.shape[0], r.stride(0), eps


# ------------------------------------------------------------------------------------------ gate/up + SwiGLU
def gate_up_silu_ref(x, weight):
    """The twin: x (B, C), weight (2M, C) = [gate | up] (kernels.stacked_linear) -> silu(x @ gate^T) * (x @ up^T)
    (B, M), rounded as the plain path rounds (the GEMM's output, then F.silu's, then the product)."""
    gate, up = F.linear(x, weight).chunk(2, dim=-1)
    return F.silu(gate) * up


@triton.jit
def _gate_up_silu(X, W, OUT, R, NW, S_OUT, B, M, K, sxb, swn, NP: tl.constexpr, srp, eps, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, NORM: tl.constexpr, HAS_R: tl.constexpr,
                  USE_GDC: tl.constexpr):
    pdl_wait(USE_GDC)
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # MLP columns: gate rows offs_n, up rows M + offs_n of W
    rows, outs = offs_m < B, offs_n < M
    rstd = tl.zeros((BLOCK_M,), tl.float32)
    if NORM:
        rstd = _norm_prologue(X, R, S_OUT, NP, srp, offs_m, rows, K, 0, K, eps, HAS_R, BLOCK_M, BLOCK_K)
    acc_g = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    acc_u = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        in_k = offs_k < K
        x = _gemm_input(X, S_OUT, NW, sxb, offs_m, rows, offs_k, in_k, K, rstd, NORM)
        w_mask = outs[:, None] & in_k[None, :]
        wg = tl.load(W + offs_n[:, None] * swn + offs_k[None, :], mask=w_mask, other=0.0)
        wu = tl.load(W + (M + offs_n[:, None]) * swn + offs_k[None, :], mask=w_mask, other=0.0)
        acc_g = tl.dot(x, tl.trans(wg), acc_g)
        acc_u = tl.dot(x, tl.trans(wu), acc_u)
    dtype = OUT.dtype.element_ty
    g = acc_g.to(dtype).to(tl.float32)  # each GEMM output rounded, as cuBLAS rounds gu
    u = acc_u.to(dtype).to(tl.float32)
    out = swiglu_rounded(g, u, dtype)
    tl.store(OUT + offs_m[:, None] * M + offs_n[None, :], out, mask=rows[:, None] & outs[None, :])


def gate_up_config(B):
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages): the best of 14 tilings swept at Qwen2.5-0.5B's gate/up
    (2 x 4,864 x 896) with cold weights at 1, 16 and 64 rows (README, "Sampling speed"). Past 64 rows no tiling
    beat cuBLAS, hence kernels/step.py's GATE_UP_MAX_ROWS."""
    if INTERPRET:
        return 16, 16, 16, 4, 1
    return (16, 64, 128, 4, 4) if B <= 16 else (64, 32, 128, 4, 3)


def gate_up_silu(x, weight, pdl=False, norm=None):
    """The kernel behind gate_up_silu_ref: the MLP's two projections and SwiGLU in one launch, its epilogue
    pairing gate column n with up column n (no (B, 2M) intermediate, no silu_mul kernel). x (B, C), weight
    (2M, C), last dims contiguous -> (B, M) in x's dtype. pdl: kernels.pdl_options. norm=(r, weight, eps): of
    add_rms_norm(x, r, weight, eps)'s h, the norm done in the prologue (normed_ref) -> (out, s)."""
    (B, K), M = x.shape, weight.shape[0] // 2
    if weight.shape != (2 * M, K) or x.stride(1) != 1 or weight.stride(1) != 1:
        raise ValueError(f"gate_up_silu: x {tuple(x.shape)} and weight {tuple(weight.shape)}: need (B, C) and "
                         "(2M, C), contiguous rows")
    block_m, block_n, block_k, warps, stages = gate_up_config(B)
    out = torch.empty(B, M, device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(M, block_n), triton.cdiv(B, block_m))
    r, nw, s_out, np_, srp, eps = _norm_args(x, norm)
    _gate_up_silu[grid](x, weight, out, r, nw, s_out, B, M, K, x.stride(0), weight.stride(0), np_, srp, eps,
                        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, NORM=norm is not None,
                        HAS_R=norm is not None and norm[0] is not None, num_warps=warps, num_stages=stages,
                        **pdl_options(x.device, pdl))
    return out if norm is None else (out, s_out)


def graph_us(fn, weights, reps=20):
    """Microseconds per call of fn(w) with cold weights, as a decode step meets them: one CUDA graph of a call per
    weight in `weights` (24 layers' worth, more than L2 holds), replayed reps times (the benchmark below and
    bench/decode_variants.py)."""
    fn(weights[0])  # compile
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for w in weights:
            fn(w)
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / (reps * len(weights))


if __name__ == "__main__":  # against cuBLAS at the Qwen2.5-0.5B decode shapes, cold weights as in a real step
    shapes = {"q/k/v": (1152, 896), "o_proj": (896, 896), "down_proj": (896, 4864)}  # (N, K)
    for B in (1, 64):
        for name, (N, K) in shapes.items():
            ws = [torch.randn(N, K, device="cuda", dtype=torch.bfloat16) for _ in range(24)]  # 24 layers' weights
            x = torch.randn(B, K, device="cuda", dtype=torch.bfloat16)
            times = {impl: graph_us(fn, ws) for impl, fn in (("cuBLAS", lambda w: F.linear(x, w)),
                                                              ("skinny", lambda w: skinny_linear(x, w)))}
            print(f"B={B:3d} {name:9s} cuBLAS {times['cuBLAS']:5.2f} us, skinny {times['skinny']:5.2f} us "
                  f"({N * K * 2 / times['skinny'] / 1e6:.2f} TB/s), {times['cuBLAS'] / times['skinny']:.2f}x")
