"""
Fused LM head + log-softmax + gather: log p(target) (and the entropy) without ever holding the (N, V) logits.

The math. With z = h W^T / tau (tau the sampling temperature, so the trainer scores exactly what was sampled):
    lse_n = log sum_v exp(z_nv),   logp_n = z_n,t - lse_n,   H_n = -sum_v p_nv log p_nv = lse_n - sum_v p_nv z_nv
For Qwen's V = 151,936 and N = 16k tokens the logits alone are 5 GB in bf16 and 10 GB in fp32, and the naive path
keeps several such tensors alive for the backward pass (27.8 GiB peak). Here the vocabulary is cut into slices of
width VC (N * VC logits, ~512 MB) and only per-row running statistics survive from one slice to the next, merged
like the online softmax of FlashAttention:
    m' = max(m, max_v z),  l' = l e^(m - m') + sum_v e^(z - m'),  s' = s e^(m - m') + sum_v e^(z - m') z
    lse = m + log l,   sum_v p z = s / l
The backward pass recomputes each slice's logits (one more matmul; cheaper than storing them) and forms
    dL/dz_v = g_logp (1[v = t] - p_v)  -  g_H p_v (log p_v + H)          (d H / d z_v = -p_v (log p_v + H))
in place over the logits, then dW[slice] = dz^T h / tau (written once, no accumulation across slices) and
dh += dz W[slice] / tau (an (N, C) fp32 accumulator). The matmuls are cuBLAS's; Triton does the row-wise passes
over each slice (one read in the forward, one read + one write in the backward).

Targets must lie in [0, V); a target outside gives logp = -lse (it is never found). Shapes: N tokens, C hidden,
V vocab, VC vocab slice. Run `python kernels/logprob.py` on a GPU for memory and time against the naive path.
"""
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # no Triton for this platform (macOS, Windows): logprob_ref, the CPU path, still imports
    from types import SimpleNamespace
    triton, tl = SimpleNamespace(jit=lambda fn: fn), SimpleNamespace(constexpr=None)

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
BLOCK_V = 64 if INTERPRET else 2048  # columns a program handles per step of its walk along one row
SLICE_BYTES = 512 * 2**20  # the one (N, VC) logits buffer (fewer, larger slices: fewer passes over dh)


def logprob_ref(hidden, weight, targets, temperature=1.0, return_entropy=False):
    """The naive twin: materialise the (N, V) logits in fp32, log_softmax, gather."""
    logits = (hidden @ weight.T).float() / temperature  # (N, V)
    logp_all = logits.log_softmax(-1)
    logp = logp_all.gather(1, targets[:, None])[:, 0]  # (N,)
    if not return_entropy:
        return logp
    return logp, -(logp_all.exp() * logp_all).sum(-1)


@triton.jit
def _slice_stats(Z, TGT, M, L, S, ZT, v0, VC, inv_temp, BLOCK_V: tl.constexpr, ENTROPY: tl.constexpr):
    """Merge one vocab slice's logits (N, VC) into the running (m, l, s) of each row; pick the target's logit."""
    n = tl.program_id(0)
    t = tl.load(TGT + n) - v0  # the target's column within this slice (outside [0, VC): not here)
    m = tl.load(M + n)
    l = tl.load(L + n)
    s = tl.load(S + n)
    zt = tl.load(ZT + n)
    for c0 in range(0, VC, BLOCK_V):
        cols = c0 + tl.arange(0, BLOCK_V)
        inside = cols < VC  # the last block of the last slice is partial: V need not be a multiple of anything
        z = tl.load(Z + n.to(tl.int64) * VC + cols, mask=inside, other=float("-inf")).to(tl.float32) * inv_temp
        m_new = tl.maximum(m, tl.max(z, 0))  # finite: every block has at least one column inside
        alpha = tl.exp(m - m_new)
        e = tl.exp(z - m_new)  # 0 outside
        l = l * alpha + tl.sum(e, 0)
        if ENTROPY:
            s = s * alpha + tl.sum(e * tl.where(inside, z, 0.0), 0)  # (0 * -inf would be NaN)
        zt += tl.sum(tl.where((cols == t) & inside, z, 0.0), 0)  # a target just past this slice: not here
        m = m_new
    tl.store(M + n, m)
    tl.store(L + n, l)
    tl.store(S + n, s)
    tl.store(ZT + n, zt)


