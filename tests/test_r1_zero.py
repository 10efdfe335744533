"""R1-Zero in miniature, the pieces on main so far: the plain-text pretraining corpus and the self-check detector."""
import re

import pytest

from rewards import self_check
from tasks import make_arith, pretraining_corpus, solution_text, worked_chain

EXAMPLES = make_arith(300, seed=0, min_ops=2, max_ops=2, max_value=5)



def test_corpus_is_plain_text_whose_every_stated_answer_is_right():
    docs = pretraining_corpus(EXAMPLES, n_docs=600, seed=0, habits=(0.25, 0.25, 0.25, 0.25), worksheet=0.3)
    assert len(docs) == 600 and docs == pretraining_corpus(EXAMPLES, n_docs=600, seed=0,
                                                           habits=(0.25, 0.25, 0.25, 0.25), worksheet=0.3)
    for i, doc in enumerate(docs):
        assert "think>" not in doc and "answer>" not in doc  # never the R1 format
        answer = EXAMPLES[i % len(EXAMPLES)]["answer"]
        # The last number a document states is the answer, whatever the habit (a slip is always corrected).
        assert re.findall(r"\d+", doc)[-1] == answer
    assert 0.2 < sum("Worksheet." in d or "result here" in d or "tags and" in d or "within <" in d
                     for d in docs) / 600 < 0.4


def test_slip_is_caught_by_a_check_that_undoes_the_last_step():
    import random
    ex = {"problem": "3+4*2", "answer": "11", "task": "arith"}
    assert worked_chain(ex) == ["3+4*2", "3+8", "11"]
    rng = random.Random(0)
    assert solution_text(ex, "direct", rng) == "3+4*2 = 11"
    assert solution_text(ex, "worked", rng) == "3+4*2 = 3+8 = 11"
    assert solution_text(ex, "check", rng) == "3+4*2 = 3+8 = 11. Check: 11 - 8 = 3, so it is 11"
    slip = solution_text(ex, "slip", rng)
    wrong = int(re.match(r"3\+4\*2 = 3\+8 = (\d+)\.", slip).group(1))
    assert wrong != 11 and slip.endswith(f"Check: {wrong} - 8 = {wrong - 8}, not 3, so it is 11")
    minus = solution_text({"problem": "9-2-3", "answer": "4"}, "check", rng)
    assert minus == "9-2-3 = 7-3 = 4. Check: 4 + 3 = 7, so it is 4"
    times = solution_text({"problem": "(1+2)*4", "answer": "12"}, "slip", rng)
    assert re.fullmatch(r"\(1\+2\)\*4 = 3\*4 = \d+\. Check: 4\*3 = 12, not \d+, so it is 12", times)


@pytest.mark.parametrize("text", [
    "<think> 3+8 = 12. Check: 12 - 8 = 4, not 3, so it is 11 </think> <answer> 11 </answer>",
    "<think> 7*3 = 21. Check: 3*7 = 21, so it is 21 </think> <answer> 21 </answer>",
    "Wait, wait. 16 + 8 = 24, I wrote 23.",
    "Let me verify: 5 * 4 = 20.",
    "checking again, 2+2 = 4",
    "23 is not 24. It is not 16, so it is 15.",
])
def test_self_check_detector_finds_checks_and_corrections(text):
    assert self_check(text) == 1.0


@pytest.mark.parametrize("text", [
    "<think> 3+4*2 = 3+8 = 11 </think> <answer> 11 </answer>",  # worked, no check
    "<think> 3+4*2 = 11 </think> <answer> 11 </answer>",  # direct
    "Let me think. 3+8 = 11. The answer is 11.",  # 'think' is no check
    "I checked the page twice = done",  # 'checked' is a report, not a check
    "Check the units.\n 3 = 3",  # the equation must follow on the same line
    "Checkmate = 1",  # not the word 'check'
    "not five, so it is six",  # a correction must name numbers
    "",
])
def test_self_check_detector_ignores_everything_else(text):
    assert self_check(text) == 0.0



@pytest.mark.parametrize("text", ["Check " * (1 << 17), "not 1, so " * (1 << 16), "wait" + " " * (1 << 20) + "=",
                                  "check" + "x" * 39 + "=" * (1 << 20)])
def test_self_check_detector_is_fast_on_hostile_input(text):
    import time
    best = float("inf")
    for _ in range(3):  # best of 3: the test shares 2 cores
        t = time.perf_counter()
        self_check(text)
        best = min(best, time.perf_counter() - t)
    assert best < 0.05
