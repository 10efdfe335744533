"""The training plumbing shared by grpo.py and sft.py: optimizer precision, schedule, atomic checkpoints, metrics,
Ctrl-C, the memory estimate, the data order and the config dataclasses every command's flags come from."""
import argparse
import dataclasses
import importlib
import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import FIXTURE, ROOT

import train_utils as tu
from model import ModelConfig, Qwen2


def test_fp32_master_weights_keep_updates_that_bf16_would_round_away():
    # lr 1e-4 on a weight of 1.0: each step is 1/256 of bf16's spacing at 1.0 (2^-7), so plain AdamW on bf16
    # weights never moves them; the fp32 master accumulates the steps and the bf16 copy follows.
    plain = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    ours = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    opt_plain = torch.optim.AdamW([plain], lr=1e-4, weight_decay=0.0)
    opt_ours = tu.MasterAdamW([ours], lr=1e-4)
    for _ in range(100):
        for p, opt in ((plain, opt_plain), (ours, opt_ours)):
            p.grad = torch.ones_like(p)
            opt.step()
    assert torch.equal(plain, torch.ones(4, dtype=torch.bfloat16))
    assert opt_ours.master[0].dtype == torch.float32
    assert opt_ours.master[0][0].item() == pytest.approx(1 - 100 * 1e-4, abs=1e-5)  # fp32 rounding
    assert ours[0].item() == pytest.approx(0.99, abs=2 ** -7)  # the bf16 weight moved too


def test_master_state_round_trips_and_fp32_params_are_not_copied():
    p32 = torch.nn.Parameter(torch.randn(3))
    opt = tu.MasterAdamW([p32], lr=0.1)
    assert opt.master[0] is p32  # no duplicate on CPU/fp32
    p16 = torch.nn.Parameter(torch.randn(3).bfloat16())
    a = tu.MasterAdamW([p16], lr=0.1)
    p16.grad = torch.ones_like(p16)
    a.step()
    state = a.state_dict()
    b = tu.MasterAdamW([torch.nn.Parameter(p16.detach().clone())], lr=0.1)
    b.load_state_dict(state)
    assert torch.equal(b.master[0], a.master[0]) and b.master[0].dtype == torch.float32


def test_non_finite_gradient_skips_the_update():
    p = torch.nn.Parameter(torch.ones(3))
    opt = tu.MasterAdamW([p], lr=0.1)
    p.grad = torch.tensor([1.0, float("nan"), 1.0])
    assert math.isnan(opt.step(max_grad_norm=1.0))
    assert torch.equal(p.detach(), torch.ones(3))
    p.grad = torch.tensor([30.0, 40.0, 0.0])
    assert opt.step(max_grad_norm=1.0) == pytest.approx(50.0)  # norm before clipping


