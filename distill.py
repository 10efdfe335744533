"""
Distillation data by rejection sampling (DeepSeek-R1 §2.3.3, §2.4): sample reasoning traces from a teacher, keep
only those whose final answer is verified correct by the rule rewards and whose format is clean, and write the
jsonl that sft.py trains a student on.

    python distill.py --teacher runs/grpo/checkpoint-500 --task gsm8k --num-samples 4 --out traces.jsonl
    python sft.py --model qwen2.5-0.5b --data traces.jsonl --output-dir runs/distill

Each kept line is {"prompt", "response", "problem", "answer"}: the prompt exactly as the teacher saw it (rendered
by tokenizer.render_prompt under --template, which means the same in every command) and the completion as it was
sampled, so the student learns to continue the same prompt the RL trainer and the evaluation use. A problem
contributes at most --max-per-problem distinct correct traces (R1 keeps several per prompt; one keeps the data
balanced). A teacher whose template ends the prompt inside <think> (DeepSeek-R1-Distill) is scored on that opening
plus its completion.

Deviations from the paper: R1 also drops traces with mixed languages, long paragraphs or code blocks and uses a
generative reward model for problems without a rule-checkable answer; here only rule-verified answers are kept.
"""
import json
from dataclasses import dataclass
from pathlib import Path

import rewards
from tokenizer import TEMPLATES, completion_prefix, render_prompt, resolve_template
from train_utils import option, parse_config, run_cli


def keep_verified(examples, completions, num_samples, max_per_problem=1, prefixes=None):
    """completions[i * num_samples + g] is example i's g-th sample -> the kept (example, completion) pairs:
    correct final answer (rewards.accuracy_reward) and the strict <think>/<answer> format, no duplicates.
    prefixes[i]: what example i's prompt already opened ("<think>\n"), scored in front of each completion."""
    kept = []
    for i, ex in enumerate(examples):
        seen, prefix = set(), prefixes[i] if prefixes else ""
        for c in completions[i * num_samples:(i + 1) * num_samples]:
            if len(seen) == max_per_problem:
                break
            scored = prefix + c
            if c not in seen and rewards.accuracy_reward(scored, ex) == rewards.format_reward(scored, ex) == 1.0:
                seen.add(c)
                kept.append((ex, c))
    return kept


def distill(teacher, tok, examples, out_path, num_samples=4, max_per_problem=1, template="r1", batch_size=32,
            max_new_tokens=1024, temperature=0.6, top_p=0.95, seed=0, generate=None, **generate_kwargs):
    """Sample, filter, write out_path (jsonl); returns {"problems", "samples", "kept", "problems_kept"}.
    template: a --template name or a callable problem -> prompt text (tokenizer.render_prompt)."""
    from tqdm import tqdm
    if generate is None:
        from sample import generate
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    n_kept, solved = 0, set()
    with open(out_path, "w", encoding="utf-8") as f:
        for b in tqdm(range(0, len(examples), batch_size), desc="distill", unit="batch"):
            batch = examples[b:b + batch_size]
            prompts = {ex["problem"]: render_prompt(ex["problem"], template, tok) for ex in batch}
            gen = generate(teacher, [tok.encode(prompts[ex["problem"]]) for ex in batch], num_samples=num_samples,
                           max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                           eos_ids=tuple(tok.eos_ids), stop=("</answer>",), tokenizer=tok, seed=seed + b,
                           **generate_kwargs)
            prefixes = [completion_prefix(prompts[ex["problem"]]) for ex in batch]
            for ex, completion in keep_verified(batch, gen.texts, num_samples, max_per_problem, prefixes):
                # The prompt exactly as the teacher saw it, the response exactly as sampled: prompt + response is
                # the text the student learns (a prompt ending in <think> keeps that opening on the prompt side).
                row = {"prompt": prompts[ex["problem"]], "response": completion,
                       "problem": ex["problem"], "answer": ex["answer"]}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n_kept += 1
                solved.add(ex["problem"])
    stats = {"problems": len(examples), "samples": len(examples) * num_samples, "kept": n_kept,
             "problems_kept": len(solved)}
    print(f"distill: kept {n_kept} of {stats['samples']} traces, covering {len(solved)} of {len(examples)} problems "
          f"-> {out_path}")
    return stats


@dataclass
class DistillConfig:
    """Rejection-sample verified reasoning traces from a teacher into a prompt/response jsonl for sft.py."""
    teacher: str = option(None, "checkpoint directory or known name that writes the traces", required=True)
    out: str = option(None, "jsonl to write (prompt/response per line)", required=True)
    task: str = option("gsm8k", "gsm8k, countdown, arith or a .jsonl with problem/answer")
    split: str = option("train", "train or test")
    limit: int | None = option(None, "first N problems (generated tasks: how many)")
    num_samples: int = option(4, "traces sampled per problem")
    max_per_problem: int = option(1, "distinct correct traces kept per problem")
    template: str = option("auto", "prompt: auto (the teacher's template if it opens <think>, r1-chat for instruct "
                                   "teachers, else r1), plain, chat, r1, r1-chat", choices=TEMPLATES)
    batch_size: int = option(32, "problems per generate call")
    max_new_tokens: int = option(1024, "generation limit per trace")
    temperature: float = option(0.6, "sampling temperature")
    top_p: float = option(0.95, "nucleus sampling mass")
    seed: int = option(0, "data and sampling seed")
    device: str | None = option(None, "cuda or cpu (default: cuda if available)")
    dtype: str | None = option(None, "bfloat16, float16 or float32 (default: bf16 on cuda, fp32 on cpu)")
    no_kernels: bool = option(False, "PyTorch reference attention instead of Triton (the readable path)")


def run(config):
    from model import load_model
    from tasks import load_task
    teacher, tok = load_model(config.teacher, config.device, config.dtype, kernels=not config.no_kernels)
    teacher.eval()
    examples = load_task(config.task, split=config.split, n=config.limit, seed=config.seed)
    return distill(teacher, tok, examples, config.out, config.num_samples, config.max_per_problem,
                   resolve_template(config.template, config.teacher, tok), config.batch_size, config.max_new_tokens,
                   config.temperature, config.top_p, config.seed)


def main(argv=None):
    config, _ = parse_config(DistillConfig, argv)
    return run(config)


if __name__ == "__main__":
    run_cli(main)
