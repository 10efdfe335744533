"""
GRPO / R1-Zero: reinforcement learning of a base model on verifiable problems, rewarded by rules alone.

    python grpo.py --model qwen2.5-0.5b                                  # GSM8K, R1-Zero template, one GPU
    python grpo.py --model qwen2.5-1.5b --task countdown --beta 0.04 --gradient-checkpointing
    python grpo.py --model qwen2.5-0.5b-instruct --loss-type dr_grpo --scale-rewards none   # Dr. GRPO
    python grpo.py --model qwen2.5-0.5b --epsilon-high 0.28 --overlong-buffer 256 --dynamic-sampling   # DAPO
    python grpo.py --model qwen2.5-0.5b --loss-type cispo --epsilon-high 5                  # CISPO (MiniMax-M1)
    python grpo.py --model qwen2.5-0.5b --importance-sampling-level sequence --loss-type grpo --epsilon 3e-4 \
        --epsilon-high 4e-4                                                                 # GSPO
    python grpo.py --model runs/sft/checkpoint-200 --task arith --template plain           # a local directory
    python grpo.py --model qwen2.5-0.5b --resume runs/grpo                                # continue exactly

One step (GRPO: DeepSeekMath §4.1, eq. 3; DeepSeek-R1 §2.2), each part a function below, called by train():
  1. rollout: sample G completions for each of P prompts (sample.py: KV cache, CUDA graphs, Triton kernels);
     with --dynamic-sampling (DAPO §3.2) more rounds of P prompts until P groups have reward spread.
  2. score: the rule rewards (rewards.py), accuracy + format weighted by --reward-weights (the share of
     completions with a self-check, rewards.self_check, is logged as `chk`, never rewarded), and
  3. the advantage of a completion = its reward standardised within its group of G (no value network). Groups
     whose G rewards are all equal carry no signal (every advantage is 0) and are dropped before training,
     unless --beta > 0: then they stay for their KL term (as in TRL).
  4. update: --num-iterations (mu) passes over the batch, each one AdamW step with gradient accumulation over
     micro-batches, on the objective (objective.py: --loss-type and its variants) against the log-probs of the
     policy that sampled (recorded during the first pass, when the weights still are that policy), plus beta * KL
     to the initial model (k3 estimator) when --beta > 0 — only then is a frozen reference copy kept.
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
  5. With --beta 0 zero-spread groups are dropped (TRL keeps them at advantage 0, which adds nothing but their
     cost); the normalisers then count the kept rows and tokens, not the whole batch, so a step's size does not
     shrink with the share of problems too easy or too hard (what dynamic sampling buys by resampling).
  6. --top-entropy-quantile's quantile is per micro-batch (TRL: per local batch; the whole batch's entropies exist
     only after a pass over all of it). 7. --dynamic-sampling samples whole rounds of P prompts (a normal step's
     shapes), discards surplus groups with spread (as DAPO), fills with zero-spread groups when rounds run out.
Several GPUs: torchrun --nproc_per_node=N grpo.py ... (data parallel; --fsdp shards; train_utils, distributed).
Left out: vLLM, reward models, process supervision.

Shape legend: P prompts per step, G completions per prompt, N = P*G rows, M rows of a micro-batch,
Tp prompt length (left-padded), Tc completion length, C hidden, V vocab.
"""
import math
import time
from dataclasses import dataclass, replace

import torch
from tqdm import tqdm

import rewards
from answers import CHECKERS
import train_utils as tu
from model import load_model, pick_device
from objective import (LOSS_TYPES, completion_mask, doctor, fill_batch, group_advantages, high_entropy_mask,
                       overlong_penalty, policy_loss, truncated_is_weight, zero_spread)
from sample import Generation, check_sampling, generate, pad_left
from tasks import load_task
from tokenizer import TEMPLATES, completion_prefix, render_prompt, resolve_template
from train_utils import option

SAMPLE_SEED_STRIDE = 1_000_003  # step s samples with seed --seed * SAMPLE_SEED_STRIDE + s (a prime stride)

