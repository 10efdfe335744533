"""
The GRPO objective and the variants the field uses: advantages, which tokens count and how much, and the loss.
Pure functions of tensors (doctor: of a run's metrics), no model and no state: change the loss here. grpo.py calls
them; tests/test_objective.py derives each by hand (and GSPO, CISPO and GRPO's gradient against loops written as
the papers print them).

    group_advantages     --scale-rewards group | batch | none                     DeepSeekMath, Lite PPO, Dr. GRPO
    zero_spread          the groups that teach nothing (all G rewards equal)
    fill_batch           --dynamic-sampling: which P groups form the batch        DAPO §3.2
    overlong_penalty     --overlong-buffer                                        DAPO eq. 13
    completion_mask      --mask-truncated-completions                             DAPO §3.4
    high_entropy_mask    --top-entropy-quantile                                   "Beyond the 80/20 rule"
    truncated_is_weight  --importance-sampling-cap: the sampler/trainer mismatch  TIS
    kl_k3                --beta                                                   DeepSeekMath eq. 4
    policy_loss          --loss-type grpo | bnpo | dr_grpo | dapo | cispo, --importance-sampling-level token |
                         sequence (GSPO), --epsilon / --epsilon-high (DAPO's clip-higher)
    doctor               the usual reasons a run does not learn, read from its metrics (grpo.py prints them)

Names follow TRL's GRPOConfig where the concept is the same. Shape legend: P prompts, G completions per prompt,
N = P*G rows, M rows of a micro-batch, Tc completion length, n real (loss-bearing) tokens.
"""
import torch

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo")


# ------------------------------------------------------------------------ advantages


def group_advantages(rewards, scale_rewards="group", eps=1e-4):
    """rewards (P, G) -> advantages (P, G): reward minus its group's mean (GRPO, DeepSeekMath §4.1.2), divided by
        group  the group's std (the paper),
        batch  the std of all P*G rewards (Lite PPO, arXiv 2508.08221, found it the more robust scale: a group's
               own std is tiny when all but one completion agree, and would blow its advantages up),
        none   nothing (Dr. GRPO §3.2: the std division makes too-easy and too-hard questions weigh more).
    Either std is the unbiased one (as TRL), with eps added."""
    centred = rewards - rewards.mean(1, keepdim=True)
    if scale_rewards == "none":
        return centred
    return centred / ((rewards.std() if scale_rewards == "batch" else rewards.std(1, keepdim=True)) + eps)


def zero_spread(rewards):
    """(P, G) -> (P,) True where all G rewards are equal: every advantage is 0, the group teaches nothing."""
    return rewards.max(1).values == rewards.min(1).values


def fill_batch(zero, P):
    """DAPO §3.2 dynamic sampling: from the groups sampled over several rounds, zero (n,) bool, the indices of the
    P that form the batch: those with reward spread first, in sampling order; groups without spread fill what
    is left only when the rounds ran out (they then still carry the KL term when --beta > 0)."""
    order = torch.cat([(~zero).nonzero()[:, 0], zero.nonzero()[:, 0]])
    return order[:P].sort().values


def overlong_penalty(lengths, max_len, buffer):
    """DAPO eq. 13 soft overlong punishment: 0 up to max_len - buffer tokens, then falling linearly to -1 at
    max_len. lengths (N,) -> (N,). buffer 0 turns it off."""
    if buffer <= 0:
        return torch.zeros(lengths.shape)
    return ((max_len - buffer - lengths.float()) / buffer).clamp(-1.0, 0.0)


# ------------------------------------------------------------------------ which tokens count, and how much


def completion_mask(lengths, T, drop=None):
    """(N,) lengths -> (N, T) float, 1 on each completion's tokens. drop (N,) bool zeroes whole rows:
    --mask-truncated-completions drops completions cut at the length limit (DAPO §3.4: their missing answer
    is the budget's fault, not the reasoning's)."""
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    return mask if drop is None else mask * (~drop).float()[:, None]


def high_entropy_mask(entropy, top_quantile):
    """"Beyond the 80/20 rule" (Wang et al. 2025, arXiv 2506.01939): the policy gradient only on the forking
    tokens, those whose entropy is in the top `top_quantile` share (0.2 in the paper), threshold = the
    (1 - top_quantile) quantile of the entropies given (TRL's top_entropy_quantile). entropy (n,) of the real
    tokens -> (n,) float 0/1; ties at the threshold are kept."""
    return (entropy >= torch.quantile(entropy.float(), 1 - top_quantile)).float()


def truncated_is_weight(old_logp, sampler_logp, cap):
    """Truncated importance sampling for the sampler/trainer mismatch (TIS; Yao et al. 2025, "Your efficient RL
    framework secretly brings you off-policy RL training"): the completions were drawn from the sampler's
    distribution, not quite the trainer's (bf16, fused kernels, CUDA graphs), so each token's policy term is
    weighted by w = min(p_trainer / p_sampler, cap), detached. As TRL's vllm_importance_sampling_correction with
    mode token_truncate. (M, Tc) -> (M, Tc)."""
    return (old_logp - sampler_logp).exp().clamp(max=cap).detach()


# ------------------------------------------------------------------------ the loss


def kl_k3(logp, ref_logp):
    """Per-token KL(policy || reference), the k3 estimator (Schulman 2020; DeepSeekMath eq. 4):
    exp(ref - logp) - (ref - logp) - 1. Unbiased for samples from the policy, and never negative."""
    d = ref_logp - logp
    return d.exp() - d - 1


