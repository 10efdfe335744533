"""
Decode attention in Triton: one new query token per sequence over a static KV cache ("flash-decoding").

The math. Row b's new token attends to the cache slots start[b] <= j < lengths[b] (its own k/v already written):
    o = sum_j softmax_j(q . k_j * sm_scale) v_j
Decoding is memory-bound: every step reads the whole valid cache once and does only 2 flops per byte, so the
kernel's job is to keep HBM busy. Two ideas do that:
  1. Grouped-query attention shares one kv head among G = H / K query heads. A program loads each KV block once
     and scores all G heads against it with one small matrix product (the G heads padded to 16 rows, the
     smallest tl.dot), instead of G programs each reading the same keys.
  2. Split-K. B * K programs are too few to fill the GPU (64 rows x 2 kv heads = 128 programs on 132 SMs, each
     streaming 8k keys). The cache is cut into `num_splits` chunks; each (row, kv head, chunk) program computes
     a partial softmax, its unnormalised output normalised locally, o_s, and its log-sum-exp, lse_s. A second,
     tiny kernel combines them exactly:
        o = sum_s w_s o_s / sum_s w_s,   w_s = exp(lse_s - max_s lse_s)
     A chunk that holds no valid key has lse_s = -inf and weight 0 (and stores no o_s). With one chunk (enough
     rows to fill the GPU, or a short cache) the split kernel writes the output itself and the combine is skipped.
Nothing here reads lengths on the host (no .item()), so a decode step stays capturable in a CUDA graph; chunks are
cut from the cache size S, and chunks past a row's length end at once.

Shapes: B batch, H query heads, K kv heads, G = H // K, S cache slots, D head dim, NS splits.
Run `python kernels/decode.py` on a GPU for a bandwidth benchmark against torch SDPA.
"""
import functools
import math
import os

import torch
import triton
import triton.language as tl

