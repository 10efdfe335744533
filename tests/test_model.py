"""model.py against transformers' Qwen2: checkpoints load through from_pretrained, logits agree, ours save back."""
import json
import shutil

import pytest
import torch
from conftest import FIXTURE, NO_COMPILER

from model import (Block, ModelConfig, Qwen2, apply_rope, attention_mask, fused, fused_linear, rms_norm,
                   rope_cos_sin, swiglu, swiglu_packed)

transformers = pytest.importorskip("transformers")

# fp32 on CPU: both implementations do the same arithmetic in a slightly different order; 1e-4 absolute on
# logits of order 1 leaves room for that and nothing else.
ATOL = 1e-4


def hf_model(tmp_path, seed=0, **kw):
    """A random transformers Qwen2 saved with its own save_pretrained, as a user's checkpoint would be."""
    cfg = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
               num_key_value_heads=2, rope_theta=10000.0, max_position_embeddings=256, tie_word_embeddings=False)
    cfg.update(kw)
    torch.manual_seed(seed)
    m = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**cfg)).eval()
    with torch.no_grad():  # random biases too, so a dropped bias would show
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    m.save_pretrained(tmp_path / "hf")
    return m, tmp_path / "hf"


@pytest.mark.parametrize("kw", [
    dict(),  # GQA 4/2, untied head
    dict(tie_word_embeddings=True),
    dict(num_attention_heads=8, num_key_value_heads=1, num_hidden_layers=4),  # multi-query
    dict(num_attention_heads=4, num_key_value_heads=4),  # plain multi-head
])
def test_logits_match_transformers(tmp_path, kw):
    hf, path = hf_model(tmp_path, **kw)
    ours = Qwen2.from_pretrained(path).eval()
    x = torch.randint(0, 512, (3, 21))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits, atol=ATOL, rtol=0)


def test_left_padding_matches_transformers(tmp_path):
    hf, path = hf_model(tmp_path)
    ours = Qwen2.from_pretrained(path).eval()
    x = torch.randint(0, 512, (2, 12))
    start = torch.tensor([0, 5])  # row 1 has 5 padding tokens on the left
    am = (torch.arange(12)[None] >= start[:, None]).long()
    pos = (torch.arange(12)[None] - start[:, None]).clamp(min=0)
    with torch.no_grad():
        ref = hf(x, attention_mask=am, position_ids=pos).logits
        got = ours(x, start=start)
    torch.testing.assert_close(got[1, 5:], ref[1, 5:], atol=ATOL, rtol=0)  # real tokens only
    torch.testing.assert_close(got[0], ref[0], atol=ATOL, rtol=0)


def test_packed_documents_do_not_attend_across(tmp_path):
    _, path = hf_model(tmp_path)
    m = Qwen2.from_pretrained(path).eval()
    docs = [torch.randint(0, 512, (n,)) for n in (5, 9, 3)]
    cu = torch.tensor([0, 5, 14, 17], dtype=torch.int32)
    pos = torch.cat([torch.arange(len(d)) for d in docs])[None]
    with torch.no_grad():
        packed = m(torch.cat(docs)[None], positions=pos, cu_seqlens=cu)[0]
        alone = torch.cat([m(d[None])[0] for d in docs])
    torch.testing.assert_close(packed, alone, atol=ATOL, rtol=0)


def test_attention_mask_never_leaves_a_row_empty():
    mask = attention_mask(2, 6, "cpu", start=torch.tensor([0, 4]))  # (B, 1, T, T)
    assert mask.any(-1).all()
    assert not mask[1, 0, 5, :4].any() and mask[1, 0, 5, 4:].all()


def test_attention_mask_by_hand_for_packing_and_padding():
    """The one masking rule (kernels.key_lower_bound) as a picture: two packed documents [0, 2) and [2, 5)."""
    mask = attention_mask(1, 5, "cpu", cu_seqlens=torch.tensor([0, 2, 5]))[0, 0].int().tolist()
    assert mask == [[1, 0, 0, 0, 0],
                    [1, 1, 0, 0, 0],
                    [0, 0, 1, 0, 0],
                    [0, 0, 1, 1, 0],
                    [0, 0, 1, 1, 1]]
    padded = attention_mask(1, 4, "cpu", start=torch.tensor([2]))[0, 0].int().tolist()
    assert padded == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]  # padding queries see only themselves


