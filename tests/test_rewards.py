"""rewards.py as a table of lessons: which answers are the same, what the format reward pays for, and that no
completion, however hostile, can make a reward slow or make it run code."""
import json
import random
import time

import pytest

from conftest import DATA
from rewards import (accuracy_reward, answers_match, combined_reward, countdown_verify, extract_answer,
                     format_reward, language_reward, normalize_answer)
from tasks import make_countdown

# (prediction, gold, should match): MATH-style equivalences first, then the near misses that must not match.
MATCH_TABLE = [
    ("\\frac{1}{2}", "\\dfrac{1}{2}", True),
    ("\\tfrac12", "\\frac{1}{2}", True),
    ("0.5", "\\frac{1}{2}", True),
    ("1/2", "\\frac12", True),
    (".5", "0.50", True),
    ("\\frac 59", "\\frac{5}{9}", True),
    ("\\frac9{19}", "9/19", True),
    ("\\frac{270}7\\text{ degrees}", "\\frac{270}{7}", True),
    ("\\frac43", "4/3", True),
    ("-\\frac{35}{9}", "\\frac{-35}{9}", True),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),
    ("\\left(\\frac{3}{5},\\frac{8}{3}\\right]", "(\\frac35, \\frac83]", True),
    ("(3, 4]", "(3,4]", True),
    ("(-\\infty, 0]", "(-\\infty,0]", True),
    ("(0,9) \\cup (9,36)", "(0, 9)\\cup(9, 36)", True),
    ("(15,-29)", "\\left(15, -29\\right)", True),
    ("1,-2", "-2, 1", True),  # a list of solutions: any order
    ("3, 5, 7", "7,5,3", True),
    ("\\{1\\pm\\sqrt{5},-2\\}", "\\{-2,1\\pm\\sqrt{5}\\}", True),
    ("\\text{Evelyn}", "Evelyn", True),
    ("evelyn", "\\text{Evelyn}", True),
    ("\\text{(C)}", "C", True),
    ("(C)", "\\text{(C)}", True),
    ("90^\\circ", "90", True),
    ("90^{\\circ}", "90°", True),
    ("76", "76^\\circ", True),
    ("15\\mbox{ cm}^2", "15", True),
    ("864 \\mbox{ inches}^2", "864", True),
    ("5.4 \\text{ cents}", "5.4", True),
    ("x=5", "5", True),
    ("x = 5", "x=5", True),
    ("y = 2x + 3", "2x+3", True),
    ("x \\in [-2,7]", "[-2,7]", True),
    ("10,\\!080", "10080", True),
    ("11,\\! 111,\\! 111,\\! 100", "11111111100", True),
    ("\\$32,\\!348", "32348", True),
    ("1{,}000", "1000", True),
    ("\\$18.90", "18.9", True),
    ("25\\%", "25", True),
    ("3\\sqrt{13}", "3 \\sqrt{13}", True),
    ("11\\sqrt2", "11\\sqrt{2}", True),
    ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}", True),  # numerically equal
    ("2\\sqrt{5}", "\\sqrt{20}", True),
    ("\\pi", "3.14159265358979", True),
    ("7\\pi", "7 \\pi", True),
    ("1\\frac{4}{5}", "\\frac{9}{5}", True),  # mixed number
    ("137 \\frac{1}{2}", "137.5", True),
    ("\\boxed{\\frac{1}{4}}", "0.25", True),
    ("\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}",
     "\\begin{pmatrix} -\\frac13 \\\\ \\frac{2}{3} \\\\ \\frac53 \\end{pmatrix}", True),
    ("\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}", "\\begin{pmatrix}-1&0\\\\0&-1\\end{pmatrix}", True),
    ("6 - 5i", "6-5i", True),
    ("p - q", "p-q", True),
    ("x^5 - x^4 + x^3", "x^5-x^4+x^3", True),
    ("025", "25", True),  # AIME golds are zero-padded
    ("27", "27.0", True),  # AMC golds carry '.0'
    (".0000672", "6.72e-5", True),
    ("1.25", "\\frac{5}{4}", True),
    ("2^{10}", "1024", True),
    ("\\dfrac{33}{100}", "0.33", True),
    # near misses
    ("\\frac{1}{3}", "0.33", False),
    ("0.333", "\\frac13", False),
    ("(3,4]", "(3,4)", False),  # open vs closed end
    ("[3,4]", "(3,4]", False),
    ("(1,2)", "(2,1)", False),  # points are ordered
    ("(1,2)", "1,2", False),
    ("1,2", "1,2,3", False),
    ("(0,9) \\cup (9,36)", "(0,9) \\cup (9,37)", False),
    ("\\sqrt{2}", "\\sqrt{3}", False),
    ("2\\sqrt{5}", "5\\sqrt{2}", False),
    ("\\text{east}", "\\text{west}", False),
    ("B", "\\text{(C)}", False),
    ("90", "91^\\circ", False),
    ("-5", "5", False),
    ("1000", "100", False),
    ("10,080", "10,081", False),
    ("x=5", "6", False),
    ("6+9i", "6-9i", False),
    ("\\frac{1}{2}", "\\frac{2}{1}", False),
    ("", "0", False),
    ("   ", "0", False),
    ("\\pi", "3.14", False),
    ("2k+2", "2k", False),
    ("\\frac{1}{0}", "\\frac{1}{0}+1", False),  # division by zero has no value
]


