"""Evaluation the way DeepSeek-R1 reports it: k samples per problem, pass@1, pass@k, maj@k (cons@k).

    python evaluate.py --model qwen2.5-math-1.5b --dataset math500 --num-samples 16      # table + eval_math500.jsonl
    python evaluate.py --model deepseek-r1-distill-qwen-1.5b --dataset aime24 --num-samples 64   # the paper's setup

DeepSeek-R1 §3 samples k responses per problem at temperature 0.6 and top-p 0.95 and reports pass@1 as the mean
correctness over those k samples (greedy decoding makes long reasoning loop and vary across checkpoints), with a
32,768-token generation limit for its distilled models and k = 64 for cons@64. This command uses those settings
(the limit only for DeepSeek-R1-Distill checkpoints, known by name or by a chat template that opens <think>; 4096
tokens otherwise), the checkpoint's own chat template under --template auto, and prints the paper's reported
figures beside ours where it reports the model and dataset (DeepSeek-R1 Table 5).

- pass@k: the unbiased estimator of Chen et al. 2021 (Codex, eq. 1): with n samples of which c are correct,
  pass@k = 1 - C(n-c, k) / C(n, k), computed as a running product so large n never overflows.
- maj@k (cons@k): the answers of the k samples are grouped into classes of equivalent answers
  (rewards.answers_match against each class's first member, in sample order); the largest class wins and the
  problem counts as solved if that answer is right (by --answer-checker; the classes always by the builtin
  checker, which is exact and fast). Ties go to the class whose first member came earliest
  (lowest sample index), so the result never depends on hashing or sort order; samples without an answer vote
  for nothing. For countdown the "answer" is the expression and expressions group by value, so there the first
  expression of the winning class decides whether the problem counts as solved.
- A template that ends the prompt inside <think> (DeepSeek-R1-Distill's) means each completion starts inside the
  think block: answers and format are scored on tokenizer.completion_prefix(prompt) + completion.
"""
import json
import time
from dataclasses import dataclass
from pathlib import Path

import rewards
from answers import CHECKERS
from tasks import load_task
from tokenizer import TEMPLATES, completion_prefix, render_prompt, resolve_template
from train_utils import option, parse_config, run_cli

# What DeepSeek-R1 (Table 5) reports for its distilled models, in the keys of our summary (maj@64 is cons@64).
PAPER_FIGURES = {
    ("deepseek-r1-distill-qwen-1.5b", "aime24"): {"pass@1": 0.289, "maj@64": 0.527},
    ("deepseek-r1-distill-qwen-1.5b", "math500"): {"pass@1": 0.839},
}
DISTILL_MAX_NEW_TOKENS = 32768  # DeepSeek-R1 §3: the generation limit for the distilled models' evaluation


def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every size-k subset holds a correct sample
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):  # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
        miss *= 1.0 - k / i
    return 1.0 - miss


def majority_vote(answers):
    """(winning answer, index of its first sample) over equivalent answers; (None, None) if none answered.
    Ties: the class seen first wins (lowest sample index)."""
    classes = []  # [first answer, first index, votes]
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        for cls in classes:
            if answer == cls[0] or rewards.answers_match(answer, cls[0]):
                cls[2] += 1
                break
        else:
            classes.append([answer, i, 1])
    if not classes:
        return None, None
    best = max(classes, key=lambda cls: (cls[2], -cls[1]))  # most votes, then earliest first appearance
    return best[0], best[1]


def default_ks(n):
    """1, 2, 4, ... up to n, and n itself."""
    ks = [k for k in (2 ** i for i in range(20)) if k <= n]
    return ks + ([n] if ks[-1] != n else [])


def score_problem(example, completions, ks=None, checker="builtin"):
    """Per-problem record: each completion's answer, accuracy (by the answer checker) and format, plus pass@k and
    the majority answer."""
    task = example.get("task", "math")
    answers = [rewards.final_answer(c, task) for c in completions]
    correct = [rewards.accuracy_reward(c, example, checker) for c in completions]
    n, n_correct = len(completions), int(sum(correct))
    majority, first = majority_vote(answers)
    return {
        "problem": example["problem"], "answer": example["answer"], "task": task,
        "predictions": answers, "correct": correct,
        "format": [rewards.format_reward(c, example) for c in completions],
        "pass@k": {k: pass_at_k(n, n_correct, k) for k in (ks or default_ks(n))},
        "majority": majority, "maj_correct": bool(first is not None and correct[first]),
        "completions": completions,
    }


