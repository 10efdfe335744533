"""tokenizer.py against transformers' tokenizer and the jinja chat template of the real Qwen2.5 fixture."""
import json

import pytest
from conftest import FIXTURE

from tokenizer import R1_ZERO_TEMPLATE, Tokenizer, r1_zero_prompt, render_chat

transformers = pytest.importorskip("transformers")
jinja2 = pytest.importorskip("jinja2")

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


def render_jinja(messages, add_generation_prompt):
    """What transformers does with tokenizer_config.json's chat_template."""
    template = json.loads((FIXTURE / "tokenizer_config.json").read_text())["chat_template"]
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt)


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c\n\nd"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "system", "content": "later"}],
])
@pytest.mark.parametrize("gen", [True, False])
def test_chat_template_matches_jinja(messages, gen):
    assert render_chat(messages, add_generation_prompt=gen) == render_jinja(messages, gen)


def test_r1_zero_prompt_is_the_papers_template():
    p = r1_zero_prompt("What is 2 + 3?")
    assert p.startswith("A conversation between User and Assistant.")
    assert p.endswith("User: What is 2 + 3?. Assistant:")
    assert p == R1_ZERO_TEMPLATE.format(prompt="What is 2 + 3?")
    chat = r1_zero_prompt("What is 2 + 3?", chat=True)
    assert chat.startswith("<|im_start|>system\nThe user asks a question")
    assert chat.endswith("<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n")


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json not found in"):
        Tokenizer.from_dir(tmp_path)