# ------------------------------------------------------------------------ configuration


@dataclass
class GRPOConfig:
    """GRPO / R1-Zero: reinforcement learning of a base model on verifiable problems, rewarded by rules alone.
    Flags follow TRL's GRPOConfig where the concept is the same."""
    model: str = option("qwen2.5-0.5b", "checkpoint directory or a known name (model.KNOWN_MODELS)")
    task: str = option("gsm8k", "gsm8k, countdown, arith, or a .jsonl with problem/answer (train split)")
    num_train_examples: int | None = option(None, "first N problems (generated tasks: how many to make)")
    template: str = option("auto", "the prompt (tokenizer.render_prompt); auto: r1 for base models, r1-chat for "
                           "instruct ones, chat when the checkpoint's template opens a think block", choices=TEMPLATES)
    output_dir: str = option("runs/grpo", "metrics.jsonl, curves.png and checkpoint-STEP directories go here")
    resume: str | None = option(None, "an output dir (its latest) or a checkpoint-STEP dir; restores the run's flags")
    overwrite_output_dir: bool = option(False, "start over in an --output-dir that holds a run (deletes it)")
    # Sampling
    num_prompts: int = option(8, "P: prompts per step")
    num_generations: int = option(16, "G: completions per prompt (the group)")
    max_prompt_length: int = option(512, "longer problems are left out")
    max_completion_length: int = option(1024, "new tokens per completion, at most")
    temperature: float = option(1.0, "sampling temperature; the trainer's log-probs are taken at it too")
    top_p: float = option(1.0, "nucleus sampling (1: off)")
    top_k: int = option(0, "top-k sampling (0: off)")
    # Rewards and objective
    reward_weights: tuple[float, float] = option((1.0, 1.0), "weights of the accuracy and the format reward",
                                                 metavar=("ACCURACY", "FORMAT"))
    scale_rewards: str = option("group", "advantage = (reward - group mean) / the group's std, the batch's std "
                                "(Lite PPO), or none (Dr. GRPO)", choices=["group", "batch", "none"])
    loss_type: str = option("dapo", "objective.policy_loss: the normaliser (grpo, bnpo, dr_grpo, dapo), or CISPO "
                            "(cispo; needs --epsilon-high, the weight's cap, e.g. 5)", choices=LOSS_TYPES)
    importance_sampling_level: str = option("token", "sequence: one ratio per completion, the geometric mean of its "
                                            "tokens' (GSPO)", choices=["token", "sequence"])
    beta: float = option(0.0, "KL coefficient (k3); > 0 keeps a frozen reference model")
    epsilon: float = option(0.2, "clip range: ratio in [1 - epsilon, 1 + epsilon_high]")
    epsilon_high: float | None = option(None, "upper clip (DAPO clip-higher: 0.28); default = epsilon; with "
                                        "--loss-type cispo the weight's cap itself")
    importance_sampling_cap: float = option(0.0, "TIS: each token's policy term x min(p_trainer / p_sampler, C) "
                                            "(TRL's vllm_importance_sampling_correction, token_truncate); 0: off")
    top_entropy_quantile: float = option(1.0, "train only the tokens whose entropy is in this top share (Beyond "
                                         "the 80/20 rule: 0.2); 1: all tokens")
    num_iterations: int = option(1, "mu: policy updates per sampled batch")
    mask_truncated_completions: bool = option(False, "no loss on completions cut at the length limit")
    overlong_buffer: int = option(0, "DAPO soft overlong penalty over the last N tokens (0: off)")
    answer_checker: str = option("builtin", "MATH-style answers: builtin (exact, no dependency) or math-verify "
                                            "(pip install math-verify; as open-r1 grades)", choices=tuple(CHECKERS))
    dynamic_sampling: bool = option(False, "DAPO: sample more rounds of P prompts until P groups have reward "
                                    "spread, instead of training on fewer rows")
    max_resample_rounds: int = option(3, "with --dynamic-sampling: extra rounds at most per step")
    # Optimisation
    learning_rate: float = option(1e-6, "AdamW learning rate (after warm-up)")
    lr_scheduler_type: str = option("constant", "after warm-up", choices=["constant", "cosine"])
    warmup_steps: int = option(0, "steps of linear learning-rate warm-up")
    weight_decay: float = option(0.0, "AdamW weight decay")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: no clipping)")
    micro_batch_size: int = option(0, "rows per forward/backward (gradient accumulation); 0: the largest of 16, 8, "
                                      "4, .. whose memory estimate fits the GPU (8 on CPU)")
    gradient_checkpointing: bool = option(False, "recompute activations in backward (less memory)")
    max_steps: int = option(500, "steps (one sampled batch each)")
    seed: int = option(0, "seeds the data order and the sampling")
    # Bookkeeping
    save_steps: int = option(50, "checkpoint every N steps and at the end (0: never)")
    save_total_limit: int = option(2, "checkpoints kept (0: all)")
    eval_steps: int = option(50, "evaluate every N steps (0: never)")
    eval_task: str | None = option(None, "default: the test split of --task")
    eval_limit: int = option(200, "held-out problems per evaluation")
    eval_num_samples: int = option(4, "samples per problem: pass@1 and maj@k")
    plot_every: int = option(10, "redraw curves.png every N steps")
    wandb: bool = option(False, "log to Weights & Biases too (pip install wandb)")
    device: str | None = option(None, "cpu, cuda, cuda:1, ... (default: cuda when present)")
    dtype: str | None = option(None, "default: bfloat16 on cuda, float32 on cpu")
    no_kernels: bool = option(False, "PyTorch references instead of the Triton kernels")
    fsdp: bool = option(False, "under torchrun: shard weights, gradients and optimizer state over the processes "
                               "(FSDP2) instead of a full replica per process (DDP)")


