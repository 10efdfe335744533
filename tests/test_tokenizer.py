"""tokenizer.py against transformers: encoding, decoding and every chat template shipped in tests/fixtures, rendered
through our sandboxed jinja path and through transformers' apply_chat_template; the prompt renderer and --template."""
import json

import pytest
from conftest import FIXTURE, TOKENIZER_CONFIGS, write_tokenizer

from tokenizer import (R1_SYSTEM, R1_ZERO_TEMPLATE, Tokenizer, completion_prefix, r1_zero_prompt, render_chat,
                       render_prompt, resolve_template)

transformers = pytest.importorskip("transformers")

TEXTS = [
    "Hello, world!",
    "   leading spaces and    runs of   whitespace\t\ttabs\n\n\nnewlines  ",
    "1234567890 3.14159 -42 1,000,000 2^10=1024",
    "Ünïcödé: 数学 математика 🤔🧮 naïve café",
    "<think> 2 + 3 = 5 </think> <answer> 5 </answer>",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "trailing special<|endoftext|>",
    "\\frac{1}{2} + \\sqrt{3} = \\boxed{x}",
    "",
]


@pytest.fixture(scope="module")
def tokenizers_pair():
    return Tokenizer.from_dir(FIXTURE), transformers.AutoTokenizer.from_pretrained(str(FIXTURE))


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_match_transformers(tokenizers_pair, text):
    ours, hf = tokenizers_pair
    ids = ours.encode(text)
    assert ids == hf.encode(text, add_special_tokens=False)
    assert ours.decode(ids, skip_special=False) == hf.decode(ids, skip_special_tokens=False) == text
    assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True)


def test_special_tokens_and_eos_ids(tokenizers_pair):
    ours, _ = tokenizers_pair
    assert ours.encode("<|im_end|>") == [151645]
    assert ours.eos_ids == {151643, 151645}  # config.json's <|endoftext|> and tokenizer_config's <|im_end|>
    assert ours.pad_id == 151643
    assert ours.vocab_size == 151665


CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c\n\nd"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
     {"role": "assistant", "content": "<think>\nwork</think> 4"}, {"role": "user", "content": "again"}],
]


@pytest.fixture(scope="module", params=sorted(TOKENIZER_CONFIGS))
def checkpoint_tokenizers(request, tmp_path_factory):
    """(ours, transformers') for each shipped tokenizer_config.json, read from the same directory."""
    d = write_tokenizer(tmp_path_factory.mktemp(request.param), request.param)
    return Tokenizer.from_dir(d), transformers.AutoTokenizer.from_pretrained(str(d))


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("gen", [True, False])
def test_checkpoint_chat_template_renders_as_transformers_does(checkpoint_tokenizers, messages, gen):
    ours, hf = checkpoint_tokenizers
    assert ours.chat_template is not None  # the checkpoint's own template is used, not the ChatML fallback
    assert ours.chat(messages, gen) == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("gen", [True, False])
def test_chatml_fallback_matches_qwen25_template(tokenizers_pair, messages, gen):
    _, hf = tokenizers_pair
    assert render_chat(messages, gen) == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)


def test_checkpoint_without_template_falls_back_to_chatml(tmp_path):
    config = json.loads((FIXTURE / "tokenizer_config.json").read_text())
    del config["chat_template"]
    write_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = Tokenizer.from_dir(tmp_path)
    assert tok.chat_template is None
    assert tok.chat([{"role": "user", "content": "Hi"}]) == render_chat([{"role": "user", "content": "Hi"}])


def test_distill_template_opens_the_think_block(tmp_path):
    tok = Tokenizer.from_dir(write_tokenizer(tmp_path, "deepseek-r1-distill-qwen-1.5b"))
    prompt = render_prompt("What is 2 + 3?", "chat", tok)
    assert prompt == "<｜begin▁of▁sentence｜><｜User｜>What is 2 + 3?<｜Assistant｜><think>\n"
    assert completion_prefix(prompt) == "<think>\n"


def test_completion_prefix_only_for_an_open_think_block():
    assert completion_prefix("User: x. Assistant: <think>") == "<think>"
    assert completion_prefix("<|im_start|>assistant\n") == ""
    assert completion_prefix("Assistant: <think> done </think>") == ""  # closed: the completion is outside it
    assert completion_prefix(r1_zero_prompt("x")) == ""  # the R1-Zero template names <think> but does not open it


def test_resolve_template_auto(tmp_path):
    distill = Tokenizer.from_dir(write_tokenizer(tmp_path / "d", "deepseek-r1-distill-qwen-1.5b"))
    math_instruct = Tokenizer.from_dir(write_tokenizer(tmp_path / "m", "qwen2.5-math-1.5b-instruct"))
    base = Tokenizer.from_dir(write_tokenizer(tmp_path / "b"))
    assert resolve_template("auto", "runs/anything", distill) == "chat"  # the template itself opens <think>
    assert resolve_template("auto", "qwen2.5-math-1.5b-instruct", math_instruct) == "r1-chat"
    assert resolve_template("auto", "/ckpt/Some-Chat-Model", base) == "r1-chat"
    assert resolve_template("auto", "qwen2.5-0.5b", base) == "r1"
    assert resolve_template("plain", "qwen2.5-0.5b-instruct", base) == "plain"  # an explicit choice is kept
    with pytest.raises(ValueError, match="unknown --template 'r2'"):
        resolve_template("r2", "x", base)


def test_render_prompt_templates(tmp_path):
    tok = Tokenizer.from_dir(write_tokenizer(tmp_path, "qwen2.5-math-1.5b-instruct"))
    assert render_prompt("2+3?", "plain", tok) == "2+3?"
    assert render_prompt("2+3?", "r1", tok) == R1_ZERO_TEMPLATE.format(prompt="2+3?")
    assert render_prompt("2+3?", "chat", tok).startswith("<|im_start|>system\nPlease reason step by step")
    r1_chat = render_prompt("2+3?", "r1-chat", tok)
    assert r1_chat == render_chat([{"role": "system", "content": R1_SYSTEM}, {"role": "user", "content": "2+3?"}])
    assert render_prompt("2+3?", lambda p: f"Q: {p} A:", tok) == "Q: 2+3? A:"
    with pytest.raises(ValueError, match="resolve_template"):
        render_prompt("2+3?", "auto", tok)


def test_chat_template_is_sandboxed(tmp_path):
    tok = Tokenizer.from_dir(write_tokenizer(tmp_path))
    tok.chat_template = "{{ messages.__class__.__mro__ }}"  # a hostile template may not reach Python internals
    with pytest.raises(ValueError, match="chat template failed"):
        tok.chat([{"role": "user", "content": "x"}])
    tok.chat_template = "{{ raise_exception('only user turns') }}"
    with pytest.raises(ValueError, match="only user turns"):
        tok.chat([{"role": "user", "content": "x"}])


def test_r1_zero_prompt_is_the_papers_template():
    p = r1_zero_prompt("What is 2 + 3?")
    assert p.startswith("A conversation between User and Assistant.")
    assert p.endswith("User: What is 2 + 3?. Assistant:")
    assert p == R1_ZERO_TEMPLATE.format(prompt="What is 2 + 3?")


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json not found in"):
        Tokenizer.from_dir(tmp_path)
