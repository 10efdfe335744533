"""
GRPO / R1-Zero: reinforcement learning of a base model on verifiable problems, rewarded by rules alone.

    python grpo.py --model qwen2.5-0.5b                                  # GSM8K, R1-Zero template, one GPU
    python grpo.py --model qwen2.5-1.5b --task countdown --beta 0.04 --gradient-checkpointing
    python grpo.py --model qwen2.5-0.5b-instruct --loss-type dr_grpo --scale-rewards none   # Dr. GRPO
    python grpo.py --model qwen2.5-0.5b --epsilon-high 0.28 --overlong-buffer 256           # DAPO's tricks
    python grpo.py --model runs/sft/checkpoint-200 --task arith --template plain           # a local directory
    python grpo.py --model qwen2.5-0.5b --resume runs/grpo                                # continue exactly

One step (GRPO: DeepSeekMath §4.1, eq. 3; DeepSeek-R1 §2.2):
  1. Sample G completions for each of P prompts (sample.py: KV cache, CUDA graphs, Triton kernels on GPU).
  2. Score each with the rule rewards (rewards.py): accuracy + format, weighted by --reward-weights.
  3. Advantage of a completion = its reward standardised within its group of G (no value network). Groups whose
     G rewards are all equal carry no signal (every advantage is 0) and are dropped before training.
  4. --num-iterations (mu) passes over the batch, each one AdamW step with gradient accumulation over
     micro-batches, on the clipped-ratio objective against the log-probs of the policy that sampled
     (recorded during the first pass, when the weights still are that policy), plus beta * KL to the initial
     model (k3 estimator) when --beta > 0 — only then is a frozen reference copy kept.
Every step appends to OUTPUT_DIR/metrics.jsonl, prints one line and redraws OUTPUT_DIR/curves.png. One of the
numbers is `gap`: the mean |log-prob(sampler) - log-prob(trainer)| of the sampled tokens. Both score the same
tokens under the same weights and temperature, so it should be ~1e-2 in bf16 and ~1e-6 in fp32; a larger gap
means the sampler and trainer disagree (a masking, position or temperature bug) and the ratios are off.

Deviations from the papers, and why:
  1. Default --loss-type dapo (token-level mean over the batch, DAPO §3.3) as in TRL, not the paper's
     per-sequence mean (`grpo`), which weights tokens of short answers more (Dr. GRPO §3.1).
  2. Default --beta 0: no KL term and no reference model (DAPO §2.3, Dr. GRPO); R1-Zero used a KL term.
  3. The group std is the unbiased one (as TRL) with eps 1e-4 added.
  4. Sampling stops at "</answer>" with the R1 templates: nothing after it can change the reward.
Left out: multi-GPU, vLLM, reward models, process supervision.

Shape legend: P prompts per step, G completions per prompt, N = P*G rows, M rows of a micro-batch,
Tp prompt length (left-padded), Tc completion length, C hidden, V vocab.
"""
import argparse
import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

import rewards
import train_utils as tu
from model import Qwen2, pick_device, pick_dtype
from sample import generate, pad_left
from tasks import load_task
from tokenizer import Tokenizer, r1_zero_prompt, render_chat

# ------------------------------------------------------------------------ the objective (change the loss here)


def group_advantages(rewards, scale_rewards="group", eps=1e-4):
    """rewards (P, G) -> advantages (P, G): reward minus its group's mean, divided by the group's std
    (GRPO, DeepSeekMath §4.1.2) unless scale_rewards == "none" (Dr. GRPO §3.2: the std division makes
    too-easy and too-hard questions weigh more)."""
    centred = rewards - rewards.mean(1, keepdim=True)
    if scale_rewards == "none":
        return centred
    return centred / (rewards.std(1, keepdim=True) + eps)


def zero_spread(rewards):
    """(P, G) -> (P,) True where all G rewards are equal: every advantage is 0, the group teaches nothing."""
    return rewards.max(1).values == rewards.min(1).values


