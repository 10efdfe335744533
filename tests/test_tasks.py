"""tasks.py: the benchmark files load as examples, bad files say file:line, and the generated tasks are seeded,
solvable, split without overlap, and (arith) come with worked traces that the rewards accept."""
import pytest

from conftest import DATA
from rewards import accuracy_reward, countdown_verify, format_reward
from tasks import arith_trace, load_task, make_arith, make_countdown, read_jsonl


@pytest.mark.parametrize("name,split,size,task", [
    ("gsm8k", "test", 1319, "gsm8k"), ("gsm8k", "train", 7473, "gsm8k"), ("math500", "test", 500, "math"),
    ("aime24", "test", 30, "math"), ("amc23", "test", 40, "math"),
])
def test_named_datasets_load(name, split, size, task):
    examples = load_task(name, split=split, data_dir=DATA)
    assert len(examples) == size
    assert all(ex["task"] == task and isinstance(ex["answer"], str) and ex["problem"] for ex in examples)


def test_load_task_keeps_first_n_and_reads_user_files(tmp_path):
    assert [ex["answer"] for ex in load_task("aime24", n=3)] == ["204", "113", "371"]
    path = tmp_path / "mine.jsonl"
    path.write_text('{"problem": "1+1?", "answer": 2}\n\n{"problem": "x?", "answer": "3", "task": "gsm8k"}\n')
    assert load_task(str(path)) == [{"problem": "1+1?", "answer": "2", "task": "math"},
                                    {"problem": "x?", "answer": "3", "task": "gsm8k"}]


@pytest.mark.parametrize("content,message", [
    ('{"problem": "a", "answer": "1"}\n{"problem": "b"\n', "bad.jsonl:2: not valid JSON"),
    ('{"problem": "a", "answer": "1"}\n{"question": "b", "answer": "2"}\n', "bad.jsonl:2: needs an object"),
    ('[1, 2]\n', "bad.jsonl:1: needs an object"),
    ('{"problem": ["a"], "answer": "1"}\n', "bad.jsonl:1: 'problem' must be a string"),
])
def test_bad_lines_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_jsonl(path)


def test_unknown_dataset_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass one of gsm8k, math500, aime24, amc23, countdown, arith"):
        load_task("mathh500")
    with pytest.raises(FileNotFoundError, match="only a test split"):
        load_task("math500", split="train")
    with pytest.raises(ValueError, match="split must be"):
        load_task("gsm8k", split="dev")


def test_countdown_is_seeded_and_respects_flags():
    a = make_countdown(50, seed=3, min_numbers=5, max_numbers=6, min_value=10, max_value=20)
    assert a == make_countdown(50, seed=3, min_numbers=5, max_numbers=6, min_value=10, max_value=20)
    assert a != make_countdown(50, seed=4, min_numbers=5, max_numbers=6, min_value=10, max_value=20)
    for ex in a:
        assert 5 <= len(ex["numbers"]) <= 6 and all(10 <= x <= 20 for x in ex["numbers"])
        assert countdown_verify(ex["solution"], ex["numbers"], ex["target"])
        assert ex["task"] == "countdown" and str(ex["target"]) in ex["problem"]
    with pytest.raises(ValueError, match="3 <= min_numbers"):
        make_countdown(1, min_numbers=2)


@pytest.mark.parametrize("name", ["countdown", "arith"])
def test_generated_train_and_test_never_overlap(name):
    train = {ex["problem"] for ex in load_task(name, split="train", n=400)}
    test = {ex["problem"] for ex in load_task(name, split="test", n=100)}
    assert len(train) == 400 and len(test) == 100 and not train & test


@pytest.mark.parametrize("problem,answer,trace", [
    ("3+4*2", "11", "<think>3+4*2=3+8=11</think> <answer>11</answer>"),
    ("(7-2)*3", "15", "<think>(7-2)*3=5*3=15</think> <answer>15</answer>"),
    ("9-3-2", "4", "<think>9-3-2=6-2=4</think> <answer>4</answer>"),  # left to right
    ("2*3*4", "24", "<think>2*3*4=6*4=24</think> <answer>24</answer>"),
    ("8-(2+3)*1", "3", "<think>8-(2+3)*1=8-5*1=8-5=3</think> <answer>3</answer>"),
])
def test_arith_trace_hand_worked(problem, answer, trace):
    assert arith_trace({"problem": problem, "answer": answer}) == trace


def test_arith_examples_are_short_and_their_traces_earn_full_reward():
    examples = make_arith(300, seed=0, max_ops=3)
    assert make_arith(300, seed=0, max_ops=3) == examples
    for ex in examples:
        assert len(ex["problem"]) <= 9 and set(ex["problem"]) <= set("0123456789+-*()")
        trace = arith_trace(ex)
        assert accuracy_reward(trace, ex) == 1.0 and format_reward(trace, ex) == 1.0
        assert int(ex["answer"]) == _evaluate_reference(ex["problem"])


def _evaluate_reference(expression):
    """Independent reference: Python's own precedence, on text we generated ourselves (never model output)."""
    import ast
    import operator
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}

    def walk(node):
        if isinstance(node, ast.BinOp):
            return ops[type(node.op)](walk(node.left), walk(node.right))
        assert isinstance(node, ast.Constant)
        return node.value
    return walk(ast.parse(expression, mode="eval").body)
