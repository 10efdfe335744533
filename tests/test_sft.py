"""SFT, distillation and the from-scratch model: what is learnt, packing, exact resume, rejection sampling."""
import json

import pytest
import torch
from safetensors.torch import load_file

import sft
from conftest import FIXTURE
from distill import keep_verified
from model import Qwen2
from tasks import arith_trace, make_arith
from tokenizer import Tokenizer, r1_zero_prompt

EXAMPLES = make_arith(12, seed=0)
ROWS = [{"prompt": r1_zero_prompt(ex["problem"]), "response": " " + arith_trace(ex)} for ex in EXAMPLES]


@pytest.fixture(scope="module")
def qwen_tok():
    return Tokenizer.from_dir(FIXTURE)


def test_labels_only_on_response_tokens(qwen_tok):
    row = ROWS[0]
    ids, labels = sft.tokenize_example(qwen_tok, row, eos_id=151643)
    n_prompt = len(qwen_tok.encode(row["prompt"]))
    assert len(ids) == len(labels)
    assert labels[:n_prompt] == [sft.IGNORE] * n_prompt  # the prompt is seen, never learnt
    assert labels[n_prompt:] == ids[n_prompt:]  # every response token is learnt ...
    assert labels[-1] == 151643  # ... including the EOS that teaches the model to stop
    assert qwen_tok.decode(labels[n_prompt:-1]) == row["response"]


def test_chat_labels_cover_exactly_the_assistant_turns(qwen_tok):
    messages = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>2+2=4</think> 4"},
                {"role": "user", "content": "and 3+3?"}, {"role": "assistant", "content": "6"}]
    ids, labels = sft.tokenize_example(qwen_tok, {"messages": messages}, eos_id=151643)
    learnt = [t for t in labels if t != sft.IGNORE]
    assert qwen_tok.decode(learnt, skip_special=False) == "<think>2+2=4</think> 4<|im_end|>6<|im_end|>"
    assert qwen_tok.decode(ids, skip_special=False) == qwen_tok.chat(messages, add_generation_prompt=False)


def test_packing_keeps_documents_apart():
    docs = [([1, 2, 3, 4], [-100, -100, 3, 4]), ([5, 6, 7], [-100, 6, 7]), ([8, 9, 10], [-100, 9, 10])]
    rows = sft.pack(docs, max_length=5)
    assert [r["cu_seqlens"] for r in rows] == [[0, 3, 5], [0, 2]]
    assert rows[0]["inputs"] == [1, 2, 3, 5, 6] and rows[0]["targets"] == [-100, 3, 4, 6, 7]
    assert rows[0]["positions"] == [0, 1, 2, 0, 1]  # positions restart in every document


def test_packed_loss_equals_unpacked_loss(tiny_checkpoint, qwen_tok):
    model = Qwen2.from_pretrained(tiny_checkpoint).eval()
    docs = [sft.tokenize_example(qwen_tok, r, 151643) for r in ROWS[:5]]
    (packed,) = sft.pack(docs, max_length=4096)
    assert len(packed["cu_seqlens"]) == 6
    with torch.no_grad():
        s_packed, n_packed = sft.row_loss_sum(model, packed, "cpu")
        one_by_one = [sft.row_loss_sum(model, sft.pack([d], 4096)[0], "cpu") for d in docs]
        # The same row with no document boundaries: later documents attend to earlier ones.
        leaky = dict(packed, cu_seqlens=[0, len(packed["inputs"])])
        s_leaky, _ = sft.row_loss_sum(model, leaky, "cpu")
    assert n_packed == sum(n for _, n in one_by_one)
    torch.testing.assert_close(s_packed, sum(s for s, _ in one_by_one), rtol=1e-5, atol=1e-4)
    assert abs(float(s_leaky) - float(s_packed)) > 1e-3  # the mask matters: the test can tell


def test_resume_is_exact(tmp_path):
    data = tmp_path / "traces.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    common = ["--data", str(data), "--max-length", "256", "--gradient-accumulation-steps", "2", "--max-steps", "4",
              "--learning-rate", "1e-3", "--warmup-steps", "1", "--eval-fraction", "0.2", "--eval-steps", "2",
              "--quiet"]
    init = sft.build_from_scratch(sft.example_texts(ROWS), tmp_path / "init", "tiny", vocab_size=300)
    straight = sft.main(["--model", str(init), "--output-dir", str(tmp_path / "a"), "--save-steps", "2",
                         *common]).last_checkpoint
    assert straight.name == "checkpoint-4" and (tmp_path / "a" / "checkpoint-2").is_dir()
    # A second run picks up the first one's step-2 checkpoint: same weights, optimizer, schedule and data position.
    resumed = sft.main(["--model", str(init), "--output-dir", str(tmp_path / "b"), "--resume",
                        str(tmp_path / "a" / "checkpoint-2"), *common]).last_checkpoint
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    first = load_file(init / "model.safetensors")
    assert not torch.equal(first["model.norm.weight"], a["model.norm.weight"])  # it did train
    losses = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses] == [3, 4] and "eval_loss" in losses[-1]


