"""
A thin wrapper over the `tokenizers` library for Qwen2-family checkpoints, the ChatML chat template rendered in
plain Python, and the R1-Zero prompt template.

    from tokenizer import Tokenizer, r1_zero_prompt
    tok = Tokenizer.from_dir("path/to/checkpoint")
    ids = tok.encode(r1_zero_prompt("What is 2 + 3?"))

Qwen tokenizers add no BOS token; special tokens written in the text (`<|im_start|>`) encode to their ids.
The end-of-sequence ids are the union of what tokenizer_config.json, config.json and generation_config.json
name: base models stop on <|endoftext|>, instruct models on <|im_end|>, and a checkpoint may name both.
"""
import json
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

# DeepSeek-R1 paper, Table 1. {prompt} is the question.
R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
    "assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
    "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. User: {prompt}. "
    "Assistant:"
)
# The chat form for instruct models: the same instruction as a system message, the question as the user turn.
R1_SYSTEM = (
    "The user asks a question, and the Assistant solves it. The assistant first thinks about the reasoning "
    "process in the mind and then provides the user with the answer. The reasoning process and answer are "
    "enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning "
    "process here </think> <answer> answer here </answer>."
)
QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def render_chat(messages, add_generation_prompt=True, default_system=QWEN_DEFAULT_SYSTEM):
    """ChatML, exactly as Qwen2.5's chat template renders it: a default system turn when none is given."""
    out = []
    if not messages or messages[0]["role"] != "system":
        out.append(f"<|im_start|>system\n{default_system}<|im_end|>\n")
    for m in messages:
        out.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


def r1_zero_prompt(problem, chat=False):
    """The R1-Zero prompt for a base model, or its chat form (ChatML text) for an instruct model."""
    if chat:
        return render_chat([{"role": "system", "content": R1_SYSTEM}, {"role": "user", "content": problem}])
    return R1_ZERO_TEMPLATE.format(prompt=problem)


class Tokenizer:
    def __init__(self, tok: HFTokenizer, eos_ids, pad_id):
        self.tok = tok
        self.eos_ids = set(eos_ids)
        self.pad_id = pad_id
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_dir(cls, path):
        path = Path(path)
        if not (path / "tokenizer.json").is_file():
            raise FileNotFoundError(f"tokenizer.json not found in {path}: pass a Hugging Face model directory "
                                    f"that includes its tokenizer files")
        tok = HFTokenizer.from_file(str(path / "tokenizer.json"))

        def read(name):
            f = path / name
            return json.loads(f.read_text()) if f.is_file() else {}

        tc = read("tokenizer_config.json")
        eos = set()
        for cfg in (read("config.json"), read("generation_config.json")):
            e = cfg.get("eos_token_id")
            eos.update(e if isinstance(e, list) else [] if e is None else [e])
        named = [_token_content(tc.get("eos_token"))]
        eos.update(tok.token_to_id(t) for t in named if t and tok.token_to_id(t) is not None)
        pad = _token_content(tc.get("pad_token"))
        pad_id = tok.token_to_id(pad) if pad and tok.token_to_id(pad) is not None else min(eos, default=0)
        return cls(tok, eos, pad_id)

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special=True):
        return self.tok.decode(list(ids), skip_special_tokens=skip_special)

    def token_id(self, token):
        return self.tok.token_to_id(token)

    def chat(self, messages, add_generation_prompt=True):
        return render_chat(messages, add_generation_prompt)


def _token_content(t):
    return t.get("content") if isinstance(t, dict) else t
