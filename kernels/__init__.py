"""Triton kernels with PyTorch twins: attention.py (training/prefill), decode.py (one token over a KV cache),
logprob.py (fused LM head + log-softmax + gather). Import the submodules directly; nothing here touches the GPU."""