def check_config(config, model_config, prompt_lens):
    """Refuse, with one line, configurations that cannot work."""
    if config.num_generations < 2:
        raise ValueError(f"--num-generations is {config.num_generations}: GRPO compares completions of the same "
                         f"prompt, so it needs at least 2 (8 to 16 is usual)")
    if not prompt_lens:
        raise ValueError(f"no prompt of the task fits --max-prompt-length {config.max_prompt_length}: raise it")
    need = max(prompt_lens) + config.max_completion_length
    if need > model_config.max_position_embeddings:
        raise ValueError(f"prompts of up to {max(prompt_lens)} tokens + --max-completion-length "
                         f"{config.max_completion_length} = {need} tokens do not fit the model's context of "
                         f"{model_config.max_position_embeddings}: lower --max-completion-length or "
                         f"--max-prompt-length")
    if config.temperature <= 0:
        raise ValueError("--temperature must be > 0: GRPO needs sampled, not greedy, completions")
    check_sampling(config.temperature, config.top_p, config.top_k, config.max_completion_length, 1,
                   "--max-completion-length")  # --top-p 0, --max-completion-length 0, ...
    if not 0 <= config.overlong_buffer < config.max_completion_length:
        raise ValueError("--overlong-buffer must be >= 0 and smaller than --max-completion-length")
    if config.num_iterations < 1 or config.micro_batch_size < 0 or config.num_prompts < 1:
        raise ValueError("--num-iterations and --num-prompts must be >= 1, --micro-batch-size >= 0 (0: auto)")
    if config.loss_type == "cispo" and not (config.epsilon_high or 0) > 1:
        raise ValueError("--loss-type cispo caps the weight at --epsilon-high itself: pass --epsilon-high > 1, e.g. 5")
    if not 0 < config.top_entropy_quantile <= 1 or min(config.importance_sampling_cap, config.max_resample_rounds) < 0:
        raise ValueError("--top-entropy-quantile must be in (0, 1], --importance-sampling-cap and "
                         "--max-resample-rounds >= 0")


# ------------------------------------------------------------------------ setup


