"""rewards.py as a table of lessons: what the format reward pays for, what each task's accuracy rule accepts, and
that no completion, however hostile, can make a reward slow or make it run code (which answers are the same value
is tests/test_answers.py)."""
import json
import random
import time

import pytest

from conftest import DATA
from rewards import accuracy_reward, combined_reward, countdown_verify, format_reward, language_reward
from tasks import make_countdown


@pytest.mark.parametrize("completion,strict,lenient", [
    ("<think>a</think> <answer>1</answer>", 1, 1),
    ("<think>\nreasoning\n</think>\n<answer>\n1\n</answer>\n", 1, 1),
    ("<think></think><answer>1</answer>", 1, 1),  # empty thinking is allowed, an empty answer is not
    ("<think>a</think> <answer> </answer>", 0, 0),
    ("Sure! <think>a</think> <answer>1</answer>", 0, 1),  # chatter before
    ("<think>a</think> <answer>1</answer> Hope this helps", 0, 1),  # chatter after
    ("<think>a</think> so: <answer>1</answer>", 0, 1),  # text between the blocks
    ("<answer>1</answer> <think>a</think>", 0, 0),  # wrong order
    ("<think>a</think> <answer>1</answer> <answer>2</answer>", 0, 0),  # two answers
    ("<think>a <think>b</think> <answer>1</answer>", 0, 0),  # nested think
    ("<think>a</think>", 0, 0),
    ("<answer>1</answer>", 0, 0),
    ("<think>a <answer>1</answer>", 0, 0),  # unclosed think
    ("a</think> <answer>1</answer>", 0, 0),  # prompt-side <think> not counted
    ("", 0, 0),
])
def test_format_reward(completion, strict, lenient):
    assert format_reward(completion, {}) == strict
    assert format_reward(completion, {}, strict=False) == lenient


def test_countdown_verifier_accepts_every_generated_solution():
    examples = make_countdown(300, seed=1, min_numbers=3, max_numbers=6)
    assert {len(ex["numbers"]) for ex in examples} == {3, 4, 5, 6}
    for ex in examples:
        assert countdown_verify(ex["solution"], ex["numbers"], ex["target"]), ex
        completion = f"<think>…</think> <answer>{ex['solution']} = {ex['target']}</answer>"
        assert accuracy_reward(completion, ex) == 1.0


@pytest.mark.parametrize("expression,ok", [
    ("(25 - 5) * 4", True),
    ("4 * (25 - 5)", True),
    ("((25 - 5)) × 4", True),  # redundant parentheses, the × sign
    ("4 * 5 * 4", False),  # 4 used twice
    ("(25 - 5) * 4 + 3", False),  # 3 is not given
    ("25 * 4", False),  # wrong value (100)
    ("(25 - 5) * 4 / (5 - 5)", False),  # division by zero
    ("(25-5)*4=80", True),  # a trailing '= target' is fine
    ("80", False),  # the target itself is not a given number
    ("", False),
    ("25 - 5 * 4 +", False),
    ("2.5 * 32", False),
    ("(25 - 5) ** 4", False),
    ("__import__('os').system('true')", False),
])
def test_countdown_verifier_table(expression, ok):
    assert countdown_verify(expression, [4, 5, 25], 80) is ok


def test_countdown_exact_rationals():  # 6 / (1 - 3/4) = 24 only holds in exact arithmetic
    assert countdown_verify("6 / (1 - 3 / 4)", [1, 3, 4, 6], 24)
    assert not countdown_verify("6 / (1 - 3 / 4)", [1, 3, 4], 24)  # the 6 is missing from the numbers


def test_accuracy_reward_per_task():
    gsm = {"problem": "?", "answer": "18", "task": "gsm8k"}
    assert accuracy_reward("<answer>$18.00</answer>", gsm) == 1.0
    assert accuracy_reward("<answer>She makes $18 every day.</answer>", gsm) == 1.0
    assert accuracy_reward("... so the answer is 18.", gsm) == 1.0
    assert accuracy_reward("<answer>19</answer>", gsm) == 0.0
    arith = {"problem": "3+4*2", "answer": "11", "task": "arith"}
    assert accuracy_reward("<think>3+4*2=3+8=11</think> <answer>11</answer>", arith) == 1.0
    assert accuracy_reward("<answer>3+4*2</answer>", arith) == 0.0  # copying the question earns nothing
    seven = {"problem": "0+7", "answer": "7", "task": "arith"}  # ... even where its last number is the answer
    assert accuracy_reward("<answer>0+7</answer>", seven) == 0.0 and accuracy_reward("0+7", seven) == 0.0
    assert accuracy_reward("<answer>7</answer>", seven) == 1.0 and accuracy_reward("\\boxed{7}", seven) == 1.0
    math = {"problem": "?", "answer": "\\frac{1}{2}", "task": "math"}
    assert accuracy_reward("<think>…</think> <answer>\\dfrac12</answer>", math) == 1.0
    assert accuracy_reward("... so \\boxed{0.5}", math) == 1.0
    assert accuracy_reward("... the answer is 0.5", math) == 0.0  # MATH needs a tag or a box


