"""The GRPO objective (objective.py), checked piece by piece: advantages, filtering, masking, the loss variants
and their gradients, against values worked out by hand and against loops written as the papers print the formulas
(DeepSeekMath eq. 3, GSPO, CISPO); and the doctor's warnings. Each hand value is derived in the comment or
docstring beside it."""
import math

import pytest
import torch

from objective import (completion_mask, doctor, fill_batch, group_advantages, high_entropy_mask, kl_k3,
                       overlong_penalty, policy_loss, truncated_is_weight, zero_spread)


def test_group_advantages_standardise_within_each_group():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    # Group 0: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 1/sqrt(3), so A = +-0.5 * sqrt(3) = +-0.8660.
    a = group_advantages(r, eps=0.0)
    assert torch.allclose(a[0], torch.tensor([1.0, -1.0, -1.0, 1.0]) * math.sqrt(3) / 2)
    assert torch.equal(group_advantages(r)[1], torch.zeros(4))  # equal rewards: 0, not 0/0
    assert torch.equal(group_advantages(r, "none")[0], torch.tensor([0.5, -0.5, -0.5, 0.5]))  # Dr. GRPO


def test_zero_spread_groups_are_found():
    r = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert zero_spread(r).tolist() == [True, False, True]


def test_overlong_penalty_is_dapo_eq13():
    # max 10 tokens, buffer 4: free up to 6 tokens, then -1/4 per token, -1 at the limit.
    pen = overlong_penalty(torch.tensor([5, 6, 7, 8, 10]), max_len=10, buffer=4)
    assert pen.tolist() == [0.0, 0.0, -0.25, -0.5, -1.0]
    assert overlong_penalty(torch.tensor([10]), 10, 0).tolist() == [0.0]


def test_truncation_masking_drops_whole_rows():
    lengths, truncated = torch.tensor([2, 0, 3]), torch.tensor([False, False, True])
    assert completion_mask(lengths, 3).tolist() == [[1, 1, 0], [0, 0, 0], [1, 1, 1]]
    assert completion_mask(lengths, 3, truncated).tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 0]]


def test_kl_k3_by_hand():
    logp, ref = torch.tensor([math.log(0.5), 0.3]), torch.tensor([math.log(0.25), 0.3])
    # d = log(0.25 / 0.5) = -log 2: exp(d) - d - 1 = 0.5 + log 2 - 1 = 0.193147; equal log-probs give 0.
    assert torch.allclose(kl_k3(logp, ref), torch.tensor([0.5 + math.log(2) - 1, 0.0]))
    assert (kl_k3(torch.randn(100), torch.randn(100)) >= 0).all()


def hand_batch():
    """Two completions. Row 0: A = +1, ratios 1.5 and 1.0. Row 1: A = -2, one token, ratio 0.5 (its second
    token is padding). With epsilon 0.2 the per-token losses are -min(rA, clip(r)A):
      row 0: -min(1.5, 1.2) = -1.2 (clipped), -min(1.0, 1.0) = -1.0;   row 1: -min(-1.0, -1.6) = +1.6 (clipped)."""
    logp = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.9]]))
    old = logp - torch.log(torch.tensor([[1.5, 1.0], [0.5, 3.0]]))
    adv, mask = torch.tensor([1.0, -2.0]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    return logp, old, adv, mask


@pytest.mark.parametrize("loss_type, expected", [
    ("grpo", ((-1.2 - 1.0) / 2 + 1.6) / 2),  # per-sequence means (-1.1, 1.6), averaged over 2 sequences: 0.25
    ("dr_grpo", (-1.2 - 1.0 + 1.6) / (2 * 4)),  # token sum / (2 sequences * max length 4): -0.075
    ("dapo", (-1.2 - 1.0 + 1.6) / 3),  # token sum / 3 real tokens: -0.2
])
def test_loss_types_by_hand(loss_type, expected):
    logp, old, adv, mask = hand_batch()
    loss, st = policy_loss(logp, old, adv, mask, epsilon=0.2, loss_type=loss_type, max_completion_length=4)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert st["clipped"].item() == 2 and st["tokens"].item() == 3  # the padding token's ratio 3.0 is not counted


def test_clip_higher_lets_the_positive_token_grow():
    logp, old, adv, mask = hand_batch()
    # epsilon_high 0.6: ratio 1.5 < 1.6 is no longer clipped, row 0 = (-1.5 - 1.0) / 2; row 1 keeps its lower clip.
    loss, st = policy_loss(logp, old, adv, mask, epsilon=0.2, epsilon_high=0.6, loss_type="grpo")
    assert loss.item() == pytest.approx((-1.25 + 1.6) / 2, abs=1e-6)
    assert st["clipped"].item() == 1


def test_kl_term_by_hand():
    logp, old, adv, mask = hand_batch()
    ref = logp.clone()
    ref[0, 0] = math.log(0.25)  # KL_k3 = 0.193147 on that token, 0 elsewhere
    loss, st = policy_loss(logp, old, adv, mask, beta=0.1, ref_logp=ref, loss_type="dapo")
    assert loss.item() == pytest.approx((-0.6 + 0.1 * (0.5 + math.log(2) - 1)) / 3, abs=1e-6)
    assert st["kl"].item() == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)