def test_lr_schedule():
    lr = lambda s, kind: tu.lr_at(s, 1.0, warmup_steps=4, total_steps=14, kind=kind)
    assert [lr(s, "constant") for s in (0, 1, 3, 4, 13)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    assert lr(4, "cosine") == 1.0 and lr(9, "cosine") == pytest.approx(0.5) and lr(14, "cosine") == pytest.approx(0)
    assert tu.lr_at(14, 1.0, 0, 14, "cosine", min_lr_ratio=0.1) == pytest.approx(0.1)


@pytest.fixture
def small_model():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    model = Qwen2(config)
    return model, tu.MasterAdamW(model.parameters(), lr=1e-3)


def test_checkpoint_layout_latest_pointer_and_retention(small_model, tmp_path):
    model, opt = small_model
    args = argparse.Namespace(lr=1e-3, name="x", obj=object())  # non-plain values are left out of the state
    for step in (1, 2, 3):
        tu.save_checkpoint(tmp_path, model, opt, step, data_position=10 * step, args=args, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-3", "latest"]
    ckpt = tu.find_checkpoint(tmp_path)
    assert ckpt.name == "checkpoint-3" and (ckpt / "model.safetensors").is_file() and (ckpt / "config.json").is_file()
    state = torch.load(ckpt / "trainer_state.pt", weights_only=True)  # tensors, numbers and strings only
    assert state["args"] == {"lr": 1e-3, "name": "x"} and state["data_position"] == 30
    assert tu.find_checkpoint(tmp_path / "checkpoint-2").name == "checkpoint-2"
    with pytest.raises(FileNotFoundError, match="--resume"):
        tu.find_checkpoint(tmp_path / "nothing")


def test_a_crash_while_saving_leaves_the_previous_checkpoint(small_model, tmp_path, monkeypatch):
    model, opt = small_model
    args = argparse.Namespace()
    tu.save_checkpoint(tmp_path, model, opt, 1, 0, args)

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(tu.torch, "save", crash)
    with pytest.raises(OSError):
        tu.save_checkpoint(tmp_path, model, opt, 2, 0, args)
    assert tu.find_checkpoint(tmp_path).name == "checkpoint-1"
    assert not (tmp_path / "checkpoint-2").exists()  # only the .tmp directory, which nothing points to


def test_resume_restores_optimizer_and_rng(small_model, tmp_path):
    model, opt = small_model
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    torch.manual_seed(123)
    tu.save_checkpoint(tmp_path, model, opt, 7, 70, argparse.Namespace())
    expected = torch.rand(3)
    fresh = tu.MasterAdamW(Qwen2(model.config).parameters(), lr=1e-3)
    assert tu.load_trainer_state(tu.find_checkpoint(tmp_path), fresh) == (7, 70)
    assert torch.equal(torch.rand(3), expected)  # the RNG continues where it was saved
    assert fresh.opt.state_dict()["state"][0]["step"] == 1


def test_metrics_jsonl_and_resume_truncation(tmp_path, capsys, monkeypatch):
    m = tu.Metrics(tmp_path, plot_keys=("reward",), plot_every=2)
    for s in (1, 2, 3):
        m.log({"step": s, "reward": 0.1 * s})
    assert [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert (tmp_path / "curves.png").is_file()
    m2 = tu.Metrics(tmp_path, resume_step=2)  # the run crashed after step 3 but its checkpoint is step 2
    m2.log({"step": 3, "reward": 0.9})
    assert [r["reward"] for r in m2.history] == [0.1, 0.2, 0.9]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    assert tu.Metrics(tmp_path).history == []  # a fresh run starts a fresh file
    assert tu.format_line({"step": 3, "reward": 0.25, "kl": None}, [("step", "step", "d"), ("r", "reward", ".2f"),
                                                                    ("kl", "kl", ".3f")]) == "step 3 | r 0.25"


def test_missing_matplotlib_is_one_notice(tmp_path, capsys, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_matplotlib(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    monkeypatch.setattr(tu, "_warned_no_matplotlib", False)
    for _ in range(3):
        tu.plot_curves([{"step": 1, "reward": 0.5}], tmp_path / "c.png", ["reward"])
    out = capsys.readouterr().out
    assert out.count("matplotlib not installed") == 1 and not (tmp_path / "c.png").exists()


def test_ctrl_c_asks_to_stop_then_interrupts():
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the tests run in a background job, not the default
    with tu.StopOnCtrlC() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # the handler that was there is put back


def test_memory_estimate_counts_the_real_parameters_and_suggests_what_fits():
    config = ModelConfig.from_json(FIXTURE / "config.json")
    with torch.device("meta"):
        n = sum(p.numel() for p in Qwen2(config).parameters())
    base = dict(rows=128, seq_len=1536, micro_batch=16, weight_bytes=2, checkpointing=False)
    peak, parts = tu.estimate_memory(config, **base)
    assert parts["weights"] == 2 * n == 2 * 494_032_768  # Qwen2.5-0.5B, tied embedding
    assert parts["optimizer"] == (4 + 4 + 4) * n  # fp32 master, exp_avg, exp_avg_sq
    estimate = lambda **kw: tu.estimate_memory(config, **{**base, **kw})
    assert "memory estimate" in tu.preflight(estimate, None)  # CPU: report only
    assert "of 80.0 GiB" in tu.preflight(estimate, 80 * 2**30)
    fixes = [(f"--micro-batch-size {mb}", dict(micro_batch=mb)) for mb in tu.halvings(16)]  # 8, 4, 2, 1
    with pytest.raises(ValueError) as e:
        tu.preflight(estimate, 16 * 2**30, fixes)
    msg = str(e.value)
    assert "\n" not in msg and "this would fit: --micro-batch-size 2" in msg  # the first (largest) that fits
    with pytest.raises(ValueError, match="try less"):
        tu.preflight(estimate, 2**30, fixes, otherwise="try less")  # nothing fits 1 GiB
    assert estimate(checkpointing=True)[1]["activations"] < parts["activations"] / 5


def test_auto_micro_batch_is_the_largest_that_fits():
    config = ModelConfig.from_json(FIXTURE / "config.json")
    base = dict(rows=128, seq_len=1536, micro_batch=16, weight_bytes=2, checkpointing=False)
    estimate = lambda **kw: tu.estimate_memory(config, **{**base, **kw})
    assert tu.auto_micro_batch(estimate, 80 * 2**30, 128) == 16  # the 0.5B fits 16 rows of 1.5k tokens on 80 GB
    assert tu.auto_micro_batch(estimate, 80 * 2**30, 6) == 6  # never more than the batch
    assert tu.auto_micro_batch(estimate, None, 128) == 8  # CPU: nothing to measure against
    mb = tu.auto_micro_batch(estimate, 16 * 2**30, 128)  # a 16 GB GPU: the same answer preflight's hint gives
    assert mb == 2 and estimate(micro_batch=mb)[0] <= tu.MEMORY_HEADROOM * 16 * 2**30 < estimate(micro_batch=2 * mb)[0]


def test_config_parser_builds_one_flag_per_field_and_reports_what_was_given():
    from train_utils import option, parse_config

    @dataclasses.dataclass
    class Toy:
        """A toy command."""
        learning_rate: float = option(1e-6, "step size")
        eval_task: str | None = option(None, "default: --task")
        num_prompts: int = option(8, "P")
        reward_weights: tuple[float, float] = option((1.0, 1.0), "accuracy, format", metavar=("ACC", "FMT"))
        no_kernels: bool = option(False, "PyTorch references")
        plot: bool = option(True, "draw curves")
        loss_type: str = option("dapo", "objective", choices=["grpo", "dapo"])

    config, given = parse_config(Toy, [])
    assert config == Toy() and given == set()
    config, given = parse_config(Toy, ["--learning-rate", "1e-6", "--reward-weights", "1", "0.5", "--no-kernels",
                                       "--no-plot", "--num-prompts", "4", "--eval-task", "arith"])
    assert config == Toy(1e-6, "arith", 4, (1.0, 0.5), True, False, "dapo")
    assert given == {"learning_rate", "reward_weights", "no_kernels", "plot", "num_prompts", "eval_task"}
    with pytest.raises(SystemExit):
        parse_config(Toy, ["--loss-type", "ppo"])


@pytest.mark.parametrize("module, cls", [("grpo", "GRPOConfig"), ("sft", "SFTConfig"), ("evaluate", "EvalConfig"),
                                         ("distill", "DistillConfig")])
def test_every_config_field_is_a_flag_with_help(module, cls):
    config_cls = getattr(importlib.import_module(module), cls)
    actions = {a.dest: a for a in tu.config_parser(config_cls)._actions}
    for f in dataclasses.fields(config_cls):
        action = actions[f.name]  # every field has its flag, named after it
        assert action.option_strings == ["--" + f.name.replace("_", "-")]
        assert action.help and action.help.strip(), f"--{f.name} has no help text"
    assert set(actions) - {"help"} == {f.name for f in dataclasses.fields(config_cls)}  # and nothing else


@pytest.mark.parametrize("script", ["grpo.py", "sft.py", "evaluate.py", "distill.py"])
def test_help_comes_from_the_config(script):
    out = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--seed" in out.stdout and "(default: " in out.stdout


def test_torchrun_with_more_processes_than_gpus_is_a_clear_error(monkeypatch):
    """A second process on a one-GPU machine is told how many GPUs there are, before it joins any process group."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="--nproc_per_node=1"):
        tu.init_distributed(torch.device("cuda"))
