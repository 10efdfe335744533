"""
Causal attention for training and prefill, FlashAttention-2 style, in Triton (forward and backward).

The math. For one query row i and the keys it may see, j in [lo_i, i]:
    s_ij = (q_i . k_j) * sm_scale,   p_ij = exp(s_ij - lse_i),   lse_i = log sum_j exp(s_ij),   o_i = sum_j p_ij v_j
The forward pass never holds the (T, T) matrix: a program owns BLOCK_M query rows and walks over the key blocks,
keeping a running max m_i, a running sum l_i and an unnormalised output (online softmax, FlashAttention-2 Alg. 1):
    m' = max(m, rowmax(s)),  l' = l * exp(m - m') + rowsum(exp(s - m')),  acc' = acc * exp(m - m') + exp(s - m') V
It stores o = acc / l and lse = m + log l (in base 2: exp2 is the fast instruction, so scores are scaled by log2 e).
The backward pass recomputes p from q, k and the stored lse instead of saving it (FA-2 §3.2). With do = dL/do:
    dv_j = sum_i p_ij do_i,   dp_ij = do_i . v_j,   ds_ij = p_ij (dp_ij - delta_i),   delta_i = do_i . o_i
    dq_i = sm_scale sum_j ds_ij k_j,   dk_j = sm_scale sum_i ds_ij q_i
One program per key block accumulates dk, dv (looping over the G query heads that share that kv head, so K/V
are never repeated for grouped-query attention and no atomics are needed); a second kernel computes dq per query
block. All three kernels walk the same key/query ranges; only blocks that straddle a boundary pay for the mask.

Which keys a query sees is one rule, lo_i <= j <= i, with lo (B, T) built in PyTorch from the batch layout by
kernels.key_lower_bound, the same function model.attention_mask is built from:
  - causal only: lo = 0;
  - left padding: lo_i = start[b] (keys before the first real token do not exist);
  - packing (cu_seqlens, B == 1): lo_i = first token of i's document (no attention across documents).
A padding query (i < start[b]) sees only itself: every row has a key, nothing is NaN.
lo is non-decreasing in i, so the queries that see key j form one range [j, hi_j) with hi = searchsorted(lo, j).

Shapes: B batch, H query heads, K kv heads, G = H // K, T time, D head dim (64 or 128).
Run `python kernels/attention.py` on a GPU for a benchmark against torch SDPA (flash backend).
"""
import math
import os

import torch
import triton
import triton.language as tl

from kernels import HEAD_DIMS, key_lower_bound, visible_keys

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # CPU interpreter: one small config, no autotuning
LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x * LOG2E): the kernels run base-2 softmaxes


def attention_ref(q, k, v, start=None, cu_seqlens=None, sm_scale=None):
    """The kernel's naive twin and test oracle: the full (B, H, T, T) score matrix in fp32, softmax written out.
    q (B, H, T, D), k/v (B, K, T, D). (model.attention_sdpa is the model's readable path, through torch SDPA.)"""
    B, H, T, D = q.shape
    G = H // k.shape[1]
    sm_scale = sm_scale or 1.0 / math.sqrt(D)
    visible = visible_keys(key_lower_bound(B, T, q.device, start, cu_seqlens))  # (B, T, T)
    k, v = k.repeat_interleave(G, 1).float(), v.repeat_interleave(G, 1).float()  # (B, H, T, D)
    s = (q.float() @ k.transpose(-1, -2)) * sm_scale  # (B, H, T, T)
    s = s.masked_fill(~visible[:, None], float("-inf"))
    return (s.softmax(-1) @ v).to(q.dtype)


def _configs(m_n_w_s, small):
    """Autotuning candidates (BLOCK_M, BLOCK_N, num_warps, num_stages); one small config in the interpreter."""
    if INTERPRET:
        m_n_w_s = [small]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in m_n_w_s]


