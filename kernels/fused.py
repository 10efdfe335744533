"""
Small fused kernels of the decode step, in Triton, each with its PyTorch twin (`*_ref`).

At decode time a layer moves ~30 MB of weights and a few kB of activations, so every separate elementwise kernel
costs a launch (a few microseconds) for almost no bytes. These kernels each do in one launch what the plain path
does in four to eight (the sampling kernels are in kernels/sampling.py):

  1. rope_cache_write: the fused q/k/v projection's output (B, (H + 2K) D) -> RoPE on the q and k heads, the
     rotated k and the plain v written into the KV cache at the step's slot, q returned as (B, H, D). The
     projection may also come as split-K partials (S, B, (H + 2K) D) fp32 (kernels/skinny.py) with its bias: they
     are summed, the bias added and the sum rounded to the cache dtype here. RoPE, "rotate
     half" layout (model.apply_rope), position p = max(slot - start[b], 0), angle_i = p * inv_freq_i:
         y[:D/2] = x1 cos - x2 sin,   y[D/2:] = x2 cos + x1 sin
     The slot is read from device memory, so the same launch serves every step of a CUDA graph.
  2. add_rms_norm: the residual add and the next RMSNorm, s = x + r, h = w * (s / rms(s)); returns (h, s).
     Rounded where model.rms_norm rounds (the sum and the normalised value in the input dtype, the scale in fp32).
     r may be split-K partials (S, B, C) fp32, summed and rounded to x's dtype first (as a GEMM rounds).
  3. silu_mul: the fused gate/up projection's output (B, 2M) -> silu(gate) * up (B, M) (SwiGLU).

Shapes: B rows, H query heads, K kv heads, D head dim, S cache slots, C hidden, M MLP width.
None of these has a backward: they serve generation only (no_grad); training keeps model.py's fused twins.
"""
import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernels import pdl_options

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


# ------------------------------------------------------------------------------------------ the twins
def rope_cache_write_ref(qkv, inv_freq, k_cache, v_cache, slot, start, H, K, bias=None):
    """qkv (B, (H+2K)D), or partials (S, B, (H+2K)D) fp32 to sum with bias ((H+2K)D,); k/v_cache (B, K, S, D)
    written at slot (1,) -> q (B, H, D), rotated."""
    if qkv.dim() == 3:
        qkv = (qkv.sum(0) + (bias.float() if bias is not None else 0)).to(k_cache.dtype)
    B = qkv.shape[0]
    D = qkv.shape[1] // (H + 2 * K)
    x = qkv.view(B, H + 2 * K, D)
    pos = slot.expand(B) - (start if start is not None else 0)
    ang = pos.clamp(min=0).float()[:, None] * inv_freq  # (B, D/2)
    cos, sin = ang.cos()[:, None], ang.sin()[:, None]  # (B, 1, D/2)
    x1, x2 = x[:, :H + K].float().chunk(2, dim=-1)  # the q and k heads, halves (B, H+K, D/2)
    qk = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).to(qkv.dtype)  # (B, H+K, D)
    k_cache.index_copy_(2, slot, qk[:, H:, None])
    v_cache.index_copy_(2, slot, x[:, H + K:, None])
    return qk[:, :H].contiguous()


def add_rms_norm_ref(x, r, weight, eps):
    """(h, s): s = x + r (or x when r is None), h = RMSNorm(s) rounded as model.rms_norm rounds. r (B, C) or
    partials (S, B, C)."""
    if r is not None and r.dim() == 3:
        r = r.sum(0).to(x.dtype)
    s = x if r is None else x + r
    h = s.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(s.dtype), s


def silu_mul_ref(gu):
    """gu (B, 2M) = [gate | up] -> silu(gate) * up (B, M)."""
    gate, up = gu.chunk(2, dim=-1)
    return F.silu(gate) * up


# ------------------------------------------------------------------------------------------ the kernels
@triton.jit
def pdl_wait(USE_GDC: tl.constexpr):
    """First thing in every decode kernel. Launched with programmatic dependent launch (kernels.pdl_options), a
    kernel may start while the one before it ends: it waits here until that kernel's writes are done, then lets
    the next kernel start its own launch."""
    if USE_GDC:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def summed_partials(X, NP: tl.constexpr, sxp, offs, mask):
    """X[offs] summed over NP split-K partials sxp apart (kernels/skinny.py leaves its partials for the kernel
    that reads the projection next), in fp32; NP = 1 reads a tensor as it is. NP is a compile-time constant (1..8
    in practice), so the loop is unrolled and its NP loads are in flight together, not one after another."""
    x = tl.zeros(offs.shape, tl.float32)
    for p in tl.static_range(NP):
        x += tl.load(X + p * sxp + offs, mask=mask, other=0.0).to(tl.float32)
    return x


