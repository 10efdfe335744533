"""Data parallelism, checked on CPU: two processes started by torchrun (the gloo backend) must train exactly what
one process trains on the same global batch.

All two-process runs happen in one torchrun launch of this file (`one_rank`, from the module-scoped fixture `work`:
starting processes that import torch costs seconds on a 2-core machine); the tests then compare the checkpoints
they wrote with one-process runs. Sampling is the one thing that differs by design between world sizes (each
rank draws its own prompts' completions with its own seed), so these runs sample each prompt on its own with a
seed of the prompt (`per_prompt_generate`): a prompt's completions are then the same whichever rank draws them,
and any difference left is the trainer's. (The real sampler is checked for exact resumes on two ranks.)

Tolerance: one process sums a micro-batch's tokens in a different order than two do (other micro-batches, other
padding, a sum over ranks), so gradients agree to float32 rounding (~1e-7 relative), not always bit for bit. We
compare updates (new - initial weights) with atol 1e-3 * lr: AdamW's first update is lr * g / (|g| + eps), about
lr * sign(g), so rounding moves it only where an entry of g is itself near rounding level (measured: 0 for the
GRPO steps, 6e-4 * lr for SFT). The one exception is k_proj's bias: adding q . b_k to every score of a query's
row leaves its softmax unchanged, so that gradient is exactly 0 in exact arithmetic and pure rounding noise in
float32, which AdamW scales up to ~lr; those entries are not compared. That same sign-like update is blind to
the gradient's scale, so the loss and the gradient norm are compared too (rel 1e-5): a wrong normaliser or a
missing world-size factor changes them (a loss_scale() of 1 instead of the world size fails these tests).
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import conftest  # noqa: F401 (also puts the repository on sys.path when torchrun runs this file)
from test_grpo import char_checkpoint

import grpo
import sft

LR = 1e-3
GRPO_CASES = {  # name -> extra flags; each case is one GRPO step at world size 1 and 2
    "dapo": ["--loss-type", "dapo"],
    "grpo": ["--loss-type", "grpo"],
    # Two updates per batch: the second one starts away from the reference, so the KL term has a gradient.
    "dapo_beta": ["--loss-type", "dapo", "--beta", "0.1", "--num-iterations", "2"],
    "grpo_beta": ["--loss-type", "grpo", "--beta", "0.1", "--num-iterations", "2", "--mask-truncated-completions"],
}
SFT_ROWS = [{"prompt": f"{a}+{b}=", "response": f"<answer>{a + b}</answer>"} for a in range(3) for b in range(3)]


def per_prompt_generate(model, prompts, *, num_samples, max_new_tokens, seed, **kw):
    """grpo.generate, one prompt at a time with a seed of the prompt's tokens alone (padded to max_new_tokens):
    what a prompt's group holds then does not depend on which rank samples it, or with whom."""
    from sample import Generation, generate
    outs = [generate(model, [p], num_samples=num_samples, max_new_tokens=max_new_tokens,
                     seed=sum(t * 31 ** i for i, t in enumerate(p)) % 2**31, **kw) for p in prompts]
    pad = lambda t: torch.nn.functional.pad(t, (0, max_new_tokens - t.shape[1]))
    return Generation(torch.cat([pad(o.tokens) for o in outs]), torch.cat([o.lengths for o in outs]),
                      torch.cat([pad(o.logprobs) for o in outs]), [f for o in outs for f in o.finish],
                      [t for o in outs for t in o.texts])


def grpo_argv(work, out, *extra, steps=1):
    return ["--model", str(work / "tiny"), "--task", str(work / "add.jsonl"), "--template", "plain", "--device",
            "cpu", "--max-completion-length", "6", "--num-prompts", "4", "--num-generations", "4",
            "--micro-batch-size", "3", "--max-steps", str(steps), "--eval-steps", "0", "--output-dir",
            str(work / out), "--learning-rate", str(LR), "--save-steps", "1", "--plot-every", "1000", "--seed", "1",
            *extra]


def sft_run(work, out, *extra, steps=1):
    return sft.main(["--model", str(work / "init"), "--data", str(work / "sft.jsonl"), "--output-dir",
                     str(work / out), "--max-length", "24", "--gradient-accumulation-steps", "4", "--max-steps",
                     str(steps), "--learning-rate", str(LR), "--warmup-steps", "0", "--eval-fraction", "0",
                     "--save-steps", "1", "--quiet", "--device", "cpu", *extra])