# ---------------------------------------------------------------------------------------------- forward
@triton.jit
def _fwd_inner(acc, m_i, l_i, q, Kh, Vh, skt, svt, lo_rows, offs_m, offs_d, T, qk_scale, n_start, n_end,
               BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
    offs_nb = tl.arange(0, BLOCK_N)
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n = n0 + offs_nb
        if MASKED:  # a block on the diagonal or across a start/document boundary (or past T)
            k = tl.load(Kh + offs_n[:, None] * skt + offs_d[None, :], mask=offs_n[:, None] < T, other=0.0)
            v = tl.load(Vh + offs_n[:, None] * svt + offs_d[None, :], mask=offs_n[:, None] < T, other=0.0)
        else:
            k = tl.load(Kh + offs_n[:, None] * skt + offs_d[None, :])
            v = tl.load(Vh + offs_n[:, None] * svt + offs_d[None, :])
        s = tl.dot(q, tl.trans(k))  # (BLOCK_M, BLOCK_N) raw scores; scaled below inside one fused multiply-add
        if MASKED:
            visible = (offs_n[None, :] <= offs_m[:, None]) & (offs_n[None, :] >= lo_rows[:, None])
            s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)  # starts at -1e30, not -inf: a masked row stays finite
        p = tl.math.exp2(s * qk_scale - m_new[:, None])  # log2 units
        alpha = tl.math.exp2(m_i - m_new)  # rescales what was summed under the old max
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])  # accumulate inside the matrix unit
        m_i = m_new
    return acc, m_i, l_i


@triton.autotune(configs=_configs([(128, 64, 4, 3), (128, 128, 8, 3), (128, 64, 8, 4)], small=(32, 16, 4, 1)),
                 key=["T_KEY", "D", "HAS_LO"])
@triton.jit
def _attn_fwd(Q, K, V, O, LSE, LO, sm_scale, sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sob, soh, sot,
              H, G, T, T_KEY, D: tl.constexpr, HAS_LO: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)  # last query blocks have the most keys: start them first
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    Kh = K + b * skb + (h // G) * skh  # the kv head this query head shares with G - 1 others
    Vh = V + b * svb + (h // G) * svh
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :], mask=offs_m[:, None] < T, other=0.0)
    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    qk_scale = sm_scale * LOG2E
    lo_rows = tl.zeros([BLOCK_M], tl.int32)
    n_free = 0  # key blocks in [n_free, m0) are visible to every row of this block: no mask
    if HAS_LO:
        lo_rows = tl.load(LO + b * T + offs_m, mask=offs_m < T, other=0)
        lo_first = tl.load(LO + b * T + m0)  # lo is non-decreasing: first and last row bound the block
        lo_last = tl.load(LO + b * T + tl.minimum(m0 + BLOCK_M, T) - 1)
        n_free = tl.minimum(tl.cdiv(lo_last, BLOCK_N) * BLOCK_N, m0)
        acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, Kh, Vh, skt, svt, lo_rows, offs_m, offs_d, T, qk_scale,
                                   lo_first // BLOCK_N * BLOCK_N, n_free, BLOCK_N, True)
    acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, Kh, Vh, skt, svt, lo_rows, offs_m, offs_d, T, qk_scale,
                               n_free, m0, BLOCK_N, False)
    acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, Kh, Vh, skt, svt, lo_rows, offs_m, offs_d, T, qk_scale,
                               m0, tl.minimum(m0 + BLOCK_M, T), BLOCK_N, True)
    o = acc / l_i[:, None]
    tl.store(O + b * sob + h * soh + offs_m[:, None] * sot + offs_d[None, :], o.to(O.dtype.element_ty),
             mask=offs_m[:, None] < T)
    tl.store(LSE + bh * T + offs_m, m_i + tl.math.log2(l_i), mask=offs_m < T)  # base-2 log-sum-exp


# --------------------------------------------------------------------------------------------- backward
@triton.jit
def _bwd_delta(O, DO, DELTA, sob, soh, sot, sdb, sdh, sdt, H, T, D: tl.constexpr, BLOCK_M: tl.constexpr):
    """delta_i = do_i . o_i (B, H, T) fp32, the row term of ds."""
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    rows = offs_m[:, None] < T
    o = tl.load(O + b * sob + h * soh + offs_m[:, None] * sot + offs_d[None, :], mask=rows, other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + offs_m[:, None] * sdt + offs_d[None, :], mask=rows, other=0.0)
    tl.store(DELTA + bh * T + offs_m, tl.sum(o.to(tl.float32) * do.to(tl.float32), 1), mask=offs_m < T)