def test_real_qwen25_05b_shape_matches_transformers(tmp_path):
    """The fixture's real config.json (24 layers, 14/2 heads, 151936 vocab, tied) with random weights."""
    path = tmp_path / "q05"
    path.mkdir()
    shutil.copy(FIXTURE / "config.json", path / "config.json")
    cfg = transformers.Qwen2Config.from_pretrained(path)
    torch.manual_seed(0)
    with torch.device("meta"):
        ours = Qwen2(ModelConfig.from_json(path / "config.json"))
    from safetensors.torch import save_file
    state = {n: (torch.ones(p.shape) if "norm" in n else 0.02 * torch.randn(p.shape))
             for n, p in ours.state_dict().items() if n != "lm_head.weight"}
    save_file(state, path / "model.safetensors")
    del state
    ours = Qwen2.from_pretrained(path).eval()
    hf = transformers.Qwen2ForCausalLM.from_pretrained(path, config=cfg, dtype=torch.float32).eval()
    x = torch.randint(0, cfg.vocab_size, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits, atol=ATOL, rtol=0)
    assert sum(p.numel() for p in ours.parameters()) == 494_032_768  # Qwen2.5-0.5B's published count


def test_save_pretrained_loads_in_transformers(tmp_path, tiny_checkpoint):
    ours = Qwen2.from_pretrained(tiny_checkpoint).eval()
    ours.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "tokenizer.json").is_file()  # the tokenizer travels with the weights
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved").eval()
    x = torch.randint(0, 151936, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(x), atol=ATOL, rtol=0)
    again = Qwen2.from_pretrained(tmp_path / "saved")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ours.state_dict().values()))


def test_sharded_checkpoint_loads(tmp_path):
    hf, path = hf_model(tmp_path)
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    m = Qwen2.from_pretrained(tmp_path / "sharded").eval()
    x = torch.randint(0, 512, (1, 7))
    with torch.no_grad():
        torch.testing.assert_close(m(x), hf(x).logits, atol=ATOL, rtol=0)


def test_activation_checkpointing_gives_same_gradients(tiny_checkpoint):
    m = Qwen2.from_pretrained(tiny_checkpoint).train()
    x = torch.randint(0, 151936, (2, 9))
    grads = []
    for ckpt in (False, True):
        m.zero_grad()
        m.gradient_checkpointing = ckpt
        m(x).float().logsumexp(-1).mean().backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------ bad input: one line that says what to do

@pytest.mark.skipif(NO_COMPILER, reason="torch.compile on CPU needs a C++ compiler")
def test_fused_elementwise_twins_match_plain_pytorch():
    """The fast path's torch.compile'd RMSNorm, RoPE and SwiGLU (two and packed) give the plain functions' values
    and gradients, at two sequence lengths (one dynamic-shape compile serves both)."""
    g = torch.Generator().manual_seed(0)
    for T in (5, 12):
        x = torch.randn(2, T, 16, generator=g, requires_grad=True)
        w = torch.randn(16, generator=g, requires_grad=True)
        q = torch.randn(2, 3, T, 8, generator=g, requires_grad=True)
        cos, sin = rope_cos_sin(torch.arange(T)[None].expand(2, T), 8, 1e4, torch.float32)
        gate, up = (torch.randn(2, T, 24, generator=g, requires_grad=True) for _ in range(2))
        gu = torch.cat([gate, up], -1).detach().requires_grad_()
        for fn, args in ((rms_norm, (x, w, 1e-6)), (apply_rope, (q, cos, sin)), (swiglu, (gate, up)),
                         (swiglu_packed, (gu,))):
            leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
            want = fn(*args)
            want_grads = torch.autograd.grad(want.square().sum(), leaves)
            got = fused(fn)(*args)
            got_grads = torch.autograd.grad(got.square().sum(), leaves)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            for a, b in zip(got_grads, want_grads):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_fused_linear_equals_separate_projections():
    """One GEMM over concatenated weights gives each projection's output and each parameter's own gradient, with
    and without biases (q/k/v have them, gate/up not)."""
    torch.manual_seed(0)  # float64: the two paths sum in other orders, and float32's rounding then depends on the CPU
    x = torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True)
    for bias in (True, False):
        linears = [torch.nn.Linear(16, n, bias=bias, dtype=torch.float64) for n in (12, 4, 4)]
        leaves = [x, *(p for lin in linears for p in lin.parameters())]
        want = [lin(x) for lin in linears]
        got = fused_linear(x, linears).split([12, 4, 4], dim=-1)
        loss = lambda outs: sum((o * (i + 1)).square().sum() for i, o in enumerate(outs))  # each output its own weight
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        for a, b in zip(torch.autograd.grad(loss(got), leaves), torch.autograd.grad(loss(want), leaves)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def fast_path_case(num_hidden_layers):
    """(device, config) for running layers on the fast path: the GPU, or on CPU the Triton interpreter (skips
    otherwise); hidden 32 over 2 query heads and 1 kv head gives head dim 16, a size the kernels are written for."""
    import os
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the Triton kernel needs a GPU or its interpreter")
    return "cuda" if torch.cuda.is_available() else "cpu", ModelConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=num_hidden_layers,
        num_attention_heads=2, num_key_value_heads=1, rope_theta=1e4)