def textbook_objective(logp, old, ref, adv, lengths, eps, beta):
    """DeepSeekMath eq. 3 for one group, written with loops exactly as printed:
    J = 1/G sum_i 1/|o_i| sum_t [ min(r A, clip(r, 1-eps, 1+eps) A) - beta KL_k3 ]."""
    G, total = len(lengths), 0.0
    for i in range(G):
        seq = 0.0
        for t in range(lengths[i]):
            r = torch.exp(logp[i, t] - old[i, t])
            surrogate = torch.min(r * adv[i], torch.clamp(r, 1 - eps, 1 + eps) * adv[i])
            kl = torch.exp(ref[i, t] - logp[i, t]) - (ref[i, t] - logp[i, t]) - 1
            seq = seq + surrogate - beta * kl
        total = total + seq / lengths[i]
    return total / G


def test_gradient_matches_textbook_autograd_and_closed_form():
    torch.manual_seed(0)
    G, T, eps = 6, 5, 0.2
    lengths = [5, 3, 1, 4, 2, 5]
    mask = completion_mask(torch.tensor(lengths), T)
    old = torch.randn(G, T)
    logp0 = old + 0.4 * torch.randn(G, T)  # ratios spread over e^(+-0.8): many outside [0.8, 1.2]
    ref = old + 0.1 * torch.randn(G, T)
    adv = torch.randn(G)
    for beta in (0.0, 0.05):
        ours = logp0.clone().requires_grad_()
        loss, _ = policy_loss(ours, old, adv, mask, epsilon=eps, beta=beta, ref_logp=ref, loss_type="grpo")
        loss.backward()
        book = logp0.clone().requires_grad_()
        (-textbook_objective(book, old, ref, adv, lengths, eps, beta)).backward()
        assert loss.item() == pytest.approx(-textbook_objective(logp0, old, ref, adv, lengths, eps, beta).item(),
                                            abs=1e-6)
        assert torch.allclose(ours.grad, book.grad * mask, atol=1e-6)
    # Closed form with beta = 0: d loss / d logp = -A r / (G |o|) where the clip is inactive, 0 where it bites.
    r = (logp0 - old).exp()
    active = ~(((r > 1 + eps) & (adv[:, None] > 0)) | ((r < 1 - eps) & (adv[:, None] < 0)))
    expected = -adv[:, None] * r / (G * torch.tensor(lengths, dtype=torch.float)[:, None]) * active * mask
    ours = logp0.clone().requires_grad_()
    policy_loss(ours, old, adv, mask, epsilon=eps, loss_type="grpo")[0].backward()
    assert torch.allclose(ours.grad, expected, atol=1e-6)
    assert (ours.grad[mask.bool()] == 0).any()  # some tokens really were clipped


def test_micro_batches_add_up_to_the_full_batch():
    """Gradient accumulation: each micro-batch uses the whole batch's normaliser, so the sum of micro-batch
    losses is the full-batch loss for every loss type."""
    torch.manual_seed(1)
    logp, old = torch.randn(6, 4), torch.randn(6, 4)
    adv = torch.randn(6)
    mask = completion_mask(torch.tensor([4, 2, 3, 1, 4, 2]), 4)
    for lt in ("grpo", "dr_grpo", "dapo", "cispo"):
        kw = dict(loss_type=lt, max_completion_length=4, epsilon_high=1.5 if lt == "cispo" else None)
        full, _ = policy_loss(logp, old, adv, mask, **kw)
        parts = sum(policy_loss(logp[i:i + 2], old[i:i + 2], adv[i:i + 2], mask[i:i + 2], num_seqs=6,
                                num_tokens=mask.sum(), **kw)[0] for i in (0, 2, 4))
        assert parts.item() == pytest.approx(full.item(), abs=1e-6)


