"""The KV-cached sampler against recomputing the full forward pass, and the sampling filters."""
import pytest
import torch
from conftest import NO_COMPILER, write_checkpoint

import sample
from model import ModelConfig, Qwen2
from sample import generate, sample_token
from tokenizer import Tokenizer

PROMPTS = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11, 12, 13, 14, 15, 16], [42]]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0, max_position_embeddings=128)
    return Qwen2(cfg).eval()


def full_forward_logits(model, prompt, completion):
    """Logits for each completion token from one forward over prompt + completion, no cache, no padding."""
    seq = torch.tensor([prompt + completion])
    with torch.no_grad():
        return model(seq)[0, len(prompt) - 1:-1].float()  # (T, V): position t predicts completion[t]


def test_kv_cache_greedy_matches_full_forward(model):
    out = generate(model, PROMPTS, max_new_tokens=24, temperature=0)
    for i, p in enumerate(PROMPTS):
        seq = list(p)
        for _ in range(24):  # argmax decoding by recomputing everything every step
            with torch.no_grad():
                seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
        assert out.tokens[i].tolist() == seq[len(p):], f"prompt {i} diverged"


@pytest.mark.skipif(NO_COMPILER, reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_decode_step_samples_the_eager_tokens(model):
    """generate(compile=True) (the plain path through torch.compile) draws the eager path's tokens and log-probs
    from the same seed, and a second call of another shape compiles anew rather than running eagerly."""
    for prompts, n in ((PROMPTS, 8), (PROMPTS[:2], 5)):
        eager = generate(model, prompts, num_samples=2, max_new_tokens=n, temperature=1.0, seed=3)
        compiled = generate(model, prompts, num_samples=2, max_new_tokens=n, temperature=1.0, seed=3, compile=True)
        assert compiled.tokens.tolist() == eager.tokens.tolist()
        torch.testing.assert_close(compiled.logprobs, eager.logprobs, rtol=1e-4, atol=1e-5)
    assert torch._dynamo.config.fail_on_recompile_limit_hit  # model.strict_compile: never silently eager


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_equal_log_softmax_of_full_forward(model, temperature):
    out = generate(model, PROMPTS, num_samples=3, max_new_tokens=16, temperature=temperature, seed=0)
    for r in range(len(PROMPTS) * 3):
        prompt, completion = PROMPTS[r // 3], out.tokens[r].tolist()
        logits = full_forward_logits(model, prompt, completion) / temperature
        want = logits.log_softmax(-1).gather(1, out.tokens[r][:, None])[:, 0]
        torch.testing.assert_close(out.logprobs[r], want, atol=1e-5, rtol=0)
    # Sampling builds no autograd graph (a graph over 1k decode steps of a 0.5B model fills an 80 GB GPU).
    assert torch.is_grad_enabled() and any(p.requires_grad for p in model.parameters())
    assert not out.logprobs.requires_grad


def test_samples_of_one_prompt_share_the_prompt_but_differ(model):
    out = generate(model, [PROMPTS[0]], num_samples=8, max_new_tokens=12, temperature=1.0, seed=0)
    assert len({tuple(t.tolist()) for t in out.tokens}) > 1


def test_seeded_sampling_is_reproducible(model):
    a = generate(model, PROMPTS, num_samples=2, max_new_tokens=10, seed=123)
    b = generate(model, PROMPTS, num_samples=2, max_new_tokens=10, seed=123)
    c = generate(model, PROMPTS, num_samples=2, max_new_tokens=10, seed=124)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.tokens, c.tokens)


def test_each_row_stops_at_its_own_eos(model):
    out = generate(model, PROMPTS, num_samples=4, max_new_tokens=40, temperature=1.5, seed=0, eos_ids={3, 4, 5, 6, 7})
    ended = [i for i, f in enumerate(out.finish) if f == "eos"]
    assert ended and len(ended) < len(out.finish)  # some rows stopped early, some ran to the limit
    for r in range(len(out.finish)):
        n = int(out.lengths[r])
        assert (out.tokens[r, n:] == 0).all() and (out.logprobs[r, n:] == 0).all()
        if out.finish[r] == "eos":
            assert int(out.tokens[r, n - 1]) in {3, 4, 5, 6, 7}
            assert not set(out.tokens[r, :n - 1].tolist()) & {3, 4, 5, 6, 7}
        else:
            assert n == 40


def test_top_k_and_top_p_never_pick_excluded_tokens():
    torch.manual_seed(0)
    logits = torch.randn(64, 50) * 3
    gen = torch.Generator().manual_seed(0)
    probs = logits.softmax(-1)
    topk = logits.topk(5, -1).indices
    # Nucleus set, naively: the most likely tokens, one at a time, until their mass reaches p.
    nucleus = []
    for row in probs:
        order, mass, keep = row.argsort(descending=True), 0.0, []
        for j in order.tolist():
            keep.append(j)
            mass += float(row[j])
            if mass >= 0.8:
                break
        nucleus.append(set(keep))
    for _ in range(50):
        tok, _ = sample_token(logits, top_k=5, generator=gen)
        assert all(int(t) in set(k.tolist()) for t, k in zip(tok, topk))
        tok, _ = sample_token(logits, top_p=0.8, generator=gen)
        assert all(int(t) in s for t, s in zip(tok, nucleus))


def test_sampling_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2, 0.0]])).expand(20000, 4)
    tok, logp = sample_token(logits, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(tok, minlength=4).float() / 20000
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.3, 0.2, 0.0]), atol=0.015, rtol=0)
    torch.testing.assert_close(logp.exp(), logits.softmax(-1).gather(1, tok[:, None])[:, 0])


