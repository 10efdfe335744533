"""Triton kernels with PyTorch twins: attention.py (training/prefill), decode.py (one token over a KV cache),
logprob.py (fused LM head + log-softmax + gather). Import the submodules directly; nothing here touches the GPU."""

HEAD_DIMS = (16, 32, 64, 128)  # the head dims the attention kernels are written for (every Qwen2 has 64 or 128)
