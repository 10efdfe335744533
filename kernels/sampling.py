"""
The decode step's sampling kernels, in Triton, each with its PyTorch twin: plain temperature sampling by the
exponential race, on logits or inside the LM head's GEMM, and the booking of the sampled token.

  1. sample_race: temperature sampling by the exponential race on raw logits, token = argmax_v (z_v / T - log E_v)
     (= argmax p_v / E_v, E ~ Exp(1)), and the token's log-prob z_tok / T - logsumexp(z / T), in one pass over the
     vocabulary (online max and sum, as in a softmax kernel, in chunks combined exactly). The noise E is drawn in
     the kernel (Philox, counter (column // 4, row, step), four columns a draw; key a seed drawn once per generate
     call from torch's generator): reading a noise tensor from memory took as long as the race itself. race_noise
     writes the same E for the twin. sample.sample_token stays the readable path (and the one with top-k/p).
  2. sample_lm_head: the same race inside the LM head's GEMM: each (rows, columns) tile of logits is raced in the
     epilogue and leaves only its per-row max, sum, winner and the winner's z, so the (B, V) logits are never
     stored; the same combine kernel finishes both.
  3. record_step: the sampled token's booking (decode_step.record_step_ref: output columns, EOS, lengths, done,
     the next step's input token and the step counters) in one launch instead of about fifteen.

Shapes: B rows, V vocab, C hidden, T new tokens.
Run `python kernels/sampling.py` on a GPU for each kernel against its twin.
"""
import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernels import pdl_options
from kernels.fused import pdl_wait

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# Vocabulary columns per step of sample_race's walk along a chunk, and per program: 38 programs per row for a 152k
# vocabulary. (In the interpreter each Philox call costs ~8 ms whatever its block: few, wide blocks, still two steps
# and two chunks for the tests' 1,000-column vocabulary.)
BLOCK_V = 256 if INTERPRET else 1024
RACE_CHUNK = (2 if INTERPRET else 4) * BLOCK_V


# ------------------------------------------------------------------------------------------ the twins
def sample_race_ref(logits, noise, temperature):
    """logits (B, V) any float dtype, noise (B, V) fp32 Exp(1) (race_noise's, for sample_race's tokens) ->
    token (B,), its fp32 log-prob (B,)."""
    z = logits.float() / temperature
    tok = (z - noise.log()).argmax(-1)
    return tok, z.gather(1, tok[:, None])[:, 0] - z.logsumexp(-1)