def summarize(records):
    """Dataset-level figures from per-problem records: pass@1 = mean over problems of the mean over samples."""
    if not records:
        raise ValueError("no records to summarize: the dataset was empty")
    n = len(records[0]["correct"])
    mean = lambda xs: sum(xs) / len(xs)
    summary = {"problems": len(records), "samples": n}
    for k in records[0]["pass@k"]:
        summary[f"pass@{k}"] = mean([r["pass@k"][k] for r in records])
    summary[f"maj@{n}"] = mean([float(r["maj_correct"]) for r in records])
    summary["format"] = mean([mean(r["format"]) for r in records])
    summary["answered"] = mean([mean([p is not None for p in r["predictions"]]) for r in records])
    for key in ("mean_tokens", "truncated"):
        if key in records[0]:
            summary[key] = mean([r[key] for r in records])
    return summary


def format_table(summary, title="eval"):
    """A two-row markdown table: the metric names and their values (percent for rates)."""
    keys = [k for k in summary if k not in ("problems", "samples", "seconds")]
    cell = lambda k: f"{summary[k]:.1f}" if k == "mean_tokens" else f"{100 * summary[k]:.1f}"
    head = f"| {title}: {summary['problems']} problems x {summary['samples']} samples | " + " | ".join(keys) + " |"
    row = "| rates in %, length in tokens | " + " | ".join(cell(k) for k in keys) + " |"
    return "\n".join([head, "|" + "---|" * (len(keys) + 1), row])


def evaluate(model, tokenizer, examples, template="r1", num_samples=16, temperature=0.6, top_p=0.95,
             max_new_tokens=4096, batch_size=32, out_path=None, seed=0, ks=None, title="eval", generate=None,
             answer_checker="builtin", **generate_kwargs):
    """Sample num_samples completions per example, score them, write one JSON line per problem to out_path
    (if given) and return the summary dict (also printed as a table). template: a --template name (plain, chat,
    r1, r1-chat: tokenizer.render_prompt) or a callable problem -> prompt text. batch_size counts prompts per
    generate call (so batch_size * num_samples rows); generate defaults to sample.generate, imported here so this
    module loads without the model code. answer_checker: builtin or math-verify (rewards.accuracy_reward). Other
    keyword arguments (top_k, cuda_graph, eos_ids, ...) go to generate; generation stops at "</answer>" and the
    tokenizer's EOS."""
    from tqdm import tqdm
    if generate is None:
        from sample import generate
    generate_kwargs = {"eos_ids": tuple(tokenizer.eos_ids), "stop": ("</answer>",), **generate_kwargs}
    start, records = time.time(), []
    if out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    out = open(out_path, "w", encoding="utf-8") if out_path else None
    try:
        for b in tqdm(range(0, len(examples), batch_size), desc="eval", unit="batch"):
            batch = examples[b:b + batch_size]
            texts = [render_prompt(ex["problem"], template, tokenizer) for ex in batch]
            gen = generate(model, [tokenizer.encode(t) for t in texts], num_samples=num_samples,
                           max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, tokenizer=tokenizer,
                           seed=None if seed is None else seed + b, **generate_kwargs)
            for i, ex in enumerate(batch):
                rows = range(i * num_samples, (i + 1) * num_samples)  # row i*num_samples+g = prompt i, sample g
                prefix = completion_prefix(texts[i])  # "<think>\n" when the prompt opened the think block
                record = score_problem(ex, [prefix + gen.texts[r] for r in rows], ks, answer_checker)
                record["mean_tokens"] = sum(int(gen.lengths[r]) for r in rows) / num_samples
                record["truncated"] = sum(gen.finish[r] == "length" for r in rows) / num_samples
                records.append(record)
                if out:
                    out.write(json.dumps({"index": b + i, **record}, ensure_ascii=False) + "\n")
    finally:
        if out:
            out.close()
    summary = summarize(records)
    summary["seconds"] = time.time() - start
    print(format_table(summary, title))
    return summary