def test_from_scratch_checkpoint_loads_like_a_downloaded_one(tmp_path):
    out = sft.build_from_scratch(sft.example_texts(ROWS), tmp_path / "scratch", "tiny", vocab_size=300, seed=1)
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json",
                                               "tokenizer_config.json"}
    model = Qwen2.from_pretrained(out).eval()
    tok = Tokenizer.from_dir(out)
    assert model.config.vocab_size == tok.vocab_size and model.config.hidden_size == 128
    assert tok.eos_ids == {tok.token_id("<|endoftext|>")} and tok.pad_id == tok.token_id("<|endoftext|>")
    text = ROWS[0]["prompt"] + ROWS[0]["response"]
    ids = tok.encode(text)
    assert tok.decode(ids) == text  # byte-level BPE: lossless
    assert tok.encode("<think>") == [tok.token_id("<think>")]  # tags are single tokens
    assert tok.decode(tok.encode("naïve ∑ 中文")) == "naïve ∑ 中文"  # unseen characters fall back to bytes
    # Saving the loaded model and loading it again changes nothing.
    model.save_pretrained(tmp_path / "again")
    again = Qwen2.from_pretrained(tmp_path / "again").eval()
    x = torch.tensor([ids[:40]])
    with torch.no_grad():
        torch.testing.assert_close(model(x), again(x), rtol=0, atol=0)
    assert Tokenizer.from_dir(tmp_path / "again").encode(text) == ids


def test_from_scratch_checkpoint_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    out = sft.build_from_scratch(sft.example_texts(ROWS), tmp_path / "scratch", "tiny", vocab_size=300)
    ours = Qwen2.from_pretrained(out).eval()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    text = ROWS[1]["prompt"] + ROWS[1]["response"]
    ids = Tokenizer.from_dir(out).encode(text)
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == ids
    x = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x).logits, rtol=1e-4, atol=1e-4)


def test_rejection_sampling_keeps_only_verified_traces():
    examples = [{"problem": "3+4*2", "answer": "11", "task": "arith"}, {"problem": "9-8", "answer": "1", "task": "arith"}]
    good = "<think>3+4*2=3+8=11</think> <answer>11</answer>"
    completions = [
        "<think>3+4*2=7*2=14</think> <answer>14</answer>",  # wrong answer
        "<think>3+4*2=3+8=11</think> the answer is 11",  # right number, no <answer> block
        good,
        good,  # a duplicate adds nothing
        "<think>9-8=1</think> <answer>1</answer> extra",  # text after </answer>: not clean
        "<answer>1</answer>",  # no thinking
        "<think>9-8=1</think> <answer>1</answer>",
        "<think>9 - 8 is 1</think> <answer>1</answer>",
    ]
    kept = keep_verified(examples, completions, num_samples=4, max_per_problem=2)
    assert kept == [(examples[0], good), (examples[1], completions[6]), (examples[1], completions[7])]
    assert keep_verified(examples, completions, num_samples=4)[1] == (examples[1], completions[6])  # one per problem


def test_distilled_file_is_what_sft_trains_on(tmp_path):
    """distill() end to end with a stand-in for sample.generate: only the verified trace is written, as a
    prompt/response line that sft.read_sft_jsonl accepts, its prompt the R1-Zero template the RL trainer uses."""
    from types import SimpleNamespace

    from distill import distill
    examples = [{"problem": "3+4*2", "answer": "11", "task": "arith"}]
    good = " <think>3+4*2=3+8=11</think> <answer>11</answer>"
    fake = lambda model, prompts, num_samples, **kw: SimpleNamespace(texts=[" <answer>14</answer>", good])
    stats = distill(None, SimpleNamespace(encode=lambda s: [1], eos_ids={0}), examples, tmp_path / "d.jsonl",
                    num_samples=2, generate=fake)
    assert stats == {"problems": 1, "samples": 2, "kept": 1, "problems_kept": 1}
    (row,) = sft.read_sft_jsonl(tmp_path / "d.jsonl")
    assert row["prompt"] == r1_zero_prompt("3+4*2") and row["response"] == good


def test_data_and_output_dir_are_required_flags_and_fields():
    import train_utils as tu
    with pytest.raises(SystemExit):  # argparse: "the following arguments are required: --data"
        tu.parse_config(sft.SFTConfig, ["--output-dir", "out"])
    config, given = tu.parse_config(sft.SFTConfig, ["--data", "d.jsonl", "--output-dir", "out"])
    assert config == sft.SFTConfig(data="d.jsonl", output_dir="out") and given == {"data", "output_dir"}
    with pytest.raises(TypeError):  # from Python too: there is no default to fall back on
        sft.SFTConfig(output_dir="out")