def test_answers_match_table_has_enough_cases():
    assert len(MATCH_TABLE) >= 60 and sum(not ok for _, _, ok in MATCH_TABLE) >= 20


@pytest.mark.parametrize("pred,gold,expected", MATCH_TABLE)
def test_answers_match(pred, gold, expected):
    assert answers_match(pred, gold) is expected
    assert answers_match(gold, pred) is expected  # the relation is symmetric


def test_normalize_answer_strips_layout_only():
    assert normalize_answer("\\left( \\dfrac{1}{2}, 3 \\right)") == "(\\frac{1}{2},3)"
    assert normalize_answer("\\$1,234.") == "1234"
    assert normalize_answer("2k+2") == "2k+2"


@pytest.mark.parametrize("text,expected", [
    ("<think>x</think> <answer>42</answer>", "42"),
    ("<answer>1</answer> then <answer> 2 </answer>", "2"),  # the last answer block
    ("<answer>so \\boxed{7}</answer>", "7"),  # a box inside the answer block wins
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
    ("\\boxed{\\left(\\frac{\\sqrt{3}}{2}, \\{1\\}\\right)}", "\\left(\\frac{\\sqrt{3}}{2}, \\{1\\}\\right)"),
    ("first \\boxed{1}, finally \\boxed{2}", "2"),
    ("\\boxed{3} and an unclosed \\boxed{4", "3"),
    ("\\fbox{5}", "5"),
    ("<answer>no closing tag", None),
    ("The answer is 18.", None),  # no tag, no box: only GSM8K-style tasks read the last number
    ("", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("So she makes 9 * 2 = $18 a day. The answer is 18.", "18"),
    ("The answer is $1,234.00.", "1234.00"),
    ("Temperature drops to -10 degrees", "-10"),
    ("The answer is -$10.", "-10"),  # the sign before the dollar sign counts
    ("no number here", None),
])
def test_extract_answer_last_number_fallback(text, expected):
    assert extract_answer(text, last_number=True) == expected


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
            best = min(_timed(reward, completion, ex) for _ in range(3))  # best of 3: the test shares 2 cores
            assert best < 0.010, f"{reward.__name__} took {best * 1e3:.1f} ms on {name!r} ({ex['task']})"
        assert accuracy_reward(completion, ex) == 0.0


def _timed(reward, completion, ex):
    start = time.perf_counter()
    value = reward(completion, ex)
    assert 0.0 <= value <= 1.0
    return time.perf_counter() - start


def test_rewards_never_call_eval_exec_or_compile(monkeypatch):
    import builtins

    def forbidden(*args, **kwargs):
        raise AssertionError("a reward ran model text through eval/exec/compile")
    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, forbidden)
    for completion in list(HOSTILE.values()) + ["<answer>(25 - 5) * 4</answer>", "<answer>\\frac{1}{2}</answer>"]:
        for ex in EXAMPLES:
            accuracy_reward(completion, ex), format_reward(completion, ex), language_reward(completion, ex)


def test_answers_match_is_fast_on_hostile_answers():
    for answer in ("9^9^9^9", "10^{10^{10}}", _NEST[:999], "1" * 999, "\\frac{" * 150, "1," * 499 + "1"):
        start = time.perf_counter()
        answers_match(answer, "1")
        answers_match(answer, answer + "1")
        assert time.perf_counter() - start < 0.010, answer[:20]


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
