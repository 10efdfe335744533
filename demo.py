"""
R1 in miniature: the whole DeepSeek-R1 recipe on a model small enough to train on a laptop CPU, offline.

    python demo.py                                   # minutes on a laptop CPU, no GPU, no download
    python demo.py --seed 1 --output-dir runs/demo-1
    python demo.py --scale gpu                       # minutes on one GPU: an 83M model, 3-operation problems

What it does, on the synthetic `arith` task ('3+4*2' -> 11; tasks.py), with the project's real pieces:
  1. From scratch (sft.build_from_scratch): a byte-level BPE tokenizer trained on the task's text and a 0.8M-
     parameter Qwen2-architecture model with random weights, written as a Hugging Face directory.
  2. Cold start (sft.py; DeepSeek-R1 §2.3.1, "thousands of" long-CoT examples): SFT on 2,000 traces. Half are
     worked solutions ('<think>3+4*2=3+8=11</think> <answer>11</answer>', tasks.arith_trace), half answer without
     working ('<think>3+4*2</think> <answer>11</answer>', --direct-fraction), as real cold-start data mixes
     careful and careless solutions. The model learns the <think>/<answer> format and both habits.
  3. RL (grpo.py; §2.2): GRPO with the rule rewards (accuracy + format) on the training problems. Nothing tells
     the model which habit to keep; the reward does. Working it out is right more often, so the model comes to
     work every problem: reward and response length rise together, the R1-Zero signature in miniature.
  4. Greedy accuracy on 200 held-out problems (the test split, never trained on) before SFT, after SFT and
     after GRPO; OUT/demo.png has the curves, OUT/summary.json the numbers.
--scale gpu is the same with an 83M-parameter model ('small'), problems of 3 operations over 1..9 and 20,000
traces (SCALES below). The README has the measured numbers of both scales, their wall times and the sweeps the
settings came from.

Deviations from the paper, and why:
  1. The prompt is the bare problem (--template plain), not the R1-Zero instruction: a 1M-parameter model cannot
     read an instruction, and its ~90 tokens would be 80% of the compute.
  2. Problems have 2 operations over 1..5 (--min-ops, --max-ops, --max-value): a small enough world that a model
     this size learns its arithmetic from 2,000 examples in a minute and a half.
  3. The cold start is half careless by construction (above), so that two CPU-minutes of RL have a behaviour to
     select. With worked traces only (--direct-fraction 0) SFT alone does better and GRPO after it adds nothing
     held-out: at this scale it re-memorises the training problems (README: the control run).
"""
import argparse
import json
import time
from pathlib import Path

import torch

import grpo
import sft
from evaluate import evaluate
from model import load_model, pick_device
from scratch import SCRATCH_CONFIGS, build_from_scratch
from tasks import arith_trace, make_arith


def cold_start_rows(examples, direct_fraction, seed):
    """SFT rows (prompt = the bare problem): worked traces, and answer-only ones for a seeded direct_fraction."""
    g = torch.Generator().manual_seed(seed)
    direct = torch.rand(len(examples), generator=g) < direct_fraction
    rows = []
    for ex, d in zip(examples, direct.tolist()):
        trace = f"<think>{ex['problem']}</think> <answer>{ex['answer']}</answer>" if d else arith_trace(ex)
        rows.append({"prompt": ex["problem"], "response": " " + trace})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def accuracy(model, tok, test, max_new_tokens, title):
    """Held-out accuracy two ways: greedy, and pass@1 over 4 samples at the paper's temperature 0.6 / top-p 0.95;
    with the format rate and the mean response length (tokens) of the greedy answers."""
    model.eval()
    kw = dict(max_new_tokens=max_new_tokens, batch_size=len(test), template="plain", seed=0)
    greedy = evaluate(model, tok, test, num_samples=1, temperature=0.0, title=f"{title}, greedy", **kw)
    sampled = evaluate(model, tok, test, num_samples=4, temperature=0.6, top_p=0.95, title=f"{title}, T=0.6", **kw)
    model.train()
    return {"accuracy": greedy["pass@1"], "pass@1_t0.6": sampled["pass@1"], "format": greedy["format"],
            "length": greedy["mean_tokens"]}


def plot(out, sft_history, grpo_history, results):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no demo.png (pip install matplotlib)")
        return
    fig, ax = plt.subplots(1, 4, figsize=(14, 3))
    pts = [(r["step"], r["loss"]) for r in sft_history if "loss" in r]
    ax[0].plot(*zip(*pts), lw=1)
    ax[0].set(title="cold-start SFT: loss", xlabel="step")
    for a, key, title in ((ax[1], "accuracy", "GRPO: accuracy (training samples)"),
                          (ax[2], "completion_len", "GRPO: mean response length")):
        steps = [r["step"] for r in grpo_history]
        vals = [r[key] for r in grpo_history]
        smooth = [sum(vals[max(0, i - 4):i + 1]) / len(vals[max(0, i - 4):i + 1]) for i in range(len(vals))]
        a.plot(steps, vals, lw=0.5, alpha=0.4)
        a.plot(steps, smooth, lw=1.5)
        a.set(title=title, xlabel="step")
    names = list(results)
    ax[3].bar(names, [100 * results[n]["accuracy"] for n in names], color=["grey", "tab:blue", "tab:green"])
    ax[3].set(title="greedy accuracy, held-out (%)", ylim=(0, 100))
    fig.tight_layout()
    fig.savefig(out / "demo.png", dpi=90)
    plt.close(fig)


