"""Triton kernels with PyTorch twins: attention.py (training/prefill), decode.py (one token over a KV cache),
logprob.py (fused LM head + log-softmax + gather). Import the submodules directly; nothing here touches the GPU.

This file also holds what the model and the kernels must agree on and can import without Triton: the head dims
the kernels are written for, the masking rule of causal attention (key_lower_bound, visible_keys), and the layout
of the fused projections (stacked_linear).
"""
import torch

HEAD_DIMS = (16, 32, 64, 128)  # the head dims the attention kernels are written for (every Qwen2 has 64 or 128)


def key_lower_bound(B, T, device, start=None, cu_seqlens=None):
    """The masking rule, written once: query i of row b sees the keys lo[b, i] <= j <= i. Returns lo (B, T) int32.
      - causal only: lo = 0;
      - left padding (start (B,)): keys before the row's first real token do not exist, lo >= start[b];
      - packing (cu_seqlens (n+1,), B == 1): no attention across documents, lo >= the first token of i's document;
      - lo <= i always: a padding query (i < start[b]) sees only itself, so no softmax row is empty (nothing NaN);
        its output is never used.
    lo is non-decreasing in i, which the Triton kernel uses to skip whole key blocks (kernels/attention.py)."""
    i = torch.arange(T, device=device, dtype=torch.int32)
    lo = torch.zeros(B, T, device=device, dtype=torch.int32)
    if start is not None:
        lo = torch.maximum(lo, start.to(device=device, dtype=torch.int32).view(B, 1))
    if cu_seqlens is not None:
        cu = cu_seqlens.to(device=device, dtype=torch.int32)
        doc = torch.searchsorted(cu[1:], i, right=True)  # (T,) document index of each token
        lo = torch.maximum(lo, cu[doc.clamp(max=cu.numel() - 1)][None])
    return torch.minimum(lo, i[None])


def visible_keys(lo):
    """lo (B, T) from key_lower_bound -> boolean (B, T, T), True where query i may see key j (lo_i <= j <= i)."""
    j = torch.arange(lo.shape[1], device=lo.device)
    return (j[None, None, :] <= j[None, :, None]) & (j[None, None, :] >= lo[:, :, None])


def stacked_linear(linears):
    """(weight, bias or None) of several nn.Linear layers that read the same input, side by side as one layer's:
    [q | k | v], [gate | up]. The layout both fused GEMMs use: model.fused_linear (training, prefill) and
    kernels/step.py's packed decode weights."""
    weight = torch.cat([lin.weight for lin in linears])
    bias = torch.cat([lin.bias for lin in linears]) if linears[0].bias is not None else None
    return weight, bias


def pdl_options(device, pdl):
    """The decode kernels' USE_GDC switch and launch option. pdl=True asks for programmatic dependent launch
    (Hopper and later; ignored elsewhere): the kernel may start while the kernel before it finishes, and waits
    (gdc_wait) before it reads anything, so only launch and set-up overlap. Asked at call time, never at import."""
    on = pdl and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9
    return dict(USE_GDC=True, launch_pdl=True) if on else dict(USE_GDC=False)
