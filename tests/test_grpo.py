"""GRPO's trainer (the objective's formulas are tests/test_objective.py): the trainer's log-probs against the
sampler's, then the whole loop on a tiny model (bad configurations, exact resume, Ctrl-C, the objective's options,
and that the reward rises)."""
import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, write_checkpoint

import grpo
import train_utils as tu
from objective import completion_mask


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: on a shared 2-core machine, thread hand-offs cost more than they save (9 s vs 50 s here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_sampler_and_trainer_logprobs_agree(tiny_checkpoint):
    """The trainer's log-probs of sampled tokens (one forward over prompt + completion) equal the sampler's."""
    from model import Qwen2
    from sample import generate
    model = Qwen2.from_pretrained(tiny_checkpoint)
    prompts = [[1, 2, 3, 4, 5], [7, 8]]
    gen = generate(model, prompts, num_samples=2, max_new_tokens=6, temperature=0.7, seed=0, eos_ids={11})
    idx, start = grpo.pad_left([p for p in prompts for _ in range(2)])
    mask = completion_mask(gen.lengths, gen.tokens.shape[1])
    sel = mask.flatten().nonzero()[:, 0]  # the real tokens' flat positions
    logp, ent = tu.completion_logprobs(model, torch.cat([idx, gen.tokens], 1), start, idx.shape[1], gen.tokens,
                                         sel, 0.7, entropy=True)
    assert torch.allclose(logp, gen.logprobs, atol=1e-5)
    assert (ent > 0).all() and ent.shape == sel.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: bf16 with the Triton kernels")
def test_sampler_and_trainer_agree_in_bf16_with_kernels(tmp_path):
    """On GPU the sampler decodes with the decode kernel and the trainer scores with the attention and fused
    log-prob kernels, all in bf16: the same tokens must get the same log-probs up to bf16 rounding."""
    from model import Qwen2
    from sample import generate
    ckpt = write_checkpoint(tmp_path, hidden_size=256, intermediate_size=512, num_attention_heads=4)  # head dim 64
    model = Qwen2.from_pretrained(ckpt, device="cuda", dtype=torch.bfloat16)
    model.use_kernels = True
    prompts = [list(range(1, 40)), [7, 8, 9]]
    gen = generate(model, prompts, num_samples=4, max_new_tokens=64, temperature=1.0, seed=0)
    idx, start = grpo.pad_left([p for p in prompts for _ in range(4)])
    sel = completion_mask(gen.lengths, gen.tokens.shape[1]).flatten().nonzero()[:, 0].cuda()
    logp, _ = tu.completion_logprobs(model, torch.cat([idx, gen.tokens], 1).cuda(), start.cuda(), idx.shape[1],
                                       gen.tokens.cuda(), sel, 1.0)
    gap = (logp.cpu() - gen.logprobs).abs().flatten()[sel.cpu()]
    assert gap.mean() < 2e-2 and gap.max() < 0.2, (gap.mean(), gap.max())


# ------------------------------------------------------------------------------------ the loop on a tiny model

CHARS = ["<pad>", "<eos>"] + list("0123456789+-*()= ")
TAGS = ["<think>", "</think>", "<answer>", "</answer>"]


def char_checkpoint(out_dir, seed=0, sft_steps=60):
    """A tiny model with a character tokenizer (digits, + - * ( ) =, the four tags), taught the answer format
    only by a few supervised steps on '<answer>D</answer>' with a random digit D — so GRPO starts from a model
    that answers, at chance (about 1 in 5), and must learn which digit is right."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers

    from model import Qwen2
    out_dir = write_checkpoint(out_dir, seed=seed, vocab_size=len(CHARS) + len(TAGS), eos_token_id=1)
    tok = HFTokenizer(models.WordLevel({c: i for i, c in enumerate(CHARS)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(["<pad>", "<eos>"])
    tok.add_tokens(TAGS)
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>", "pad_token": "<pad>"}))
    model = Qwen2.from_pretrained(out_dir)
    enc = lambda s: tok.encode(s).ids
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(sft_steps):
        a, b, y = (torch.randint(0, k, (32,), generator=g).tolist() for k in (3, 3, 5))
        x = torch.tensor([enc(f"{a_}+{b_}=<answer>{y_}</answer>") + [1] for a_, b_, y_ in zip(a, b, y)])
        logits = model(x[:, :-1])[:, 3:]  # loss on the answer only (positions after '=')
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 4:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    """(checkpoint dir, task jsonl): the nine sums a + b with a, b in 0..2, as an 'arith' task."""
    d = tmp_path_factory.mktemp("grpo")
    task = d / "add.jsonl"
    task.write_text("".join(json.dumps({"problem": f"{a}+{b}=", "answer": str(a + b), "task": "arith"}) + "\n"
                            for a in range(3) for b in range(3)))
    return char_checkpoint(d / "tiny"), task


def run(tiny_task, out, *extra, steps=4):
    ckpt, task = tiny_task
    return grpo.main(["--model", str(ckpt), "--task", str(task), "--template", "plain", "--max-completion-length", "6",
                      "--num-prompts", "4", "--num-generations", "4", "--micro-batch-size", "5", "--device", "cpu",
                      "--max-steps", str(steps), "--eval-steps", "0", "--output-dir", str(out), "--learning-rate",
                      "3e-3", "--plot-every", "1000", *extra])


@pytest.mark.parametrize("flags, message", [
    (["--num-generations", "1"], "at least 2"),
    (["--max-completion-length", "600"], "do not fit the model's context of 512"),
    (["--task", "no_such_file.jsonl"], "unknown dataset"),
    (["--loss-type", "cispo"], "pass --epsilon-high > 1"),  # its default, epsilon 0.2, would cap every weight at 0.2
])
def test_bad_configurations_give_one_line_errors(tiny_task, tmp_path, flags, message):
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        run(tiny_task, tmp_path, *flags)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_answer_checker_flag_reaches_the_accuracy_reward(tiny_task, tmp_path, monkeypatch):
    seen = set()
    real = grpo.rewards.accuracy_reward
    monkeypatch.setattr(grpo.rewards, "get_checker", lambda name: None)  # math-verify need not be installed
    monkeypatch.setattr(grpo.rewards, "accuracy_reward",
                        lambda c, ex, checker="builtin": seen.add(checker) or real(c, ex))
    run(tiny_task, tmp_path, "--answer-checker", "math-verify", steps=1)
    assert seen == {"math-verify"}


def test_command_line_error_is_one_line(tiny_task, tmp_path):
    ckpt, task = tiny_task
    out = subprocess.run([sys.executable, str(ROOT / "grpo.py"), "--model", str(ckpt), "--task", str(task),
                          "--num-generations", "1", "--output-dir", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("error: --num-generations is 1")


def test_resume_is_exact(tiny_task, tmp_path):
    """N steps, stop, resume for N more == 2N steps in one go, bit for bit (weights and optimizer state), with
    the reference model, two updates per batch and every hygiene option switched on (dynamic sampling too: the
    extra rounds move the data position). With --beta > 0 the zero-spread groups stay, for their KL term."""
    flags = ["--beta", "0.05", "--num-iterations", "2", "--mask-truncated-completions", "--overlong-buffer", "2",
             "--epsilon-high", "0.28", "--save-steps", "2", "--dynamic-sampling", "--importance-sampling-cap", "2",
             "--top-entropy-quantile", "0.5"]
    straight = run(tiny_task, tmp_path / "a", *flags, steps=4).history
    run(tiny_task, tmp_path / "b", *flags, steps=2)
    resumed = run(tiny_task, tmp_path / "b", *flags, "--resume", str(tmp_path / "b"), steps=4).history
    from safetensors.torch import load_file
    a, b = (load_file(tmp_path / run / "checkpoint-4/model.safetensors") for run in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa = torch.load(tmp_path / "a/checkpoint-4/trainer_state.pt", weights_only=True)["optimizer"]["adamw"]["state"]
    sb = torch.load(tmp_path / "b/checkpoint-4/trainer_state.pt", weights_only=True)["optimizer"]["adamw"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    assert [r["reward"] for r in straight] == [r["reward"] for r in resumed]  # metrics.jsonl continues too
    assert all(r["trained_rows"] == 16 for r in straight)  # all P * G rows, zero-spread groups included
    initial = load_file(tiny_task[0] / "model.safetensors")
    assert not torch.equal(a["model.norm.weight"], initial["model.norm.weight"])  # it did train


def test_dynamic_sampling_resamples_until_every_group_has_spread(tiny_task, tmp_path):
    """DAPO §3.2 in the loop: a step's batch holds P groups with reward spread (all P * G rows trained), unless
    the extra rounds ran out. The prompts of several rounds are re-padded together for the trainer: in fp32 its
    log-probs still equal the sampler's."""
    h = run(tiny_task, tmp_path, "--dynamic-sampling", "--max-resample-rounds", "2", steps=4).history
    assert all(r["trained_rows"] == 16 or r["sample_rounds"] == 3 for r in h)
    assert any(r["sample_rounds"] > 1 for r in h)  # it did resample (the tiny model is at chance)
    assert max(r["logp_gap"] for r in h if r["logp_gap"] is not None) < 1e-4


@pytest.mark.parametrize("flags", [
    ["--loss-type", "cispo", "--epsilon-high", "5"],
    ["--loss-type", "bnpo", "--importance-sampling-level", "sequence", "--scale-rewards", "batch"],
])
def test_objective_variants_train(tiny_task, tmp_path, flags):
    h = run(tiny_task, tmp_path, *flags, steps=2).history
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in h)
    assert any(r["grad_norm"] > 0 for r in h)