# The defaults of each --scale; any flag given on the command line wins. "gpu" uses 3-operation problems because
# with 2 operations an 83M model learns both habits almost equally well from SFT and RL has little to select, and
# a modest --grpo-lr because a larger one collapses it (the sweep is in the README).
SCALES = {
    "cpu": dict(size="tiny", device="cpu", min_ops=2, max_ops=2, max_value=5, sft_examples=2000, sft_epochs=15,
                sft_lr=3e-3, rl_examples=2000, grpo_steps=300, grpo_lr=1e-4, num_prompts=16),
    "gpu": dict(size="small", device="cuda", min_ops=3, max_ops=3, max_value=9, sft_examples=20000, sft_epochs=3,
                sft_lr=3e-4, rl_examples=40000, grpo_steps=400, grpo_lr=5e-5, num_prompts=32),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scale", default="cpu", choices=list(SCALES), help="cpu: 0.8M model, minutes on 2 cores (the "
                   "default); gpu: 83M model, minutes on one GPU. Sets the defaults of the flags below")
    p.add_argument("--output-dir", default="runs/demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=list(SCRATCH_CONFIGS))
    p.add_argument("--device", help="cpu (the cpu scale: the demo is for machines without a GPU) or cuda")
    p.add_argument("--min-ops", type=int, help="operations per problem, at least")
    p.add_argument("--max-ops", type=int, help="operations per problem, at most")
    p.add_argument("--max-value", type=int, help="numbers are drawn from 1..max_value")
    p.add_argument("--sft-examples", type=int, help="cold-start traces")
    p.add_argument("--direct-fraction", type=float, default=0.5, help="share of traces that answer without working")
    p.add_argument("--sft-epochs", type=float)
    p.add_argument("--sft-lr", type=float)
    p.add_argument("--rl-examples", type=int, help="training problems for GRPO (the SFT problems among them)")
    p.add_argument("--grpo-steps", type=int)
    p.add_argument("--grpo-lr", type=float)
    p.add_argument("--num-prompts", type=int)
    p.add_argument("--num-generations", type=int, default=8)
    p.add_argument("--max-completion-length", type=int, default=48)
    p.add_argument("--test-problems", type=int, default=200)
    p.add_argument("--no-kernels", action="store_true", help="PyTorch reference attention on GPU too")
    args = p.parse_args(argv)
    for k, v in SCALES[args.scale].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(args.device)
    flags = dict(min_ops=args.min_ops, max_ops=args.max_ops, max_value=args.max_value)
    # The test problems are the same for every seed (generated tasks split train/test by a hash of the problem).
    test = make_arith(args.test_problems, seed=1234, split="test", **flags)
    train = make_arith(max(args.sft_examples, args.rl_examples), seed=args.seed, split="train", **flags)
    sft_data = write_jsonl(out / "cold_start.jsonl", cold_start_rows(train[:args.sft_examples], args.direct_fraction,
                                                                       args.seed))
    rl_data = write_jsonl(out / "rl_problems.jsonl", train)

    rows = sft.read_sft_jsonl(sft_data)
    init = build_from_scratch(sft.example_texts(rows), out / "init", args.size, seed=args.seed)
    L, load = args.max_completion_length, lambda ckpt: load_model(ckpt, device, kernels=not args.no_kernels)
    results = {"before SFT": accuracy(*load(init), test, L, "before SFT")}
    common = dict(device=str(device), seed=args.seed, no_kernels=args.no_kernels,
                  overwrite_output_dir=True)  # the demo starts over each time, in its own directories
    cold = sft.train(sft.SFTConfig(data=str(sft_data), output_dir=str(out / "sft"), model=str(init), max_length=512,
                                   learning_rate=args.sft_lr, num_train_epochs=args.sft_epochs, warmup_steps=20,
                                   eval_steps=100, logging_steps=100, save_steps=0, **common))
    model, tok = load(cold.last_checkpoint)
    results["after SFT"] = accuracy(model, tok, test, L, "after SFT")
    rl = grpo.train(grpo.GRPOConfig(model=str(cold.last_checkpoint), task=str(rl_data), template="plain",
                                    output_dir=str(out / "grpo"), max_steps=args.grpo_steps,
                                    learning_rate=args.grpo_lr, num_prompts=args.num_prompts,
                                    num_generations=args.num_generations,
                                    micro_batch_size=args.num_prompts * args.num_generations,
                                    max_completion_length=L, eval_steps=0, save_steps=0, **common))
    rl.model.save_pretrained(out / "final")
    results["after GRPO"] = accuracy(rl.model, tok, test, L, "after GRPO")

    minutes = (time.time() - t0) / 60
    print(f"\nR1 in miniature (seed {args.seed}, {minutes:.1f} min): greedy accuracy on {len(test)} held-out problems")
    print("| stage | greedy accuracy | pass@1 (T=0.6) | format | response tokens |\n|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {100 * r['accuracy']:.1f}% | {100 * r['pass@1_t0.6']:.1f}% | {100 * r['format']:.0f}% | "
              f"{r['length']:.1f} |")
    plot(out, cold.history, rl.history, results)
    summary = {"seed": args.seed, "minutes": minutes, "results": results, "args": vars(args)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"curves: {out / 'demo.png'}, {out / 'sft' / 'curves.png'}, {out / 'grpo' / 'curves.png'}")
    return summary


if __name__ == "__main__":
    main()
