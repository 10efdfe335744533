"""Rule-based rewards of DeepSeek-R1: format, accuracy, language consistency, and the countdown verifier.

R1-Zero (DeepSeek-R1 §2.2.2) learns from two rules and no reward model: an *accuracy* reward (is the final
answer right?) and a *format* reward (is the reasoning inside <think></think> and the answer inside
<answer></answer>?); §2.3.3 adds a *language-consistency* reward against language mixing. Every reward here is
a pure `(completion: str, example: dict) -> float` that never evals or execs model text and returns in bounded
time on any input. Where the answer is and whether it is right (extraction, normalisation, exact equivalence,
the arithmetic parser) is answers.py; whole-completion scans here are C-level (str.count, rfind) or windowed.

    python -m pytest tests/test_rewards.py -q    # format, countdown, per-task accuracy, hostile inputs timed
    python bench/rewards_check.py                # GSM8K / MATH-500 figures of docs/rewards_measurements.md

Choices (and where they depart from a reference):
1. Format reward: the *strict* variant is the default: the whole completion is `<think>…</think> <answer>…</answer>`
   with only whitespace outside the tags, one of each. It is the shape the R1-Zero template shows the model, and
   the lenient variant (the two blocks in order, anything around them) also pays for chatter before <think> and
   for text after </answer>, which RL then keeps (longer rollouts for the same reward). Use lenient
   (`format_reward(c, ex, strict=False)`) for chat models that open with a preamble you do not want to fight.
2. Countdown: each given number may be used *at most once* (the task as issue 4 states it); TinyZero demands
   every number exactly once. Our generator's solutions use all numbers, so both rules accept them.
3. MATH-style answers are compared by answers.answers_match (self-contained, exact, symbolic for polynomial
   expressions; its rules are in answers.py) unless checker="math-verify" asks for HuggingFace's math-verify
   (optional package), for figures comparable with open-r1's. GSM8K, arith and countdown keep their own exact
   rules under either checker.
4. GSM8K and the synthetic `arith` task compare *plain numbers*, not expressions, so copying the question
   ("<answer>3+4*2</answer>") earns nothing; only GSM8K falls back to the last number (its answers are sentences).
5. Language consistency (§2.3.3) is the share of words in the <think> block written in the problem's script
   (Latin vs CJK vs other); it is off by default (`combined_reward(..., language_weight=0.0)`): the paper adds it
   only in the later stage and notes it costs a little accuracy.
"""
import re
from collections import Counter

from algebra import Arith
from answers import (MAX_ANSWER_CHARS, answers_match, extract_answer, final_answer, get_checker,  # noqa: F401
                     normalize_answer, plain_number)

TAGS = ("<think>", "</think>", "<answer>", "</answer>")

# ------------------------------------------------------------------------------------------ rewards

def format_reward(completion, example=None, strict=True):
    """1.0 for exactly one <think>…</think> followed by one non-empty <answer>…</answer>, else 0.0.
    strict (default): nothing but whitespace outside the tags; lenient: any text before and after."""
    found = []
    for tag in TAGS:  # exactly one of each: first == last; stops at the first tag missing (fewer scans than count)
        first = completion.find(tag)
        if first < 0 or first != completion.rfind(tag):
            return 0.0
        found.append(first)
    a, b, c, d = found
    if not a < b < c < d or not completion[c + len("<answer>"):d].strip():
        return 0.0
    outside = completion[:a] + completion[b + len("</think>"):c] + completion[d + len("</answer>"):]
    return float(not strict or not outside.strip())

def countdown_verify(expression, numbers, target):
    """Does the arithmetic expression use only the given numbers (each at most once) and equal target exactly?
    An optional trailing '= target' is ignored; division by zero, decimals and unknown symbols fail."""
    if not isinstance(expression, str) or len(expression) > MAX_ANSWER_CHARS:
        return False
    parser = Arith(expression.split("=")[0], countdown=True)
    try:
        value = parser.parse()
    except (ValueError, ArithmeticError):
        return False
    unavailable = Counter(parser.numbers) - Counter(numbers)  # numbers not given, or used more often than given
    return bool(parser.numbers) and not unavailable and value == target