@triton.jit
def _rope_cache_write(QKV, BIAS, INV_FREQ, SLOT, START, Q_OUT, KC, VC, NP: tl.constexpr, sxp, sxb, skb, skh,
                      sks, svb, svh, svs, H, K, D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_START: tl.constexpr,
                      USE_GDC: tl.constexpr):
    pdl_wait(USE_GDC)
    b = tl.program_id(0)
    h = tl.program_id(1)  # 0..H-1 query heads, H..H+K-1 key heads, H+K..H+2K-1 value heads
    HALF: tl.constexpr = D // 2
    offs = tl.arange(0, HALF)
    x1 = summed_partials(QKV, NP, sxp, b * sxb + h * D + offs, offs < HALF)  # (NP = 1: its bf16 output as is)
    x2 = summed_partials(QKV, NP, sxp, b * sxb + h * D + HALF + offs, offs < HALF)
    if HAS_BIAS:
        x1 += tl.load(BIAS + h * D + offs).to(tl.float32)
        x2 += tl.load(BIAS + h * D + HALF + offs).to(tl.float32)
    x1 = x1.to(KC.dtype.element_ty).to(tl.float32)  # the projection rounded once, as a GEMM rounds its output
    x2 = x2.to(KC.dtype.element_ty).to(tl.float32)
    slot = tl.load(SLOT)
    pos = slot
    if HAS_START:
        pos = tl.maximum(slot - tl.load(START + b), 0)
    ang = pos.to(tl.float32) * tl.load(INV_FREQ + offs)  # (D/2,) the rotation angles of this row's position
    c, s = tl.cos(ang), tl.sin(ang)
    if h < H:
        dst = Q_OUT + (b * H + h) * D
        y1, y2 = x1 * c - x2 * s, x2 * c + x1 * s
    elif h < H + K:
        dst = KC + b * skb + (h - H) * skh + slot * sks
        y1, y2 = x1 * c - x2 * s, x2 * c + x1 * s
    else:
        dst = VC + b * svb + (h - H - K) * svh + slot * svs
        y1, y2 = x1, x2
    tl.store(dst + offs, y1.to(dst.dtype.element_ty))
    tl.store(dst + HALF + offs, y2.to(dst.dtype.element_ty))


@triton.jit
def residual_add(X, R, NP: tl.constexpr, srp, offs, mask, HAS_R: tl.constexpr):
    """s = x + r at X[offs] in X's dtype, rounded as the plain path rounds: r's NP partials (1: r as is) summed in
    fp32 and rounded once, as a GEMM rounds its output, then the sum (add_rms_norm here, and the GEMMs of
    kernels/skinny.py that take the norm in their prologue)."""
    s = tl.load(X + offs, mask=mask, other=0.0)
    if HAS_R:
        r = summed_partials(R, NP, srp, offs, mask).to(s.dtype).to(tl.float32)
        s = (s.to(tl.float32) + r).to(s.dtype)
    return s


@triton.jit
def rms_normed(s, rstd, w):
    """RMSNorm(s) with weight w, given rstd = 1 / rms(s) (broadcastable), rounded as model.rms_norm rounds: the
    normalised value in s's dtype, then the scale in fp32 -> fp32 (the caller rounds it to its output dtype)."""
    return (s.to(tl.float32) * rstd).to(s.dtype).to(tl.float32) * w.to(tl.float32)


@triton.jit
def _add_rms_norm(X, R, W, H_OUT, S_OUT, C, NP: tl.constexpr, srp, eps, HAS_R: tl.constexpr, BLOCK: tl.constexpr,
                  USE_GDC: tl.constexpr):
    pdl_wait(USE_GDC)
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    mask = offs < C
    s = residual_add(X, R, NP, srp, row * C + offs, mask, HAS_R)
    if HAS_R:
        tl.store(S_OUT + row * C + offs, s, mask=mask)
    sf = s.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(sf * sf, 0) / C + eps)
    h = rms_normed(s, rstd, tl.load(W + offs, mask=mask, other=0.0))
    tl.store(H_OUT + row * C + offs, h.to(H_OUT.dtype.element_ty), mask=mask)


@triton.jit
def swiglu_rounded(g, u, dtype: tl.constexpr):
    """silu(g) * u rounded as F.silu(gate) * up rounds in `dtype`: g and u fp32 holding dtype values, silu(g)
    rounded to dtype, then the product (silu_mul here, and kernels/skinny.py's gate_up_silu epilogue)."""
    act = (g / (1.0 + tl.exp(-g))).to(dtype).to(tl.float32)
    return (act * u).to(dtype)