@triton.jit
def _dkdv_inner(dk, dv, k, v, Qh, DOh, LSEh, DELTAh, LOb, sqt, sdt, offs_n, offs_d, T, qk_scale, m_start, m_end,
                BLOCK_M: tl.constexpr, MASKED: tl.constexpr, HAS_LO: tl.constexpr):
    offs_mb = tl.arange(0, BLOCK_M)
    for m0 in range(m_start, m_end, BLOCK_M):
        offs_m = m0 + offs_mb
        rows = offs_m < T
        qT = tl.load(Qh + offs_m[None, :] * sqt + offs_d[:, None], mask=rows[None, :], other=0.0)  # (D, BLOCK_M)
        do = tl.load(DOh + offs_m[:, None] * sdt + offs_d[None, :], mask=rows[:, None], other=0.0)  # (BLOCK_M, D)
        lse = tl.load(LSEh + offs_m, mask=rows, other=0.0)
        delta = tl.load(DELTAh + offs_m, mask=rows, other=0.0)
        pT = tl.math.exp2(tl.dot(k, qT) * qk_scale - lse[None, :])  # (BLOCK_N, BLOCK_M) = p transposed
        if MASKED:
            visible = (offs_m[None, :] >= offs_n[:, None]) & rows[None, :]
            if HAS_LO:
                lo = tl.load(LOb + offs_m, mask=rows, other=0)
                visible = visible & (offs_n[:, None] >= lo[None, :])
            pT = tl.where(visible, pT, 0.0)
        dv = tl.dot(pT.to(do.dtype), do, dv)
        dpT = tl.dot(v, tl.trans(do))  # (BLOCK_N, BLOCK_M)
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(qT.dtype), tl.trans(qT), dk)
    return dk, dv


@triton.autotune(configs=_configs([(64, 128, 8, 3), (32, 128, 4, 3), (64, 64, 4, 3)], small=(16, 32, 4, 1)),
                 key=["T_KEY", "D", "HAS_LO"])