@triton.jit
def _slice_grad(Z, TGT, LSE, ENT, G_LOGP, G_ENT, v0, VC, inv_temp, BLOCK_V: tl.constexpr, ENTROPY: tl.constexpr):
    """Overwrite one slice's logits with dL/d(h W^T) = dL/dz / tau, row by row."""
    n = tl.program_id(0)
    t = tl.load(TGT + n) - v0
    lse = tl.load(LSE + n)
    g = tl.load(G_LOGP + n)
    if ENTROPY:
        ent = tl.load(ENT + n)
        g_ent = tl.load(G_ENT + n)
    row = Z + n.to(tl.int64) * VC
    for c0 in range(0, VC, BLOCK_V):
        cols = c0 + tl.arange(0, BLOCK_V)
        inside = cols < VC
        logp = tl.load(row + cols, mask=inside, other=0.0).to(tl.float32) * inv_temp - lse
        p = tl.exp(logp)
        dz = g * (tl.where(cols == t, 1.0, 0.0) - p)
        if ENTROPY:
            dz -= g_ent * p * (logp + ent)
        tl.store(row + cols, (dz * inv_temp).to(Z.dtype.element_ty), mask=inside)


def _slices(N, V, dtype, vocab_chunk):
    """Vocab slice width: the (N, VC) logits buffer stays near SLICE_BYTES."""
    vc = vocab_chunk or max(1024, SLICE_BYTES // (N * torch.finfo(dtype).bits // 8) // 1024 * 1024)
    return min(vc, V)


class _FusedLogprob(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, return_entropy, vocab_chunk):
        N, V = hidden.shape[0], weight.shape[0]
        VC = _slices(N, V, hidden.dtype, vocab_chunk)
        buf = torch.empty(N * VC, device=hidden.device, dtype=hidden.dtype)  # reused by every slice
        m = torch.full((N,), float("-inf"), device=hidden.device, dtype=torch.float32)
        l, s, zt = (torch.zeros(N, device=hidden.device, dtype=torch.float32) for _ in range(3))
        for v0 in range(0, V, VC):
            vc = min(VC, V - v0)
            z = buf[:N * vc].view(N, vc)
            torch.mm(hidden, weight[v0:v0 + vc].T, out=z)  # (N, vc) raw logits of this slice
            _slice_stats[(N,)](z, targets, m, l, s, zt, v0, vc, 1.0 / temperature, BLOCK_V=BLOCK_V,
                               ENTROPY=return_entropy)
        lse = m + l.log()
        logp = zt - lse
        ent = lse - s / l if return_entropy else None
        ctx.save_for_backward(hidden, weight, targets, lse, ent)
        ctx.temperature, ctx.vocab_chunk = temperature, vocab_chunk
        ctx.set_materialize_grads(False)
        return (logp, ent) if return_entropy else logp

    @staticmethod
    def backward(ctx, g_logp, g_ent=None):
        hidden, weight, targets, lse, ent = ctx.saved_tensors
        N, V = hidden.shape[0], weight.shape[0]
        need_h, need_w = ctx.needs_input_grad[:2]
        g_logp = torch.zeros_like(lse) if g_logp is None else g_logp.float().contiguous()
        use_ent = ent is not None and g_ent is not None
        g_ent = g_ent.float().contiguous() if use_ent else lse  # (an unused pointer without entropy)
        VC = _slices(N, V, hidden.dtype, ctx.vocab_chunk)
        buf = torch.empty(N * VC, device=hidden.device, dtype=hidden.dtype)
        dh = torch.zeros(N, hidden.shape[1], device=hidden.device, dtype=torch.float32) if need_h else None
        dw = torch.empty_like(weight) if need_w else None
        for v0 in range(0, V, VC):
            vc = min(VC, V - v0)
            z = buf[:N * vc].view(N, vc)
            torch.mm(hidden, weight[v0:v0 + vc].T, out=z)  # recompute the slice's logits ...
            _slice_grad[(N,)](z, targets, lse, ent if use_ent else lse, g_logp, g_ent, v0, vc, 1.0 / ctx.temperature,
                              BLOCK_V=BLOCK_V, ENTROPY=use_ent, num_warps=8)  # ... and turn them into their gradient
            if need_w:
                torch.mm(z.T, hidden, out=dw[v0:v0 + vc])  # (vc, C), each row of dW written once
            if need_h:
                dh += z @ weight[v0:v0 + vc]  # (N, C)
        return (dh.to(hidden.dtype) if need_h else None), dw, None, None, None, None


def fused_logprob(hidden, weight, targets, temperature=1.0, return_entropy=False, vocab_chunk=None):
    """hidden (N, C), weight (V, C) of one dtype, targets (N,) long -> logp (N,) fp32 [, entropy (N,) fp32] of
    softmax(hidden @ weight.T / temperature), gradients to hidden and weight. vocab_chunk: slice width (default:
    ~512 MB of logits)."""
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1] \
            or targets.shape != hidden.shape[:1]:
        raise ValueError(f"fused_logprob: hidden {tuple(hidden.shape)}, weight {tuple(weight.shape)}, targets "
                         f"{tuple(targets.shape)}: need (N, C), (V, C) and (N,); flatten batch and time first")
    if hidden.dtype != weight.dtype:
        raise ValueError(f"fused_logprob: hidden is {hidden.dtype} but weight is {weight.dtype}: cast one")
    if not temperature > 0:
        raise ValueError(f"fused_logprob: temperature must be > 0, got {temperature} (greedy: pass 1.0)")
    return _FusedLogprob.apply(hidden.contiguous(), weight.contiguous(), targets.contiguous(), float(temperature),
                               return_entropy, vocab_chunk)


