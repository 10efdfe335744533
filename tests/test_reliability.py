"""Runs that never lose work: what happens when things go wrong. Each test breaks one thing on purpose (a torn file,
a second run into the same directory, NaN weights, a nonsense flag, a SIGKILL while saving) and checks three things:
the one line the user reads (what was wrong, what to do), how the command ends, and that nothing on disk was lost.

A command's `__main__` (train_utils.run_cli) turns ValueError / FileNotFoundError / ImportError into
`sys.exit("error: ...")`: one line on stderr and exit status 1. `cli` below runs that same `__main__` block in this process (fast: no new interpreter)."""
import argparse
import hashlib
import json
import math
import runpy
import subprocess
import sys

import pytest
import torch
from conftest import FIXTURE, ROOT, write_checkpoint

import sft
import tasks
import train_utils as tu
from model import ModelConfig, Qwen2
from sample import check_sampling, generate, sample_token
from scratch import build_from_scratch
from tokenizer import Tokenizer


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: thread hand-offs cost more than they save on a shared CPU
    yield
    torch.set_num_threads(n)


def small_checkpoint(path, **overrides):
    """A tiny random checkpoint (64-token vocabulary) with the real Qwen tokenizer files beside it."""
    return write_checkpoint(path, **{"vocab_size": 64, "eos_token_id": 1, **overrides})


def cli(script, *argv, monkeypatch):
    """Run SCRIPT's __main__ with argv; returns what it passed to sys.exit (a string: printed, exit status 1)."""
    monkeypatch.setattr(sys, "argv", [script, *map(str, argv)])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    return e.value.code


def one_line(e):
    """The message of an exception (or exit string), asserted to be a single line."""
    text = e if isinstance(e, str) else str(e.value)
    assert "\n" not in text.strip(), text
    return text


