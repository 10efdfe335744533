"""
R1 in miniature: the whole DeepSeek-R1 recipe on a model small enough to train on a laptop CPU, offline.

    python demo.py                                   # minutes on a laptop CPU, no GPU, no download
    python demo.py --seed 1 --output-dir runs/demo-1
    python demo.py --scale gpu                       # minutes on one GPU: an 83M model, 3-operation problems
    python demo.py --recipe r1-zero --threads 1      # R1-Zero: a base model pretrained here, then GRPO alone
    python demo.py --recipe both --threads 1         # R1 and R1-Zero from the same base model, side by side

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

R1-Zero (--recipe r1-zero; §2.2, the paper's first result: RL straight from a base model, no SFT):
  1. A base model from scratch: a tokenizer and a random model as above, then pretraining (sft.py --pretrain: loss
     on every token) on plain text about the training problems, written as web pages would (textbook, Q&A, chat
     log, worksheet; tasks.pretraining_corpus): some answered at once, some worked, some with a check, some with a
     slip that a check catches ('4+3*4 = 4+12 = 15. Check: 15 - 12 = 3, not 4, so it is 16'). It never sees
     <think>/<answer>; worksheets ask for tags of random letters in the words of the R1-Zero template, so following
     a stated format is something it can learn, and the tokenizer spells every tag in pieces the corpus trains.
  2. GRPO with accuracy + format rewards only, prompted with the R1-Zero template (--template r1); grpo.py logs
     format, accuracy, response length and the share of completions with a self-check (rewards.self_check).
  3. Held-out figures (measure) of the base model and after GRPO: greedy accuracy, pass@1 and pass@8 at T 0.6,
     format, self-check share, readability (readable); OUT/demo.png and OUT/summary.json.
--recipe both adds R1 from the same base model: a small cold-start SFT in the template, then the same GRPO budget;
--recipe base / r1-on-base run the halves as separate processes (--base-model), so two arms can share one GPU.
"""
import argparse
import json
import random
import time
from pathlib import Path

import torch

import grpo
import rewards
import sft
import train_utils as tu
from evaluate import evaluate
from model import load_model, pick_device
from scratch import SCRATCH_CONFIGS, build_from_scratch
from tasks import HABITS, arith_trace, make_arith, pretraining_corpus, solution_text
from tokenizer import r1_zero_prompt


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
                sft_lr=3e-3, rl_examples=2000, grpo_steps=300, grpo_lr=1e-4, num_prompts=16,
                max_completion_length=48, test_problems=200),
    "gpu": dict(size="small", device="cuda", min_ops=3, max_ops=3, max_value=9, sft_examples=20000, sft_epochs=3,
                sft_lr=3e-4, rl_examples=40000, grpo_steps=400, grpo_lr=5e-5, num_prompts=32,
                max_completion_length=48, test_problems=200),
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
    p.add_argument("--max-completion-length", type=int)
    p.add_argument("--test-problems", type=int)
    p.add_argument("--no-kernels", action="store_true", help="PyTorch reference attention on GPU too")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default); on a busy "
                   "machine 1 can be much faster than 2")
    p.add_argument("--recipe", default="r1", choices=["r1", *ARMS], help="r1: cold-start SFT then GRPO (the "
                   "default); r1-zero: pretrain a base model on plain text,\nthen GRPO alone with the R1-Zero "
                   "template; both: R1 (cold start in the template, then GRPO) beside R1-Zero,\nfrom the same base "
                   "model with the same GRPO budget; base: the base model only; r1-on-base: the R1 arm only")
    g = p.add_argument_group("r1-zero, both, base, r1-on-base: the base model and R1's cold start")
    g.add_argument("--pretrain-docs", type=int, help="documents in the plain-text corpus (over the training problems)")
    g.add_argument("--pretrain-epochs", type=float)
    g.add_argument("--pretrain-lr", type=float)
    g.add_argument("--pretrain-length", type=int, help="tokens per packed pretraining row")
    g.add_argument("--habits", type=float, nargs=4, default=[0.4, 0.4, 0.1, 0.1], metavar=tuple(h.upper() for h in
                   HABITS), help="shares of the corpus's solutions: direct, worked, worked + check, slip + check")
    g.add_argument("--worksheet", type=float, help="share of corpus pages that ask for tags")
    g.add_argument("--tag-names", default="random", choices=["random", "words"], help="a worksheet's tags: random "
                   "letters (only the page's instruction tells them) or two of 48 words (tasks.WORKSHEET_TAGS)")
    g.add_argument("--cold-start-examples", type=int, help="R1's cold start: traces in the template")
    g.add_argument("--cold-start-epochs", type=float, default=3)
    g.add_argument("--base-model", help="an earlier run's output dir (its base/) or a checkpoint: no pretraining")
    args = p.parse_args(argv)
    for k, v in {**SCALES[args.scale], **(ZERO_SCALES[args.scale] if args.recipe != "r1" else {})}.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