from kernels.attention import LOG2E
from kernels import pdl_options
from kernels.fused import pdl_wait

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def decode_attention_ref(q, k_cache, v_cache, lengths, start=None, num_splits=None):
    """The kernel's naive twin and test oracle, in fp32. q (B, H, D), k/v_cache (B, K, S, D); valid keys
    start <= j < lengths (the masking rule of kernels.key_lower_bound for the newest query, i = lengths - 1)."""
    B, H, D = q.shape
    K, S = k_cache.shape[1], k_cache.shape[2]
    j = torch.arange(S, device=q.device)
    valid = j[None] < lengths.view(B, 1)  # (B, S)
    if start is not None:
        valid = valid & (j[None] >= start.view(B, 1))
    k = k_cache.float().repeat_interleave(H // K, 1)  # (B, H, S, D)
    v = v_cache.float().repeat_interleave(H // K, 1)
    s = torch.einsum("bhd,bhsd->bhs", q.float(), k) / math.sqrt(D)  # (B, H, S)
    s = s.masked_fill(~valid[:, None], float("-inf"))
    return torch.einsum("bhs,bhsd->bhd", s.softmax(-1), v).to(q.dtype)


def _configs():
    if INTERPRET:
        return [triton.Config({"BLOCK_N": 16}, num_warps=4, num_stages=1)]
    return [triton.Config({"BLOCK_N": n}, num_warps=w, num_stages=s)
            for n, w, s in ((64, 4, 3), (64, 4, 4), (128, 4, 3))]


@triton.autotune(configs=_configs(), key=["S", "CHUNK", "D", "G_PAD"])
@triton.jit
def _decode_split(Q, Kc, Vc, LEN, START, O_PART, LSE_PART, sm_scale, sqb, sqh, skb, skh, sks, svb, svh, svs,
                  s_len, s_start, KH, G, S, CHUNK, NS, D: tl.constexpr, G_PAD: tl.constexpr,
                  HAS_START: tl.constexpr, BLOCK_N: tl.constexpr, DIRECT: tl.constexpr, USE_GDC: tl.constexpr):
    pdl_wait(USE_GDC)
    bk = tl.program_id(0)
    split = tl.program_id(1)
    b, kh = bk // KH, bk % KH
    length = tl.load(LEN + b * s_len).to(tl.int32)
    lo = split * CHUNK
    if HAS_START:
        lo = tl.maximum(lo, tl.load(START + b * s_start).to(tl.int32))
    hi = tl.minimum(length, (split + 1) * CHUNK)  # this program's keys: lo <= j < hi (maybe none)
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, D)
    offs_nb = tl.arange(0, BLOCK_N)
    heads = kh * G + offs_g  # the query heads that share kv head kh; rows >= G are padding (zeros)
    q = tl.load(Q + b * sqb + heads[:, None] * sqh + offs_d[None, :], mask=offs_g[:, None] < G, other=0.0)
    Kh = Kc + b * skb + kh * skh
    Vh = Vc + b * svb + kh * svh
    qk_scale = sm_scale * LOG2E  # base-2 softmax
    m_i = tl.full([G_PAD], -1.0e30, tl.float32)
    l_i = tl.zeros([G_PAD], tl.float32)
    acc = tl.zeros([G_PAD, D], tl.float32)
    for n0 in range(lo, hi, BLOCK_N):
        offs_n = n0 + offs_nb
        valid = offs_n < hi
        k = tl.load(Kh + offs_n[:, None] * sks + offs_d[None, :], mask=valid[:, None], other=0.0)  # (BLOCK_N, D)
        v = tl.load(Vh + offs_n[:, None] * svs + offs_d[None, :], mask=valid[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k)) * qk_scale  # (G_PAD, BLOCK_N): all G heads from one read of the block
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    if DIRECT:  # one chunk (NS = 1): o is the output itself, O_PART the (B, H, D) output tensor
        o = acc / l_i[:, None]
        tl.store(O_PART + (b * KH * G + heads)[:, None] * D + offs_d[None, :], o.to(O_PART.dtype.element_ty),
                 mask=offs_g[:, None] < G)
    else:
        empty = l_i == 0.0  # no valid key in this chunk
        l_safe = tl.where(empty, 1.0, l_i)
        o = acc / l_safe[:, None]
        lse = tl.where(empty, float("-inf"), m_i + tl.math.log2(l_safe))
        part = (b * KH * G + heads) * NS + split  # (B, H, NS) row of each head's partial result
        stored = tl.where(hi > lo, G, 0)  # heads whose output is stored: none for an empty chunk (combine skips it)
        tl.store(O_PART + part[:, None] * D + offs_d[None, :], o, mask=offs_g[:, None] < stored)
        tl.store(LSE_PART + part, lse, mask=offs_g < G)


@triton.jit
def _decode_combine(O_PART, LSE_PART, OUT, NS, D: tl.constexpr, NS_PAD: tl.constexpr, USE_GDC: tl.constexpr):
    pdl_wait(USE_GDC)
    bh = tl.program_id(0)
    offs_s = tl.arange(0, NS_PAD)
    offs_d = tl.arange(0, D)
    lse = tl.load(LSE_PART + bh * NS + offs_s, mask=offs_s < NS, other=float("-inf"))  # (NS_PAD,)
    w = tl.math.exp2(lse - tl.max(lse, 0))  # exact rescaling of each chunk's softmax to the global max
    full = (offs_s < NS) & (lse > float("-inf"))  # an empty chunk wrote no output (its weight is 0)
    o = tl.load(O_PART + (bh * NS + offs_s)[:, None] * D + offs_d[None, :], mask=full[:, None], other=0.0)
    out = tl.sum(w[:, None] * o, 0) / tl.sum(w, 0)
    tl.store(OUT + bh * D + offs_d, out.to(OUT.dtype.element_ty))


@functools.lru_cache
def _num_sms(device_index):
    return torch.cuda.get_device_properties(device_index).multi_processor_count  # at call time, never at import


def default_num_splits(B, K, S, device):
    """Enough (row, kv head, chunk) programs for one wave over the SMs, chunks of at least 1,024 slots, or of 128
    where there are at most 8 (row, kv head) pairs (a handful of programs would each walk the whole cache). In
    whole decode steps of Qwen2.5-0.5B (README, "Sampling speed"): one chunk, with no combine kernel, was the
    fastest or within 1% from 64 up to 256 rows (longer chunks than these lost at 128 rows, shorter ones at 64);
    at one row 128-slot chunks beat one chunk."""
    sms = _num_sms(device.index if device.index is not None else torch.cuda.current_device()) \
        if device.type == "cuda" else 4
    return max(1, min(triton.cdiv(sms, B * K), triton.cdiv(S, 128 if B * K <= 8 else 1024)))


def decode_attention(q, k_cache, v_cache, lengths, start=None, num_splits=None, pdl=False):
    """q (B, H, D) one new token per row; k/v_cache (B, K, S, D) (slot dim any stride, last dim contiguous);
    lengths (B,) int (int32 or int64; an expanded view is fine): keys start[b] <= j < lengths[b] are valid.
    Returns (B, H, D) in q's dtype. pdl: programmatic dependent launch (kernels.pdl_options)."""
    B, H, D = q.shape
    _, K, S, _ = k_cache.shape
    if H % K or k_cache.shape != v_cache.shape or k_cache.shape[0] != B or k_cache.shape[3] != D:
        raise ValueError(f"decode_attention: q {tuple(q.shape)}, cache {tuple(k_cache.shape)}: need (B, H, D) and "
                         "(B, K, S, D) with H a multiple of K")
    q, k_cache, v_cache = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k_cache, v_cache))
    ns = num_splits or default_num_splits(B, K, S, q.device)
    chunk = triton.cdiv(S, ns)
    G = H // K
    has_start = start is not None
    st = start if has_start else lengths
    out = torch.empty(B, H, D, device=q.device, dtype=q.dtype)
    direct = ns == 1  # one chunk: the split kernel writes the output, no partials and no combine kernel
    o_part = out if direct else torch.empty(B, H, ns, D, device=q.device, dtype=torch.float32)
    lse_part = out if direct else torch.empty(B, H, ns, device=q.device, dtype=torch.float32)
    _decode_split[(B * K, ns)](q, k_cache, v_cache, lengths, st, o_part, lse_part, 1.0 / math.sqrt(D),
                               q.stride(0), q.stride(1), *k_cache.stride()[:3], *v_cache.stride()[:3],
                               lengths.stride(0), st.stride(0), K, G, S, chunk, ns, D=D,
                               G_PAD=max(16, triton.next_power_of_2(G)), HAS_START=has_start, DIRECT=direct,
                               **pdl_options(q.device, pdl))
    if not direct:
        _decode_combine[(B * H,)](o_part, lse_part, out, ns, D=D, NS_PAD=triton.next_power_of_2(ns),
                                  **pdl_options(q.device, pdl))
    return out


if __name__ == "__main__":  # KV-read bandwidth at batch 64, context 8k on Qwen2.5-0.5B shapes
    from triton.testing import do_bench
    import torch.nn.functional as F
    B, H, K, S, D = 64, 14, 2, 8192, 64
    q = torch.randn(B, H, D, device="cuda", dtype=torch.bfloat16)
    kc, vc = (torch.randn(B, K, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    lengths = torch.full((B,), S, device="cuda")
    nbytes = 2 * kc.numel() * kc.element_size()
    t_ours = do_bench(lambda: decode_attention(q, kc, vc, lengths), return_mode="median")
    t_sdpa = do_bench(lambda: F.scaled_dot_product_attention(q[:, :, None], kc, vc, enable_gqa=True),
                      return_mode="median")
    print(f"ours {nbytes / t_ours * 1e-9:.2f} TB/s, SDPA {nbytes / t_sdpa * 1e-9:.2f} TB/s, "
          f"ratio {t_sdpa / t_ours:.2f}x")