def digest(directory):
    """{relative path: sha256} of every file under a directory: 'nothing on disk changed' as one comparison."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def save(run, model, step, keep=2):
    return tu.save_checkpoint(run, model, tu.MasterAdamW(model.parameters(), lr=1e-3), step, step,
                              argparse.Namespace(lr=1e-3), keep=keep)


# ---------------------------------------------------------------- 1. the tokenizer survives resume and rotation


def test_checkpoints_saved_after_a_resume_keep_their_tokenizer(tmp_path):
    """Resume from run/checkpoint-2, then save 3, 4, 5 with keep 2: rotation deletes checkpoint-2 (the directory the
    model was loaded from) after save 4, and every later checkpoint still carries the tokenizer, byte for byte."""
    model = Qwen2.from_pretrained(small_checkpoint(tmp_path / "init"))
    run = tmp_path / "run"
    for step in (1, 2):
        save(run, model, step)
    resumed = Qwen2.from_pretrained(tu.find_checkpoint(run))
    assert resumed.source_dir.name == "checkpoint-2"
    for step in (3, 4, 5):
        save(run, resumed, step)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-4", "checkpoint-5", "latest"]
    for ckpt in ("checkpoint-4", "checkpoint-5"):
        assert (run / ckpt / "tokenizer.json").read_bytes() == (FIXTURE / "tokenizer.json").read_bytes()
        assert Tokenizer.from_dir(run / ckpt).encode("hello") == Tokenizer.from_dir(FIXTURE).encode("hello")


# ---------------------------------------------------------------- 2. a second run never writes over the first


def test_a_second_run_into_the_same_output_dir_is_refused_and_touches_nothing(tmp_path):
    model = Qwen2.from_pretrained(small_checkpoint(tmp_path / "init"))
    run = tmp_path / "run"
    tu.prepare_output_dir(run)
    save(run, model, 1)
    tu.Metrics(run).log({"step": 1, "loss": 1.0})
    before = digest(run)
    with pytest.raises(ValueError) as e:
        tu.prepare_output_dir(run)
    assert one_line(e) == (f"--output-dir {run} already holds a run (checkpoint-1, latest, metrics.jsonl): continue "
                           f"it with --resume {run}, start over with --overwrite-output-dir (deletes those), or pick "
                           f"another --output-dir")
    with pytest.raises(ValueError, match="already holds a run"):  # resuming ANOTHER run into this one: refused
        tu.prepare_output_dir(run, resume=save(tmp_path / "other", model, 1))
    assert digest(run) == before  # the first run's checkpoints and metrics, untouched
    assert tu.prepare_output_dir(run, resume=tu.find_checkpoint(run)) == run and digest(run) == before
    tu.prepare_output_dir(run, overwrite=True)  # explicit: the old run's files go, nothing else
    assert list(run.iterdir()) == []


def test_output_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "out").write_text("my notes")
    with pytest.raises(ValueError) as e:
        tu.prepare_output_dir(tmp_path / "out")
    assert one_line(e) == f"--output-dir {tmp_path / 'out'} is a file, not a directory: pass the path of a directory " \
                          f"(it is created)"
    assert (tmp_path / "out").read_text() == "my notes"
    with pytest.raises(ValueError, match="cannot create --output-dir"):
        tu.prepare_output_dir(tmp_path / "out" / "sub")


def test_rotation_never_deletes_the_checkpoint_just_written(tmp_path):
    """Step numbers going down (an older run's checkpoint-100 beside a new checkpoint-5): `latest` still names a
    directory that exists. Rotation by step number alone would delete checkpoint-5 right after writing it."""
    model = Qwen2.from_pretrained(small_checkpoint(tmp_path / "init"))
    save(tmp_path / "run", model, 100)
    save(tmp_path / "run", model, 5, keep=1)
    assert tu.find_checkpoint(tmp_path / "run").name == "checkpoint-5"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint-5", "latest"]


# ---------------------------------------------------------------- 3. non-finite weights: never loaded, never saved


def test_a_checkpoint_with_nan_weights_is_refused_at_load(tmp_path):
    from safetensors.torch import load_file, save_file
    ckpt = small_checkpoint(tmp_path / "ckpt")
    state = load_file(ckpt / "model.safetensors")
    state["model.norm.weight"][3] = float("nan")
    save_file(state, ckpt / "model.safetensors")
    with pytest.raises(ValueError) as e:
        Qwen2.from_pretrained(ckpt)
    assert one_line(e) == (f"checkpoint {ckpt}: tensor model.norm.weight holds NaN or inf: the weights are corrupt (a "
                           f"diverged run?); load an earlier checkpoint")


def test_no_checkpoint_with_a_non_finite_tensor_is_ever_written(tmp_path):
    model = Qwen2.from_pretrained(small_checkpoint(tmp_path / "init"))
    run = tmp_path / "run"
    save(run, model, 1)
    before = digest(run)
    with torch.no_grad():
        model.model.norm.weight[0] = float("inf")
    with pytest.raises(ValueError) as e:
        save(run, model, 2)
    assert one_line(e) == (f"not saving {run / 'checkpoint-2.tmp'}: tensor model.norm.weight holds NaN or inf (the run "
                           f"diverged): lower --learning-rate, or resume from the last checkpoint")
    with torch.no_grad():
        model.model.norm.weight[0] = 1.0
    opt = tu.MasterAdamW(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    opt.opt.state[opt.master[0]]["exp_avg_sq"][0] = float("nan")  # finite weights, a poisoned optimizer state
    with pytest.raises(ValueError, match=r"not saving checkpoint-3: optimizer tensor state\.adamw\.state\.0\."
                                         r"exp_avg_sq holds NaN or inf"):
        tu.save_checkpoint(run, model, opt, 3, 3, argparse.Namespace())
    assert digest(run) == before and tu.find_checkpoint(run).name == "checkpoint-1"  # nothing written, nothing lost


def test_an_update_that_makes_weights_non_finite_stops_with_one_line():
    p = torch.nn.Parameter(torch.ones(3))
    opt = tu.MasterAdamW([p], lr=float("inf"))
    p.grad = torch.ones(3)  # a finite gradient: the guard on its norm lets the step through
    with pytest.raises(ValueError) as e:
        opt.step(max_grad_norm=1.0)
    assert one_line(e) == ("the update made a weight NaN or inf (learning rate inf): lower --learning-rate; the run's "
                           "last checkpoint is intact (--resume OUTPUT_DIR)")


def test_nan_logits_in_sampling_stop_with_one_line(tmp_path):
    model = Qwen2.from_pretrained(small_checkpoint(tmp_path / "ckpt"))
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.fill_(float("nan"))  # as an fp16 overflow would leave it
    for temperature in (0.0, 1.0):
        with pytest.raises(ValueError) as e:
            generate(model, [[1, 2, 3]], max_new_tokens=4, temperature=temperature)
        assert one_line(e) == ("the model's logits are NaN (its weights or activations overflowed, as fp16 can): "
                               "sample in bfloat16 or float32 (--dtype), or load an earlier checkpoint")


# ---------------------------------------------------------------- 6. the logged learning rate after a resume


def test_param_groups_show_the_applied_learning_rate_after_load_state_dict():
    p = torch.nn.Parameter(torch.ones(3))
    a = tu.MasterAdamW([p], lr=1e-3)
    b = tu.MasterAdamW([torch.nn.Parameter(torch.ones(3))], lr=1e-3)
    b.load_state_dict(a.state_dict())  # what a resume does; AdamW builds a new param_groups list
    b.set_lr(0.5)
    assert b.param_groups[0]["lr"] == 0.5 == b.opt.param_groups[0]["lr"]


# ---------------------------------------------------------------- 7. sampling flags


@pytest.mark.parametrize("kw, message", [
    (dict(temperature=-1.0), "--temperature is -1.0: pass a finite number >= 0 (0: greedy)"),
    (dict(temperature=float("nan")), "--temperature is nan: pass a finite number >= 0 (0: greedy)"),
    (dict(temperature=float("inf")), "--temperature is inf: pass a finite number >= 0 (0: greedy)"),
    (dict(top_p=0.0), "--top-p is 0.0: pass a number in (0, 1] (1: no nucleus filtering)"),
    (dict(top_p=-0.5), "--top-p is -0.5: pass a number in (0, 1] (1: no nucleus filtering)"),
    (dict(top_p=1.5), "--top-p is 1.5: pass a number in (0, 1] (1: no nucleus filtering)"),
    (dict(top_k=-1), "--top-k is -1: pass a whole number >= 0"),
    (dict(max_new_tokens=0), "--max-new-tokens is 0: pass a whole number >= 1"),
    (dict(num_samples=0), "--num-samples is 0: pass a whole number >= 1"),
])
def test_sampling_flags_that_mean_nothing_are_refused(kw, message):
    good = dict(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=8, num_samples=1)
    with pytest.raises(ValueError) as e:
        check_sampling(**{**good, **kw})
    assert one_line(e) == message


def test_generate_checks_its_sampling_flags_and_top_p_keeps_one_token(tmp_path):
    model = Qwen2.from_pretrained(small_checkpoint(tmp_path / "ckpt"))
    with pytest.raises(ValueError, match="--num-samples is 0"):
        generate(model, [[1, 2]], num_samples=0)
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 0.0]])
    tok, _ = sample_token(logits, temperature=1.0, top_p=1e-9)  # a nucleus smaller than any token: the top one
    assert tok.tolist() == [1, 0]


def test_sample_cli_max_new_tokens_0_is_an_error_not_512(tmp_path, monkeypatch):
    ckpt = small_checkpoint(tmp_path / "ckpt")
    code = cli("sample.py", "--model", ckpt, "--prompt", "hi", "--max-new-tokens", "0", "--device", "cpu",
               monkeypatch=monkeypatch)
    assert one_line(code) == "error: --max-new-tokens is 0: pass a whole number >= 1"


# ---------------------------------------------------------------- 8. bad files: one line, naming the file


@pytest.mark.parametrize("content, why", [
    (b"", "Error while deserializing header"),
    (b"not a safetensors file at all", "Error while deserializing header"),
    (None, "Error while deserializing"),  # None: the real file cut in half (a download that stopped)
])
def test_corrupt_safetensors_is_one_line(tmp_path, content, why):
    ckpt = small_checkpoint(tmp_path / "ckpt")
    f = ckpt / "model.safetensors"
    f.write_bytes(f.read_bytes()[:f.stat().st_size // 2] if content is None else content)
    with pytest.raises(ValueError) as e:
        Qwen2.from_pretrained(ckpt)
    msg = one_line(e)
    assert msg.startswith(f"{f} is not a readable safetensors file ({why}") and msg.endswith(
        "it is truncated or corrupt; re-download it, or use an earlier checkpoint")


@pytest.mark.parametrize("content, message", [
    ('{"hidden_size": 32,', "is not valid JSON (Expecting property name enclosed in double quotes: line 1 column 20 "
                            "(char 19)): restore it from the model's source"),
    ('[1, 2]', "holds a JSON list, not an object: restore it from the source"),
    (None, ": hidden_size is '32', not a number: fix it in config.json"),  # None: numbers written as strings
])
def test_bad_config_json_is_one_line_naming_the_file(tmp_path, content, message):
    ckpt = small_checkpoint(tmp_path / "ckpt")
    cfg = ckpt / "config.json"
    if content is None:
        content = json.dumps({**json.loads(cfg.read_text()), "hidden_size": "32"})
    cfg.write_text(content)
    with pytest.raises(ValueError) as e:
        ModelConfig.from_json(cfg)
    assert one_line(e) == f"{cfg}{' ' if not message.startswith(':') else ''}{message}"


def test_corrupt_trainer_state_offers_the_intact_older_checkpoint(tmp_path):
    model = Qwen2.from_pretrained(small_checkpoint(tmp_path / "init"))
    run = tmp_path / "run"
    save(run, model, 1)
    save(run, model, 2)
    state = run / "checkpoint-2" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])  # torn
    before = digest(run)
    opt = tu.MasterAdamW(model.parameters(), lr=1e-3)
    with pytest.raises(ValueError) as e:
        tu.load_trainer_state(tu.find_checkpoint(run), opt)
    assert one_line(e) == (f"{state} is unreadable (truncated or corrupt): resume from the intact {run}/checkpoint-1 "
                           f"instead (--resume {run}/checkpoint-1)")
    assert "weights_only" not in str(e.value) and digest(run) == before
    assert tu.load_trainer_state(run / "checkpoint-1", opt) == (1, 1)  # and that one really is intact
    (run / "latest").write_text("checkpoint-9\n")  # `latest` naming a directory that is gone
    with pytest.raises(FileNotFoundError) as e:
        tu.find_checkpoint(run)
    assert one_line(e) == (f"{run}/latest names checkpoint-9, which is missing or incomplete: resume from the intact "
                           f"{run}/checkpoint-1 instead (--resume {run}/checkpoint-1)")


@pytest.mark.parametrize("line, message", [
    (b'{"problem": "caf\xe9", "answer": "1"}\n', "2: byte 0xe9 at column 17 is not UTF-8: save the file as UTF-8"),
    (b'{"problem": "\\ud800", "answer": "1"}\n', "2: holds a lone surrogate escape (like \\ud800), which is not text: "
                                                 "fix or drop that line"),
])
def test_bad_bytes_in_a_data_line_name_file_and_line(tmp_path, line, message):
    f = tmp_path / "task.jsonl"
    f.write_bytes(b'{"problem": "1+1", "answer": "2"}\n' + line)
    with pytest.raises(ValueError) as e:
        tasks.load_task(str(f))
    assert one_line(e) == f"{f}:{message}"
    (tmp_path / "sft.jsonl").write_bytes(b'{"prompt": "a", "response": "b"}\n' + line.replace(b"problem", b"prompt"))
    with pytest.raises(ValueError, match=f"sft.jsonl:{message[:2]}"):
        sft.read_sft_jsonl(tmp_path / "sft.jsonl")


def test_sft_messages_without_content_name_file_and_line(tmp_path):
    f = tmp_path / "chat.jsonl"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant"}]}) + "\n")
    with pytest.raises(ValueError) as e:
        sft.read_sft_jsonl(f)
    assert one_line(e) == (f"{f}:1: needs 'prompt' and 'response' strings, a 'text' string or a 'messages' list "
                           f"of {{'role', 'content'}} turns, each with string values")


def test_a_torn_last_metrics_line_is_dropped_with_a_notice(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    m = tu.Metrics(tmp_path, resume_step=2)
    assert [r["step"] for r in m.history] == [1, 2]
    assert capsys.readouterr().out == f"{path}:3: dropped a torn last line (the run was stopped while writing it)\n"
    assert path.read_text() == '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')  # damage in the middle is not a crash: say where
    with pytest.raises(ValueError) as e:
        tu.Metrics(tmp_path, resume_step=2)
    assert one_line(e) == (f"{path}:2: not a JSON object: fix or delete that line, or delete {path} (its curves then "
                           f"start over)")
    assert path.read_text() == '{"step": 1}\nnot json\n{"step": 2}\n'  # left as it was


def test_a_bad_file_ends_the_command_with_one_line_and_status_1(tmp_path):
    """The real command line, once, in a fresh interpreter: the exit status and the whole of stderr."""
    ckpt = small_checkpoint(tmp_path / "ckpt")
    (ckpt / "model.safetensors").write_bytes(b"")
    out = subprocess.run([sys.executable, str(ROOT / "sample.py"), "--model", str(ckpt), "--prompt", "hi",
                          "--device", "cpu"], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr == f"error: {ckpt / 'model.safetensors'} is not a readable safetensors file (Error while " \
                         f"deserializing header: header too small): it is truncated or corrupt; re-download it, or " \
                         f"use an earlier checkpoint\n"


# ---------------------------------------------------------------- 9. messages that say what is really wrong


def test_an_empty_task_file_says_it_is_empty(tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text("\n")
    with pytest.raises(ValueError) as e:
        tasks.load_task(str(f))
    assert one_line(e) == f"{f} holds no examples: write one JSON object with 'problem' and 'answer' per line"


# ---------------------------------------------------------------- the checkpoint writer under SIGKILL


def test_sigkill_at_random_moments_while_saving_never_breaks_latest(tmp_path):
    """A real SFT run that saves every step is killed with SIGKILL at random moments while it saves (seeded: 0-100
    ms after the 1st, 2nd or 3rd save of a life begins; 10 kills), then resumed from `latest`, again and again.
    Saving is most of what it does, so the kills land all through the writer: inside safetensors, torch.save, the
    renames, the rotation. After every kill, `latest` names a complete checkpoint (its weights load, its tokenizer
    loads, its trainer state is the step it is named after), and a final resume runs to the end with a metrics curve
    that has every step exactly once.
    Each life is a fresh interpreter on one thread with no GPU visible (a fork()ed child of a process that has used
    CUDA cannot touch it, and torch.optim asks CUDA about graph capture even for CPU tensors); it writes a byte to
    a pipe as each save begins."""
    import os
    import random
    import select
    import signal
    import subprocess
    import sys
    import time
    from conftest import ROOT
    rng = random.Random(0)
    rows = [{"prompt": ex["problem"] + "=", "response": tasks.arith_trace(ex)} for ex in tasks.make_arith(40)]
    data = tmp_path / "traces.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    init = build_from_scratch(sft.example_texts(rows), tmp_path / "init", "tiny", vocab_size=300)
    run = tmp_path / "run"
    argv = ["--model", init, "--data", data, "--output-dir", run, "--max-length", "64", "--save-steps", "1",
            "--eval-fraction", "0", "--learning-rate", "1e-3", "--warmup-steps", "0", "--quiet", "--device", "cpu"]
    argv = [str(a) for a in argv]
    life = ("import os, sys; sys.path.insert(0, sys.argv[1]); import torch; torch.set_num_threads(1); "
            "import sft, train_utils as tu; real = tu.save_checkpoint; tell = int(sys.argv[2]); "
            "tu.save_checkpoint = lambda *a, **k: (os.write(tell, b's'), real(*a, **k))[1]; sft.main(sys.argv[3:])")
    seen = []
    for _ in range(10):
        resume = ["--resume", str(run)] if (run / "latest").exists() else []
        began, tell = os.pipe()
        child = subprocess.Popen([sys.executable, "-c", life, str(ROOT), str(tell), *argv, "--max-steps", "100000",
                                  *resume], pass_fds=(tell,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
        for _ in range(rng.randint(1, 3)):  # wait for the 1st, 2nd or 3rd save to begin, however slow the machine
            if select.select([began], [], [], 60)[0]:
                os.read(began, 1)
        time.sleep(rng.uniform(0.0, 0.1))  # then kill at a random moment of that save (or of the next)
        child.send_signal(signal.SIGKILL)
        os.close(began), os.close(tell)
        err = child.communicate()[1].decode()
        assert child.returncode == -signal.SIGKILL, err  # it was killed, it did not die on its own
        if not (run / "latest").exists():
            continue  # killed before its first checkpoint
        ckpt = tu.find_checkpoint(run)
        Qwen2.from_pretrained(ckpt)
        assert Tokenizer.from_dir(ckpt).encode("1+2=") == Tokenizer.from_dir(init).encode("1+2=")
        state = tu._read_state(ckpt)
        assert state is not None and f"checkpoint-{state['step']}" == ckpt.name
        seen.append(state["step"])
    assert len(seen) == 10 and seen == sorted(seen) and seen[-1] > seen[0], seen  # each life resumed and went on
    final = sft.main(argv + ["--max-steps", str(seen[-1] + 2), "--resume", str(run)]).last_checkpoint
    assert final.name == f"checkpoint-{seen[-1] + 2}" and (final / "tokenizer.json").is_file()
    steps = [r["step"] for r in tu.read_metrics(run / "metrics.jsonl")]
    assert steps == list(range(1, seen[-1] + 3))


# ---------------------------------------------------------------- 4. --resume continues with the run's own settings


def test_resumed_config_restores_the_run_and_a_given_flag_wins_with_a_notice(tmp_path, capsys):
    import dataclasses

    @dataclasses.dataclass
    class Config:
        model: str = tu.option("default-model", "")
        learning_rate: float = tu.option(1e-6, "")
        reward_weights: tuple[float, float] = tu.option((1.0, 1.0), "")
        max_steps: int = tu.option(10, "")
        output_dir: str = tu.option("runs/x", "")
        resume: str | None = tu.option(None, "")

    model = Qwen2.from_pretrained(small_checkpoint(tmp_path / "init"))
    started = Config(model="my-model", learning_rate=3e-3, reward_weights=(1.0, 0.5), max_steps=4,
                     output_dir=str(tmp_path / "moved-since"))
    ckpt = tu.save_checkpoint(tmp_path / "run", model, tu.MasterAdamW(model.parameters(), lr=1e-3), 2, 2, started)
    resumed = tu.command_config(Config, ["--resume", str(tmp_path / "run"), "--max-steps", "8"])
    assert resumed == Config(model="my-model", learning_rate=3e-3, reward_weights=(1.0, 0.5), max_steps=8,
                             output_dir=str(tmp_path / "run"), resume=str(tmp_path / "run"))
    assert capsys.readouterr().out == "--max-steps 8 (the run was started with 4): the command line wins\n"
    assert tu.command_config(Config, ["--resume", str(ckpt), "--reward-weights", "1", "0.5"]).reward_weights == (
        1.0, 0.5)
    assert capsys.readouterr().out == ""  # the same value as the run's: nothing to say
    assert tu.command_config(Config, ["--max-steps", "8"]) == Config(max_steps=8)  # no --resume: the flags as given


# ---------------------------------------------------------------- the trainers, end to end (tiny, CPU)


@pytest.fixture(scope="module")
def grpo_task(tmp_path_factory):
    """(checkpoint, task jsonl): test_grpo's character-level tiny model (untrained: only the plumbing is tested)
    and the nine sums a + b with a, b in 0..2."""
    from test_grpo import char_checkpoint
    d = tmp_path_factory.mktemp("grpo")
    task = d / "add.jsonl"
    task.write_text("".join(json.dumps({"problem": f"{a}+{b}=", "answer": str(a + b), "task": "arith"}) + "\n"
                            for a in range(3) for b in range(3)))
    return char_checkpoint(d / "tiny", sft_steps=0), task


def grpo_argv(grpo_task, out, *extra, steps=2):
    ckpt, task = grpo_task
    return ["--model", str(ckpt), "--task", str(task), "--template", "plain", "--max-completion-length", "4",
            "--num-prompts", "2", "--num-generations", "3", "--device", "cpu", "--max-steps", str(steps),
            "--eval-steps", "0", "--output-dir", str(out), "--learning-rate", "3e-3", "--save-steps", "1",
            "--plot-every", "1000", "--overlong-buffer", "3", *map(str, extra)]  # (lengths vary: reward spread)


def test_grpo_refuses_a_second_run_into_its_output_dir(grpo_task, tmp_path, monkeypatch):
    import grpo
    out = tmp_path / "run"
    grpo.main(grpo_argv(grpo_task, out))
    before = digest(out)
    code = cli("grpo.py", *grpo_argv(grpo_task, out), monkeypatch=monkeypatch)
    assert one_line(code) == (f"error: --output-dir {out} already holds a run (checkpoint-1, checkpoint-2, latest, "
                              f"metrics.jsonl): continue it with --resume {out}, start over with "
                              f"--overwrite-output-dir (deletes those), or pick another --output-dir")
    assert digest(out) == before
    grpo.main(grpo_argv(grpo_task, out, "--overwrite-output-dir", steps=1))
    assert sorted(p.name for p in out.iterdir() if p.name != "curves.png") == ["checkpoint-1", "latest",
                                                                                "metrics.jsonl"]


def test_grpo_resume_with_only_resume_continues_the_run_exactly(grpo_task, tmp_path, capsys):
    """`--resume RUN` alone restores the run's settings (learning rate, warm-up, batch shape, β and its KL reference,
    the --model: the default Hub model cannot even be fetched here), so 2 + 2 steps equal 4 in one go, bit for bit;
    the logged learning rate is the applied one (warm-up: 1e-3, 2e-3, 3e-3, 3e-3); every checkpoint after the
    resume has its tokenizer although rotation deleted the checkpoint resumed from."""
    import grpo
    from safetensors.torch import load_file
    flags = ["--beta", "0.05", "--warmup-steps", "3", "--save-total-limit", "2"]
    straight = grpo.main(grpo_argv(grpo_task, tmp_path / "a", *flags, steps=4)).history
    grpo.main(grpo_argv(grpo_task, tmp_path / "b", *flags, steps=2))
    capsys.readouterr()
    resumed = grpo.main(["--resume", str(tmp_path / "b"), "--max-steps", "4"]).history
    assert "--max-steps 4 (the run was started with 2): the command line wins" in capsys.readouterr().out
    a, b = (load_file(tmp_path / r / "checkpoint-4" / "model.safetensors") for r in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["lr"] for r in resumed] == [r["lr"] for r in straight] == pytest.approx([1e-3, 2e-3, 3e-3, 3e-3])
    assert sorted(p.name for p in (tmp_path / "b").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    for ckpt in ("checkpoint-3", "checkpoint-4"):
        assert Tokenizer.from_dir(tmp_path / "b" / ckpt).encode("1+2=") == Tokenizer.from_dir(grpo_task[0]).encode(
            "1+2=")


def test_grpo_stops_with_one_line_when_weights_go_non_finite(grpo_task, tmp_path, monkeypatch, capsys):
    """--learning-rate inf: the first update makes the weights NaN and the run stops there, with no checkpoint.
    NaN logits later in a run (an fp16 overflow, here NaN written into a weight before step 2) stop it at the
    sampler, with the step-1 checkpoint intact, and the doctor never blames 'zero reward spread'."""
    import grpo
    code = cli("grpo.py", *grpo_argv(grpo_task, tmp_path / "inf", "--learning-rate", "inf"), monkeypatch=monkeypatch)
    assert one_line(code) == ("error: the update made a weight NaN or inf (learning rate inf): lower "
                              "--learning-rate; the run's last checkpoint is intact (--resume OUTPUT_DIR)")
    assert not list((tmp_path / "inf").glob("checkpoint-*")) and not (tmp_path / "inf" / "latest").exists()
    calls, real = [], grpo.generate

    def poison_before_step_2(model, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                model.model.norm.weight.fill_(float("nan"))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(grpo, "generate", poison_before_step_2)
    out = tmp_path / "nan"
    with pytest.raises(ValueError, match="the model's logits are NaN"):
        grpo.main(grpo_argv(grpo_task, out, steps=6))
    assert tu.find_checkpoint(out).name == "checkpoint-1" and [r["step"] for r in tu.read_metrics(
        out / "metrics.jsonl")] == [1]
    Qwen2.from_pretrained(out / "checkpoint-1")  # loads: finite
    assert "zero reward spread" not in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--top-p", "0"], "--top-p is 0.0: pass a number in (0, 1] (1: no nucleus filtering)"),
    (["--max-completion-length", "0"], "--max-completion-length is 0: pass a whole number >= 1"),
])
def test_grpo_sampling_flags_are_checked_before_anything_runs(grpo_task, tmp_path, monkeypatch, flags, message):
    code = cli("grpo.py", *grpo_argv(grpo_task, tmp_path / "out", *flags), monkeypatch=monkeypatch)
    assert one_line(code) == f"error: {message}"
    assert not (tmp_path / "out").exists()


def test_grpo_empty_task_file_says_it_is_empty(grpo_task, tmp_path, monkeypatch):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code = cli("grpo.py", *grpo_argv(grpo_task, tmp_path / "out", "--task", empty), monkeypatch=monkeypatch)
    assert one_line(code) == f"error: {empty} holds no examples: write one JSON object with 'problem' and 'answer' " \
                             f"per line"


@pytest.fixture(scope="module")
def sft_init(tmp_path_factory):
    """(from-scratch tiny checkpoint, traces jsonl)."""
    d = tmp_path_factory.mktemp("sft")
    rows = [{"prompt": ex["problem"] + "=", "response": tasks.arith_trace(ex)} for ex in tasks.make_arith(20)]
    (d / "traces.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return build_from_scratch(sft.example_texts(rows), d / "init", "tiny", vocab_size=300), d / "traces.jsonl"


def sft_argv(sft_init, out, *extra):
    init, data = sft_init
    return ["--model", str(init), "--data", str(data), "--output-dir", str(out), "--max-length", "64",
            "--max-steps", "2", "--eval-fraction", "0", "--quiet", *map(str, extra)]


@pytest.mark.parametrize("flags, message", [
    (["--max-length", "2"], "no example has a token to learn within --max-length 2: raise --max-length (the "
                            "examples' prompts may fill it) or check that the responses are not empty"),
    (["--eval-fraction", "1.0"], "--eval-fraction is 1.0: it must leave training examples, pass a number in "
                                 "[0, 1) (0.05 is usual)"),
])
def test_sft_with_nothing_to_train_on_stops_up_front(sft_init, tmp_path, monkeypatch, flags, message):
    code = cli("sft.py", *sft_argv(sft_init, tmp_path / "out", *flags), monkeypatch=monkeypatch)
    assert one_line(code) == f"error: {message}"


def test_sft_refuses_a_second_run_and_resumes_with_its_own_settings(sft_init, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    sft.main(sft_argv(sft_init, out, "--learning-rate", "3e-3", "--warmup-steps", "0"))
    before = digest(out)
    code = cli("sft.py", *sft_argv(sft_init, out), monkeypatch=monkeypatch)
    assert one_line(code).startswith(f"error: --output-dir {out} already holds a run (checkpoint-2, latest, "
                                     f"metrics.jsonl): continue it with --resume {out}")
    assert digest(out) == before
    final = sft.main(["--resume", str(out), "--max-steps", "3"]).last_checkpoint  # --data, --model: the run's
    rows = tu.read_metrics(out / "metrics.jsonl")
    assert final.name == "checkpoint-3"  # the run's rate (3e-3, cosine over the new 3 steps), not the default 1e-5:
    assert rows[-1]["lr"] == pytest.approx(tu.lr_at(2, 3e-3, 0, 3, "cosine", min_lr_ratio=0.1))
    (tmp_path / "file").write_text("x")
    code = cli("sft.py", *sft_argv(sft_init, tmp_path / "file"), monkeypatch=monkeypatch)
    assert one_line(code).startswith(f"error: --output-dir {tmp_path / 'file'} is a file, not a directory")
