"""Are the rewards right on the real benchmarks? Two self-consistency checks (issue 4, "Measured and noted").

1. GSM8K (all 1,319 test problems): the gold answer written the ways models write it (inside <answer></answer>,
   inside \\boxed{}, or as a closing "The answer is N." sentence after the reference solution's own numbers), each
   with the $ / thousands-comma / .00 variants, must score 1; the same with gold+1 must score 0.
2. MATH-500: each gold answer, randomly re-formatted (\\dfrac<->\\frac, spaces, \\left/\\right, \\text{} wrappers,
   $…$), must still match itself (>= 99%) and must match another problem's different answer rarely (<= 1%).
   "Different" means a different string once spaces are removed; the matches that remain are listed so a reader
   can see whether they are real equivalences (0.5 vs \\frac12) or false positives.
3. With math-verify installed (pip install math-verify): how often the builtin checker and HuggingFace's math-verify
   give the same verdict on re-formatted MATH-500 golds against their own gold and against other problems' golds.

    python bench/rewards_check.py              # all of it, about half a minute on one CPU core
    python bench/rewards_check.py --quick      # the subset tests/test_rewards.py runs
    python bench/rewards_check.py --agreement  # 3. as well (math-verify costs about 10 ms a pair: a subset)
"""
import argparse
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from answers import math_verify_match  # noqa: E402
from rewards import accuracy_reward, answers_match  # noqa: E402
from tasks import load_task  # noqa: E402


def gsm8k_forms(answer):
    """The gold number as models write it: 18, $18, 18.00, $18.00 (and 1,234 / $1,234.00 from 1000 on)."""
    n = int(answer)
    plain, commas = str(n), f"{n:,}"
    sign, digits = ("-", commas[1:]) if n < 0 else ("", commas)
    return sorted({plain, f"{sign}${digits}", f"{plain}.00", commas, f"{sign}${digits}.00"})


def gsm8k_completions(example, form):
    think = example.get("solution", "Let me think.")
    return [f"<think>{think}</think> <answer>{form}</answer>",
            f"{think}\nSo the final answer is $\\boxed{{{form}}}$.",
            f"{think}\nThe answer is {form}."]


def gsm8k_check(examples):
    right = wrong = total = 0
    failures = []
    for ex in examples:
        for gold_shift in (0, 1):
            for form in gsm8k_forms(str(int(ex["answer"]) + gold_shift)):
                for completion in gsm8k_completions(ex, form):
                    score = accuracy_reward(completion, ex)
                    ok = score == (1.0 if gold_shift == 0 else 0.0)
                    right += ok and gold_shift == 0
                    wrong += ok and gold_shift == 1
                    total += gold_shift == 0
                    if not ok and len(failures) < 10:
                        failures.append((ex["answer"], completion[-60:], score))
    return {"problems": len(examples), "completions": total, "gold_scores_1": right / total,
            "gold_plus_1_scores_0": wrong / total, "failures": failures}


def reformat(answer, rng):
    """One random re-writing that a grader must see through."""
    s = answer
    if rng.random() < 0.7:  # \dfrac <-> \frac, per occurrence
        s = re.sub(r"\\d?frac", lambda m: rng.choice(["\\frac", "\\dfrac"]), s)
    if rng.random() < 0.5:  # \left / \right around brackets (or drop them where they are)
        if "\\left" in s:
            s = s.replace("\\left", "").replace("\\right", "")
        else:
            s = re.sub(r"(?<!\\)([(\[])", r"\\left\1", s)
            s = re.sub(r"(?<!\\)([)\]])", r"\\right\1", s)
    if rng.random() < 0.7:  # spaces: none, or some after brackets, braces, commas and signs
        s = s.replace(" ", "") if rng.random() < 0.5 else re.sub(
            r"[{}()\[\],=+-]", lambda m: m.group() + " " * rng.randint(0, 2), s)
    if rng.random() < 0.4:  # \text{} wrappers: swap the kind, or wrap a bare word / the whole answer
        if "\\text{" in s:
            s = s.replace("\\text{", rng.choice(["\\textbf{", "\\mbox{", "\\textrm{"]))
        else:
            s = f"\\text{{{s}}}"
    if rng.random() < 0.3:
        s = f"${s}$"
    return s


