"""evaluate.py: the estimators against brute force, majority voting's documented tie-breaking, evaluate() end to
end with a fake generate (so scoring is tested apart from the model), and the command: the paper's evaluation of a
DeepSeek-R1-Distill model run on a tiny random model that carries the real distill chat template."""
import dataclasses
import itertools
import json
import math
from dataclasses import dataclass

import pytest
import torch

from evaluate import default_ks, evaluate, format_table, majority_vote, pass_at_k, score_problem, summarize


def _pass_at_k_brute_force(n, c, k):
    """Share of all size-k subsets of the n samples (the first c correct) that hold a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_enumeration_of_subsets(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(_pass_at_k_brute_force(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_is_the_mean_for_k1_and_stable_for_large_n():
    assert pass_at_k(16, 5, 1) == pytest.approx(5 / 16)
    exact = 1 - math.comb(1000 - 3, 100) / math.comb(1000, 100)  # exact integers, then one division
    assert pass_at_k(1000, 3, 100) == pytest.approx(exact, rel=1e-12)
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 5)


@pytest.mark.parametrize("answers,winner,index", [
    (["1", "2", "2"], "2", 1),
    (["1", "2", "2", "1"], "1", 0),  # a tie goes to the class seen first
    (["2", "1", "1", "2"], "2", 0),
    (["\\frac12", "3", "0.5", "3"], "\\frac12", 0),  # '0.5' votes with '\frac12': 2-2, and \frac12 came first
    (["3", "0.5", "\\dfrac{1}{2}"], "0.5", 1),
    ([None, None, "7"], "7", 2),  # no answer, no vote
    ([None, None], None, None),
    ([], None, None),
])
def test_majority_vote(answers, winner, index):
    assert majority_vote(answers) == (winner, index)


def test_score_problem_and_summarize():
    ex = {"problem": "1+1?", "answer": "2", "task": "math"}
    completions = ["<think>a</think> <answer>2</answer>", "<answer>3</answer>", "\\boxed{3}", "no answer"]
    record = score_problem(ex, completions)
    assert record["predictions"] == ["2", "3", "3", None]
    assert record["correct"] == [1.0, 0.0, 0.0, 0.0] and record["format"] == [1.0, 0.0, 0.0, 0.0]
    assert record["majority"] == "3" and record["maj_correct"] is False
    assert record["pass@k"] == {1: 0.25, 2: 0.5, 4: 1.0}
    other = score_problem(ex, ["<answer>2</answer>"] * 4)
    summary = summarize([record, other])
    assert summary["pass@1"] == pytest.approx((0.25 + 1.0) / 2) and summary["maj@4"] == 0.5
    assert summary["answered"] == pytest.approx((0.75 + 1.0) / 2)
    assert "pass@1" in format_table(summary) and "62.5" in format_table(summary)


def test_default_ks():
    assert default_ks(1) == [1] and default_ks(16) == [1, 2, 4, 8, 16] and default_ks(12) == [1, 2, 4, 8, 12]


@dataclass
class _FakeGeneration:
    tokens: torch.Tensor
    lengths: torch.Tensor
    logprobs: torch.Tensor
    finish: list
    texts: list


class _FakeTokenizer:
    eos_ids = {0}

    def encode(self, text):
        return [ord(ch) % 100 + 1 for ch in text[-8:]]


def test_evaluate_end_to_end_with_fake_generate(tmp_path):
    examples = [{"problem": f"{i}+0?", "answer": str(i), "task": "gsm8k"} for i in range(5)]
    calls = []

    def generate(model, prompts, *, num_samples, max_new_tokens, temperature, top_p, eos_ids, stop, tokenizer,
                 seed):
        """Batches of 2 problems: prompt p of call b is problem 2b+p; its samples 0 and 1 are right, 2 and 3 not."""
        first = 2 * len(calls)
        calls.append(dict(n=len(prompts), temperature=temperature, top_p=top_p, stop=stop, seed=seed))
        texts = [f"<think>t</think> <answer>{first + p + (g >= 2)}</answer>"  # row p * num_samples + g
                 for p in range(len(prompts)) for g in range(num_samples)]
        N = len(texts)
        return _FakeGeneration(torch.zeros(N, 4, dtype=torch.long), torch.full((N,), 4), torch.zeros(N, 4),
                               ["stop"] * (N - 1) + ["length"], texts)

    out = tmp_path / "runs" / "eval.jsonl"
    summary = evaluate(None, _FakeTokenizer(), examples, num_samples=4, batch_size=2, out_path=out, seed=7,
                       generate=generate, template=lambda problem: f"Q: {problem} A:")
    assert [c["n"] for c in calls] == [2, 2, 1] and [c["seed"] for c in calls] == [7, 9, 11]
    assert all(c["temperature"] == 0.6 and c["top_p"] == 0.95 and c["stop"] == ("</answer>",) for c in calls)
    assert summary["problems"] == 5 and summary["samples"] == 4
    assert summary["pass@1"] == pytest.approx(0.5) and summary["pass@2"] == pytest.approx(1 - 1 / 6)
    assert summary["pass@4"] == 1.0 and summary["maj@4"] == 1.0  # 2-2 tie: the right answer came first
    assert summary["format"] == 1.0 and summary["mean_tokens"] == 4.0
    assert summary["truncated"] == pytest.approx(3 / 20)  # the last row of each of the 3 batches ran out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[3]["predictions"] == ["3", "3", "4", "4"] and rows[3]["correct"] == [1.0, 1.0, 0.0, 0.0]


def test_completion_after_an_opened_think_block_is_scored_with_its_prefix():
    """A prompt ending in <think> (DeepSeek-R1-Distill's template) leaves the opening tag out of the completion;
    format and answer are scored on prefix + completion, so a well-formed answer scores 1."""
    def generate(model, prompts, *, num_samples, tokenizer, **kw):
        texts = ["2 + 3 = 5</think> <answer>5</answer>"] * (len(prompts) * num_samples)
        N = len(texts)
        return _FakeGeneration(torch.zeros(N, 1, dtype=torch.long), torch.ones(N), torch.zeros(N, 1), ["stop"] * N,
                               texts)

    examples = [{"problem": "2+3?", "answer": "5", "task": "gsm8k"}]
    opened = evaluate(None, _FakeTokenizer(), examples, template=lambda p: f"User: {p} Assistant: <think>\n",
                      num_samples=2, generate=generate)
    closed = evaluate(None, _FakeTokenizer(), examples, template=lambda p: f"User: {p} Assistant:",
                      num_samples=2, generate=generate)
    assert opened["format"] == 1.0 and opened["pass@1"] == 1.0
    assert closed["format"] == 0.0 and closed["pass@1"] == 1.0  # the answer is found either way; the format is not


def test_answer_checker_flag_reaches_the_accuracy_reward(monkeypatch):
    """--answer-checker is an EvalConfig choice, and evaluate() scores every sample with the checker it names."""
    import evaluate as ev
    from train_utils import parse_config
    assert parse_config(ev.EvalConfig, ["--model", "m", "--answer-checker", "math-verify"])[0].answer_checker \
        == "math-verify"
    with pytest.raises(SystemExit):  # argparse: invalid choice
        parse_config(ev.EvalConfig, ["--model", "m", "--answer-checker", "sympy"])
    seen = []
    monkeypatch.setattr(ev.rewards, "accuracy_reward", lambda c, ex, checker="builtin": seen.append(checker) or 1.0)

    def generate(model, prompts, *, num_samples, tokenizer, **kw):
        N = len(prompts) * num_samples
        return _FakeGeneration(torch.zeros(N, 1, dtype=torch.long), torch.ones(N), torch.zeros(N, 1), ["stop"] * N,
                               ["<answer>1/2</answer>"] * N)
    examples = [{"problem": "?", "answer": "0.5", "task": "math"}]
    evaluate(None, _FakeTokenizer(), examples, template=lambda p: p, num_samples=3, generate=generate,
             answer_checker="math-verify")
    assert seen == ["math-verify"] * 3


def test_eval_config_gives_every_field_a_flag_with_help():
    from evaluate import EvalConfig
    from train_utils import config_parser
    actions = {a.dest: a for a in config_parser(EvalConfig)._actions if a.dest != "help"}
    assert set(actions) == {f.name for f in dataclasses.fields(EvalConfig)}
    assert all(a.help for a in actions.values())
    assert actions["template"].choices == ("auto", "plain", "chat", "r1", "r1-chat")


def test_paper_evaluation_of_a_distill_model_end_to_end(tmp_path, monkeypatch, capsys):
    """`python evaluate.py --model deepseek-r1-distill-qwen-1.5b --dataset aime24 --num-samples 64` on a tiny random
    model under that name with the real distill tokenizer_config: the paper's sampling settings and 32,768-token
    limit by default, the prompt rendered with the checkpoint's template, completions scored after its <think>,
    the table, the jsonl and the paper's figures beside ours."""
    import evaluate as ev
    import sample
    from conftest import write_checkpoint
    ckpt = write_checkpoint(tmp_path / "deepseek-r1-distill-qwen-1.5b", tokenizer="deepseek-r1-distill-qwen-1.5b")
    real_generate, seen = sample.generate, {}

    def short_generate(model, prompts, **kw):  # the real sampler, cut to 3 tokens (a random model never stops)
        seen.update(kw, prompts=prompts)
        return real_generate(model, prompts, **{**kw, "max_new_tokens": 3})

    monkeypatch.setattr(sample, "generate", short_generate)
    out = tmp_path / "aime.jsonl"
    summary = ev.main(["--model", str(ckpt), "--dataset", "aime24", "--num-samples", "64", "--limit", "1",
                       "--out", str(out), "--device", "cpu"])
    assert seen["max_new_tokens"] == 32768 and seen["temperature"] == 0.6 and seen["top_p"] == 0.95
    assert seen["num_samples"] == 64 and len(seen["prompts"]) == 1  # one prompt per call: 64 rows x 32K tokens
    problem = ev.load_task("aime24", n=1)[0]["problem"]
    prompt = seen["tokenizer"].decode(seen["prompts"][0], skip_special=False)
    assert prompt == f"<｜begin▁of▁sentence｜><｜User｜>{problem}<｜Assistant｜><think>\n"
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(row["completions"]) == 64 and all(c.startswith("<think>\n") for c in row["completions"])
    printed = capsys.readouterr().out
    assert "| aime24: 1 problems x 64 samples |" in printed and "maj@64" in printed
    paper = next(line for line in printed.splitlines() if line.startswith("| DeepSeek-R1 paper"))
    assert "28.9" in paper and "52.7" in paper
    assert summary["paper"] == {"pass@1": 0.289, "maj@64": 0.527} and summary["samples"] == 64


def test_cli_writes_the_table_and_one_line_per_problem(tiny_checkpoint, tmp_path):
    import subprocess
    import sys
    from conftest import ROOT
    r = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--model", str(tiny_checkpoint), "--dataset",
                        "gsm8k", "--limit", "3", "--num-samples", "2", "--max-new-tokens", "4", "--out",
                        str(tmp_path / "ev.jsonl"), "--device", "cpu"], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "template r1," in r.stdout  # a base model under --template auto
    assert "| gsm8k: 3 problems x 2 samples |" in r.stdout and "DeepSeek-R1 paper" not in r.stdout
    assert len((tmp_path / "ev.jsonl").read_text().splitlines()) == 3