@pytest.mark.skipif(NO_COMPILER, reason="torch.compile on CPU needs a C++ compiler")
def test_fast_block_gives_the_plain_blocks_values_and_gradients():
    """A decoder layer on the fast path (fused q/k/v and gate/up GEMMs, compiled norms/RoPE/SwiGLU, the Triton
    attention kernel, here in its interpreter) gives the plain layer's output and every parameter's gradient,
    on a left-padded batch (fp32; head dim 16, a size the kernel is written for)."""
    dev, cfg = fast_path_case(num_hidden_layers=1)
    torch.manual_seed(0)
    block = Block(cfg).to(dev)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.2).add_(1.0 if p.dim() == 1 and p.numel() == 32 else 0.0)  # norms near 1
    B, T = 2, 7
    x = torch.randn(B, T, 32, device=dev)
    start = torch.tensor([0, 3], device=dev)
    positions = (torch.arange(T, device=dev)[None] - start[:, None]).clamp(min=0)
    cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta, torch.float32)
    results = []
    for fast in (False, True):
        xx = x.clone().requires_grad_()
        y = block(xx, cos, sin, start, None, None, None, 0, fast)
        keep = (torch.arange(T, device=dev)[None] >= start[:, None])[..., None]  # padding queries' rows unused
        grads = torch.autograd.grad((y * keep).square().sum(), [xx, *block.parameters()])
        results.append((y * keep, *grads))
    names = ["output", "input", *(n for n, _ in block.named_parameters())]
    # fp32: two summation orders -> 1e-5. On a GPU tl.dot rounds fp32 to tf32, and k's bias gradient is a sum of
    # terms that nearly cancel (a bias on k shifts all of a query's scores alike but for RoPE) -> 2e-2.
    tol = 1e-5 if dev == "cpu" else 2e-2
    for name, a, b in zip(names, *results):
        assert ((a - b).norm() / b.norm()).item() < tol, name


@pytest.mark.skipif(NO_COMPILER, reason="torch.compile on CPU needs a C++ compiler")
def test_fast_path_compiles_once_not_per_layer_or_length():
    """Three layers on the fast path compile each fused function once (RoPE twice: k's single head is a size-1
    dim), not once per layer; new batch sizes and lengths compile nothing; hitting the limit would be an error."""
    from torch._dynamo.utils import counters
    dev, cfg = fast_path_case(num_hidden_layers=3)
    torch.manual_seed(0)
    layers = Qwen2(cfg).model.layers.to(dev)
    compiled = []
    for B, T in ((3, 7), (5, 11), (6, 13)):  # (no size equal to another: Dynamo would guard on the equality)
        before = counters["frames"]["ok"]
        h = torch.randn(B, T, 32, device=dev, requires_grad=True)
        cos, sin = rope_cos_sin(torch.arange(T, device=dev)[None].expand(B, T), 16, 1e4, torch.float32)
        for i, layer in enumerate(layers):
            h = layer(h, cos, sin, None, None, None, None, i, True)
        h.sum().backward()
        compiled.append(counters["frames"]["ok"] - before)
    assert compiled[0] <= 4 and compiled[1:] == [0, 0], compiled  # (fewer than 4 where an earlier test compiled)
    assert torch._dynamo.config.fail_on_recompile_limit_hit and torch._dynamo.config.recompile_limit >= 64