def math500_check(examples, reps=10, seed=0, cross=None):
    rng = random.Random(seed)
    golds = [ex["answer"] for ex in examples]
    self_ok = self_total = changed_ok = changed = 0
    misses = []
    for gold in golds:
        for _ in range(reps):
            variant = reformat(gold, rng)
            ok = answers_match(variant, gold)
            self_ok, self_total = self_ok + ok, self_total + 1
            if variant != gold:  # integers often come back unchanged: count the real re-writings apart
                changed_ok, changed = changed_ok + ok, changed + 1
            if not ok and len(misses) < 10:
                misses.append((gold, variant))
    compact = [g.replace(" ", "") for g in golds]
    cross_hits = cross_total = 0
    hits = {}
    others = range(len(golds)) if cross is None else range(min(cross, len(golds)))
    for i in others:
        variant = reformat(golds[i], rng)
        for j in others:
            if compact[i] != compact[j]:
                cross_total += 1
                if answers_match(variant, golds[j]):
                    cross_hits += 1
                    hits[(golds[i], golds[j])] = hits.get((golds[i], golds[j]), 0) + 1
    false_hits = sum(n for (a, b), n in hits.items() if not answers_match(a, b))  # the originals differ in value
    return {"problems": len(golds), "self_checks": self_total, "self_match": self_ok / self_total,
            "changed": changed, "changed_match": changed_ok / max(changed, 1),
            "cross_pairs": cross_total, "cross_match": cross_hits / max(cross_total, 1),
            "false_cross_match": false_hits / max(cross_total, 1), "misses": misses,
            "cross_hits": sorted(hits.items(), key=lambda kv: -kv[1])[:15]}


def checker_agreement(examples, reps=2, cross=60, seed=0):
    """Verdicts of answers_match and math_verify_match on (re-formatted gold, gold) pairs and on cross pairs of
    different golds among the first `cross` problems: how often they agree, and the pairs where they do not."""
    rng = random.Random(seed)
    golds = [ex["answer"] for ex in examples]
    pairs = [(reformat(g, rng), g) for g in golds for _ in range(reps)]
    pairs += [(reformat(golds[i], rng), golds[j]) for i in range(min(cross, len(golds)))
              for j in range(min(cross, len(golds))) if i != j and golds[i] != golds[j]]
    start, agree, only_builtin, only_mv = time.time(), 0, [], []
    for variant, gold in pairs:
        a, b = answers_match(variant, gold), math_verify_match(variant, gold)
        agree += a == b
        if a != b:
            (only_builtin if a else only_mv).append((variant, gold))
    wrapped = sum(bool(_WRAPPED.search(v)) and not _WRAPPED.search(g) for v, g in only_builtin + only_mv)
    return {"pairs": len(pairs), "agree": agree / len(pairs), "only_builtin": only_builtin, "only_math_verify": only_mv,
            "wrapped": wrapped, "seconds": time.time() - start}


_WRAPPED = re.compile(r"\\(?:text|textbf|textrm|mbox)\{")  # re-formatting wrapped the answer in a text command


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 GSM8K problems, 100 MATH-500 problems")
    parser.add_argument("--reps", type=int, default=10, help="random re-formattings per MATH-500 answer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--agreement", action="store_true", help="also compare with math-verify (if installed)")
    args = parser.parse_args()
    gsm, math500 = load_task("gsm8k"), load_task("math500")
    if args.quick:
        gsm, math500 = gsm[:200], math500[:100]
    start = time.time()
    g = gsm8k_check(gsm)
    print(f"GSM8K: {g['problems']} problems, {g['completions']} completions per side: gold scores 1 in "
          f"{100 * g['gold_scores_1']:.2f}%, gold+1 scores 0 in {100 * g['gold_plus_1_scores_0']:.2f}% "
          f"({time.time() - start:.1f} s)")
    for failure in g["failures"]:
        print("  failure:", failure)
    start = time.time()
    m = math500_check(math500, reps=args.reps, seed=args.seed)
    print(f"MATH-500: {m['problems']} answers x {args.reps} re-formattings: self-match {100 * m['self_match']:.2f}% "
          f"({100 * m['changed_match']:.2f}% of the {m['changed']} that differ from the original); cross-match "
          f"{100 * m['cross_match']:.3f}% of {m['cross_pairs']} pairs of different strings, of which "
          f"{100 * m['false_cross_match']:.3f}% between answers of different value ({time.time() - start:.1f} s)")
    for gold, variant in m["misses"]:
        print(f"  miss: {gold!r} vs re-formatted {variant!r}")
    for (a, b), count in m["cross_hits"]:
        print(f"  cross-match x{count}: {a!r} ~ {b!r}")
    if args.agreement:
        a = checker_agreement(math500, seed=args.seed)
        print(f"builtin vs math-verify: same verdict on {100 * a['agree']:.2f}% of {a['pairs']} pairs "
              f"({len(a['only_builtin'])} match only for builtin, {len(a['only_math_verify'])} only for math-verify, "
              f"{a['wrapped']} of these with a \\text{{}}-like wrapper the gold lacks; {a['seconds']:.0f} s)")
        for side in ("only_builtin", "only_math_verify"):
            for variant, gold in [pair for pair in a[side] if not _WRAPPED.search(pair[0])][:25]:
                print(f"  {side}: {variant!r} vs gold {gold!r}")


if __name__ == "__main__":
    main()