def test_ctrl_c_saves_and_stops(tiny_task, tmp_path, monkeypatch):
    calls = []

    def generate_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C during step 2
        return real(*args, **kwargs)

    real = grpo.generate
    monkeypatch.setattr(grpo, "generate", generate_then_interrupt)
    history = run(tiny_task, tmp_path, steps=10).history
    assert len(history) == 2 and (tmp_path / "latest").read_text().strip() == "checkpoint-2"


def test_non_finite_loss_skips_the_update(tiny_task, tmp_path, monkeypatch):
    real = grpo.policy_loss

    def nan_loss(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        return loss * float("nan"), stats

    monkeypatch.setattr(grpo, "policy_loss", nan_loss)
    result = run(tiny_task, tmp_path, steps=2)
    model, history = result.model, result.history
    assert [r["skipped_updates"] for r in history] == [1, 1] and math.isnan(history[0]["grad_norm"])
    from safetensors.torch import load_file
    initial = load_file(tiny_task[0] / "model.safetensors")
    assert all(torch.equal(p.detach(), initial[n]) for n, p in model.named_parameters() if n in initial)


def test_reward_rises_on_tiny_arith(tiny_task, tmp_path):
    """The learning check. Measured with this code over seeds 0-4 (checkpoint and run seed alike; 80 steps of
    8 prompts x 8 completions, lr 3e-3): mean reward of the first 10 steps 0.10-0.21, of the last 10 steps
    0.32-0.35, a rise of 0.12-0.23. Asserted: a rise of at least 0.08 and a final 0.25 (margins 0.04 and 0.07).
    What it learns is the reward-maximising answer it can represent: '2', right for 3 of the 9 sums (1/3), not
    addition itself (250 steps stay at 1/3). Also: zero-spread groups are really left out (trained rows =
    (1 - zero share) * N), and in fp32 the sampler's and trainer's log-probs agree."""
    ckpt, task = tiny_task
    h = grpo.main(["--model", str(ckpt), "--task", str(task), "--template", "plain", "--max-completion-length",
                      "6", "--num-prompts", "8", "--num-generations", "8", "--max-steps", "80", "--eval-steps", "0",
                      "--device", "cpu",
                      "--output-dir", str(tmp_path), "--learning-rate", "3e-3", "--save-steps", "1000",
                      "--plot-every", "40"]).history
    first, last = (sum(r["reward"] for r in rows) / 10 for rows in (h[:10], h[-10:]))
    assert last - first >= 0.08 and last >= 0.25, (first, last)
    assert all(r["trained_rows"] == round(64 * (1 - r["zero_spread"])) for r in h)
    assert max(r["logp_gap"] for r in h if r["logp_gap"] is not None) < 1e-4  # fp32: sampler == trainer
    assert (tmp_path / "curves.png").is_file()