def overlong_penalty(lengths, max_len, buffer):
    """DAPO eq. 13 soft overlong punishment: 0 up to max_len - buffer tokens, then falling linearly to -1 at
    max_len. lengths (N,) -> (N,). buffer 0 turns it off."""
    if buffer <= 0:
        return torch.zeros(lengths.shape)
    return ((max_len - buffer - lengths.float()) / buffer).clamp(-1.0, 0.0)


def completion_mask(lengths, T, drop=None):
    """(N,) lengths -> (N, T) float, 1 on each completion's tokens. drop (N,) bool zeroes whole rows:
    --mask-truncated-completions drops completions cut at the length limit (DAPO §3.4: their missing answer
    is the budget's fault, not the reasoning's)."""
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    return mask if drop is None else mask * (~drop).float()[:, None]


def kl_k3(logp, ref_logp):
    """Per-token KL(policy || reference), the k3 estimator (Schulman 2020; DeepSeekMath eq. 4):
    exp(ref - logp) - (ref - logp) - 1. Unbiased for samples from the policy, and never negative."""
    d = ref_logp - logp
    return d.exp() - d - 1


def policy_loss(logp, old_logp, adv, mask, *, epsilon=0.2, epsilon_high=None, beta=0.0, ref_logp=None,
                loss_type="dapo", max_completion_length=None, num_seqs=None, num_tokens=None):
    """The clipped-ratio GRPO objective, negated (a loss to minimise), and statistics.

    logp, old_logp, ref_logp, mask: (M, Tc) for M rows; adv: (M,). Per token (DeepSeekMath eq. 3, PPO's clip):
        ratio = exp(logp - old_logp);  l = -min(ratio * A, clip(ratio, 1 - epsilon, 1 + epsilon_high) * A)
                                           + beta * KL_k3
    epsilon_high > epsilon is DAPO's clip-higher (§3.1): low-probability tokens may grow more before clipping.
    The normaliser is where the variants differ (num_seqs, num_tokens: totals over the whole batch, which a
    micro-batch is part of; default this call's):
        grpo     sum over each sequence / its length, summed, / num_seqs      (DeepSeekMath eq. 3)
        dr_grpo  sum over all tokens / (num_seqs * max_completion_length)      (Dr. GRPO §3.2)
        dapo     sum over all tokens / num_tokens                              (DAPO eq. 8, token-level)
    Returns (loss, stats) with stats = sums over tokens (clipped, kl, ratio, tokens) for logging."""
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    adv = adv[:, None]  # (M, 1) one advantage for every token of the completion
    ratio = torch.exp(logp - old_logp)  # (M, Tc)
    unclipped = ratio * adv
    clipped = ratio.clamp(1 - epsilon, 1 + epsilon_high) * adv
    per_token = -torch.min(unclipped, clipped)
    kl = torch.zeros_like(logp)
    if beta > 0:
        kl = kl_k3(logp, ref_logp)
        per_token = per_token + beta * kl
    num_seqs = mask.shape[0] if num_seqs is None else num_seqs
    num_tokens = mask.sum() if num_tokens is None else num_tokens
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).sum() / num_seqs
    elif loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (num_seqs * max_completion_length)
    elif loss_type == "dapo":
        loss = (per_token * mask).sum() / num_tokens
    else:
        raise ValueError(f"unknown loss type {loss_type!r}: use grpo, dr_grpo or dapo")
    # A token is clipped when the min picked the clipped term and it differs: its gradient is then zero.
    is_clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + epsilon_high) & (adv > 0))
    with torch.no_grad():
        stats = {"clipped": (is_clipped * mask).sum(), "kl": (kl * mask).sum(), "ratio": (ratio * mask).sum(),
                 "tokens": mask.sum()}
    return loss, stats


# ------------------------------------------------------------------------ log-probs of completions