def one_rank(work):
    """What each of the two processes runs (`python -m torch.distributed.run --nproc_per_node=2 THIS_FILE WORK`);
    the one-process runs are in the fixture `work` below."""
    real = grpo.generate
    grpo.generate = per_prompt_generate
    for name, flags in GRPO_CASES.items():
        grpo.main(grpo_argv(work, f"ws2_{name}", *flags))
    grpo.main(grpo_argv(work, "ws1to2", "--resume", str(work / "ws1_dapo/checkpoint-1"), steps=2))
    sft_run(work, "ws2_sft")
    sft_run(work, "ws1to2_sft", "--resume", str(work / "ws1_sft/checkpoint-1"), steps=2)
    try:  # FSDP2 with activation checkpointing, the same steps as DDP
        grpo.main(grpo_argv(work, "fsdp_dapo_beta", *GRPO_CASES["dapo_beta"], "--fsdp", "--gradient-checkpointing"))
        sft_run(work, "fsdp_sft", "--fsdp", "--gradient-checkpointing")
    except Exception as e:  # noqa: BLE001 (recorded, and the FSDP test skips with it)
        (work / "fsdp_unsupported").write_text(f"{type(e).__name__}: {e}")
    grpo.generate = real  # the real sampler, seeded per rank and step: a resumed run samples the same
    grpo.main(grpo_argv(work, "ws2_sampled", steps=2))
    grpo.main(grpo_argv(work, "ws2_sampled_resumed", "--resume", str(work / "ws2_sampled/checkpoint-1"), steps=2))
    print(f"rank {os.environ['RANK']} done")  # ranks > 0 print into /dev/null
    torch.distributed.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """One-process runs, then the two-process runs, then one-process resumes of two-process checkpoints."""
    work = tmp_path_factory.mktemp("dist")
    (work / "add.jsonl").write_text("".join(json.dumps({"problem": f"{a}+{b}=", "answer": str(a + b),
                                                        "task": "arith"}) + "\n" for a in range(3) for b in range(3)))
    char_checkpoint(work / "tiny")
    (work / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in SFT_ROWS))
    sft.build_from_scratch(sft.example_texts(SFT_ROWS), work / "init", "tiny", vocab_size=300)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(grpo, "generate", per_prompt_generate)
        for name, flags in GRPO_CASES.items():
            grpo.main(grpo_argv(work, f"ws1_{name}", *flags, steps=2 if name == "dapo" else 1))
        sft_run(work, "ws1_sft", steps=2)
        run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
                              str(_free_port()), __file__, str(work)], capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert run.returncode == 0, run.stderr[-3000:]
        (work / "torchrun.out").write_text(run.stdout)
        grpo.main(grpo_argv(work, "ws2to1", "--resume", str(work / "ws2_dapo/checkpoint-1"), steps=2))
        sft_run(work, "ws2to1_sft", "--resume", str(work / "ws2_sft/checkpoint-1"), steps=2)
    torch.set_num_threads(threads)
    return work


def update(work, run, step=1):
    """(new - initial) weights of a run's checkpoint-STEP."""
    new = load_file(work / run / f"checkpoint-{step}" / "model.safetensors")
    init = load_file(work / ("init" if "sft" in run else "tiny") / "model.safetensors")
    return {k: new[k] - init[k] for k in init}


def metrics(work, run):
    return [json.loads(line) for line in (work / run / "metrics.jsonl").read_text().splitlines()]


def assert_same_step(work, a, b, step=1, atol=1e-3 * LR):
    """Same update of every weight (atol: see the module docstring) and the same loss and gradient norm, which,
    unlike AdamW's first update, scale with the normaliser and the world-size factor."""
    ua, ub = update(work, a, step), update(work, b, step)
    assert ua.keys() == ub.keys()
    for k in ua:
        if k.endswith("k_proj.bias"):
            continue  # its gradient is rounding noise (see the module docstring)
        torch.testing.assert_close(ua[k], ub[k], rtol=0, atol=atol, msg=lambda m: f"{k}: {m}")
    assert max(float(v.abs().max()) for v in ua.values()) > 0.5 * LR  # it did train
    ma, mb = (next(r for r in metrics(work, run) if r["step"] == step) for run in (a, b))
    for key in ("loss", "grad_norm"):
        assert ma[key] == pytest.approx(mb[key], rel=1e-5), key


@pytest.mark.parametrize("case", list(GRPO_CASES))
def test_grpo_step_on_two_ranks_equals_one_process(work, case):
    assert_same_step(work, f"ws2_{case}", f"ws1_{case}")
    if "beta" in case:
        assert metrics(work, f"ws1_{case}")[0]["kl"] > 0  # the KL term did act (second update)


def test_sft_step_on_two_ranks_equals_one_process(work):
    assert_same_step(work, "ws2_sft", "ws1_sft")


@pytest.mark.parametrize("run", ["ws2to1", "ws1to2", "ws2to1_sft", "ws1to2_sft"])
def test_resume_across_world_sizes_continues_at_the_data_position(work, run):
    """Step 2 resumed on the other world size (from step 1's checkpoint) == step 2 of one uninterrupted process."""
    straight = "ws1_sft" if "sft" in run else "ws1_dapo"
    assert_same_step(work, run, straight, step=2)
    state = torch.load(work / run / "checkpoint-2" / "trainer_state.pt", weights_only=True)
    assert state["data_position"] == torch.load(work / straight / "checkpoint-2" / "trainer_state.pt",
                                                weights_only=True)["data_position"]


