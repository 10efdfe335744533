"""Evaluation the way DeepSeek-R1 reports it: k samples per problem, pass@1, pass@k, maj@k (cons@k).

DeepSeek-R1 §3 samples k responses per problem at temperature 0.6 and top-p 0.95 and reports pass@1 as the mean
correctness over those k samples (greedy decoding makes long reasoning loop and vary across checkpoints).

    python sample.py --model X --eval math500 --num-samples 16    # sample.py's CLI calls run_eval() below

- pass@k: the unbiased estimator of Chen et al. 2021 (Codex, eq. 1): with n samples of which c are correct,
  pass@k = 1 - C(n-c, k) / C(n, k), computed as a running product so large n never overflows.
- maj@k (cons@k): the answers of the k samples are grouped into classes of equivalent answers
  (rewards.answers_match against each class's first member, in sample order); the largest class wins and the
  problem counts as solved if that answer is right. Ties go to the class whose first member came earliest
  (lowest sample index), so the result never depends on hashing or sort order; samples without an answer vote
  for nothing. For countdown the "answer" is the expression and expressions group by value, so there the first
  expression of the winning class decides whether the problem counts as solved.
"""
import json
import time
from pathlib import Path

import rewards
from tasks import load_task


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


def score_problem(example, completions, ks=None):
    """Per-problem record: each completion's answer, accuracy and format, plus pass@k and the majority answer."""
    task = example.get("task", "math")
    answers = [rewards.final_answer(c, task) for c in completions]
    correct = [rewards.accuracy_reward(c, example) for c in completions]
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


def evaluate(model, tokenizer, examples, num_samples=16, temperature=0.6, top_p=0.95, max_new_tokens=4096,
             batch_size=32, out_path=None, seed=0, chat=False, ks=None, title="eval", generate=None, prompt_fn=None,
             **generate_kwargs):
    """Sample num_samples completions per example, score them, write one JSON line per problem to out_path
    (if given) and return the summary dict (also printed as a table). batch_size counts prompts per generate
    call (so batch_size * num_samples rows); generate and prompt_fn default to sample.generate and
    tokenizer.r1_zero_prompt, imported here so this module loads without the model code. Other keyword arguments
    (top_k, cuda_graph, eos_ids, ...) go to generate; generation stops at "</answer>" and the tokenizer's EOS."""
    from tqdm import tqdm
    if generate is None:
        from sample import generate
    if prompt_fn is None:
        from tokenizer import r1_zero_prompt as prompt_fn
    generate_kwargs = {"eos_ids": tuple(tokenizer.eos_ids), "stop": ("</answer>",), **generate_kwargs}
    start, records = time.time(), []
    if out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    out = open(out_path, "w", encoding="utf-8") if out_path else None
    try:
        for b in tqdm(range(0, len(examples), batch_size), desc="eval", unit="batch"):
            batch = examples[b:b + batch_size]
            prompts = [tokenizer.encode(prompt_fn(ex["problem"], chat=chat)) for ex in batch]
            gen = generate(model, prompts, num_samples=num_samples, max_new_tokens=max_new_tokens,
                           temperature=temperature, top_p=top_p, tokenizer=tokenizer,
                           seed=None if seed is None else seed + b, **generate_kwargs)
            for i, ex in enumerate(batch):
                rows = range(i * num_samples, (i + 1) * num_samples)  # row i*num_samples+g = prompt i, sample g
                texts = [gen.texts[r] for r in rows]
                record = score_problem(ex, texts, ks)
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


def run_eval(model, tok, name, limit=None, out_path=None, temperature=None, top_p=None, **kwargs):
    """`python sample.py --eval NAME`: a dataset name (tasks.NAMES) or .jsonl path, its first `limit` problems,
    sampled at the paper's settings unless told otherwise (temperature 0.6, top-p 0.95); per-problem results go
    to out_path (default eval_<name>.jsonl). Other keyword arguments go to evaluate() and on to generate."""
    kwargs.pop("tokenizer", None)  # evaluate passes `tok` itself
    title = Path(name).stem
    return evaluate(model, tok, load_task(name, n=limit), temperature=0.6 if temperature is None else temperature,
                    top_p=0.95 if top_p is None else top_p, out_path=out_path or f"eval_{title}.jsonl", title=title,
                    **kwargs)
