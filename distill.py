"""
Distillation data by rejection sampling (DeepSeek-R1 §2.3.3, §2.4): sample reasoning traces from a teacher, keep
only those whose final answer is verified correct by the rule rewards and whose format is clean, and write the
jsonl that sft.py trains a student on.

    python distill.py --teacher runs/grpo/checkpoint-500 --task gsm8k --num-samples 4 --out traces.jsonl
    python sft.py --model qwen2.5-0.5b --data traces.jsonl --output-dir runs/distill

Each kept line is {"prompt", "response", "problem", "answer"}: the prompt exactly as the teacher saw it (the
R1-Zero template, or its chat form with --chat) and the completion as it was sampled, so the student learns to
continue the same prompt the RL trainer and the evaluation use. A problem contributes at most
--max-per-problem distinct correct traces (R1 keeps several per prompt; one keeps the data balanced).

Deviations from the paper: R1 also drops traces with mixed languages, long paragraphs or code blocks and uses a
generative reward model for problems without a rule-checkable answer; here only rule-verified answers are kept.
"""
import argparse
import json
import sys
from pathlib import Path

import rewards
from tokenizer import r1_zero_prompt


def keep_verified(examples, completions, num_samples, max_per_problem=1):
    """completions[i * num_samples + g] is example i's g-th sample -> the kept (example, completion) pairs:
    correct final answer (rewards.accuracy_reward) and the strict <think>/<answer> format, no duplicates."""
    kept = []
    for i, ex in enumerate(examples):
        seen = set()
        for c in completions[i * num_samples:(i + 1) * num_samples]:
            if len(seen) == max_per_problem:
                break
            if c not in seen and rewards.accuracy_reward(c, ex) == 1.0 and rewards.format_reward(c, ex) == 1.0:
                seen.add(c)
                kept.append((ex, c))
    return kept


def distill(teacher, tok, examples, out_path, num_samples=4, max_per_problem=1, chat=False, batch_size=32,
            max_new_tokens=1024, temperature=0.6, top_p=0.95, seed=0, generate=None):
    """Sample, filter, write out_path (jsonl); returns {"problems", "samples", "kept", "problems_kept"}."""
    from tqdm import tqdm
    if generate is None:
        from sample import generate
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    n_kept, solved = 0, set()
    with open(out_path, "w", encoding="utf-8") as f:
        for b in tqdm(range(0, len(examples), batch_size), desc="distill", unit="batch"):
            batch = examples[b:b + batch_size]
            prompts = [r1_zero_prompt(ex["problem"], chat=chat) for ex in batch]
            gen = generate(teacher, [tok.encode(p) for p in prompts], num_samples=num_samples,
                           max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                           eos_ids=tuple(tok.eos_ids), stop=("</answer>",), tokenizer=tok, seed=seed + b)
            for ex, completion in keep_verified(batch, gen.texts, num_samples, max_per_problem):
                row = {"prompt": r1_zero_prompt(ex["problem"], chat=chat), "response": completion,
                       "problem": ex["problem"], "answer": ex["answer"]}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n_kept += 1
                solved.add(ex["problem"])
    stats = {"problems": len(examples), "samples": len(examples) * num_samples, "kept": n_kept,
             "problems_kept": len(solved)}
    print(f"distill: kept {n_kept} of {stats['samples']} traces, covering {len(solved)} of {len(examples)} problems "
          f"-> {out_path}")
    return stats


def main(argv=None):
    from model import Qwen2, pick_device, pick_dtype
    from tasks import load_task
    from tokenizer import Tokenizer
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", required=True, help="checkpoint directory or known name that writes the traces")
    p.add_argument("--task", default="gsm8k", help="gsm8k, countdown, arith or a .jsonl with problem/answer")
    p.add_argument("--split", default="train")
    p.add_argument("--limit", type=int, default=None, help="first N problems (generated tasks: how many)")
    p.add_argument("--out", required=True, help="jsonl to write (prompt/response per line)")
    p.add_argument("--num-samples", type=int, default=4, help="traces sampled per problem")
    p.add_argument("--max-per-problem", type=int, default=1, help="distinct correct traces kept per problem")
    p.add_argument("--chat", action="store_true", help="the chat form of the R1 prompt (instruct teachers)")
    p.add_argument("--batch-size", type=int, default=32, help="problems per generate call")
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    device = pick_device(args.device)
    teacher = Qwen2.from_pretrained(args.teacher, device=device, dtype=pick_dtype(device)).eval()
    teacher.use_kernels = device.type == "cuda"
    tok = Tokenizer.from_dir(teacher.source_dir)
    examples = load_task(args.task, split=args.split, n=args.limit, seed=args.seed)
    return distill(teacher, tok, examples, args.out, args.num_samples, args.max_per_problem, args.chat,
                   args.batch_size, args.max_new_tokens, args.temperature, args.top_p, args.seed)


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