def test_resumed_two_rank_run_samples_what_the_uninterrupted_one_did(work):
    """The real sampler: each rank's seed is a function of (seed, step, rank), so resuming gives the same bits."""
    a, b = (load_file(work / run / "checkpoint-2" / "model.safetensors") for run in ("ws2_sampled",
                                                                                       "ws2_sampled_resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert metrics(work, "ws2_sampled")[-1]["reward"] == metrics(work, "ws2_sampled_resumed")[-1]["reward"]


def test_fsdp_step_equals_ddp_step(work):
    if (work / "fsdp_unsupported").exists():
        pytest.skip(f"fully_shard does not run on CPU/gloo in torch {torch.__version__}: "
                    f"{(work / 'fsdp_unsupported').read_text()}")
    assert_same_step(work, "fsdp_dapo_beta", "ws2_dapo_beta")
    assert_same_step(work, "fsdp_sft", "ws2_sft")


def test_a_batch_the_ranks_cannot_share_is_refused_in_one_line(monkeypatch):
    import train_utils as tu
    monkeypatch.setattr(tu, "world", lambda: 2)
    monkeypatch.setattr(tu, "rank", lambda: 1)
    assert tu.share(list(range(6))) == [3, 4, 5]
    with pytest.raises(ValueError, match="--num-prompts is 5, which 2 processes cannot share equally") as e:
        tu.share(range(5))
    assert "\n" not in str(e.value)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="torchrun"):
        tu.init_distributed(torch.device("cpu"), fsdp=True)  # --fsdp without torchrun


def test_memory_preflight_counts_shards_and_names_fsdp(monkeypatch):
    """Qwen2.5-7B's shape, GRPO at 8 x 16 x 1,024 with beta > 0 in bf16 on one 140 GiB GPU: weights, gradients,
    fp32 master and AdamW state are ~114 GiB (16 bytes a parameter), the reference copy 14 GiB more, so no
    micro-batch size or checkpointing fits and the preflight names FSDP over two GPUs; there each rank holds half
    of the training state plus two full bf16 copies (sampler and reference), which fits."""
    import train_utils as tu
    from model import ModelConfig, Qwen2
    config = ModelConfig(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4)
    with torch.device("meta"):
        model = Qwen2(config).to(torch.bfloat16)
    model.use_kernels = True
    monkeypatch.setattr(tu, "gpu_memory", lambda device: 140 * 2**30)
    plan = dict(rows=128, seq_len=1536, reference=True, checkpointing=False)
    with pytest.raises(ValueError, match=r"this would fit: torchrun --nproc_per_node=2 \.\.\. --fsdp") as e:
        tu.plan_micro_batch(model, 0, **plan)
    assert "\n" not in str(e.value)
    monkeypatch.setattr(tu, "world", lambda: 2)
    peak, parts = tu.estimate_memory(config, rows=64, seq_len=1536, micro_batch=16, weight_bytes=2, world=2,
                                     fsdp=True, checkpointing=True)
    n = sum(p.numel() for p in model.parameters())
    assert parts["optimizer"] == pytest.approx(12 * n / 2, rel=0.01)  # AdamW's 2 moments + fp32 master: half
    assert parts["weights"] == pytest.approx(2 * n / 2, rel=0.01) and parts["full_copy"] > 2 * n  # + the copy
    assert tu.plan_micro_batch(model, 0, **dict(plan, rows=64, checkpointing=True), fsdp=True) >= 1  # fits


def test_only_rank_0_prints_and_writes(work):
    """One set of step lines (the memory line is printed once per run), one metrics line per step, one checkpoint
    per step: rank 1 wrote nothing."""
    out = (work / "torchrun.out").read_text()
    assert "rank 0 done" in out and "rank 1 done" not in out
    runs = [*(f"ws2_{c}" for c in GRPO_CASES), "ws1to2", "fsdp_dapo_beta", "ws2_sampled", "ws2_sampled_resumed"]
    assert out.count("memory estimate") == len([r for r in runs if (work / r / "metrics.jsonl").exists()]) >= 7
    assert [r["step"] for r in metrics(work, "ws2_sampled")] == [1, 2]
    assert sorted(p.name for p in (work / "ws2_sampled").iterdir() if p.name.startswith("checkpoint")) == [
        "checkpoint-1", "checkpoint-2"]


if __name__ == "__main__":  # one rank of the two-process runs, started by torchrun from the fixture `work`
    torch.set_num_threads(1)
    one_rank(Path(sys.argv[1]))