# ------------------------------------------------------------------ R1-Zero: a base model, then RL alone (§2.2)

# What the R1-Zero recipes change: a base model pretrained here (pretrain_*), R1's small cold start in the template
# (cold_start_*), and, since their prompt is the ~150-token template rather than the bare problem, a smaller GRPO
# budget on CPU (the R1-Zero run alone within minutes) and room for a check in 3-operation answers on GPU.
ZERO_SCALES = {
    "cpu": dict(pretrain_docs=4000, pretrain_epochs=2, pretrain_lr=3e-3, pretrain_length=512, worksheet=0.5,
                cold_start_examples=200, grpo_steps=100, num_prompts=8, test_problems=100),
    "gpu": dict(pretrain_docs=40000, pretrain_epochs=1, pretrain_lr=3e-4, pretrain_length=2048, worksheet=0.5,
                cold_start_examples=2000, grpo_steps=150, max_completion_length=64),
}
ARMS = {"r1-zero": ("r1-zero",), "both": ("r1-zero", "r1"), "base": (), "r1-on-base": ("r1",)}
CURVE_KEYS = ("format", "accuracy", "completion_len", "self_check")
COLUMNS = [("greedy acc", "accuracy", 100), ("pass@1 T0.6", "pass@1_t0.6", 100), ("pass@8", "pass@8_t0.6", 100),
           ("format", "format_t0.6", 100), ("self-check", "self_check_t0.6", 100),
           ("readable", "readable_t0.6", 100), ("tokens", "length_t0.6", 1)]


def readable(completion):
    """Well-formed: the strict R1 format, a whole number as the answer and working with no stray tag pieces ('<',
    '>') inside <think> (the paper's complaint about R1-Zero is poor readability; this is its miniature)."""
    if not rewards.format_reward(completion):
        return 0.0
    think = completion.split("<think>", 1)[1].split("</think>", 1)[0]
    answer = rewards.extract_answer(completion)
    return float(bool(think.strip()) and "<" not in think and ">" not in think and answer.isdigit())


def measure(model, tok, test, max_new_tokens, title, out_path):
    """Held-out figures with the R1-Zero template: greedy accuracy, format and length; pass@1 and pass@8 over 8
    samples at T 0.6 / top-p 0.95 (the paper's sampling), with their format, self-check share and readability."""
    model.eval()
    kw = dict(max_new_tokens=max_new_tokens, batch_size=len(test), template="r1", seed=0)
    greedy = evaluate(model, tok, test, num_samples=1, temperature=0.0, title=f"{title}, greedy", **kw)
    sampled = evaluate(model, tok, test, num_samples=8, temperature=0.6, top_p=0.95, ks=[1, 8],
                       title=f"{title}, T=0.6", out_path=out_path, **kw)
    model.train()
    texts = [c for line in Path(out_path).read_text().splitlines() for c in json.loads(line)["completions"]]
    share = lambda fn: sum(fn(c) for c in texts) / len(texts)
    return {"accuracy": greedy["pass@1"], "format": greedy["format"], "length": greedy["mean_tokens"],
            "pass@1_t0.6": sampled["pass@1"], "pass@8_t0.6": sampled["pass@8"], "format_t0.6": sampled["format"],
            "self_check_t0.6": share(rewards.self_check), "readable_t0.6": share(readable),
            "length_t0.6": sampled["mean_tokens"], "examples": texts[:24:8]}