@triton.jit
def _attn_bwd_dkdv(Q, K, V, DO, DK, DV, LSE, DELTA, LO, HI, sm_scale, sqb, sqh, sqt, skb, skh, skt, svb, svh, svt,
                   sdb, sdh, sdt, H, KH, G, T, T_KEY, D: tl.constexpr, HAS_LO: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    n0 = tl.program_id(0) * BLOCK_N  # first key blocks are seen by the most queries and run first
    bk = tl.program_id(1)
    b, kh = bk // KH, bk % KH
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    cols = offs_n[:, None] < T
    k = tl.load(K + b * skb + kh * skh + offs_n[:, None] * skt + offs_d[None, :], mask=cols, other=0.0)
    v = tl.load(V + b * svb + kh * svh + offs_n[:, None] * svt + offs_d[None, :], mask=cols, other=0.0)
    dk = tl.zeros([BLOCK_N, D], tl.float32)
    dv = tl.zeros([BLOCK_N, D], tl.float32)
    qk_scale = sm_scale * LOG2E
    # Queries in [n0 + BLOCK_N, m_free) see every key of this block (no mask); the tail up to m_end is masked.
    m_end = T
    m_free = tl.maximum(n0 + BLOCK_N, T // BLOCK_M * BLOCK_M)
    if HAS_LO:
        m_free = tl.maximum(n0 + BLOCK_N, tl.load(HI + b * T + n0) // BLOCK_M * BLOCK_M)
        m_end = tl.load(HI + b * T + tl.minimum(n0 + BLOCK_N, T) - 1)  # past it no query sees this block
    for g in range(G):  # the query heads that share kv head kh
        bh = b * H + kh * G + g
        Qh = Q + b * sqb + (kh * G + g) * sqh
        DOh = DO + b * sdb + (kh * G + g) * sdh
        dk, dv = _dkdv_inner(dk, dv, k, v, Qh, DOh, LSE + bh * T, DELTA + bh * T, LO + b * T, sqt, sdt, offs_n,
                             offs_d, T, qk_scale, n0, tl.minimum(n0 + BLOCK_N, T), BLOCK_M, True, HAS_LO)
        dk, dv = _dkdv_inner(dk, dv, k, v, Qh, DOh, LSE + bh * T, DELTA + bh * T, LO + b * T, sqt, sdt, offs_n,
                             offs_d, T, qk_scale, n0 + BLOCK_N, m_free, BLOCK_M, False, HAS_LO)
        dk, dv = _dkdv_inner(dk, dv, k, v, Qh, DOh, LSE + bh * T, DELTA + bh * T, LO + b * T, sqt, sdt, offs_n,
                             offs_d, T, qk_scale, m_free, m_end, BLOCK_M, True, HAS_LO)
    # dk, dv share k's strides (allocated with empty_like)
    tl.store(DK + b * skb + kh * skh + offs_n[:, None] * skt + offs_d[None, :], (dk * sm_scale).to(DK.dtype.element_ty),
             mask=cols)
    tl.store(DV + b * svb + kh * svh + offs_n[:, None] * svt + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=cols)


@triton.jit
def _dq_inner(dq, q, do, lse, delta, Kh, Vh, skt, svt, lo_rows, offs_m, offs_d, T, qk_scale, n_start, n_end,
              BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
    offs_nb = tl.arange(0, BLOCK_N)
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n = n0 + offs_nb
        kT = tl.load(Kh + offs_n[None, :] * skt + offs_d[:, None], mask=offs_n[None, :] < T, other=0.0)  # (D, BN)
        vT = tl.load(Vh + offs_n[None, :] * svt + offs_d[:, None], mask=offs_n[None, :] < T, other=0.0)
        p = tl.math.exp2(tl.dot(q, kT) * qk_scale - lse[:, None])  # (BLOCK_M, BLOCK_N)
        if MASKED:
            visible = (offs_n[None, :] <= offs_m[:, None]) & (offs_n[None, :] >= lo_rows[:, None])
            p = tl.where(visible, p, 0.0)
        ds = p * (tl.dot(do, vT) - delta[:, None])
        dq = tl.dot(ds.to(kT.dtype), tl.trans(kT), dq)
    return dq


@triton.autotune(configs=_configs([(128, 64, 8, 3), (64, 64, 4, 3), (128, 32, 4, 3)], small=(32, 16, 4, 1)),
                 key=["T_KEY", "D", "HAS_LO"])
@triton.jit
def _attn_bwd_dq(Q, K, V, DO, DQ, LSE, DELTA, LO, sm_scale, sqb, sqh, sqt, skb, skh, skt, svb, svh, svt,
                 sdb, sdh, sdt, H, G, T, T_KEY, D: tl.constexpr, HAS_LO: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    rows = offs_m < T
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :], mask=rows[:, None], other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + offs_m[:, None] * sdt + offs_d[None, :], mask=rows[:, None], other=0.0)
    lse = tl.load(LSE + bh * T + offs_m, mask=rows, other=0.0)
    delta = tl.load(DELTA + bh * T + offs_m, mask=rows, other=0.0)
    Kh = K + b * skb + (h // G) * skh
    Vh = V + b * svb + (h // G) * svh
    dq = tl.zeros([BLOCK_M, D], tl.float32)
    qk_scale = sm_scale * LOG2E
    lo_rows = tl.zeros([BLOCK_M], tl.int32)
    n_free = 0  # same three key ranges as the forward pass
    if HAS_LO:
        lo_rows = tl.load(LO + b * T + offs_m, mask=rows, other=0)
        lo_first = tl.load(LO + b * T + m0)
        n_free = tl.minimum(tl.cdiv(tl.load(LO + b * T + tl.minimum(m0 + BLOCK_M, T) - 1), BLOCK_N) * BLOCK_N, m0)
        dq = _dq_inner(dq, q, do, lse, delta, Kh, Vh, skt, svt, lo_rows, offs_m, offs_d, T, qk_scale,
                       lo_first // BLOCK_N * BLOCK_N, n_free, BLOCK_N, True)
    dq = _dq_inner(dq, q, do, lse, delta, Kh, Vh, skt, svt, lo_rows, offs_m, offs_d, T, qk_scale, n_free, m0,
                   BLOCK_N, False)
    dq = _dq_inner(dq, q, do, lse, delta, Kh, Vh, skt, svt, lo_rows, offs_m, offs_d, T, qk_scale, m0,
                   tl.minimum(m0 + BLOCK_M, T), BLOCK_N, True)
    tl.store(DQ + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :], (dq * sm_scale).to(DQ.dtype.element_ty),
             mask=rows[:, None])


# ---------------------------------------------------------------------------------------------- wrapper
def _strides(x):
    return x.stride(0), x.stride(1), x.stride(2)


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, lo, hi, sm_scale):
        B, H, T, D = q.shape
        K = k.shape[1]
        o = torch.empty(B, T, H, D, device=q.device, dtype=q.dtype).transpose(1, 2)  # (B, H, T) view of (B, T, H, D)
        lse = torch.empty(B, H, T, device=q.device, dtype=torch.float32)
        has_lo = lo is not None
        lo_arg = lo if has_lo else lse  # an unused pointer when there is no boundary
        t_key = triton.next_power_of_2(T)  # autotune once per power of two, not once per length

        def grid(meta):
            return triton.cdiv(T, meta["BLOCK_M"]), B * H
        _attn_fwd[grid](q, k, v, o, lse, lo_arg, sm_scale, *_strides(q), *_strides(k), *_strides(v), *_strides(o),
                        H, H // K, T, t_key, D=D, HAS_LO=has_lo)
        ctx.save_for_backward(q, k, v, o, lse, lo, hi)
        ctx.sm_scale = sm_scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, lo, hi = ctx.saved_tensors
        B, H, T, D = q.shape
        K = k.shape[1]
        if do.stride(-1) != 1:
            do = do.contiguous()
        has_lo = lo is not None
        lo_arg, hi_arg = (lo, hi) if has_lo else (lse, lse)
        t_key = triton.next_power_of_2(T)
        delta = torch.empty_like(lse)
        _bwd_delta[(triton.cdiv(T, 64), B * H)](o, do, delta, *_strides(o), *_strides(do), H, T, D=D, BLOCK_M=64)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        assert dk.stride() == k.stride() and dv.stride() == v.stride()

        def grid_kv(meta):
            return triton.cdiv(T, meta["BLOCK_N"]), B * K
        _attn_bwd_dkdv[grid_kv](q, k, v, do, dk, dv, lse, delta, lo_arg, hi_arg, ctx.sm_scale, *_strides(q),
                                *_strides(k), *_strides(v), *_strides(do), H, K, H // K, T, t_key, D=D, HAS_LO=has_lo)

        def grid_q(meta):
            return triton.cdiv(T, meta["BLOCK_M"]), B * H
        assert dq.stride() == q.stride()
        _attn_bwd_dq[grid_q](q, k, v, do, dq, lse, delta, lo_arg, ctx.sm_scale, *_strides(q), *_strides(k),
                             *_strides(v), *_strides(do), H, H // K, T, t_key, D=D, HAS_LO=has_lo)
        return dq, dk, dv, None, None, None


def _dense(x):
    """x itself when its elements fill one gap-free block in some dimension order (the backward allocates dq/dk/dv
    with empty_like and reads them with x's strides, so they must be the same), else a (B, T, H, D) copy: e.g. v as
    a slice of a fused q/k/v projection's output (model.fused_linear), which steps over the q and k columns."""
    if x.stride(-1) == 1 and torch.empty_like(x).stride() == x.stride():
        return x
    return x.transpose(1, 2).contiguous().transpose(1, 2)


def attention(q, k, v, start=None, cu_seqlens=None, sm_scale=None):
    """Causal GQA attention. q (B, H, T, D), k/v (B, K, T, D) with any gap-free strides (the transposed views of
    (B, T, H, D) projections are read in place; views with gaps are copied first). start (B,) int: keys j < start[b] are
    masked; cu_seqlens (n+1,) int with B == 1: block-diagonal causal. Returns (B, H, T, D), a transposed view of
    a (B, T, H, D) tensor, so `.transpose(1, 2).reshape(B, T, H * D)` is free."""
    B, H, T, D = q.shape
    if k.shape[1] == 0 or H % k.shape[1] or k.shape != v.shape or k.shape[::2] != q.shape[::2]:
        raise ValueError(f"attention: q {tuple(q.shape)} and k/v {tuple(k.shape)}: need (B, H, T, D) and (B, K, T, D)"
                         " with H a multiple of K")
    if D not in HEAD_DIMS:
        raise ValueError(f"attention: head dim {D} unsupported: use one of {HEAD_DIMS} (or attention_ref)")
    if cu_seqlens is not None and B != 1:
        raise ValueError(f"attention: cu_seqlens needs one packed row (B == 1), got B = {B}")
    q, k, v = (_dense(x) for x in (q, k, v))
    lo = hi = None
    if start is not None or cu_seqlens is not None:
        lo = key_lower_bound(B, T, q.device, start, cu_seqlens)  # (B, T)
        hi = torch.searchsorted(lo, torch.arange(T, device=q.device, dtype=torch.int32).expand(B, T).contiguous(),
                                right=True).to(torch.int32)  # (B, T): queries that see key j end at hi[j]
    return _Attention.apply(q, k, v, lo, hi, sm_scale or 1.0 / math.sqrt(D))


if __name__ == "__main__":  # benchmark on Qwen2.5-0.5B shapes; bench/bench_kernels.py has the full table
    from triton.testing import do_bench
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    H, K, D = 14, 2, 64
    for T in (1024, 2048, 4096):
        B = 16384 // T
        q = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        k, v = (torch.randn(B, K, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
        do = torch.randn_like(q)
        flops = 4 * B * H * T * T * D / 2  # causal: half the score matrix
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            t_ref = do_bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True))
        t_ours = do_bench(lambda: attention(q, k, v))
        print(f"T={T}: ours {flops / t_ours * 1e-9:.0f} TFLOP/s, SDPA-flash {flops / t_ref * 1e-9:.0f} TFLOP/s, "
              f"ratio {t_ref / t_ours:.2f}x")