def test_accuracy_reward_reads_latex_delimiters_and_mixed_numbers():  # issue 13's first two misjudgements
    ex = {"problem": "?", "answer": "7/3", "task": "math"}
    assert accuracy_reward("<think>…</think> <answer>\\( \\frac{7}{3} \\)</answer>", ex) == 1.0
    assert accuracy_reward("<think>…</think> <answer>\\[2 1/3\\]</answer>", ex) == 1.0
    assert accuracy_reward("<think>…</think> <answer>21/3</answer>", ex) == 0.0


def test_accuracy_reward_checker_choice():
    ex = {"problem": "?", "answer": "b - a", "task": "math"}
    assert accuracy_reward("<answer>-a + b</answer>", ex, checker="builtin") == 1.0
    with pytest.raises(ValueError, match="unknown answer checker 'sympy'"):
        accuracy_reward("<answer>1</answer>", ex, checker="sympy")


def test_accuracy_reward_with_math_verify():
    pytest.importorskip("math_verify")
    math = {"problem": "?", "answer": "\\frac{1}{2}", "task": "math"}
    assert accuracy_reward("<think>…</think> <answer>0.5</answer>", math, checker="math-verify") == 1.0
    assert accuracy_reward("<think>…</think> <answer>0.6</answer>", math, checker="math-verify") == 0.0
    assert accuracy_reward("no answer at all", math, checker="math-verify") == 0.0
    gsm = {"problem": "?", "answer": "18", "task": "gsm8k"}  # plain-number tasks keep their exact rule
    assert accuracy_reward("<answer>She makes $18.</answer>", gsm, checker="math-verify") == 1.0
    assert combined_reward("<think>a</think> <answer>1/2</answer>", math, checker="math-verify") == 2.0


def test_accuracy_reward_first_real_problems():
    rows = [json.loads(line) for line in open(DATA / "math500_test.jsonl")][:20]
    for row in rows:
        ex = {**row, "task": "math"}
        assert accuracy_reward(f"<think>hm</think> <answer>{row['answer']}</answer>", ex) == 1.0
        assert accuracy_reward(f"<think>hm</think> <answer>{row['answer']}+1</answer>", ex) == 0.0


def test_language_reward_share_of_prompt_script():
    english, chinese = {"problem": "What is two plus two?"}, {"problem": "二加二等于多少？"}
    assert language_reward("<think>two plus two is four</think> <answer>4</answer>", english) == 1.0
    # 3 of 5 words: a CJK character counts as one word
    assert language_reward("<think>two plus two 是四</think> <answer>4</answer>", english) == 0.6
    assert language_reward("<think>二加二是四</think>", chinese) == 1.0
    assert language_reward("no think block", english) == 0.0


def test_language_reward_on_long_thinking_is_a_close_estimate():  # past 32k characters it samples windows
    english = {"problem": "What is two plus two?"}
    long_mixed = "<think>" + "two plus two 四 " * 20_000 + "</think>"
    assert language_reward(long_mixed, english) == pytest.approx(0.75, abs=0.01)


def test_combined_reward_language_off_by_default():
    ex = {"problem": "What is 2+2?", "answer": "4", "task": "math"}
    good = "<think>two and two 是四</think> <answer>4</answer>"
    assert combined_reward(good, ex) == 2.0  # accuracy + format; language weight 0
    assert combined_reward(good, ex, language_weight=1.0) == pytest.approx(2.6)