def pretrain_base(args, out, train, common):
    """The base model: a tokenizer trained on the plain-text corpus (tasks.pretraining_corpus: textbook, Q&A,
    chat-log and worksheet pages, never the R1 format) that spells tags in pieces (scratch.py, tag_tokens=False),
    a random Qwen2, then pretraining with the loss on every token (sft.py --pretrain). Returns its checkpoint."""
    docs = pretraining_corpus(train, args.pretrain_docs, args.seed, args.habits, args.worksheet, args.tag_names)
    data = write_jsonl(out / "corpus.jsonl", [{"text": d} for d in docs])
    init = build_from_scratch(docs, out / "init", args.size, seed=args.seed, tag_tokens=False)
    return sft.train(sft.SFTConfig(data=str(data), output_dir=str(out / "base"), model=str(init), pretrain=True,
                                   max_length=args.pretrain_length, learning_rate=args.pretrain_lr,
                                   num_train_epochs=args.pretrain_epochs, warmup_steps=20, eval_steps=100,
                                   logging_steps=100, save_steps=0, quiet=True, **common)).last_checkpoint


def cold_start_in_template(examples, habits, seed):
    """R1's cold start for --recipe both: traces in the R1-Zero template and format, the corpus's habit mix."""
    rng = random.Random(seed)
    return [{"prompt": r1_zero_prompt(ex["problem"]), "response": f" <think> {solution_text(ex, h, rng)} </think> "
                                                                  f"<answer> {ex['answer']} </answer>"}
            for ex, h in ((ex, rng.choices(HABITS, weights=habits)[0]) for ex in examples)]


def zero_arm(recipe, args, base, out, train, rl_data, common):
    """One arm from the base model: R1-Zero = GRPO alone; R1 = cold-start SFT in the template, then the same GRPO.
    Returns ({stage: checkpoint or model}, GRPO history)."""
    init, stages = base, {}
    if recipe == "r1":
        rows = cold_start_in_template(train[:args.cold_start_examples], args.habits, args.seed)
        init = sft.train(sft.SFTConfig(data=str(write_jsonl(out / "r1_cold_start.jsonl", rows)),
                                       output_dir=str(out / "r1-sft"), model=str(base), max_length=args.pretrain_length,
                                       learning_rate=args.sft_lr, num_train_epochs=args.cold_start_epochs,
                                       warmup_steps=5, eval_fraction=0, eval_steps=100, save_steps=0, quiet=True,
                                       **common)).last_checkpoint
        stages["r1 after SFT"] = init
    rl = grpo.train(grpo.GRPOConfig(model=str(init), task=str(rl_data), template="r1",
                                    output_dir=str(out / f"{recipe}-grpo"), max_steps=args.grpo_steps,
                                    learning_rate=args.grpo_lr, num_prompts=args.num_prompts,
                                    num_generations=args.num_generations,
                                    micro_batch_size=args.num_prompts * args.num_generations,
                                    max_completion_length=args.max_completion_length, eval_steps=0, save_steps=0,
                                    **common))
    rl.model.save_pretrained(out / f"{recipe}-final")
    stages[f"{recipe} after GRPO"] = rl.model
    return stages, rl.history