def load_prompts(config, tok, template, model_config):
    """The training problems whose prompt fits --max-prompt-length, {problem: prompt token ids}, and the held-out
    problems of the evaluations; refuses a configuration that cannot work (check_config)."""
    examples = load_task(config.task, split="train", n=config.num_train_examples, seed=config.seed)
    prompts = {ex["problem"]: tok.encode(render_prompt(ex["problem"], template, tok)) for ex in examples}
    kept = [ex for ex in examples if len(prompts[ex["problem"]]) <= config.max_prompt_length]
    if len(kept) < len(examples):
        print(f"left out {len(examples) - len(kept)} of {len(examples)} problems longer than --max-prompt-length")
    check_config(config, model_config, [len(prompts[ex["problem"]]) for ex in kept])
    eval_examples = load_task(config.eval_task or config.task, split="test", n=config.eval_limit,
                              seed=config.seed) if config.eval_steps > 0 else []
    return kept, prompts, eval_examples


# ------------------------------------------------------------------------ the four steps of a GRPO step


def rollout(model, tok, examples, position, prompts, prefix, config, step, stop):
    """1. G completions for each of the next P prompts (sample.generate): row i*G+g is prompt i's g-th sample; the
    seed a function of the step, so a resumed run samples what the uninterrupted one would. --dynamic-sampling
    (DAPO §3.2): up to --max-resample-rounds more rounds of P prompts while fewer than P groups have reward
    spread (score() picks the batch). Returns (every round's prompts, one Generation, the new data position)."""
    P, G = config.num_prompts, config.num_generations
    batch, gens, spread = [], [], 0
    for r in range(1 + (config.max_resample_rounds if config.dynamic_sampling else 0)):
        if spread >= P:
            break
        new = tu.share(tu.next_examples(examples, position, P, config.seed))  # DIST: this rank's share
        position += P  # (global: a resume may use another number of processes)
        gens.append(generate(model, [prompts[ex["problem"]] for ex in new], num_samples=G,
                             max_new_tokens=config.max_completion_length, temperature=config.temperature,
                             top_p=config.top_p, top_k=config.top_k, eos_ids=tok.eos_ids, stop=stop, tokenizer=tok,
                             seed=(config.seed * SAMPLE_SEED_STRIDE + step + (r << 32)) * tu.world() + tu.rank(),
                             keep=True))  # the next step reuses this call's cache and CUDA graph
        batch += new
        if config.dynamic_sampling:  # (score() computes the rule rewards again: pure and cheap)
            zero = zero_spread(rule_rewards(gens[-1], new, prefix, config)[0].view(-1, G))
            spread += tu.all_sum(int((~zero).sum()))  # DIST: groups with spread on all ranks
    return batch, Generation.cat(gens), position


def rule_rewards(gen, batch, prefix, config):
    """Reward (N,) of prefix + completion (accuracy and format, weighted, + DAPO's overlong penalty), acc, fmt."""
    rows_ex = [ex for ex in batch for _ in range(config.num_generations)]  # row i*G+g is prompt i's g-th sample
    acc, fmt = torch.tensor([[rewards.accuracy_reward(prefix + c, ex, config.answer_checker),
                              rewards.format_reward(prefix + c, ex)] for c, ex in zip(gen.texts, rows_ex)]).T  # (N,)
    w_acc, w_fmt = config.reward_weights
    penalty = overlong_penalty(gen.lengths, config.max_completion_length, config.overlong_buffer)
    return w_acc * acc + w_fmt * fmt + penalty, acc, fmt


@dataclass
class Scored:
    """A scored batch: what update() trains on (on the device) and what the metrics line reports (`metrics`)."""
    idx: torch.Tensor  # (N, Tp + Tc) left-padded prompt + completion, as the sampler laid them out
    start: torch.Tensor  # (N,) first real token of each row
    Tp: int
    tokens: torch.Tensor  # (N, Tc) the completions
    mask: torch.Tensor  # (N, Tc) 1 on the tokens with a loss
    adv: torch.Tensor  # (N,)
    sampler_logp: torch.Tensor  # (N, Tc) the sampler's log-probs of the tokens (the `gap` metric)
    micro: list  # the micro-batch plan: [(rows (M,), Tm, sel (n,))]
    num_seqs: int  # the loss normalisers: rows trained on, and their tokens with a loss
    num_tokens: float
    metrics: dict

    def cut(self, rows, Tm):
        """The (idx, start, Tp, tokens) of a micro-batch, cut to its longest completion Tm."""
        return self.idx[rows, :self.Tp + Tm], self.start[rows], self.Tp, self.tokens[rows, :Tm]