def accuracy_reward(completion, example, checker="builtin"):
    """1.0 if the completion's final answer is right for example["task"], else 0.0. checker: how MATH-style answers
    are compared, "builtin" (answers.answers_match) or "math-verify" (HuggingFace's package, if installed)."""
    task = example.get("task", "math")
    pred = final_answer(completion, task)
    if task == "countdown":
        return float(countdown_verify(pred, example["numbers"], example["target"]))
    if task in ("gsm8k", "arith"):  # plain numbers, compared exactly: '$1,234.00' == '1234'
        value = plain_number(pred)
        return float(value is not None and value == plain_number(str(example["answer"])))
    return float(get_checker(checker)(pred, str(example["answer"])))

_LATIN = r"A-Za-z\u00c0-\u024f"
_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
_SCRIPTS = {"latin": re.compile(f"[{_LATIN}]+"), "cjk": re.compile(f"[{_CJK}]"),  # one CJK character ~ one word
            "other": re.compile(rf"[^\W\d_{_LATIN}{_CJK}]+")}
LANGUAGE_WINDOWS, LANGUAGE_WINDOW_CHARS = 16, 2048  # longer thinking is sampled in evenly spaced windows

def _word_counts(text):
    """Words per script; beyond 32k characters an estimate from 16 evenly spaced 2k windows (bounded time)."""
    if len(text) > LANGUAGE_WINDOWS * LANGUAGE_WINDOW_CHARS:
        step = (len(text) - LANGUAGE_WINDOW_CHARS) // (LANGUAGE_WINDOWS - 1)
        text = " ".join(text[i * step:i * step + LANGUAGE_WINDOW_CHARS] for i in range(LANGUAGE_WINDOWS))
    return {name: sum(1 for _ in pattern.finditer(text)) for name, pattern in _SCRIPTS.items()}

def language_reward(completion, example):
    """Share of the words inside <think>…</think> written in the problem's script (DeepSeek-R1 §2.3.3)."""
    a, b = completion.find("<think>"), completion.find("</think>")
    if a < 0 or b < a:
        return 0.0
    counts = _word_counts(completion[a + len("<think>"):b])
    total = sum(counts.values())
    problem = _word_counts(example.get("problem", ""))
    target = max(problem, key=problem.get) if any(problem.values()) else "latin"
    return counts[target] / total if total else 0.0

def combined_reward(completion, example, format_weight=1.0, language_weight=0.0, strict=True, checker="builtin"):
    """accuracy + format_weight * format + language_weight * language (R1-Zero: accuracy + format)."""
    total = accuracy_reward(completion, example, checker) + format_weight * format_reward(completion, example, strict)
    return total + (language_weight * language_reward(completion, example) if language_weight else 0.0)

# ------------------------------------------------------------------------------------- behaviours (not rewards)

# A self-check (R1's "aha moment", §2.2.4, in miniature): a checking word followed, within 40 characters on the same
# line, by an equation ("Check: 23 - 8 = 15"), or a correction of a number ("not 16, so it is 24").
_CHECK = re.compile(r"\b(?:check|checking|verify|verifying|wait)\b[^=\n]{0,40}=", re.IGNORECASE)
_CORRECTION = re.compile(r"\bnot -?\d+(?:\.\d+)?, so it is\b", re.IGNORECASE)

def self_check(completion, example=None):
    """1.0 if the completion checks or corrects its own working (the rule above), else 0.0. A metric that GRPO
    logs, never a reward: R1-Zero is rewarded for accuracy and format only."""
    text = completion[:MAX_ANSWER_CHARS * 10]  # bounded time on any input
    return float(bool(_CHECK.search(text) or _CORRECTION.search(text)))
