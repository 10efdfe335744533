"""
Small fused kernels of the decode step, in Triton, each with its PyTorch twin (`*_ref`).

At decode time a layer moves ~30 MB of weights and a few kB of activations, so every separate elementwise kernel
costs a launch (a few microseconds) for almost no bytes. These kernels each do in one launch what the plain path
does in four to eight:

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
  4. sample_race: temperature sampling by the exponential race on raw logits, token = argmax_v (z_v / T - log E_v)
     (= argmax p_v / E_v, E ~ Exp(1)), and the token's log-prob z_tok / T - logsumexp(z / T), in one pass over the
     vocabulary (online max and sum, as in a softmax kernel, in chunks combined exactly). The noise E is drawn in
     the kernel (Philox, counter (column // 4, row, step), four columns a draw; key a seed drawn once per generate
     call from torch's generator): reading a noise tensor from memory took as long as the race itself. race_noise
     writes the same E for the twin. sample.sample_token stays the readable path (and the one with top-k/p).
  5. record_step: the sampled token's booking (decode_step.record_step_ref: output columns, EOS, lengths, done,
     the next step's input token and the step counters) in one launch instead of about fifteen.

Shapes: B rows, H query heads, K kv heads, D head dim, S cache slots, C hidden, M MLP width, V vocab.
None of these has a backward: they serve generation only (no_grad); training keeps model.py's fused twins.
"""
import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernels import pdl_options

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# Vocabulary columns per step of sample_race's walk along a chunk, and per program: 38 programs per row for a 152k
# vocabulary. (In the interpreter each Philox call costs ~8 ms whatever its block: few, wide blocks, still two steps
# and two chunks for the tests' 1,000-column vocabulary.)
BLOCK_V = 256 if INTERPRET else 1024
RACE_CHUNK = (2 if INTERPRET else 4) * BLOCK_V


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