def benchmark(N=16384, V=151936, C=896, temperature=0.7):
    """GPU: fused vs naive on an LM head of Qwen2.5-0.5B's size: extra peak memory (gradients included) and time."""
    from triton.testing import do_bench
    h = (torch.randn(N, C, device="cuda") * 0.5).bfloat16().requires_grad_()
    w = (torch.randn(V, C, device="cuda") * 0.02).bfloat16().requires_grad_()
    t = torch.randint(0, V, (N,), device="cuda")
    row = {"N": N, "V": V, "C": C}
    row["one_matmul_ms"] = do_bench(lambda: h @ w.T, return_mode="median")  # fwd+bwd need four of these
    for name, fn in (("fused", fused_logprob), ("naive", logprob_ref)):
        def step():
            fn(h, w, t, temperature).sum().backward()
        step()
        h.grad = w.grad = None
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        row[name + "_extra_peak_GiB"] = (torch.cuda.max_memory_allocated() - base) / 2**30
        h.grad = w.grad = None
        row[name + "_fwdbwd_ms"] = do_bench(step, grad_to_none=[h, w], return_mode="median")
        row[name + "_fwd_ms"] = do_bench(lambda: fn(h.detach(), w.detach(), t, temperature), return_mode="median")
    row["time_ratio_naive_over_fused"] = row["naive_fwdbwd_ms"] / row["fused_fwdbwd_ms"]
    return row


if __name__ == "__main__":  # N = 16k tokens on Qwen2.5-0.5B's LM head
    r = benchmark()
    for name in ("fused", "naive"):
        print(f"{name}: {r[name + '_fwdbwd_ms']:.1f} ms fwd+bwd, {r[name + '_extra_peak_GiB']:.2f} GiB extra peak "
              f"(weight grad included)")
    print(f"naive / fused time: {r['time_ratio_naive_over_fused']:.2f}x")