@pytest.mark.skipif(NO_COMPILER, reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_block_gives_the_plain_values_and_compiles_once():
    """model.compiled_block (a whole decoder layer through torch.compile, the Triton attention outside it) gives
    the plain layers' outputs and gradients through three layers, and compiles once for all layers and lengths."""
    from torch._dynamo.utils import counters
    from model import compiled_block
    dev, cfg = fast_path_case(num_hidden_layers=3)
    torch.manual_seed(0)
    layers = Qwen2(cfg).model.layers.to(dev)
    compiled = []
    for B, T in ((3, 7), (5, 11), (6, 13)):
        before = counters["frames"]["ok"]
        x = torch.randn(B, T, 32, device=dev)
        cos, sin = rope_cos_sin(torch.arange(T, device=dev)[None].expand(B, T), 16, 1e4, torch.float32)
        results = []
        for whole in (False, True):
            h = x0 = x.clone().requires_grad_()
            for i, layer in enumerate(layers):
                if whole:
                    h = compiled_block()(layer, h, cos, sin, None, None, None, None, 0, True)
                else:
                    h = layer(h, cos, sin, None, None, None, None, i, False)
            results.append((h, *torch.autograd.grad(h.square().sum(), [x0, *layers.parameters()])))
        for a, b in zip(*results):
            assert ((a - b).norm() / b.norm()).item() < (1e-5 if dev == "cpu" else 2e-2)
        compiled.append(counters["frames"]["ok"] - before)
    assert compiled[1:] == [0, 0], compiled


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the model's fast path runs on CUDA only")
@pytest.mark.parametrize("checkpointing", [False, True])
def test_training_forward_with_compiled_blocks_matches_per_function_compile(checkpointing, monkeypatch):
    """Qwen2.forward on the fast path with model.COMPILE_BLOCKS on and off (with and without gradient
    checkpointing): the same loss and gradients, in fp32."""
    import model as model_module
    dev, cfg = fast_path_case(num_hidden_layers=2)
    torch.manual_seed(0)
    m = Qwen2(cfg).to(dev).train()
    m.use_kernels, m.gradient_checkpointing = True, checkpointing
    idx = torch.randint(0, 64, (3, 9), device=dev)
    start = torch.tensor([0, 2, 5], device=dev)
    results = []
    for on in (False, True):
        monkeypatch.setattr(model_module, "COMPILE_BLOCKS", on)
        loss = m(idx, start=start).float().logsumexp(-1).mean()
        results.append((loss, *torch.autograd.grad(loss, list(m.parameters()))))
    for a, b in zip(*results):
        assert ((a - b).norm() / b.norm()).item() < 2e-2


def test_missing_directory_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="model directory ./nowhere not found and not a known name"):
        Qwen2.from_pretrained("./nowhere")


def test_missing_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json not found in"):
        Qwen2.from_pretrained(tmp_path)


def test_missing_weights_file_is_a_clear_error(tmp_path, tiny_checkpoint):
    (tiny_checkpoint / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        Qwen2.from_pretrained(tiny_checkpoint)


def test_missing_tensor_is_a_clear_error(tmp_path, tiny_checkpoint):
    from safetensors.torch import load_file, save_file
    state = load_file(tiny_checkpoint / "model.safetensors")
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, tiny_checkpoint / "model.safetensors")
    with pytest.raises(ValueError, match="lacks tensor model.layers.1.mlp.up_proj.weight"):
        Qwen2.from_pretrained(tiny_checkpoint)


def test_shape_mismatch_is_a_clear_error(tiny_checkpoint):
    cfg = json.loads((tiny_checkpoint / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (tiny_checkpoint / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"tensor model\.layers\.0\.mlp\.\w+\.weight has shape \(\d+, \d+\) "
                                         r"but config\.json implies \((96, 32|32, 96)\)"):
        Qwen2.from_pretrained(tiny_checkpoint)


def test_unknown_short_name_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="not a known name: pass a Hugging Face model directory or one of "
                                                "qwen2.5-0.5b"):
        Qwen2.from_pretrained("qwen9-tiny")


def test_known_name_offline_names_the_repo(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with pytest.raises(FileNotFoundError, match="could not fetch Qwen/Qwen2.5-0.5B .* pass --model DIR"):
        Qwen2.from_pretrained("qwen2.5-0.5b")


def test_load_model_sets_up_model_tokenizer_device_dtype_and_kernels(tiny_checkpoint):
    from model import load_model
    model, tok = load_model(tiny_checkpoint, device="cpu")
    assert next(model.parameters()).dtype == torch.float32 and not model.use_kernels  # kernels need CUDA
    assert tok.encode("hello") and model.source_dir == tiny_checkpoint
    model, _ = load_model(tiny_checkpoint, device="cpu", dtype="bfloat16", kernels=False)
    assert next(model.parameters()).dtype == torch.bfloat16