def sample_race_ref(logits, noise, temperature):
    """logits (B, V) any float dtype, noise (B, V) fp32 Exp(1) (race_noise's, for sample_race's tokens) ->
    token (B,), its fp32 log-prob (B,)."""
    z = logits.float() / temperature
    tok = (z - noise.log()).argmax(-1)
    return tok, z.gather(1, tok[:, None])[:, 0] - z.logsumexp(-1)


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
def _add_rms_norm(X, R, W, H_OUT, S_OUT, C, NP: tl.constexpr, srp, eps, HAS_R: tl.constexpr, BLOCK: tl.constexpr,
                  USE_GDC: tl.constexpr):
    pdl_wait(USE_GDC)
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    mask = offs < C
    s = tl.load(X + row * C + offs, mask=mask, other=0.0)
    if HAS_R:
        r = summed_partials(R, NP, srp, row * C + offs, mask)  # NP partials of r (1: r as is)
        r = r.to(s.dtype).to(tl.float32)  # rounded once, as a GEMM rounds its output
        s = (s.to(tl.float32) + r).to(s.dtype)
        tl.store(S_OUT + row * C + offs, s, mask=mask)
    sf = s.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(sf * sf, 0) / C + eps)
    h = (sf * rstd).to(s.dtype).to(tl.float32) * tl.load(W + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(H_OUT + row * C + offs, h.to(H_OUT.dtype.element_ty), mask=mask)


@triton.jit
def _silu_mul(GU, OUT, M, BLOCK: tl.constexpr, USE_GDC: tl.constexpr):
    pdl_wait(USE_GDC)
    row = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    g = tl.load(GU + row * 2 * M + offs, mask=mask, other=0.0)
    u = tl.load(GU + row * 2 * M + M + offs, mask=mask, other=0.0).to(tl.float32)
    gf = g.to(tl.float32)
    act = (gf / (1.0 + tl.exp(-gf))).to(g.dtype).to(tl.float32)  # F.silu rounds to the input dtype, then * up
    tl.store(OUT + row * M + offs, (act * u).to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _exp_noise(seed, step, row, v0, BLOCK_V: tl.constexpr):
    """Exp(1) noise E (fp32) of columns v0 .. v0 + BLOCK_V - 1 of one row at one decode step (v0 a multiple of 4):
    Philox 4x32 keyed by `seed` (64 bits) gives four words per counter (column // 4, row, step, 0), the uniforms u
    in [0, 1) of four neighbouring columns in order; E = -log u. (One Philox per column, keeping one word, made the
    noise the sampling kernel's main cost: ten rounds of multiplies per column against one read of its logit.)"""
    quad = (v0 // 4 + tl.arange(0, BLOCK_V // 4)).to(tl.uint32)
    zero = tl.zeros_like(quad)
    r0, r1, r2, r3 = tl.philox(seed, quad, zero + row.to(tl.uint32), zero + step.to(tl.uint32), zero)
    r = tl.reshape(tl.join(tl.join(r0, r2), tl.join(r1, r3)), [BLOCK_V])  # column 4q + j: word j of counter q
    return -tl.log(tl.random.uint_to_uniform_float(r))


@triton.jit
def _race_noise(SEED, STEP, E, V, BLOCK_V: tl.constexpr):
    row = tl.program_id(0)
    v0 = tl.program_id(1) * BLOCK_V
    cols = v0 + tl.arange(0, BLOCK_V)
    e = _exp_noise(tl.load(SEED), tl.load(STEP), row, v0, BLOCK_V)
    tl.store(E + row.to(tl.int64) * V + cols, e, mask=cols < V)


@triton.jit
def _race_partial(Z, SEED, STEP, M_OUT, L_OUT, BEST_OUT, ARG_OUT, V, NS, inv_temp, CHUNK: tl.constexpr,
                  BLOCK_V: tl.constexpr, USE_GDC: tl.constexpr):
    pdl_wait(USE_GDC)
    row = tl.program_id(0)
    split = tl.program_id(1)  # this program's columns: split * CHUNK .. (split + 1) * CHUNK
    seed, step = tl.load(SEED), tl.load(STEP)
    offs = tl.arange(0, BLOCK_V)
    m = tl.full([BLOCK_V], float("-inf"), tl.float32)  # per-lane running max and sum of exp(z / T)
    l = tl.zeros([BLOCK_V], tl.float32)
    best = tl.full([BLOCK_V], float("-inf"), tl.float32)  # per-lane best race score and its column
    arg = tl.zeros([BLOCK_V], tl.int32)
    for v0 in range(split * CHUNK, split * CHUNK + CHUNK, BLOCK_V):
        cols = v0 + offs
        mask = cols < V
        z = tl.load(Z + row.to(tl.int64) * V + cols, mask=mask, other=float("-inf")).to(tl.float32) * inv_temp
        e = _exp_noise(seed, step, row, v0, BLOCK_V)
        m_new = tl.maximum(m, z)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a lane with no column yet: exp(-inf) = 0, no NaN
        l = l * tl.exp(m - m_safe) + tl.where(mask, tl.exp(z - m_safe), 0.0)
        m = m_new
        race = tl.where(mask, z - tl.log(e), float("-inf"))
        better = race > best  # strict: the first column wins a tie, as torch.argmax does
        best = tl.where(better, race, best)
        arg = tl.where(better, cols, arg)
    top = tl.max(best, 0)
    m_top = tl.max(m, 0)
    out = row * NS + split
    tl.store(M_OUT + out, m_top)
    tl.store(L_OUT + out, tl.sum(l * tl.exp(m - tl.where(m_top == float("-inf"), 0.0, m_top)), 0))
    tl.store(BEST_OUT + out, top)
    tl.store(ARG_OUT + out, tl.min(tl.where(best == top, arg, V), 0))  # lowest column reaching the best score


@triton.jit
def _race_combine(Z, M_IN, L_IN, BEST_IN, ARG_IN, TOK, LOGP, V, NS, inv_temp, NS_PAD: tl.constexpr,
                  USE_GDC: tl.constexpr):
    pdl_wait(USE_GDC)
    row = tl.program_id(0)
    offs = tl.arange(0, NS_PAD)
    mask = offs < NS
    m = tl.load(M_IN + row * NS + offs, mask=mask, other=float("-inf"))
    l = tl.load(L_IN + row * NS + offs, mask=mask, other=0.0)
    best = tl.load(BEST_IN + row * NS + offs, mask=mask, other=float("-inf"))
    arg = tl.load(ARG_IN + row * NS + offs, mask=mask, other=V)
    m_row = tl.max(m, 0)
    lse = m_row + tl.log(tl.sum(l * tl.exp(m - m_row), 0))  # exact: each chunk's sum rescaled to the row max
    tok = tl.min(tl.where(best == tl.max(best, 0), arg, V), 0)
    z_tok = tl.load(Z + row.to(tl.int64) * V + tok).to(tl.float32) * inv_temp
    tl.store(TOK + row, tok.to(tl.int64))
    tl.store(LOGP + row, z_tok - lse)


@triton.jit
def _record_step(TOK, LP, EOS, T, SLOT, TOKENS, LOGPROBS, LENGTHS, DONE, TOK_NEXT, N, T_MAX, N_EOS: tl.constexpr,
                 ADVANCE_SLOT: tl.constexpr, BLOCK: tl.constexpr, USE_GDC: tl.constexpr):
    pdl_wait(USE_GDC)
    t = tl.load(T)  # one program for every row: it reads t before it advances t
    for r0 in range(0, N, BLOCK):
        rows = r0 + tl.arange(0, BLOCK)
        mask = rows < N
        tok = tl.load(TOK + rows, mask=mask, other=0)
        lp = tl.load(LP + rows, mask=mask, other=0.0)
        done = tl.load(DONE + rows, mask=mask, other=1) != 0
        eos = tl.zeros((BLOCK,), tl.int1)
        for e in tl.static_range(N_EOS):
            eos = eos | (tok == tl.load(EOS + e))
        hit = eos & ~done  # the rows that end here
        col = rows.to(tl.int64) * T_MAX + t
        tl.store(TOKENS + col, tl.where(done, 0, tok), mask=mask)
        tl.store(LOGPROBS + col, tl.where(done, 0.0, lp), mask=mask)
        tl.store(LENGTHS + rows, (t + 1).to(LENGTHS.dtype.element_ty), mask=mask & hit)
        tl.store(DONE + rows, (done | hit).to(DONE.dtype.element_ty), mask=mask)
        tl.store(TOK_NEXT + rows, tok, mask=mask)
    tl.store(T, t + 1)
    if ADVANCE_SLOT:
        tl.store(SLOT, tl.load(SLOT) + 1)


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


def race_noise(seed, step, B, V):
    """The Exp(1) noise (B, V) fp32 sample_race draws at `step` with `seed` (int64 tensors (1,) on the device)."""
    e, block = torch.empty(B, V, device=seed.device), 1024  # (any block, a multiple of 4: the counter is column // 4)
    _race_noise[(B, triton.cdiv(V, block))](seed, step, e, V, BLOCK_V=block)
    return e


def sample_race(logits, temperature, seed, step, pdl=False):
    """sample_race_ref(logits, race_noise(seed, step, B, V), temperature) with the noise drawn in the kernel, never
    stored (pdl: kernels.pdl_options): logits (B, V) contiguous, seed and step int64 (1,) on the device (a CUDA
    graph replays with their new values) -> token (B,), log-prob (B,).
    The vocabulary is cut into chunks, one program each (a row alone is too little work for the GPU); a second,
    tiny kernel combines the chunks' maxima, sums and winners exactly."""
    B, V = logits.shape
    ns = triton.cdiv(V, RACE_CHUNK)
    m, l, best = (torch.empty(B, ns, device=logits.device, dtype=torch.float32) for _ in range(3))
    arg = torch.empty(B, ns, device=logits.device, dtype=torch.int32)
    _race_partial[(B, ns)](logits.contiguous(), seed, step, m, l, best, arg, V, ns, 1.0 / temperature,
                           CHUNK=RACE_CHUNK, BLOCK_V=BLOCK_V, **pdl_options(logits.device, pdl))
    tok = torch.empty(B, device=logits.device, dtype=torch.long)
    logp = torch.empty(B, device=logits.device, dtype=torch.float32)
    _race_combine[(B,)](logits, m, l, best, arg, tok, logp, V, ns, 1.0 / temperature,
                        NS_PAD=triton.next_power_of_2(ns), **pdl_options(logits.device, pdl))
    return tok, logp


def record_step(tok, lp, eos, t, slot, tokens, logprobs, lengths, done, tok_next, advance_slot, pdl=False):
    """The kernel behind decode_step.record_step_ref (same arguments, updated in place; pdl: kernels.pdl_options):
    one launch for the dozen small ops that book a sampled token."""
    N = tok.shape[0]
    if tokens.shape[0] != N or not tokens.is_contiguous() or not logprobs.is_contiguous():
        raise ValueError(f"record_step: {N} rows, tokens {tuple(tokens.shape)}: need one row each, contiguous")
    _record_step[(1,)](tok, lp, eos, t, slot, tokens, logprobs, lengths, done, tok_next, N, tokens.shape[1],
                       N_EOS=eos.numel(), ADVANCE_SLOT=advance_slot, BLOCK=min(1024, triton.next_power_of_2(N)),
                       **pdl_options(tok.device, pdl))


if __name__ == "__main__":  # each kernel against its twin at Qwen2.5-0.5B decode shapes, batch 64
    from triton.testing import do_bench
    B, H, K, D, S, C, M, V = 64, 14, 2, 64, 1024, 896, 4864, 151936
    dev, bf = "cuda", torch.bfloat16
    qkv = torch.randn(B, (H + 2 * K) * D, device=dev, dtype=bf)
    inv = 1.0 / 1e6 ** (torch.arange(0, D, 2, device=dev).float() / D)
    kc, vc = (torch.randn(B, K, S, D, device=dev, dtype=bf) for _ in range(2))
    slot, start = torch.tensor([700], device=dev), torch.zeros(B, dtype=torch.long, device=dev)
    x, r = (torch.randn(B, C, device=dev, dtype=bf) for _ in range(2))
    w = torch.ones(C, device=dev)
    gu, z = torch.randn(B, 2 * M, device=dev, dtype=bf), torch.randn(B, V, device=dev, dtype=bf)
    seed, step = torch.tensor([1234], device=dev), torch.tensor([5], device=dev)
    race = lambda z, t: sample_race(z, t, seed, step)
    race_twin = lambda z, t: sample_race_ref(z, torch.empty(z.shape, device=dev).exponential_(), t)  # torch's noise
    cases = {"rope_cache_write": (rope_cache_write, rope_cache_write_ref, (qkv, inv, kc, vc, slot, start, H, K)),
             "add_rms_norm": (add_rms_norm, add_rms_norm_ref, (x, r, w.to(bf), 1e-6)),
             "silu_mul": (silu_mul, silu_mul_ref, (gu,)), "sample_race": (race, race_twin, (z, 1.0))}
    for name, (fast, ref, args) in cases.items():
        t_fast, t_ref = (do_bench(lambda f=f: f(*args), return_mode="median") for f in (fast, ref))
        print(f"{name:18s} kernel {t_fast * 1e3:7.1f} us, twin {t_ref * 1e3:7.1f} us, {t_ref / t_fast:.1f}x")
