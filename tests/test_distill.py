"""distill.py beyond what test_sft checks: a teacher whose template opens <think> is scored on that opening plus
its completion, and the command sets up the teacher through model.load_model with its --dtype / --no-kernels."""
import json
from types import SimpleNamespace

from conftest import write_checkpoint

from distill import keep_verified, main


def test_traces_after_an_opened_think_block_are_scored_with_the_prefix():
    examples = [{"problem": "2+3", "answer": "5", "task": "arith"}]
    completion = "2+3=5</think> <answer>5</answer>"
    assert keep_verified(examples, [completion], num_samples=1) == []  # no <think>: not the strict format
    assert keep_verified(examples, [completion], num_samples=1, prefixes=["<think>\n"]) == [(examples[0], completion)]


def test_cli_renders_the_teachers_template_and_writes_prompt_plus_response(tmp_path, monkeypatch):
    import sample
    teacher = write_checkpoint(tmp_path / "teacher", tokenizer="deepseek-r1-distill-qwen-1.5b")
    seen = {}

    def generate(model, prompts, *, num_samples, tokenizer, **kw):  # a teacher that always answers right
        seen.update(dtype=model.lm_head.weight.dtype, kernels=model.use_kernels,
                    prompt=tokenizer.decode(prompts[0], skip_special=False))
        return SimpleNamespace(texts=["3=3</think> <answer>3</answer>"] * (len(prompts) * num_samples))

    monkeypatch.setattr(sample, "generate", generate)
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps({"problem": p, "answer": a}) + "\n" for p, a in [("1+2", "3"), ("2+2", "4")]))
    out = tmp_path / "traces.jsonl"
    stats = main(["--teacher", str(teacher), "--task", str(task), "--out", str(out), "--num-samples", "2",
                  "--device", "cpu", "--dtype", "bfloat16", "--no-kernels"])
    assert str(seen["dtype"]) == "torch.bfloat16" and seen["kernels"] is False
    assert seen["prompt"].startswith("<｜begin▁of▁sentence｜><｜User｜>") and seen["prompt"].endswith("<think>\n")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert stats == {"problems": 2, "samples": 4, "kept": 1, "problems_kept": 1}  # 1+2 = 3 verified, 2+2 = 3 not
    (row,) = rows
    # prompt + response is the teacher's whole text, its <think> opened on the prompt side
    assert row["prompt"] == "<｜begin▁of▁sentence｜><｜User｜>1+2<｜Assistant｜><think>\n"
    assert row["response"] == "3=3</think> <answer>3</answer>" and row["answer"] == "3"


def test_distill_config_gives_every_field_a_flag_with_help():
    import dataclasses

    from distill import DistillConfig
    from train_utils import config_parser
    actions = {a.dest: a for a in config_parser(DistillConfig)._actions if a.dest != "help"}
    assert set(actions) == {f.name for f in dataclasses.fields(DistillConfig)}
    assert all(a.help for a in actions.values())
    assert {"dtype", "no_kernels", "template"} <= set(actions)
