"""R1 in miniature: the cold-start data holds both habits, and the rewards treat both alike (only RL decides)."""
from demo import cold_start_rows, parse_args
from rewards import accuracy_reward, format_reward
from tasks import make_arith


def test_cold_start_mixes_worked_and_direct_traces_that_both_earn_full_reward():
    examples = make_arith(400, seed=0, min_ops=2, max_ops=2, max_value=5)
    rows = cold_start_rows(examples, direct_fraction=0.5, seed=0)
    worked = [r for r in rows if "=" in r["response"].split("</think>")[0]]
    assert 160 < len(worked) < 240  # about half, seeded
    assert rows == cold_start_rows(examples, direct_fraction=0.5, seed=0)
    for ex, row in zip(examples, rows):
        assert row["prompt"] == ex["problem"]  # the bare problem: --template plain
        completion = row["response"]
        assert accuracy_reward(completion, ex) == 1.0 and format_reward(completion, ex) == 1.0
    assert all("=" not in r["response"] for r in cold_start_rows(examples[:20], direct_fraction=1.0, seed=0))


def test_scale_sets_defaults_and_explicit_flags_win():
    cpu, gpu = parse_args([]), parse_args(["--scale", "gpu"])
    assert (cpu.size, cpu.device, cpu.max_ops, cpu.sft_examples) == ("tiny", "cpu", 2, 2000)
    assert (gpu.size, gpu.device, gpu.min_ops, gpu.max_ops, gpu.max_value) == ("small", "cuda", 3, 3, 9)
    assert parse_args(["--scale", "gpu", "--grpo-lr", "1e-5", "--device", "cpu"]).grpo_lr == 1e-5
    assert parse_args(["--scale", "gpu", "--device", "cpu"]).device == "cpu"