def score(gen, batch, prompts, prefix, config, device):
    """2. Rule rewards of every completion sampled (rule_rewards), the metrics over all of them; the batch: P
    groups, those with reward spread first (fill_batch; all of them unless --dynamic-sampling sampled more);
    its group advantages, which rows are trained on and in which micro-batches."""
    P, G = config.num_prompts // tu.world(), config.num_generations  # DIST: P is this rank's share
    reward, acc, fmt = rule_rewards(gen, batch, prefix, config)  # (R,) each, R = N or more rows
    truncated = torch.tensor([f == "length" for f in gen.finish])
    zero = zero_spread(reward.view(-1, G))  # (R / G,)
    # DIST: the metrics and the loss normalisers are those of the global batch (gathered / summed over ranks).
    checks = torch.tensor([rewards.self_check(prefix + c) for c in gen.texts])  # (R,) logged, never rewarded
    rw, ac, fm, ck, ln, tr, zs = (tu.all_gather(t) for t in (reward, acc, fmt, checks, gen.lengths, truncated, zero))
    metrics = {"reward": rw.mean().item(), "reward_std": rw.std().item(), "accuracy": ac.mean().item(),
               "accuracy_std": ac.std().item(), "format": fm.mean().item(), "format_std": fm.std().item(),
               "self_check": ck.mean().item(), "completion_len": ln.float().mean().item(),
               "completion_len_max": int(ln.max()), "truncated": tr.float().mean().item(),
               "zero_spread": zs.float().mean().item(),
               "sample_rounds": len(batch) // P}
    groups = fill_batch(zero, P)  # (P,)
    rows = (groups[:, None] * G + torch.arange(G)).flatten()  # (N,) the rows of the batch
    reward, truncated, lengths, tokens = (t[rows] for t in (reward, truncated, gen.lengths, gen.tokens))
    adv = group_advantages(reward.view(P, G), config.scale_rewards).view(-1)  # (N,)
    # Zero-spread groups: advantage 0, no policy term; kept only for the KL term (deviation 5).
    keep = torch.arange(len(rows)) if config.beta > 0 else (~zero[groups]).repeat_interleave(G).nonzero()[:, 0]
    mask = completion_mask(lengths, tokens.shape[1], truncated if config.mask_truncated_completions else None)
    idx, start = pad_left([prompts[batch[int(g)]["problem"]] for g in groups for _ in range(G)])  # (N, Tp)
    num_seqs, num_tokens = tu.all_sum(len(keep)), max(tu.all_sum(float(mask[keep].sum())), 1.0)
    metrics["trained_rows"] = num_seqs
    with_loss = keep[mask[keep].sum(1) > 0]  # (a truncated completion may have none)
    micro = tu.micro_batches(with_loss, lengths, mask, config.micro_batch_size, device)
    on = lambda t: t.to(device)
    return Scored(on(torch.cat([idx, tokens], 1)), on(start), idx.shape[1], on(tokens), on(mask), on(adv),
                  on(gen.logprobs[rows]), micro, num_seqs=num_seqs, num_tokens=num_tokens, metrics=metrics)


@torch.no_grad()
def reference_logprobs(ref, b, temperature):
    """The frozen initial policy's log-probs (N, Tc) of the sampled tokens, for the KL term (zeros when --beta is
    0 and there is no reference). Its own step, not part of score(): scoring is rules on text, this is a forward
    pass of a second model — the whole price of --beta — and update() only reads it."""
    ref_logp = torch.zeros(b.mask.shape, device=b.mask.device)
    for rows, Tm, sel in b.micro if ref is not None else []:
        ref_logp[rows, :Tm] = tu.completion_logprobs(ref, *b.cut(rows, Tm), sel, temperature)[0]
    return ref_logp


def update(model, optimizer, b, ref_logp, config, step):
    """3. mu policy updates on the scored batch, each one AdamW step with gradient accumulation over the micro-
    batches. In the first pass the weights are still those that sampled, so that pass's log-probs (detached) are
    the "old" log-probs of the ratio: no extra forward. Returns the statistics of the metrics line."""
    old_logp = torch.zeros(b.mask.shape, device=b.mask.device)
    sums, ent_sum, gap_sum, loss_sum, trained_tokens, skipped, grad_norm = {}, 0.0, 0.0, 0.0, 0, 0, 0.0
    micro = b.micro + [None] * (tu.all_sum(len(b.micro), "max") - len(b.micro))  # DIST: as many on every rank
    for it in range(config.num_iterations if micro else 0):
        for j, mb in enumerate(micro):
            with tu.grad_sync(model, last=j == len(micro) - 1):  # DIST: gradients cross ranks after the last one
                if mb is None:  # DIST: this rank has fewer micro-batches than another: a zero-weight one
                    tu.idle_backward(model, b.idx[:1, :b.Tp + 1])
                    continue
                rows, Tm, sel = mb
                m = b.mask[rows, :Tm]
                logp, ent = tu.completion_logprobs(model, *b.cut(rows, Tm), sel, config.temperature,
                                                   entropy=it == 0 or config.top_entropy_quantile < 1)
                if it == 0:
                    old_logp[rows, :Tm] = logp.detach()
                    ent_sum += ent.detach().sum()
                    gap_sum += ((b.sampler_logp[rows, :Tm] - logp.detach()).abs() * m).sum()
                weight = torch.ones_like(m)  # (M, Tm) on each token's policy term: TIS, the high-entropy mask
                if config.importance_sampling_cap > 0:
                    weight *= truncated_is_weight(old_logp[rows, :Tm], b.sampler_logp[rows, :Tm],
                                                  config.importance_sampling_cap)
                if config.top_entropy_quantile < 1:
                    weight.view(-1)[sel] *= high_entropy_mask(ent.detach(), config.top_entropy_quantile)
                loss, st = policy_loss(logp, old_logp[rows, :Tm], b.adv[rows], m, epsilon=config.epsilon,
                                       epsilon_high=config.epsilon_high, beta=config.beta,
                                       ref_logp=ref_logp[rows, :Tm], loss_type=config.loss_type, token_weight=weight,
                                       importance_sampling_level=config.importance_sampling_level,
                                       max_completion_length=config.max_completion_length, num_seqs=b.num_seqs,
                                       num_tokens=b.num_tokens, num_micro_batches=len(micro) * tu.world())
                # A NaN/inf loss makes the gradient norm non-finite: the update is skipped. DIST: x world size,
                # since DDP averages the ranks' gradients and the loss is their sum (train_utils, distributed).
                (loss * tu.loss_scale()).backward()
            loss_sum += loss.detach()
            trained_tokens += len(rows) * (b.Tp + Tm)
            for k, v in st.items():
                sums[k] = sums.get(k, 0.0) + v  # on the device: no sync per micro-batch
        grad_norm = optimizer.step(config.max_grad_norm)  # the one host sync of the pass
        optimizer.zero_grad()
        if not math.isfinite(grad_norm):  # skip the rest of this batch: its old log-probs may be bad
            skipped += 1
            tqdm.write(f"step {step + 1}: loss {float(loss_sum):.4g}, gradient norm {grad_norm}: non-finite, "
                       f"update skipped")
            break
    # DIST: sums over the global batch, of the statistics read below (the same keys on every rank, trained or not)
    sums = {k: tu.all_sum(float(sums.get(k, 0.0))) for k in ("clipped", "kl", "tokens")
            } if tu.all_sum(len(sums), "max") else {}
    ent_sum, gap_sum, loss_sum, trained_tokens = (tu.all_sum(x) for x in (ent_sum, gap_sum, loss_sum, trained_tokens))
    trained = b.num_seqs > 0
    return {"clip_frac": sums.get("clipped", 0.0) / max(sums.get("tokens", 0.0), 1.0),
            "kl": sums["kl"] / max(sums["tokens"], 1.0) if config.beta > 0 and sums else None,
            "entropy": float(ent_sum) / b.num_tokens if trained else None,
            "logp_gap": float(gap_sum) / b.num_tokens if trained else None,
            "loss": float(loss_sum) / config.num_iterations, "grad_norm": grad_norm, "skipped_updates": skipped,
            "trained_tokens": trained_tokens}


# ------------------------------------------------------------------------ the loop


LINE = [("step", "step", "d"), ("reward", "reward", ".3f"), ("acc", "accuracy", ".3f"), ("fmt", "format", ".3f"),
        ("chk", "self_check", ".2f"), ("len", "completion_len", ".0f"), ("trunc", "truncated", ".2f"),
        ("zero", "zero_spread", ".2f"), ("clip", "clip_frac", ".3f"), ("kl", "kl", ".4f"), ("ent", "entropy", ".3f"),
        ("gap", "logp_gap", ".1e"), ("gen tok/s", "gen_tok_s", ".0f"), ("train tok/s", "train_tok_s", ".0f"),
        ("s", "step_time", ".1f"), ("GiB", "peak_mem_gib", ".1f")]
CURVES = ("reward", "accuracy", "format", "completion_len", "eval_pass@1")


def train(config):
    """Run GRPO as `config` says; returns a train_utils.TrainResult (model, tokenizer, metrics, last checkpoint)."""
    torch.manual_seed(config.seed)
    rewards.get_checker(config.answer_checker)  # a missing math-verify fails now, not after the first rollout
    device = tu.init_distributed(pick_device(config.device), config.fsdp)  # DIST: this rank's GPU
    ckpt = tu.find_checkpoint(config.resume) if config.resume else None
    model, tok = load_model(ckpt or config.model, device, config.dtype, kernels=not config.no_kernels)
    model.gradient_checkpointing, device = config.gradient_checkpointing, model.lm_head.weight.device
    template = resolve_template(config.template, config.model, tok)
    stop = ("</answer>",) if template.startswith("r1") else ()
    prefix = completion_prefix(render_prompt("", template, tok))  # "<think>\n" when the prompt opens the block
    examples, prompts, eval_examples = load_prompts(config, tok, template, model.config)
    rows = len(tu.share(range(config.num_prompts))) * config.num_generations  # DIST: this rank's share
    micro_batch = tu.plan_micro_batch(model, config.micro_batch_size, rows=rows,
                                      seq_len=max(len(prompts[ex["problem"]]) for ex in examples) +
                                      config.max_completion_length, reference=config.beta > 0,
                                      checkpointing=config.gradient_checkpointing, fsdp=config.fsdp,
                                      otherwise="lower --num-generations or --max-completion-length")
    config = replace(config, micro_batch_size=micro_batch)
    model, sampler, ref, optimizer, start_step, position = build_trainer(model, config, device, ckpt)
    if tu.is_main():  # DIST: rank 0 alone checks and prepares OUT (the others would see its new files)
        tu.prepare_output_dir(config.output_dir, ckpt, config.overwrite_output_dir)  # never over another run
    tu.barrier()
    out_dir, metrics = tu.open_run(config.output_dir, CURVES, config.plot_every, start_step if ckpt else None,
                                   "r1-grpo" if config.wandb else None, config)
    last_ckpt = None
    with tu.StopOnCtrlC() as ctrl_c:
        for step in tqdm(range(start_step, config.max_steps), initial=start_step, total=config.max_steps, desc="grpo",
                         disable=not tu.is_main()):
            t0 = time.perf_counter()
            tu.peak_memory_gib(device, reset=True)
            optimizer.set_lr(tu.lr_at(step, config.learning_rate, config.warmup_steps, config.max_steps,
                                      config.lr_scheduler_type))
            with tu.Timer() as t_gen:
                batch, gen, position = rollout(tu.refresh_copy(sampler, model), tok, examples, position, prompts,
                                               prefix, config, step, stop)  # DIST: the sampler copy
            with tu.Timer() as t_score:
                scored = score(gen, batch, prompts, prefix, config, device)
                ref_logp = reference_logprobs(ref, scored, config.temperature)
            with tu.Timer() as t_train:
                stats = update(model, optimizer, scored, ref_logp, config, step)
            # 4. Metrics, evaluation, doctor, checkpoint.
            trained_tokens = stats.pop("trained_tokens")
            row = {"step": step + 1, **scored.metrics, **stats, "lr": optimizer.param_groups[0]["lr"],
                   "gen_time": t_gen.seconds, "score_time": t_score.seconds, "train_time": t_train.seconds,
                   "gen_tok_s": tu.all_sum(float(gen.lengths.sum())) / t_gen.seconds,  # DIST: of all ranks
                   "train_tok_s": trained_tokens / t_train.seconds if trained_tokens else None,
                   "step_time": time.perf_counter() - t0, "peak_mem_gib": tu.peak_memory_gib(device)}
            ctrl_c.requested = tu.all_sum(ctrl_c.requested, "max")  # DIST: every rank stops at the same step
            last = step + 1 == config.max_steps or ctrl_c.requested
            if eval_examples and ((step + 1) % config.eval_steps == 0 or last):  # DIST: rank 0 alone evaluates
                tu.refresh_copy(sampler, model)
                if tu.is_main():
                    row.update(run_eval(sampler, tok, eval_examples, template, config,
                                        out_dir / f"eval-{step + 1}.jsonl"))
            metrics.log(row)
            tqdm.write(tu.format_line(row, LINE))
            for warning in doctor(metrics.history):
                tqdm.write(f"doctor: {warning}")
            if ctrl_c.requested or (config.save_steps > 0 and ((step + 1) % config.save_steps == 0 or last)):
                last_ckpt = tu.save_checkpoint(out_dir, tu.refresh_copy(sampler, model), optimizer, step + 1,
                                               position, config, keep=config.save_total_limit)  # DIST: rank 0 writes
            if ctrl_c.requested:
                print(f"stopped at step {step + 1}; continue with --resume {out_dir}")
                break
    if tu.is_main():
        tu.plot_curves(metrics.history, metrics.png, CURVES)
    return tu.TrainResult(tu.refresh_copy(sampler, model), tok, metrics.history, out_dir, last_ckpt)


def build_trainer(model, config, device, ckpt):
    """The frozen reference (beta > 0), the sampler's copy, the wrapped policy and its optimizer, resumed from
    `ckpt` when given: (model, sampler, ref, optimizer, start_step, data_position)."""
    ref = None  # the frozen initial policy, only needed for the KL term
    if config.beta > 0:
        ref = load_model(config.model, device, config.dtype, kernels=not config.no_kernels)[0].eval()
        ref.requires_grad_(False)
    # DIST: the sampler is the full copy that samples and is saved (--fsdp: one per rank); the model DDP or FSDP2.
    model, sampler, optimizer, start_step, position = tu.setup_training(model, config, ckpt)
    if ckpt:
        print(f"resumed from {ckpt} at step {start_step}")
    return model, sampler, ref, optimizer, start_step, position


def run_eval(model, tok, examples, template, config, out_path):
    """pass@1 and maj@k on the held-out split (evaluate.py), with the paper's sampling (T 0.6, top-p 0.95)."""
    from evaluate import evaluate
    summary = evaluate(model, tok, examples, num_samples=config.eval_num_samples, temperature=0.6, top_p=0.95,
                       max_new_tokens=config.max_completion_length, batch_size=config.num_prompts, out_path=out_path,
                       seed=config.seed, template=template, answer_checker=config.answer_checker)
    return {f"eval_{k}": v for k, v in summary.items() if k.startswith(("pass@", "maj@", "format"))}


def main(argv=None):
    return train(tu.command_config(GRPOConfig, argv))


if __name__ == "__main__":
    tu.run_cli(main)