def policy_loss(logp, old_logp, adv, mask, *, epsilon=0.2, epsilon_high=None, beta=0.0, ref_logp=None,
                loss_type="dapo", importance_sampling_level="token", token_weight=None, max_completion_length=None,
                num_seqs=None, num_tokens=None, num_micro_batches=1):
    """The GRPO objective, negated (a loss to minimise), and statistics.

    logp, old_logp, ref_logp, mask, token_weight: (M, Tc) for M rows; adv: (M,). The importance ratio r is
    exp(logp - old_logp) per token (importance_sampling_level "token"), or one per sequence (GSPO §4.1,
    "sequence"): s = exp(mean over its tokens of (logp - old_logp)), the length-normalised sequence ratio.
    Per token:
        l = -min(r A, clip(r, 1 - epsilon, 1 + epsilon_high) A)   (DeepSeekMath eq. 3, PPO's clip)
        l = -sg(min(r, epsilon_high)) A logp                      (loss_type cispo: MiniMax-M1 §3.1)
    then l = w * l + beta * KL_k3, w the detached token_weight (truncated IS, the high-entropy mask; the policy
    term only, as TRL). epsilon_high > epsilon is DAPO's clip-higher (§3.1): low-probability tokens may grow
    more before clipping. CISPO clips the importance weight instead of the update, so no token loses its gradient
    sg(w) A grad(logp); its cap is epsilon_high itself (TRL's meaning; ScaleRL uses 5), not 1 + epsilon_high.
    The normaliser is where the variants differ, and it is computed here only: num_seqs and num_tokens are totals
    over the whole batch that a micro-batch is part of (default: this call's), so a global count passes in here.
        grpo         sum over each sequence / its length, summed, / num_seqs                (DeepSeekMath eq. 3)
        bnpo         sum over all tokens / (this call's tokens * num_micro_batches)         (TRL's bnpo)
        dr_grpo      sum over all tokens / (num_seqs * max_completion_length)               (Dr. GRPO §3.2)
        dapo, cispo  sum over all tokens / num_tokens                                       (DAPO eq. 8)
    Returns (loss, stats) with stats = sums over tokens (clipped, kl, ratio, tokens) for logging."""
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    adv = adv[:, None]  # (M, 1) one advantage for every token of the completion
    log_ratio = logp - old_logp  # (M, Tc)
    if importance_sampling_level == "sequence":
        log_ratio = (log_ratio * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)  # (M, 1)
    ratio = log_ratio.exp()  # (M, Tc), or (M, 1): one ratio for all of a sequence's tokens
    if loss_type == "cispo":
        per_token = -ratio.clamp(max=epsilon_high).detach() * adv * logp  # (M, Tc)
        is_clipped = ratio > epsilon_high  # the weight was capped (the gradient still flows)
    else:
        per_token = -torch.min(ratio * adv, ratio.clamp(1 - epsilon, 1 + epsilon_high) * adv)  # (M, Tc)
        # A token is clipped when the min picked the clipped term and it differs: its gradient is then zero.
        is_clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + epsilon_high) & (adv > 0))
    if token_weight is not None:
        per_token = per_token * token_weight
    kl = torch.zeros_like(logp)
    if beta > 0:
        kl = kl_k3(logp, ref_logp)
        per_token = per_token + beta * kl
    num_seqs = mask.shape[0] if num_seqs is None else num_seqs
    num_tokens = mask.sum() if num_tokens is None else num_tokens
    total = (per_token * mask).sum()
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).sum() / num_seqs
    elif loss_type == "bnpo":
        loss = total / (mask.sum().clamp(min=1) * num_micro_batches)
    elif loss_type == "dr_grpo":
        loss = total / (num_seqs * max_completion_length)
    elif loss_type in ("dapo", "cispo"):
        loss = total / num_tokens
    else:
        raise ValueError(f"unknown loss type {loss_type!r}: use {', '.join(LOSS_TYPES)}")
    with torch.no_grad():
        stats = {"clipped": (is_clipped * mask).sum(), "kl": (kl * mask).sum(), "ratio": (ratio * mask).sum(),
                 "tokens": mask.sum()}
    return loss, stats


# ------------------------------------------------------------------------ when a run does not learn


def doctor(history, patience=5):
    """Warnings for the usual reasons a GRPO run does not learn, from the metrics of the last steps."""
    warn, recent = [], history[-patience:]
    gap = history[-1].get("logp_gap") if history else None
    if gap is not None and not gap < 0.1:  # (also true for inf and nan)
        warn.append(f"sampler and trainer log-probs of the same tokens differ by {gap:.3g} on average (expected "
                    f"~1e-2 in bf16): the ratios are off; try --no-kernels to tell a kernel from a masking bug")
    if len(recent) < patience:
        return warn
    if all(r.get("zero_spread", 0) >= 1.0 for r in recent):
        warn.append(f"every group had zero reward spread for {patience} steps: no learning signal. The task is too "
                    f"hard or too easy for this model: raise --num-generations or --temperature, or change the task")
    if recent[-1].get("truncated", 0) > 0.5:
        warn.append(f"{recent[-1]['truncated']:.0%} of completions hit --max-completion-length: raise it, or use "
                    f"--mask-truncated-completions / --overlong-buffer")
    fmt = [r["format"] for r in history if r.get("format") is not None]
    if len(fmt) > 2 * patience and max(fmt[:-patience]) > 0.3 and max(fmt[-patience:]) < 0.1 * max(fmt[:-patience]):
        warn.append("the format reward collapsed (the model stopped writing <think>/<answer>): lower --learning-rate "
                    "or raise the format weight in --reward-weights")
    kl = [r.get("kl") for r in recent if r.get("kl") is not None]
    if kl and kl[-1] > 1.0 and kl[-1] > 4 * max(kl[0], 1e-3):
        warn.append(f"KL to the reference exploded ({kl[0]:.3g} -> {kl[-1]:.3g}): lower --learning-rate or raise "
                    f"--beta")
    return warn