def test_stop_strings_end_a_row_and_keep_the_stop(tmp_path):
    path = write_checkpoint(tmp_path / "tiny", num_hidden_layers=1)
    model, tok = Qwen2.from_pretrained(path).eval(), Tokenizer.from_dir(path)
    prompt = tok.encode("Once upon a time")
    free = generate(model, [prompt], num_samples=6, max_new_tokens=20, seed=3, tokenizer=tok)
    stop = free.texts[0][5:8]  # a string we know sample 0 will produce with this seed
    out = generate(model, [prompt], num_samples=6, max_new_tokens=20, seed=3, tokenizer=tok, stop=[stop])
    assert out.finish[0] == "stop"  # the completion ends with the token that completes the stop string:
    assert stop in out.texts[0] and stop not in tok.decode(out.tokens[0, :out.lengths[0] - 1].tolist())
    for r in range(6):  # rows are decided one by one: same seed, same sampled tokens up to the cut
        n = int(out.lengths[r])
        assert out.tokens[r, :n].tolist() == free.tokens[r, :n].tolist()
        assert (out.finish[r] == "stop") == (stop in free.texts[r])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA (pinned copies and events)"))])
def test_overlapped_host_checks_give_the_waiting_checks_result(tmp_path, monkeypatch, device):
    """HostChecks with overlap (the CUDA default: look at the copy made one check earlier) ends every row where
    the waiting look does, stop strings that straddle two checks included, and returns as many columns."""
    path = write_checkpoint(tmp_path / "tiny", num_hidden_layers=1)
    model, tok = Qwen2.from_pretrained(path).to(device).eval(), Tokenizer.from_dir(path)
    prompt = tok.encode("Once upon a time")
    free = generate(model, [prompt], num_samples=8, max_new_tokens=64, seed=5, tokenizer=tok)
    late, mid = free.texts[0][len(free.texts[0]) * 3 // 4:][:3], free.texts[3][len(free.texts[3]) // 2:][:3]
    for stop, early in (([late, mid], False), (["e", "a"], True)):
        runs = []
        for overlap in (False, True):
            monkeypatch.setattr(sample, "OVERLAP_CHECKS", overlap)
            runs.append(generate(model, [prompt], num_samples=8, max_new_tokens=64, seed=5, tokenizer=tok,
                                 stop=stop))
        waiting, overlapped = runs
        assert overlapped.tokens.equal(waiting.tokens) and overlapped.lengths.equal(waiting.lengths)
        assert overlapped.finish == waiting.finish and overlapped.texts == waiting.texts
        assert waiting.finish[0] == waiting.finish[3] == "stop"
        assert (waiting.tokens.shape[1] < 64) == early  # every row stopped: the output ends at that check


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_a_kept_decode_step_samples_what_a_fresh_one_does(device):
    """generate(keep=True) reuses the last call's decode step (cache, buffers, CUDA graph on the GPU) for a call of
    the same shape: other prompts (other lengths, the same cache length), the same seed, and weights changed in
    place as an optimizer step changes them, all give the tokens a fresh step gives."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    m = Qwen2(cfg).to(device).eval()
    eos = tuple(range(0, 1000, 40))  # 1 token in 40: some rows end early, some run to the length
    run = lambda prompts, **kw: generate(m, prompts, num_samples=3, max_new_tokens=40, seed=7, eos_ids=eos, **kw)
    other = [[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5], [8, 9], [2, 7], [1, 8, 2]]  # the same number, longer
    first = run(PROMPTS, keep=True)
    kept_step = next(iter(sample._kept.values()))
    for prompts, change in ((PROMPTS, False), (other, False), (other, True)):
        if change:
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(torch.randn_like(p), alpha=0.02)  # in place, as an optimizer step: same addresses
        kept = run(prompts, keep=True)
        assert next(iter(sample._kept.values())) is kept_step  # reused, not rebuilt
        fresh = run(prompts)  # keep=False: builds its own step and frees the kept one
        assert not sample._kept
        assert kept.tokens.equal(fresh.tokens) and kept.lengths.equal(fresh.lengths) and kept.finish == fresh.finish
        assert {"eos", "length"} <= set(fresh.finish)
        torch.testing.assert_close(kept.logprobs, fresh.logprobs, atol=1e-5, rtol=0)  # (cuBLAS may tile otherwise)
        run(prompts, keep=True)  # keep one again for the next round (a fresh build: nothing was kept)
        kept_step = next(iter(sample._kept.values()))
    assert first.tokens.equal(run(PROMPTS).tokens) is False  # the weights changed: so did the tokens
    run(PROMPTS, keep=True, temperature=0.5)  # another sampling setting: another key, the kept step replaced
    assert len(sample._kept) == 1 and next(iter(sample._kept.values())) is not kept_step
    sample.release()
    assert not sample._kept


def test_prompt_longer_than_context_is_a_clear_error(model):
    with pytest.raises(ValueError, match="prompt of 120 tokens \\+ 20 new tokens exceeds the model's context of 128"):
        generate(model, [[1] * 120], max_new_tokens=20)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_decode_matches_eager_on_gpu():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    m = Qwen2(cfg).cuda().eval()
    graph = generate(m, PROMPTS, max_new_tokens=40, temperature=0, cuda_graph=True)
    eager = generate(m, PROMPTS, max_new_tokens=40, temperature=0, cuda_graph=False)
    assert torch.equal(graph.tokens, eager.tokens)
    torch.testing.assert_close(graph.logprobs, eager.logprobs, atol=1e-5, rtol=0)


def run_cli(*args):
    import subprocess
    import sys
    from conftest import ROOT
    return subprocess.run([sys.executable, str(ROOT / "sample.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_cli_streams_the_same_text_generate_returns(tiny_checkpoint):
    # On CPU in both places: a GPU run samples in bf16 from a different random stream, so its text differs.
    r = run_cli("--model", str(tiny_checkpoint), "--prompt", "Once upon a time", "--template", "plain",
                "--max-new-tokens", "12", "--seed", "5", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    model, tok = Qwen2.from_pretrained(tiny_checkpoint).eval(), Tokenizer.from_dir(tiny_checkpoint)
    out = generate(model, [tok.encode("Once upon a time")], max_new_tokens=12, seed=5, eos_ids=tok.eos_ids,
                   tokenizer=tok)
    assert r.stdout == out.texts[0] + "\n"


def test_cli_bad_model_is_one_line(tmp_path):
    r = run_cli("--model", str(tmp_path / "missing"), "--prompt", "hi")
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.startswith("error: model directory") and r.stderr.count("\n") == 1


def fast_path(monkeypatch, forward=True):
    """Make generate's DecodeStep take the fast path (kernels/step.py, sample_race) on CPU, in the interpreter.
    forward=False: the fast path's sampler only, after the plain forward."""
    from kernels.step import FastDecode
    from decode_step import DecodeStep
    init = DecodeStep.__init__

    def fast_init(self, model, *args, **kw):
        init(self, model, *args, **kw)
        self.fast = FastDecode(model)
        self.forward = self.fast if forward else self.forward
    monkeypatch.setattr(DecodeStep, "__init__", fast_init)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU runs the fast path by default (test below)")
def test_fast_path_draws_the_tokens_of_its_twins(model, monkeypatch):
    """Fused kernels + one-pass sampling against the plain forward: greedy, the tokens of sample_token; seeded
    sampling, the tokens of the sampler's twin (sample_race_ref on race_noise's tensor of the same noise). fp32:
    the two logit computations differ by float rounding only."""
    from kernels.sampling import race_noise, sample_race_ref
    from kernels.step import FastDecode
    run = lambda **kw: generate(model, PROMPTS, num_samples=2, max_new_tokens=12, **kw)
    greedy = run(temperature=0)
    twin = lambda logits, temperature, seed, step: sample_race_ref(logits, race_noise(seed, step, *logits.shape),
                                                                   temperature)
    with monkeypatch.context() as m:
        m.setattr(FastDecode, "sample", staticmethod(twin))
        fast_path(m, forward=False)
        sampled = run(seed=3)
        assert not torch.equal(sampled.tokens, run(seed=4).tokens)  # the noise follows the seed
    fast_path(monkeypatch)
    for a, b in ((greedy, run(temperature=0)), (sampled, run(seed=3))):
        assert torch.equal(a.tokens, b.tokens)
        torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-4, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("use_kernels", [False, True])
def test_whole_step_graph_replays_the_eager_tokens_on_gpu(use_kernels):
    """The captured step (forward, sampling from the registered seeded generator, bookkeeping) replays exactly
    what the eager step computes, and a second seeded run repeats it."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512)  # head dim 64
    m = Qwen2(cfg).cuda().to(torch.bfloat16).eval()
    m.use_kernels = use_kernels
    runs = [generate(m, PROMPTS, num_samples=3, max_new_tokens=40, seed=1, eos_ids=(5,), cuda_graph=g)
            for g in (True, False, True)]
    for r in runs[1:]:
        assert torch.equal(runs[0].tokens, r.tokens) and torch.equal(runs[0].lengths, r.lengths)
        torch.testing.assert_close(runs[0].logprobs, r.logprobs, atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9,
                    reason="programmatic dependent launch needs a Hopper GPU or later")
@pytest.mark.parametrize("skinny_rows", [0, 64])
def test_programmatic_dependent_launch_changes_no_token_on_gpu(skinny_rows, monkeypatch):
    """PDL on (each decode kernel may start before the one before it ends, and waits for its writes): the
    captured fast step draws exactly the tokens and log-probs it draws with PDL off, at 4, 64 and 96 rows, with the
    projections by cuBLAS or (up to 64 rows) by kernels/skinny.py."""
    import kernels.step
    monkeypatch.setattr(kernels.step, "SKINNY_MAX_ROWS", skinny_rows)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512)  # head dim 64
    m = Qwen2(cfg).cuda().to(torch.bfloat16).eval()
    m.use_kernels = True
    for samples in (1, 16, 24):  # 4, 64 and 96 rows
        runs = []
        for pdl_rows in (0, 64):
            monkeypatch.setattr(kernels.step, "PDL_MAX_ROWS", pdl_rows)
            runs.append(generate(m, PROMPTS, num_samples=samples, max_new_tokens=40, seed=1, cuda_graph=True))
        assert torch.equal(runs[0].tokens, runs[1].tokens)
        torch.testing.assert_close(runs[0].logprobs, runs[1].logprobs, atol=0, rtol=0)