# Hostile completions: each reward must answer in < 10 ms and never run the text.
_NEST = "(" * 10_000 + "1" + ")" * 10_000
HOSTILE = {
    "python power tower": "<answer>9**9**9**9</answer>",
    "latex power tower": "<think>t</think> <answer>9^9^9^9</answer>",
    "latex huge exponent": "<answer>10^{10^{10}}</answer>",
    "boxed huge exponent": "\\boxed{10^{10^{10}}}",
    "python huge exponent": "<answer>10**(10**10)</answer>",
    "10,000 parentheses": f"<answer>{_NEST}</answer>",
    "10,000 parentheses, boxed": "\\boxed{" + _NEST + "}",
    "10,000 braces": "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
    "1 MB of digits": "1" * (1 << 20),
    "1 MB answer": "<answer>" + "1+" * (1 << 19) + "1</answer>",
    "1 MB thinking": "<think>" + "ab 二 " * (1 << 18) + "</think> <answer>1</answer>",
    "1 MB of boxes": "\\boxed{" * (1 << 17),
    "1 MB of tags": "<answer></answer>" * (1 << 16),
    "unicode digits": "<answer>٣²𝟗</answer> ٣٣٣ ²",
    "unary minus run": "<answer>" + "-" * 999 + "1</answer>",
    "import": "<answer>__import__('os').system('touch /tmp/pwned')</answer>",
    "polynomial blow-up": "<answer>" + ("(" + "+".join(f"x^{{{k}}}" for k in range(1, 31)) + ")") * 3 + "</answer>",
    "power of a sum": "<answer>(x+y+z+1)^{64}</answer>",
    "sixty square roots": "<answer>" + "\\sqrt{1000003}" * 60 + "</answer>",
    "sum of sixty fractions": "<answer>" + "+".join(f"\\frac{{1}}{{x+{k}}}" for k in range(2, 60)) + "</answer>",
    "exec in box": "\\boxed{exec('import os')}",
}
EXAMPLES = [
    {"problem": "What is 1+1?", "answer": "2", "task": "math"},
    {"problem": "What is 1+1?", "answer": "2", "task": "gsm8k"},
    {"problem": "1+1", "answer": "2", "task": "arith"},
    {"problem": "p", "answer": "24", "task": "countdown", "numbers": [1, 3, 4, 6], "target": 24},
]


@pytest.mark.parametrize("name", list(HOSTILE))
def test_rewards_are_fast_and_safe_on_hostile_input(name):
    completion = HOSTILE[name]
    for ex in EXAMPLES:
        for reward in (accuracy_reward, format_reward, language_reward):
            best = min(_timed(reward, completion, ex) for _ in range(3))  # CPU time, best of 3: 2 shared cores
            assert best < 0.010, f"{reward.__name__} took {best * 1e3:.1f} ms on {name!r} ({ex['task']})"
        assert accuracy_reward(completion, ex) == 0.0


def _timed(reward, completion, ex):
    start = time.process_time()  # the work a reward does, not the wait for a core another process holds
    value = reward(completion, ex)
    assert 0.0 <= value <= 1.0
    return time.process_time() - start


def test_rewards_never_call_eval_exec_or_compile(monkeypatch):
    import builtins

    def forbidden(*args, **kwargs):
        raise AssertionError("a reward ran model text through eval/exec/compile")
    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, forbidden)
    for completion in list(HOSTILE.values()) + ["<answer>(25 - 5) * 4</answer>", "<answer>\\frac{1}{2}</answer>"]:
        for ex in EXAMPLES:
            accuracy_reward(completion, ex), format_reward(completion, ex), language_reward(completion, ex)


def test_random_completions_never_raise():
    rng = random.Random(0)
    alphabet = list("0123456789+-*/^()[]{}.,=\\ $%") + ["\\frac", "\\sqrt", "<answer>", "</answer>", "<think>",
                                                          "</think>", "\\boxed{", "\\left(", "\\right)", "x", "٣"]
    for _ in range(500):
        completion = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        for ex in EXAMPLES:
            for reward in (accuracy_reward, format_reward, language_reward):
                assert 0.0 <= reward(completion, ex) <= 1.0


def test_real_benchmarks_subset():
    """The fast part of bench/rewards_check.py (the full run's figures are in docs/rewards_measurements.md)."""
    from bench.rewards_check import gsm8k_check, math500_check
    from tasks import load_task
    gsm = gsm8k_check(load_task("gsm8k", data_dir=DATA)[:200])
    assert gsm["gold_scores_1"] == 1.0 and gsm["gold_plus_1_scores_0"] == 1.0, gsm["failures"]
    m = math500_check(load_task("math500", data_dir=DATA)[:100], reps=5, seed=0)
    assert m["self_match"] >= 0.99 and m["cross_match"] <= 0.01 and m["false_cross_match"] == 0.0, m["misses"]