def completion_logprobs(model, idx, start, Tp, tokens, sel, temperature, entropy=False):
    """Log-probs (M, Tc) fp32 of the completion tokens (M, Tc) of sequences idx (M, Tp + Tc) = left-padded prompt
    + completion, computed only at sel (n,), the flat positions of the real tokens in (M, Tc) (padding costs no
    LM-head work; 0 is returned there); and the entropy (n,) of those positions if asked."""
    M, Tc = tokens.shape
    h = model(idx, start=start, return_hidden=True)[:, Tp - 1:-1]  # (M, Tc, C): position t predicts token t
    h = h.reshape(M * Tc, -1).index_select(0, sel)  # (n, C)
    from kernels.logprob import fused_logprob, logprob_ref  # fused: never holds the (n, V) logits
    fn = fused_logprob if model.use_kernels and idx.is_cuda else logprob_ref
    out = fn(h, model.lm_head.weight, tokens.flatten()[sel], temperature, return_entropy=entropy)  # (n,)
    lp, ent = out if entropy else (out, None)
    logp = torch.zeros(M * Tc, device=h.device).index_copy(0, sel, lp).view(M, Tc)
    return logp, ent


# ------------------------------------------------------------------------ data


def prompt_text(problem, template):
    if template == "plain":
        return problem
    if template == "chat":
        return render_chat([{"role": "user", "content": problem}])
    return r1_zero_prompt(problem, chat=template == "r1-chat")