def test_batch_scaled_advantages_divide_by_the_std_of_the_whole_batch():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    # All 8 rewards: mean 1.25, squared deviations 2 * 0.0625 + 2 * 1.5625 + 4 * 0.5625 = 5.5, unbiased std
    # sqrt(5.5 / 7) = 0.886405. Group 0 is still centred on its own mean (+-0.5), group 1 stays 0 (TRL's "batch").
    a = group_advantages(r, "batch", eps=0.0)
    assert torch.allclose(a[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / math.sqrt(5.5 / 7))
    assert torch.equal(a[1], torch.zeros(4))


def test_dynamic_sampling_fills_the_batch_with_groups_that_have_spread():
    zero = torch.tensor([True, False, True, False, False])  # 5 groups sampled over the rounds
    assert fill_batch(zero, 2).tolist() == [1, 3]  # the first two with spread
    assert fill_batch(zero, 4).tolist() == [0, 1, 3, 4]  # rounds ran out: a zero-spread group fills the gap


def test_bnpo_normalises_each_micro_batch_by_its_own_tokens():
    """TRL's bnpo: token mean per micro-batch, averaged over micro-batches. One micro-batch: the dapo loss;
    micro-batches of one row: the grpo loss (the per-sequence mean)."""
    logp, old, adv, mask = hand_batch()
    one, _ = policy_loss(logp, old, adv, mask, loss_type="bnpo")
    assert one.item() == pytest.approx((-1.2 - 1.0 + 1.6) / 3, abs=1e-6)
    rows = sum(policy_loss(logp[i:i + 1], old[i:i + 1], adv[i:i + 1], mask[i:i + 1], loss_type="bnpo",
                           num_micro_batches=2)[0] for i in (0, 1))
    assert rows.item() == pytest.approx(((-1.2 - 1.0) / 2 + 1.6) / 2, abs=1e-6)


def test_cispo_clips_the_weight_and_keeps_every_gradient():
    """CISPO on the hand batch with the weight capped at epsilon_high = 1.2: weights 1.2, 1.0 (row 0, A = +1) and
    0.5 (row 1, A = -2). Loss = -sum w A logp / 3 tokens; the gradient is -w A / 3, also on the token whose
    ratio 1.5 the clipped-ratio loss would have cut off."""
    logp, old, adv, mask = hand_batch()
    logp.requires_grad_()
    loss, st = policy_loss(logp, old, adv, mask, epsilon_high=1.2, loss_type="cispo")
    l2, l4 = math.log(2), math.log(4)
    assert loss.item() == pytest.approx((1.2 * l2 + 1.0 * l2 - 0.5 * 2 * l4) / 3, abs=1e-6)
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-1.2, -1.0], [0.5 * 2, 0.0]]) / 3, atol=1e-6)
    assert st["clipped"].item() == 1  # one weight was capped
    dapo = logp.detach().clone().requires_grad_()
    policy_loss(dapo, old, adv, mask, epsilon=0.2, loss_type="dapo")[0].backward()
    assert dapo.grad[0, 0] == 0 and logp.grad[0, 0] != 0  # the clip silences it, CISPO does not


def test_sequence_level_ratio_is_gspo():
    """GSPO: one ratio per completion, the geometric mean of its tokens' ratios. Row 0: sqrt(1.5 * 1.0) = 1.2247,
    above 1.2 with A = +1, so both tokens are clipped (-1.2 each); row 1: its one real token's 0.5 (the padding
    token's 3.0 must not enter), below 0.8 with A = -2: +1.6."""
    logp, old, adv, mask = hand_batch()
    loss, st = policy_loss(logp, old, adv, mask, epsilon=0.2, importance_sampling_level="sequence")
    assert loss.item() == pytest.approx((-1.2 * 2 + 1.6) / 3, abs=1e-6)
    assert st["clipped"].item() == 3
    # Unclipped (epsilon_high 0.3): L = (-2 s + 1.6) / 3 with s = exp((lp0 + lp1 - old0 - old1) / 2), so each of
    # row 0's tokens gets d L / d lp = -s / 3, the same for both; row 1 stays clipped (gradient 0).
    logp.requires_grad_()
    policy_loss(logp, old, adv, mask, epsilon=0.2, epsilon_high=0.3, importance_sampling_level="sequence")[0].backward()
    s = math.sqrt(1.5)
    assert torch.allclose(logp.grad, torch.tensor([[-s / 3, -s / 3], [0.0, 0.0]]), atol=1e-6)


def gspo_textbook(logp, old, adv, lengths, eps):
    """GSPO §4.1 as printed: J = 1/G sum_i min(s_i A_i, clip(s_i, 1-eps, 1+eps) A_i), s_i = (pi / pi_old)^(1/|o_i|)."""
    total = 0.0
    for i, n in enumerate(lengths):
        s = torch.exp((logp[i, :n] - old[i, :n]).sum() / n)
        total = total + torch.min(s * adv[i], s.clamp(1 - eps, 1 + eps) * adv[i])
    return total / len(lengths)