@dataclass
class EvalConfig:
    """Evaluate a checkpoint as DeepSeek-R1 does: k samples per problem at T 0.6 / top-p 0.95, pass@1, pass@k, maj@k."""
    model: str = option(None, "checkpoint directory, Hub id or a known name (model.KNOWN_MODELS)", required=True)
    dataset: str = option("math500", "gsm8k, math500, aime24, amc23, countdown, arith, a .jsonl path or a Hub id")
    split: str = option("test", "train or test")
    limit: int | None = option(None, "the first N problems only")
    num_samples: int = option(16, "samples per problem: pass@1 is their mean correctness, maj@k their vote (paper: 64)")
    template: str = option("auto", "prompt: auto (the checkpoint's template if it opens <think>, r1-chat for "
                                   "instruct models, else r1), plain, chat, r1, r1-chat", choices=TEMPLATES)
    max_new_tokens: int | None = option(None, f"generation limit (default {DISTILL_MAX_NEW_TOKENS} for "
                                              f"DeepSeek-R1-Distill models as in the paper, else 4096)")
    temperature: float = option(0.6, "sampling temperature (0 = greedy)")
    top_p: float = option(0.95, "nucleus sampling mass")
    top_k: int = option(0, "keep the k most likely tokens (0: all)")
    batch_size: int | None = option(None, "prompts per generate call (default 32, or 1 for DeepSeek-R1-Distill "
                                          "models: 64 samples x 32K tokens already fill a KV cache of ~60 GB)")
    out: str | None = option(None, "per-problem results jsonl (default eval_<dataset>.jsonl)")
    seed: int = option(0, "sampling seed (batch b uses seed + b)")
    device: str | None = option(None, "cuda or cpu (default: cuda if available)")
    dtype: str | None = option(None, "bfloat16, float16 or float32 (default: bf16 on cuda, fp32 on cpu)")
    no_kernels: bool = option(False, "PyTorch reference attention instead of Triton (the readable path)")
    no_cuda_graph: bool = option(False, "launch every decode step eagerly")
    compile: bool = option(False, "torch.compile the plain decode step (--no-kernels or CPU; slow first "
                                          "call); the default GPU path is one CUDA graph of fused kernels already")
    answer_checker: str = option("builtin", "how MATH-style answers are compared: builtin (exact, no dependency) or "
                                            "math-verify (HuggingFace's; pip install math-verify; figures comparable "
                                            "with open-r1's)", choices=tuple(CHECKERS))


def is_distill_model(model_name, tokenizer):
    """DeepSeek-R1-Distill checkpoints: by name, or by a chat template whose generation prompt opens <think>."""
    if "deepseek-r1-distill" in str(model_name).lower():
        return True
    return bool(tokenizer.chat_template) and bool(completion_prefix(render_prompt("1 + 1", "chat", tokenizer)))


def paper_figures(model_name, dataset):
    """The paper's reported figures for this model and dataset ({} when it reports none)."""
    name = Path(str(model_name).rstrip("/")).name.lower()
    return PAPER_FIGURES.get((name, Path(dataset).stem.lower()), {})


def format_paper_row(summary, figures):
    """A table row of the paper's figures under format_table's columns ("-" where it reports none)."""
    keys = [k for k in summary if k not in ("problems", "samples", "seconds")]
    cells = [f"{100 * figures[k]:.1f}" if k in figures else "-" for k in keys]
    return "| DeepSeek-R1 paper (Table 5) | " + " | ".join(cells) + " |"


def run(config):
    """`python evaluate.py`: load the model, resolve the template and the paper's settings, evaluate; returns the
    summary (with the paper's figures under "paper" when it reports this model and dataset)."""
    from model import load_model
    rewards.get_checker(config.answer_checker)  # a missing math-verify fails here, before the model loads
    model, tok = load_model(config.model, config.device, config.dtype, kernels=not config.no_kernels)
    model.eval()
    template = resolve_template(config.template, config.model, tok)
    distill = is_distill_model(config.model, tok)
    default_max_new = DISTILL_MAX_NEW_TOKENS if distill else 4096
    max_new = config.max_new_tokens if config.max_new_tokens is not None else default_max_new
    batch_size = config.batch_size if config.batch_size is not None else 1 if distill else 32
    title = Path(config.dataset).stem
    print(f"evaluate: {config.model} on {config.dataset}, template {template}, {config.num_samples} samples at "
          f"T {config.temperature} / top-p {config.top_p}, up to {max_new} new tokens")
    examples = load_task(config.dataset, split=config.split, n=config.limit, seed=config.seed)
    summary = evaluate(model, tok, examples, template, num_samples=config.num_samples,
                       temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
                       max_new_tokens=max_new, batch_size=batch_size, out_path=config.out or f"eval_{title}.jsonl",
                       seed=config.seed, title=title, compile=config.compile, answer_checker=config.answer_checker,
                       cuda_graph=model.lm_head.weight.is_cuda and not config.no_cuda_graph)
    figures = paper_figures(config.model, config.dataset)
    if figures:
        print(format_paper_row(summary, figures))
        summary["paper"] = figures
    return summary


def main(argv=None):
    config, _ = parse_config(EvalConfig, argv)
    return run(config)


if __name__ == "__main__":
    run_cli(main)