def next_examples(examples, position, P, seed):
    """Examples position .. position+P-1 of an endless stream of seeded shuffles (one per epoch): the data
    position is a single integer, which is what a checkpoint stores."""
    out, n, perms = [], len(examples), {}
    for k in range(position, position + P):
        epoch, i = divmod(k, n)
        if epoch not in perms:
            perms[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        out.append(examples[perms[epoch][i]])
    return out


def check_config(args, config, prompt_lens):
    """Refuse, with one line, configurations that cannot work."""
    if args.num_generations < 2:
        raise ValueError(f"--num-generations is {args.num_generations}: GRPO compares completions of the same "
                         f"prompt, so it needs at least 2 (8 to 16 is usual)")
    if not prompt_lens:
        raise ValueError(f"no prompt of the task fits --max-prompt-length {args.max_prompt_length}: raise it")
    need = max(prompt_lens) + args.max_completion_length
    if need > config.max_position_embeddings:
        raise ValueError(f"prompts of up to {max(prompt_lens)} tokens + --max-completion-length "
                         f"{args.max_completion_length} = {need} tokens do not fit the model's context of "
                         f"{config.max_position_embeddings}: lower --max-completion-length or --max-prompt-length")
    if args.temperature <= 0:
        raise ValueError("--temperature must be > 0: GRPO needs sampled, not greedy, completions")
    if not 0 <= args.overlong_buffer < args.max_completion_length:
        raise ValueError("--overlong-buffer must be >= 0 and smaller than --max-completion-length")
    if args.num_iterations < 1 or args.micro_batch_size < 0 or args.num_prompts < 1:
        raise ValueError("--num-iterations and --num-prompts must be >= 1, --micro-batch-size >= 0 (0: auto)")


# ------------------------------------------------------------------------ training


LINE = [("step", "step", "d"), ("reward", "reward", ".3f"), ("acc", "accuracy", ".3f"), ("fmt", "format", ".3f"),
        ("len", "completion_len", ".0f"), ("trunc", "truncated", ".2f"), ("zero", "zero_spread", ".2f"),
        ("clip", "clip_frac", ".3f"), ("kl", "kl", ".4f"), ("ent", "entropy", ".3f"), ("gap", "logp_gap", ".1e"),
        ("gen tok/s", "gen_tok_s", ".0f"), ("train tok/s", "train_tok_s", ".0f"), ("s", "step_time", ".1f"),
        ("GiB", "peak_mem_gib", ".1f")]
CURVES = ("reward", "accuracy", "format", "completion_len", "eval_pass@1")


def train(args):
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    ckpt = tu.find_checkpoint(args.resume) if args.resume else None
    model = Qwen2.from_pretrained(ckpt or args.model, device=device, dtype=dtype)
    model.use_kernels = device.type == "cuda" and not args.no_kernels
    model.gradient_checkpointing = args.gradient_checkpointing  # (a fresh module is in training mode)
    tok = Tokenizer.from_dir(model.source_dir)
    template = args.template if args.template != "auto" else (
        "r1-chat" if "instruct" in str(args.model).lower() else "r1")  # the chat form for instruct models
    stop = ("</answer>",) if template.startswith("r1") else ()

    examples = load_task(args.task, split="train", n=args.num_train_examples, seed=args.seed)
    prompts = {ex["problem"]: tok.encode(prompt_text(ex["problem"], template)) for ex in examples}
    kept = [ex for ex in examples if len(prompts[ex["problem"]]) <= args.max_prompt_length]
    if len(kept) < len(examples):
        print(f"left out {len(examples) - len(kept)} of {len(examples)} problems longer than --max-prompt-length")
    examples = kept
    prompt_lens = [len(prompts[ex["problem"]]) for ex in examples]
    check_config(args, model.config, prompt_lens)
    eval_examples = load_task(args.eval_task or args.task, split="test", n=args.eval_limit,
                              seed=args.seed) if args.eval_steps > 0 else []

    P, G = args.num_prompts, args.num_generations
    est = dict(rows=P * G, seq_len=max(prompt_lens) + args.max_completion_length,
               micro_batch=min(args.micro_batch_size, P * G), weight_bytes=torch.finfo(dtype).bits // 8,
               reference=args.beta > 0, checkpointing=args.gradient_checkpointing, fused_logprob=model.use_kernels)
    total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    estimate = lambda **kw: tu.estimate_memory(model.config, **{**est, **kw})
    if args.micro_batch_size == 0:  # auto: the largest that fits, up to 16
        args.micro_batch_size = est["micro_batch"] = tu.auto_micro_batch(estimate, total, P * G)
    print(tu.preflight(estimate, total, est))

    ref = None
    if args.beta > 0:  # the frozen initial policy, only needed for the KL term
        ref = Qwen2.from_pretrained(args.model, device=device, dtype=dtype).eval().requires_grad_(False)
        ref.use_kernels = model.use_kernels
    optimizer = tu.MasterAdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    start_step, position = 0, 0
    if ckpt:
        start_step, position = tu.load_trainer_state(ckpt, optimizer)
        print(f"resumed from {ckpt} at step {start_step}")
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wandb_run = tu.wandb_init("r1-grpo", args) if args.wandb else None
    metrics = tu.Metrics(out_dir, CURVES, args.plot_every, wandb_run, resume_step=start_step if ckpt else None)
    w_acc, w_fmt = args.reward_weights

    with tu.StopOnCtrlC() as ctrl_c:
        for step in tqdm(range(start_step, args.max_steps), initial=start_step, total=args.max_steps, desc="grpo"):
            t0 = time.perf_counter()
            tu.peak_memory_gib(device, reset=True)
            batch = next_examples(examples, position, P, args.seed)
            position += P
            optimizer.set_lr(tu.lr_at(step, args.learning_rate, args.warmup_steps, args.max_steps,
                                      args.lr_scheduler_type))

            # 1. Sample G completions per prompt. The seed is a function of the step: a resumed run samples
            # exactly what the uninterrupted one would have.
            with tu.Timer() as t_gen:
                gen = generate(model, [prompts[ex["problem"]] for ex in batch], num_samples=G,
                               max_new_tokens=args.max_completion_length, temperature=args.temperature,
                               top_p=args.top_p, top_k=args.top_k, eos_ids=tok.eos_ids, stop=stop, tokenizer=tok,
                               seed=args.seed * 1_000_003 + step)

            # 2. Score: rule rewards, group advantages, and which rows are trained on.
            with tu.Timer() as t_score:
                rows_ex = [ex for ex in batch for _ in range(G)]  # row i*G+g is prompt i's g-th sample
                acc, fmt = torch.tensor([[rewards.accuracy_reward(c, ex), rewards.format_reward(c, ex)]
                                         for c, ex in zip(gen.texts, rows_ex)]).T  # (N,) each
                truncated = torch.tensor([f == "length" for f in gen.finish])
                reward = w_acc * acc + w_fmt * fmt + overlong_penalty(gen.lengths, args.max_completion_length,
                                                                      args.overlong_buffer)  # (N,)
                adv = group_advantages(reward.view(P, G), args.scale_rewards).view(-1)  # (N,)
                zero = zero_spread(reward.view(P, G))  # (P,)
                keep = (~zero).repeat_interleave(G).nonzero()[:, 0]  # rows of groups that carry signal
                mask = completion_mask(gen.lengths, gen.tokens.shape[1],
                                       truncated if args.mask_truncated_completions else None)  # (N, Tc)
                idx, start = pad_left([prompts[ex["problem"]] for ex in rows_ex])  # as the sampler laid them out
                Tp = idx.shape[1]
                num_seqs, num_tokens = len(keep), max(float(mask[keep].sum()), 1.0)  # the loss normalisers
                # Micro-batches of rows with a loss, longest first, each cut to its longest completion (Tm <= Tc;
                # sorted: little padding), with its real tokens' flat positions: made on the host, never waiting.
                rows_with_loss = keep[mask[keep].sum(1) > 0]
                rows_with_loss, micro = rows_with_loss[gen.lengths[rows_with_loss].argsort(descending=True)], []
                for i in range(0, len(rows_with_loss), args.micro_batch_size):
                    rows = rows_with_loss[i:i + args.micro_batch_size]
                    Tm = int(gen.lengths[rows].max())
                    micro.append((rows.to(device), Tm, mask[rows, :Tm].flatten().nonzero()[:, 0].to(device)))
                idx = torch.cat([idx, gen.tokens], 1).to(device)  # (N, Tp + Tc)
                start, tokens, mask, adv, sampler_logp = (t.to(device) for t in (start, gen.tokens, mask, adv,
                                                                                 gen.logprobs))
                cut = lambda rows, Tm: (idx[rows, :Tp + Tm], start[rows], Tp, tokens[rows, :Tm])
                ref_logp = torch.zeros(mask.shape, device=device)
                with torch.no_grad():
                    for rows, Tm, sel in micro if ref is not None else []:
                        ref_logp[rows, :Tm] = completion_logprobs(ref, *cut(rows, Tm), sel, args.temperature)[0]

            # 3. mu policy updates on this batch. In the first pass the weights are still those that sampled,
            # so that pass's log-probs (detached) are the "old" log-probs of the ratio: no extra forward.
            old_logp = torch.zeros(mask.shape, device=device)
            sums, ent_sum, gap_sum, loss_sum, trained_tokens, skipped, grad_norm = {}, 0.0, 0.0, 0.0, 0, 0, 0.0
            with tu.Timer() as t_train:
                for it in range(args.num_iterations if micro else 0):
                    for rows, Tm, sel in micro:
                        m = mask[rows, :Tm]
                        logp, ent = completion_logprobs(model, *cut(rows, Tm), sel, args.temperature, entropy=it == 0)
                        if it == 0:
                            old_logp[rows, :Tm] = logp.detach()
                            ent_sum += ent.detach().sum()
                            gap_sum += ((sampler_logp[rows, :Tm] - logp.detach()).abs() * m).sum()
                        loss, st = policy_loss(logp, old_logp[rows, :Tm], adv[rows], m, epsilon=args.epsilon,
                                               epsilon_high=args.epsilon_high, beta=args.beta,
                                               ref_logp=ref_logp[rows, :Tm], loss_type=args.loss_type,
                                               max_completion_length=args.max_completion_length,
                                               num_seqs=num_seqs, num_tokens=num_tokens)
                        loss.backward()  # a NaN/inf loss makes the gradient norm non-finite: the update is skipped
                        loss_sum += loss.detach()
                        trained_tokens += len(rows) * (Tp + Tm)
                        for k, v in st.items():
                            sums[k] = sums.get(k, 0.0) + v  # on the device: no sync per micro-batch
                    grad_norm = optimizer.step(args.max_grad_norm)  # the one host sync of the pass
                    optimizer.zero_grad()
                    if not math.isfinite(grad_norm):  # skip the rest of this batch: its old log-probs may be bad
                        skipped += 1
                        tqdm.write(f"step {step + 1}: loss {float(loss_sum):.4g}, gradient norm {grad_norm}: "
                                   f"non-finite, update skipped")
                        break

            # 4. Metrics, checkpoint, evaluation, doctor.
            sums = {k: float(v) for k, v in sums.items()}
            row = {
                "step": step + 1, "reward": reward.mean().item(), "reward_std": reward.std().item(),
                "accuracy": acc.mean().item(), "accuracy_std": acc.std().item(), "format": fmt.mean().item(),
                "format_std": fmt.std().item(), "completion_len": gen.lengths.float().mean().item(),
                "completion_len_max": int(gen.lengths.max()), "truncated": truncated.float().mean().item(),
                "zero_spread": zero.float().mean().item(), "trained_rows": len(keep),
                "clip_frac": sums.get("clipped", 0.0) / max(sums.get("tokens", 0.0), 1.0),
                "kl": sums["kl"] / max(sums["tokens"], 1.0) if args.beta > 0 and sums else None,
                "entropy": float(ent_sum) / num_tokens if len(keep) else None,
                "logp_gap": float(gap_sum) / num_tokens if len(keep) else None,
                "loss": float(loss_sum) / args.num_iterations, "grad_norm": grad_norm, "skipped_updates": skipped,
                "lr": optimizer.param_groups[0]["lr"],
                "gen_time": t_gen.seconds, "score_time": t_score.seconds, "train_time": t_train.seconds,
                "gen_tok_s": float(gen.lengths.sum()) / t_gen.seconds,
                "train_tok_s": trained_tokens / t_train.seconds if trained_tokens else None,
                "step_time": time.perf_counter() - t0,
                "peak_mem_gib": tu.peak_memory_gib(device),
            }
            last = step + 1 == args.max_steps or ctrl_c.requested
            if eval_examples and ((step + 1) % args.eval_steps == 0 or last):
                row.update(run_eval(model, tok, eval_examples, template, args, out_dir / f"eval-{step + 1}.jsonl"))
            metrics.log(row)
            tqdm.write(tu.format_line(row, LINE))
            for warning in tu.doctor(metrics.history):
                tqdm.write(f"doctor: {warning}")
            if ctrl_c.requested or (args.save_steps > 0 and ((step + 1) % args.save_steps == 0 or last)):
                tu.save_checkpoint(out_dir, model, optimizer, step + 1, position, args, keep=args.save_total_limit)
            if ctrl_c.requested:
                print(f"stopped at step {step + 1}; continue with --resume {out_dir}")
                break
    tu.plot_curves(metrics.history, metrics.png, CURVES)
    return model, metrics.history


def run_eval(model, tok, examples, template, args, out_path):
    """pass@1 and maj@k on the held-out split (evaluate.py), with the paper's sampling (T 0.6, top-p 0.95)."""
    from evaluate import evaluate
    summary = evaluate(model, tok, examples, num_samples=args.eval_num_samples, temperature=0.6, top_p=0.95,
                       max_new_tokens=args.max_completion_length, batch_size=args.num_prompts, out_path=out_path,
                       seed=args.seed, template=lambda problem: prompt_text(problem, template))
    return {f"eval_{k}": v for k, v in summary.items() if k.startswith(("pass@", "maj@", "format"))}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    a = p.add_argument
    a("--model", default="qwen2.5-0.5b", help="checkpoint directory or a known name (model.KNOWN_MODELS)")
    a("--task", default="gsm8k", help="gsm8k, countdown, arith, or a .jsonl with problem/answer (train split)")
    a("--num-train-examples", type=int, default=None, help="first N problems (generated tasks: how many to make)")
    a("--template", default="auto", choices=["auto", "r1", "r1-chat", "chat", "plain"],
      help="auto: R1-Zero template for base models, its chat form for instruct models")
    a("--output-dir", default="runs/grpo")
    a("--resume", default=None, help="an output dir (its latest checkpoint) or a checkpoint-STEP dir")
    # Sampling
    a("--num-prompts", type=int, default=8, help="P: prompts per step")
    a("--num-generations", type=int, default=16, help="G: completions per prompt (the group)")
    a("--max-prompt-length", type=int, default=512, help="longer problems are left out")
    a("--max-completion-length", type=int, default=1024)
    a("--temperature", type=float, default=1.0)
    a("--top-p", type=float, default=1.0)
    a("--top-k", type=int, default=0)
    # Rewards and objective
    a("--reward-weights", type=float, nargs=2, default=[1.0, 1.0], metavar=("ACCURACY", "FORMAT"))
    a("--scale-rewards", default="group", choices=["group", "none"], help="none: Dr. GRPO (no std division)")
    a("--loss-type", default="dapo", choices=["grpo", "dr_grpo", "dapo"])
    a("--beta", type=float, default=0.0, help="KL coefficient (k3); > 0 keeps a frozen reference model")
    a("--epsilon", type=float, default=0.2, help="clip range: ratio in [1 - epsilon, 1 + epsilon_high]")
    a("--epsilon-high", type=float, default=None, help="upper clip (DAPO clip-higher: 0.28); default = epsilon")
    a("--num-iterations", type=int, default=1, help="mu: policy updates per sampled batch")
    a("--mask-truncated-completions", action="store_true", help="no loss on completions cut at the length limit")
    a("--overlong-buffer", type=int, default=0, help="DAPO soft overlong penalty over the last N tokens (0: off)")
    # Optimisation
    a("--learning-rate", type=float, default=1e-6)
    a("--lr-scheduler-type", default="constant", choices=["constant", "cosine"])
    a("--warmup-steps", type=int, default=0)
    a("--weight-decay", type=float, default=0.0)
    a("--max-grad-norm", type=float, default=1.0, help="0: no clipping")
    a("--micro-batch-size", type=int, default=0, help="rows per forward/backward (gradient accumulation); 0: the "
      "largest of 16, 8, 4, .. whose memory estimate fits the GPU (8 on CPU)")
    a("--gradient-checkpointing", action="store_true", help="recompute activations in backward (less memory)")
    a("--max-steps", type=int, default=500)
    a("--seed", type=int, default=0)
    # Bookkeeping
    a("--save-steps", type=int, default=50, help="checkpoint every N steps and at the end (0: never)")
    a("--save-total-limit", type=int, default=2)
    a("--eval-steps", type=int, default=50, help="evaluate every N steps (0: never)")
    a("--eval-task", default=None, help="default: the test split of --task")
    a("--eval-limit", type=int, default=200, help="held-out problems per evaluation")
    a("--eval-num-samples", type=int, default=4, help="samples per problem: pass@1 and maj@k")
    a("--plot-every", type=int, default=10)
    a("--wandb", action="store_true")
    a("--device", default=None)
    a("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    a("--no-kernels", action="store_true", help="PyTorch references instead of the Triton kernels")
    return p.parse_args(argv)


def main(argv=None):
    return train(parse_args(argv))


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