def cispo_textbook(logp, old, adv, lengths, cap):
    """MiniMax-M1 §3.1 as printed, with TRL's cap: J = 1/sum|o_i| sum_i sum_t sg(min(r_it, cap)) A_i log pi."""
    total = 0.0
    for i, n in enumerate(lengths):
        for t in range(n):
            r = torch.exp(logp[i, t] - old[i, t]).detach()
            total = total + torch.clamp(r, max=cap) * adv[i] * logp[i, t]
    return total / sum(lengths)


@pytest.mark.parametrize("name", ["gspo", "cispo"])
def test_gspo_and_cispo_match_the_textbook_loops(name):
    torch.manual_seed(2)
    lengths = [5, 3, 1, 4]
    mask = completion_mask(torch.tensor(lengths), 5)
    old = torch.randn(4, 5)
    logp0, adv = old + 0.3 * torch.randn(4, 5), torch.randn(4)
    if name == "gspo":
        kw, book_fn = dict(loss_type="grpo", importance_sampling_level="sequence"), gspo_textbook
        arg = 0.2
    else:
        kw, book_fn = dict(loss_type="cispo", epsilon_high=1.1), cispo_textbook
        arg = 1.1
    ours = logp0.clone().requires_grad_()
    loss, _ = policy_loss(ours, old, adv, mask, epsilon=0.2, **kw)
    loss.backward()
    book = logp0.clone().requires_grad_()
    expected = -book_fn(book, old, adv, lengths, arg)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert torch.allclose(ours.grad, book.grad * mask, atol=1e-6)


def test_truncated_importance_sampling_weights_the_policy_term_only():
    # Trainer 0.5 vs sampler 0.25: ratio 2, capped at 1.5; trainer 0.25 vs sampler 0.5: 0.5, kept.
    w = truncated_is_weight(torch.log(torch.tensor([0.5, 0.25])), torch.log(torch.tensor([0.25, 0.5])), cap=1.5)
    assert torch.allclose(w, torch.tensor([1.5, 0.5]))
    logp, old, adv, mask = hand_batch()
    weight = torch.tensor([[1.5, 1.0], [0.5, 1.0]])
    # per-token losses -1.2, -1.0, +1.6 weighted 1.5, 1.0, 0.5; the KL term (0.193147 on token (0, 0)) is not.
    ref = logp.clone()
    ref[0, 0] = math.log(0.25)
    loss, _ = policy_loss(logp, old, adv, mask, token_weight=weight, beta=0.1, ref_logp=ref)
    assert loss.item() == pytest.approx((-1.8 - 1.0 + 0.8 + 0.1 * (0.5 + math.log(2) - 1)) / 3, abs=1e-6)


def test_high_entropy_mask_keeps_the_top_quantile():
    ent = torch.arange(1, 11) / 10  # 0.1 .. 1.0
    # The 0.8 quantile of 10 values, linearly interpolated: 0.8 + 0.2 * (0.9 - 0.8) = 0.82: keeps 0.9 and 1.0.
    assert high_entropy_mask(ent, 0.2).tolist() == [0.0] * 8 + [1.0, 1.0]
    assert high_entropy_mask(ent, 1.0).sum() == 10
    assert high_entropy_mask(torch.tensor([0.5, 0.5, 0.1]), 0.2).tolist() == [1.0, 1.0, 0.0]  # ties kept
    # In the loss the masked tokens still count in the normaliser (TRL, the paper): only token (0, 0) left, -1.2 / 3.
    logp, old, adv, mask = hand_batch()
    loss, _ = policy_loss(logp, old, adv, mask, token_weight=torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert loss.item() == pytest.approx(-1.2 / 3, abs=1e-6)


def test_doctor_names_the_usual_reasons_a_run_does_not_learn():
    healthy = [{"zero_spread": 0.3, "truncated": 0.1, "format": 0.5, "kl": 0.01} for _ in range(12)]
    assert doctor(healthy) == []
    assert "zero reward spread" in doctor([{"zero_spread": 1.0}] * 5)[0]
    assert "--max-completion-length" in doctor([{"truncated": 0.8}] * 5)[0]
    collapsed = [{"format": 0.6}] * 8 + [{"format": 0.01}] * 5
    assert "format reward collapsed" in doctor(collapsed)[0]
    exploding = [{"kl": 0.05}, {"kl": 0.2}, {"kl": 0.5}, {"kl": 1.0}, {"kl": 3.0}]
    assert "KL" in doctor(exploding)[0]
    assert "sampler and trainer" in doctor([{"logp_gap": float("inf")}])[0]  # from the first step on
    assert doctor([{"logp_gap": 8.7e-3}]) == []