def main_zero(args, out, device, train, test, rl_data):
    """--recipe r1-zero: base model -> GRPO. both: also base -> cold-start SFT -> GRPO, the same GRPO budget.
    base: the base model only; --base-model: an earlier run's base model (the arms as separate processes)."""
    t0, L = time.time(), args.max_completion_length
    load = lambda ckpt: load_model(ckpt, device, kernels=not args.no_kernels)
    common = dict(device=str(device), seed=args.seed, no_kernels=args.no_kernels, overwrite_output_dir=True)
    results, curves, minutes = {}, {}, {}
    if args.base_model:
        given = Path(args.base_model)
        base = tu.find_checkpoint(given / "base" if (given / "base" / "latest").is_file() else given)
    else:
        base = pretrain_base(args, out, train, common)
        results["base"] = measure(*load(base), test, L, "base model", out / "eval_base.jsonl")
        minutes["base"] = (time.time() - t0) / 60
    tok = load(base)[1]
    for recipe in ARMS[args.recipe]:
        t = time.time()
        stages, curves[recipe] = zero_arm(recipe, args, base, out, train, rl_data, common)
        for name, stage in stages.items():
            model = load(stage)[0] if isinstance(stage, Path) else stage
            results[name] = measure(model, tok, test, L, name, out / f"eval_{name.replace(' ', '_')}.jsonl")
        minutes[recipe] = (time.time() - t) / 60
    total = (time.time() - t0) / 60
    stages = ", ".join(f"{k} {v:.1f}" for k, v in minutes.items())
    print(f"\n{args.recipe} (seed {args.seed}, {total:.1f} min: {stages}), {len(test)} held-out problems, R1-Zero "
          f"template; rates in %, T 0.6 columns over 8 samples")
    print("| stage | " + " | ".join(c for c, _, _ in COLUMNS) + " |\n" + "|---" * (len(COLUMNS) + 1) + "|")
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{s * r[k]:.1f}" for _, k, s in COLUMNS) + " |")
    plot_zero(out, curves, results)
    summary = {"seed": args.seed, "recipe": args.recipe, "minutes": total, "minutes_by_stage": minutes,
               "base_model": str(base), "results": results, "args": vars(args),
               "grpo": {k: [{m: r.get(m) for m in ("step",) + CURVE_KEYS} for r in h] for k, h in curves.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def plot_zero(out, curves, results):
    """OUT/demo.png: the GRPO curves of each arm (format, accuracy, length, self-check share) and held-out pass@k."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no demo.png (pip install matplotlib)")
        return
    fig, ax = plt.subplots(1, 5, figsize=(18, 3))
    titles = ("format reward", "accuracy", "mean response length (tokens)", "self-check share")
    for a, key, title in zip(ax, CURVE_KEYS, titles):
        for recipe, history in curves.items():
            steps, vals = [r["step"] for r in history], [r[key] for r in history]
            smooth = [sum(vals[max(0, i - 9):i + 1]) / len(vals[max(0, i - 9):i + 1]) for i in range(len(vals))]
            line, = a.plot(steps, smooth, lw=1.5, label=recipe)
            a.plot(steps, vals, lw=0.5, alpha=0.3, color=line.get_color())
        a.set(title=f"GRPO: {title}", xlabel="step")
    if curves:
        ax[0].legend()
    names, x = list(results), range(len(results))
    ax[4].bar([i - 0.2 for i in x], [100 * results[n]["pass@1_t0.6"] for n in names], 0.4, label="pass@1 (T 0.6)")
    ax[4].bar([i + 0.2 for i in x], [100 * results[n]["pass@8_t0.6"] for n in names], 0.4, label="pass@8")
    ax[4].set_xticks(list(x), [n.replace(" after ", "\n") for n in names], fontsize=7)
    ax[4].set(title="held-out (%)", ylim=(0, 100))
    ax[4].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "demo.png", dpi=90)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(args.device)
    flags = dict(min_ops=args.min_ops, max_ops=args.max_ops, max_value=args.max_value)
    # The test problems are the same for every seed (generated tasks split train/test by a hash of the problem).
    test = make_arith(args.test_problems, seed=1234, split="test", **flags)
    train = make_arith(max(args.sft_examples, args.rl_examples), seed=args.seed, split="train", **flags)
    if args.recipe != "r1":
        return main_zero(args, out, device, train, test, write_jsonl(out / "rl_problems.jsonl", train))
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
