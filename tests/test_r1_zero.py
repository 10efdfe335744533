"""R1-Zero in miniature: a base model pretrained on plain text (loss on every token) with a tokenizer that spells
the R1 tags in pieces the corpus trains, the self-check detector, and the whole recipe end to end in seconds."""
import json
import random
import re
from collections import Counter

import pytest

import demo
import scratch
import sft
from conftest import FIXTURE
from rewards import accuracy_reward, format_reward, self_check
from tasks import make_arith, pretraining_corpus, random_tag, solution_text, worked_chain
from tokenizer import Tokenizer, r1_zero_prompt

EXAMPLES = make_arith(300, seed=0, min_ops=2, max_ops=2, max_value=5)


def test_pretraining_loss_covers_every_token():
    tok = Tokenizer.from_dir(FIXTURE)
    text_row = {"text": "Problem: 3+4*2. Solution: 3+4*2 = 3+8 = 11. The answer is 11."}
    doc = sft.tokenize_example(tok, text_row, eos_id=151643)
    ids, labels = doc
    assert labels == ids and ids[-1] == 151643 and tok.decode(ids[:-1]) == text_row["text"]
    pair = {"prompt": "3+4*2", "response": " 11"}
    ids, labels = sft.tokenize_example(tok, pair, eos_id=151643, every_token=True)  # --pretrain: the prompt too
    assert labels == ids and labels[0] != sft.IGNORE
    assert sft.tokenize_example(tok, pair, eos_id=151643)[1][0] == sft.IGNORE  # without it, SFT as usual
    (row,) = sft.pack([doc] * 3, max_length=4096)
    assert sft.IGNORE not in row["targets"]  # every next token of every document is a target ...
    assert row["targets"] == 3 * doc[1][1:]  # ... and none crosses a document boundary


def test_r1_zero_base_tokenizer_spells_the_template_tags_in_pieces_the_corpus_trains():
    # The base model never sees <think>/<answer>. With one token per tag (the R1 demo's tokenizer) or with BPE
    # merges of 'think' and 'answer' (which only the template holds), the tags' embeddings would never get a
    # gradient: the instruction would be unreadable exactly where it matters, and copying a tag impossible.
    docs = pretraining_corpus(EXAMPLES, n_docs=1500, seed=0, worksheet=0.3, tag_names="random")
    tok = scratch.train_tokenizer(docs, 512, tag_tokens=False)
    seen = Counter(i for d in docs for i in tok.encode(d).ids)
    prompt = r1_zero_prompt("3+4*2") + " <think> 3+4*2 = 3+8 = 11 </think> <answer> 11 </answer>"
    enc = tok.encode(prompt)
    assert tok.decode(enc.ids) == prompt
    unseen = [t for t, i in zip(enc.tokens, enc.ids) if seen[i] < 20]
    assert unseen == [], f"template tokens the corpus (almost) never trains: {unseen}"
    assert tok.encode("<think>").tokens == ["<", "t", "h", "i", "n", "k", ">"]
    # The R1 demo's tokenizer keeps the one-token tags (its figures in the README depend on it).
    atomic = scratch.train_tokenizer(docs, 512)
    assert atomic.encode(" <think> 7 </think>").tokens == ["Ġ", "<think>", "Ġ", "7", "Ġ", "</think>"]


def test_random_worksheet_tags_are_named_by_the_page_that_uses_them():
    docs = pretraining_corpus(EXAMPLES, n_docs=400, seed=1, worksheet=1.0, tag_names="random")
    for doc in docs:
        head, body = re.split(r"(?:Solution|Assistant):", doc)  # the instruction, then the worked page
        tags = re.findall(r"<(/?)([a-z]+)>", body)
        assert len(tags) == 4 and all(f"<{name}>" in head for _, name in tags)
        assert "<think>" not in doc and "<answer>" not in doc
    names = [random_tag(random.Random(i)) for i in range(200)]
    assert len(set(names)) > 190 and all(3 <= len(n) <= 7 and n.isalpha() for n in names)
    with pytest.raises(ValueError, match="unknown tag_names"):
        pretraining_corpus(EXAMPLES, n_docs=1, tag_names="tokens")


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


def test_readable_means_the_strict_format_with_clean_working():
    assert demo.readable("<think> 3+4*2 = 3+8 = 11 </think> <answer> 11 </answer>") == 1.0
    assert demo.readable(" <think> 3+4*2 = 12 </think> <answer> 12 </answer>") == 1.0  # wrong is still readable
    assert demo.readable("<think> 3+4*2 <work> = 11 </think> <answer> 11 </answer>") == 0.0  # tag pieces inside
    assert demo.readable("<think> 3+8 </think> <answer> eleven </answer>") == 0.0
    assert demo.readable("3+8 = 11. The answer is 11.") == 0.0


def test_r1_cold_start_for_the_comparison_is_in_the_template_and_earns_full_reward():
    rows = demo.cold_start_in_template(EXAMPLES[:50], (0.25, 0.25, 0.25, 0.25), seed=0)
    assert any("Check:" in r["response"] for r in rows) and any("Check:" not in r["response"] for r in rows)
    for ex, row in zip(EXAMPLES, rows):
        assert row["prompt"] == r1_zero_prompt(ex["problem"])
        assert accuracy_reward(row["response"], ex) == 1.0 and format_reward(row["response"], ex) == 1.0


def test_r1_zero_and_r1_side_by_side_run_end_to_end_on_a_tiny_budget(tmp_path, monkeypatch):
    import train_utils
    monkeypatch.setattr(train_utils, "plot_curves", lambda *a, **k: None)  # matplotlib is most of the time here
    monkeypatch.setattr(demo, "plot_zero", lambda *a, **k: None)
    summary = demo.main(["--recipe", "both", "--output-dir", str(tmp_path), "--pretrain-docs", "60",
                         "--pretrain-epochs", "1", "--rl-examples", "40", "--sft-examples", "40",
                         "--cold-start-examples", "8", "--cold-start-epochs", "1", "--grpo-steps", "2",
                         "--num-prompts", "2", "--num-generations", "2", "--max-completion-length", "8",
                         "--test-problems", "3"])
    assert list(summary["results"]) == ["base", "r1-zero after GRPO", "r1 after SFT", "r1 after GRPO"]
    for r in summary["results"].values():
        assert 0 <= r["pass@1_t0.6"] <= r["pass@8_t0.6"] <= 1 and 0 <= r["self_check_t0.6"] <= 1
    assert [row["step"] for row in summary["grpo"]["r1-zero"]] == [1, 2]
    assert "self_check" in json.loads((tmp_path / "r1-zero-grpo" / "metrics.jsonl").read_text().splitlines()[0])
    corpus = (tmp_path / "corpus.jsonl").read_text()
    assert "<think>" not in corpus and "<answer>" not in corpus
    base_tok = json.loads((tmp_path / "init" / "tokenizer.json").read_text())
    assert not any(t["content"] == "<think>" for t in base_tok["added_tokens"])
    assert summary == json.loads((tmp_path / "summary.json").read_text())



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