# ------------------------------------------------------------------------------------------ the kernels
@triton.jit
def _exp_noise_tile(seed, step, rows, v0, BLOCK_V: tl.constexpr):
    """Exp(1) noise E (fp32) of columns v0 .. v0 + BLOCK_V - 1 of rows `rows` (BLOCK_M,) at one decode step (v0 a
    multiple of 4) -> (BLOCK_M, BLOCK_V): Philox 4x32 keyed by `seed` (64 bits) gives four words per counter
    (column // 4, row, step, 0), the uniforms u in [0, 1) of four neighbouring columns in order; E = -log u. (One
    Philox per column, keeping one word, made the noise the sampling kernel's main cost: ten rounds of multiplies
    per column against one read of its logit.)"""
    quad = (v0 // 4 + tl.arange(0, BLOCK_V // 4)).to(tl.uint32)
    zero = tl.zeros([rows.shape[0], BLOCK_V // 4], tl.uint32)
    r0, r1, r2, r3 = tl.philox(seed, zero + quad[None, :], zero + rows.to(tl.uint32)[:, None],
                               zero + step.to(tl.uint32), zero)
    r = tl.reshape(tl.join(tl.join(r0, r2), tl.join(r1, r3)), [rows.shape[0], BLOCK_V])  # column 4q + j: word j
    return -tl.log(tl.random.uint_to_uniform_float(r))


@triton.jit
def _exp_noise(seed, step, row, v0, BLOCK_V: tl.constexpr):
    """_exp_noise_tile of one row -> (BLOCK_V,)."""
    return tl.reshape(_exp_noise_tile(seed, step, tl.zeros([1], tl.int32) + row, v0, BLOCK_V), [BLOCK_V])


@triton.jit
def _race_noise(SEED, STEP, E, V, BLOCK_V: tl.constexpr):
    row = tl.program_id(0)
    v0 = tl.program_id(1) * BLOCK_V
    cols = v0 + tl.arange(0, BLOCK_V)
    e = _exp_noise(tl.load(SEED), tl.load(STEP), row, v0, BLOCK_V)
    tl.store(E + row.to(tl.int64) * V + cols, e, mask=cols < V)


@triton.jit
def _race_partial(Z, SEED, STEP, M_OUT, L_OUT, BEST_OUT, ARG_OUT, ZB_OUT, V, NS, inv_temp, CHUNK: tl.constexpr,
                  BLOCK_V: tl.constexpr, USE_GDC: tl.constexpr):
    pdl_wait(USE_GDC)
    row = tl.program_id(0)
    split = tl.program_id(1)  # this program's columns: split * CHUNK .. (split + 1) * CHUNK
    seed, step = tl.load(SEED), tl.load(STEP)
    offs = tl.arange(0, BLOCK_V)
    m = tl.full([BLOCK_V], float("-inf"), tl.float32)  # per-lane running max and sum of exp(z / T)
    l = tl.zeros([BLOCK_V], tl.float32)
    best = tl.full([BLOCK_V], float("-inf"), tl.float32)  # per-lane best race score, its column and z there
    arg = tl.zeros([BLOCK_V], tl.int32)
    zb = tl.zeros([BLOCK_V], tl.float32)
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
        zb = tl.where(better, z, zb)
    top = tl.max(best, 0)
    m_top = tl.max(m, 0)
    out = row * NS + split
    win = tl.min(tl.where(best == top, arg, V), 0)  # lowest column reaching the best score
    tl.store(M_OUT + out, m_top)
    tl.store(L_OUT + out, tl.sum(l * tl.exp(m - tl.where(m_top == float("-inf"), 0.0, m_top)), 0))
    tl.store(BEST_OUT + out, top)
    tl.store(ARG_OUT + out, win)
    tl.store(ZB_OUT + out, tl.max(tl.where((best == top) & (arg == win), zb, float("-inf")), 0))


@triton.jit
def _lm_head_race(X, W, SEED, STEP, M_OUT, L_OUT, BEST_OUT, ARG_OUT, ZB_OUT, B, V, C, NS, sxb, swn, inv_temp,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, USE_GDC: tl.constexpr):
    pdl_wait(USE_GDC)
    pid_m = tl.program_id(0)  # row tiles vary fastest: the programs running together share a weight tile (L2)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows, cols = offs_m < B, offs_n < V
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(0, C, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        in_k = offs_k < C
        x = tl.load(X + offs_m[:, None] * sxb + offs_k[None, :], mask=rows[:, None] & in_k[None, :], other=0.0)
        w = tl.load(W + offs_n[:, None].to(tl.int64) * swn + offs_k[None, :], mask=cols[:, None] & in_k[None, :],
                    other=0.0)
        acc = tl.dot(x, tl.trans(w), acc)
    # The logits as the LM head's GEMM leaves them (rounded to the weights' dtype), then what _race_partial does.
    z = tl.where(cols[None, :], acc.to(W.dtype.element_ty).to(tl.float32) * inv_temp, float("-inf"))
    e = _exp_noise_tile(tl.load(SEED), tl.load(STEP), offs_m, pid_n * BLOCK_N, BLOCK_N)
    m = tl.max(z, 1)  # (BLOCK_M,) every tile has a column < V
    race = tl.where(cols[None, :], z - tl.log(e), float("-inf"))
    top = tl.max(race, 1)
    win = tl.min(tl.where(race == top[:, None], offs_n[None, :], V), 1)  # lowest column reaching the best score
    out = offs_m * NS + pid_n
    tl.store(M_OUT + out, m, mask=rows)
    tl.store(L_OUT + out, tl.sum(tl.exp(z - m[:, None]), 1), mask=rows)
    tl.store(BEST_OUT + out, top, mask=rows)
    tl.store(ARG_OUT + out, win, mask=rows)
    tl.store(ZB_OUT + out, tl.max(tl.where(offs_n[None, :] == win[:, None], z, float("-inf")), 1), mask=rows)


@triton.jit
def _race_combine(M_IN, L_IN, BEST_IN, ARG_IN, ZB_IN, TOK, LOGP, V, NS, NS_PAD: tl.constexpr,
                  USE_GDC: tl.constexpr):
    pdl_wait(USE_GDC)
    row = tl.program_id(0)
    offs = tl.arange(0, NS_PAD)
    mask = offs < NS
    m = tl.load(M_IN + row * NS + offs, mask=mask, other=float("-inf"))
    l = tl.load(L_IN + row * NS + offs, mask=mask, other=0.0)
    best = tl.load(BEST_IN + row * NS + offs, mask=mask, other=float("-inf"))
    arg = tl.load(ARG_IN + row * NS + offs, mask=mask, other=V)
    zb = tl.load(ZB_IN + row * NS + offs, mask=mask, other=float("-inf"))
    m_row = tl.max(m, 0)
    lse = m_row + tl.log(tl.sum(l * tl.exp(m - m_row), 0))  # exact: each chunk's sum rescaled to the row max
    top = tl.max(best, 0)
    tok = tl.min(tl.where(best == top, arg, V), 0)  # the lowest column among the chunks' winners
    z_tok = tl.max(tl.where((best == top) & (arg == tok), zb, float("-inf")), 0)
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
def race_noise(seed, step, B, V):
    """The Exp(1) noise (B, V) fp32 sample_race draws at `step` with `seed` (int64 tensors (1,) on the device)."""
    e, block = torch.empty(B, V, device=seed.device), 1024  # (any block, a multiple of 4: the counter is column // 4)
    _race_noise[(B, triton.cdiv(V, block))](seed, step, e, V, BLOCK_V=block)
    return e


def _race_outputs(B, ns, device):
    """The per-chunk partials (max, sum, best score, its column, z there) of B rows in ns chunks, and the outputs."""
    m, l, best, zb = (torch.empty(B, ns, device=device, dtype=torch.float32) for _ in range(4))
    arg = torch.empty(B, ns, device=device, dtype=torch.int32)
    tok = torch.empty(B, device=device, dtype=torch.long)
    return (m, l, best, arg, zb), tok, torch.empty(B, device=device, dtype=torch.float32)


def sample_race(logits, temperature, seed, step, pdl=False):
    """sample_race_ref(logits, race_noise(seed, step, B, V), temperature) with the noise drawn in the kernel, never
    stored (pdl: kernels.pdl_options): logits (B, V) contiguous, seed and step int64 (1,) on the device (a CUDA
    graph replays with their new values) -> token (B,), log-prob (B,).
    The vocabulary is cut into chunks, one program each (a row alone is too little work for the GPU); a second,
    tiny kernel combines the chunks' maxima, sums and winners exactly."""
    B, V = logits.shape
    ns = triton.cdiv(V, RACE_CHUNK)
    parts, tok, logp = _race_outputs(B, ns, logits.device)
    _race_partial[(B, ns)](logits.contiguous(), seed, step, *parts, V, ns, 1.0 / temperature,
                           CHUNK=RACE_CHUNK, BLOCK_V=BLOCK_V, **pdl_options(logits.device, pdl))
    _race_combine[(B,)](*parts, tok, logp, V, ns, NS_PAD=triton.next_power_of_2(ns), **pdl_options(logits.device, pdl))
    return tok, logp


def lm_head_race_config(B):
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) of sample_lm_head: the best of 8 tilings swept at the
    Qwen2.5-0.5B LM head (151,936 x 896) at 1, 64 and 128 rows (bench/decode_variants.py; README, "Sampling
    speed"). At 256 rows none beat cuBLAS's LM head + sample_race, hence kernels/step.py's LM_RACE_MAX_ROWS."""
    if INTERPRET:
        return 16, 4096, 16, 4, 1  # (wide column tiles: each Philox call costs the interpreter milliseconds)
    if B <= 16:
        return 16, 64, 128, 4, 3
    return (64, 128, 64, 8, 3) if B <= 64 else (128, 64, 64, 8, 3)


def sample_lm_head(h, weight, temperature, seed, step, pdl=False):
    """sample_race(F.linear(h, weight), temperature, seed, step) without the logits: the LM head's GEMM, whose
    epilogue runs the race on its tile of logits (its max, sum of exp and winner per row), then the same combine.
    The (B, V) logits are never written or read back. h (B, C), weight (V, C), last dims contiguous."""
    (B, C), V = h.shape, weight.shape[0]
    if weight.shape[1] != C or h.stride(1) != 1 or weight.stride(1) != 1:
        raise ValueError(f"sample_lm_head: h {tuple(h.shape)} and weight {tuple(weight.shape)}: need (B, C) and "
                         "(V, C), contiguous rows")
    block_m, block_n, block_k, warps, stages = lm_head_race_config(B)
    ns = triton.cdiv(V, block_n)
    parts, tok, logp = _race_outputs(B, ns, h.device)
    _lm_head_race[(triton.cdiv(B, block_m), ns)](h, weight, seed, step, *parts, B, V, C, ns, h.stride(0),
                                                weight.stride(0), 1.0 / temperature, BLOCK_M=block_m,
                                                BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps,
                                                num_stages=stages, **pdl_options(h.device, pdl))
    _race_combine[(B,)](*parts, tok, logp, V, ns, NS_PAD=triton.next_power_of_2(ns), **pdl_options(h.device, pdl))
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


if __name__ == "__main__":  # each kernel against its twin at the Qwen2.5-0.5B shape, batch 64
    from triton.testing import do_bench
    B, C, V = 64, 896, 151936
    dev, bf = "cuda", torch.bfloat16
    h, w = torch.randn(B, C, device=dev, dtype=bf), 0.02 * torch.randn(V, C, device=dev, dtype=bf)
    z = F.linear(h, w)
    seed, step = torch.tensor([1234], device=dev), torch.tensor([5], device=dev)
    noise = race_noise(seed, step, B, V)
    cases = {"sample_race": (lambda: sample_race(z, 1.0, seed, step), lambda: sample_race_ref(z, noise, 1.0)),
             "sample_lm_head": (lambda: sample_lm_head(h, w, 1.0, seed, step),
                                lambda: sample_race_ref(F.linear(h, w), noise, 1.0))}
    for name, (fast, ref) in cases.items():
        t_fast, t_ref = (do_bench(f, return_mode="median") for f in (fast, ref))
        print(f"{name:15s} kernel {t_fast * 1e3:7.1f} us, twin {t_ref * 1e3:7.1f} us, {t_ref / t_fast:.1f}x")