@triton.jit
def _silu_mul(GU, OUT, M, BLOCK: tl.constexpr, USE_GDC: tl.constexpr):
    pdl_wait(USE_GDC)
    row = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    g = tl.load(GU + row * 2 * M + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(GU + row * 2 * M + M + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(OUT + row * M + offs, swiglu_rounded(g, u, OUT.dtype.element_ty), mask=mask)  # (OUT: gu's dtype)


# ------------------------------------------------------------------------------------------ wrappers
def rope_cache_write(qkv, inv_freq, k_cache, v_cache, slot, start, H, K, bias=None, pdl=False):
    """The kernel behind rope_cache_write_ref (same arguments; pdl: kernels.pdl_options). k/v_cache (B, K, S, D):
    last dim contiguous."""
    parts = qkv if qkv.dim() == 3 else qkv[None]  # (NP, B, W)
    _, B, width = parts.shape
    D = width // (H + 2 * K)
    if width != (H + 2 * K) * D or parts.stride(2) != 1 or k_cache.shape[1] != K or k_cache.stride(3) != 1:
        raise ValueError(f"rope_cache_write: qkv {tuple(qkv.shape)} and cache {tuple(k_cache.shape)} do not fit "
                         f"H={H}, K={K} heads with a contiguous last dim")
    if bias is not None and qkv.dim() != 3:
        raise ValueError("rope_cache_write: a bias goes with partials only (a GEMM's output has its bias added)")
    q = torch.empty(B, H, D, device=qkv.device, dtype=k_cache.dtype)
    st = start if start is not None else slot
    _rope_cache_write[(B, H + 2 * K)](parts, bias if bias is not None else parts, inv_freq, slot, st, q, k_cache,
                                      v_cache, parts.shape[0], parts.stride(0), parts.stride(1),
                                      *k_cache.stride()[:3], *v_cache.stride()[:3], H, K, D=D,
                                      HAS_BIAS=bias is not None, HAS_START=start is not None,
                                      **pdl_options(q.device, pdl))
    return q


def add_rms_norm(x, r, weight, eps, pdl=False):
    """The kernel behind add_rms_norm_ref (pdl: kernels.pdl_options): x (B, C), r (B, C) or partials (S, B, C) or
    None -> (h, s)."""
    C = x.shape[-1]
    x = x.contiguous()
    h = torch.empty_like(x)
    has_r = r is not None
    s = torch.empty_like(x) if has_r else x
    r = (r if r.dim() == 3 else r.view(1, -1, C)).contiguous() if has_r else x.view(1, -1, C)  # (NP, B, C)
    _add_rms_norm[(x.numel() // C,)](x, r, weight, h, s, C, r.shape[0], r.stride(0), eps, HAS_R=has_r,
                                     BLOCK=triton.next_power_of_2(C), **pdl_options(x.device, pdl))
    return h, s


def silu_mul(gu, pdl=False):
    """The kernel behind silu_mul_ref (pdl: kernels.pdl_options): gu (B, 2M) contiguous -> (B, M)."""
    B, M = gu.shape[0], gu.shape[1] // 2
    gu = gu.contiguous()
    out = torch.empty(B, M, device=gu.device, dtype=gu.dtype)
    block = 128 if INTERPRET else 1024
    _silu_mul[(B, triton.cdiv(M, block))](gu, out, M, BLOCK=block, **pdl_options(gu.device, pdl))
    return out


if __name__ == "__main__":  # each kernel against its twin at Qwen2.5-0.5B decode shapes, batch 64
    from triton.testing import do_bench
    B, H, K, D, S, C, M = 64, 14, 2, 64, 1024, 896, 4864
    dev, bf = "cuda", torch.bfloat16
    qkv = torch.randn(B, (H + 2 * K) * D, device=dev, dtype=bf)
    inv = 1.0 / 1e6 ** (torch.arange(0, D, 2, device=dev).float() / D)
    kc, vc = (torch.randn(B, K, S, D, device=dev, dtype=bf) for _ in range(2))
    slot, start = torch.tensor([700], device=dev), torch.zeros(B, dtype=torch.long, device=dev)
    x, r = (torch.randn(B, C, device=dev, dtype=bf) for _ in range(2))
    w = torch.ones(C, device=dev)
    gu = torch.randn(B, 2 * M, device=dev, dtype=bf)
    cases = {"rope_cache_write": (rope_cache_write, rope_cache_write_ref, (qkv, inv, kc, vc, slot, start, H, K)),
             "add_rms_norm": (add_rms_norm, add_rms_norm_ref, (x, r, w.to(bf), 1e-6)),
             "silu_mul": (silu_mul, silu_mul_ref, (gu,))}
    for name, (fast, ref, args) in cases.items():
        t_fast, t_ref = (do_bench(lambda f=f: f(*args), return_mode="median") for f in (fast, ref))
        print(f"{name:18s} kernel {t_fast * 1e3:7.1f} us, twin {t_ref * 1e3:7.1f} us, {t_ref / t_fast:.1f}x")
