"""
A thin wrapper over the `tokenizers` library for Qwen2-family checkpoints, and the one prompt renderer: every
command turns a problem into prompt text through render_prompt, with --template meaning the same everywhere.

    from tokenizer import Tokenizer, render_prompt, resolve_template
    tok = Tokenizer.from_dir("path/to/checkpoint")
    template = resolve_template("auto", "path/to/checkpoint", tok)      # plain, chat, r1 or r1-chat
    ids = tok.encode(render_prompt("What is 2 + 3?", template, tok))

The chat template is the one the checkpoint ships (tokenizer_config.json's jinja source), rendered in a sandboxed
jinja environment exactly as transformers renders it, so DeepSeek-R1-Distill gets
`<｜User｜>...<｜Assistant｜><think>\n` and Qwen2.5-Math-Instruct its own system turn; ChatML written by hand is only
the fallback for a checkpoint without one. A template that ends the prompt inside `<think>` means the completion
starts inside the think block: completion_prefix names that opening so rewards can score prefix + completion.

Encoding adds no BOS token (a template that wants one, like DeepSeek's, writes it into the text); special tokens
written in the text (`<|im_start|>`) encode to their ids.
The end-of-sequence ids are the union of what tokenizer_config.json, config.json and generation_config.json
name: base models stop on <|endoftext|>, instruct models on <|im_end|>, and a checkpoint may name both.
"""
import functools
import json
from datetime import datetime
from pathlib import Path

from jinja2 import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
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
# What --template means in every command (resolve_template turns "auto" into one of the others).
TEMPLATES = ("auto", "plain", "chat", "r1", "r1-chat")


def render_prompt(problem, template, tokenizer):
    """The prompt text for one problem. template: "plain" (the problem itself), "chat" (the checkpoint's chat
    template, the problem as the user turn), "r1" (the R1-Zero template), "r1-chat" (the R1 instruction as the
    system turn of the chat template), or a callable problem -> text."""
    if callable(template):
        return template(problem)
    if template == "plain":
        return problem
    if template == "r1":
        return r1_zero_prompt(problem)
    if template == "chat":
        return tokenizer.chat([{"role": "user", "content": problem}])
    if template == "r1-chat":
        return tokenizer.chat([{"role": "system", "content": R1_SYSTEM}, {"role": "user", "content": problem}])
    raise ValueError(f"unknown template {template!r}: pass one of plain, chat, r1, r1-chat "
                     f"(or auto, which resolve_template turns into one of them)")


def resolve_template(template, model_name, tokenizer):
    """--template auto -> "chat" when the checkpoint's own chat template opens a think block itself (as
    DeepSeek-R1-Distill's does: its prompt already asks for reasoning), "r1-chat" for instruct/chat checkpoints
    (by name), "r1" for base models. Any other name is returned as is, once checked."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown --template {template!r}: pass one of {', '.join(TEMPLATES)}")
    if template != "auto":
        return template
    if tokenizer.chat_template and completion_prefix(tokenizer.chat([{"role": "user", "content": "1 + 1"}])):
        return "chat"
    name = str(model_name).lower()
    return "r1-chat" if "instruct" in name or "chat" in name else "r1"


def completion_prefix(prompt_text):
    """The opening of a think block the prompt already wrote ("<think>\\n" after DeepSeek-R1-Distill's template),
    else "". The model's completion starts inside that block, so the format reward and answer extraction score
    prefix + completion: the text as a reader of the whole answer sees it."""
    i = prompt_text.rfind("<think>")
    if i < 0 or prompt_text[i + len("<think>"):].strip():
        return ""
    return prompt_text[i:]


def render_chat(messages, add_generation_prompt=True, default_system=QWEN_DEFAULT_SYSTEM):
    """ChatML written by hand, as Qwen2.5's template renders it (a default system turn when none is given): the
    fallback for a checkpoint whose tokenizer_config.json has no chat template."""
    out = []
    if not messages or messages[0]["role"] != "system":
        out.append(f"<|im_start|>system\n{default_system}<|im_end|>\n")
    for m in messages:
        out.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


def r1_zero_prompt(problem):
    """The R1-Zero prompt for a base model: render_prompt(problem, "r1", tokenizer), no tokenizer needed."""
    return R1_ZERO_TEMPLATE.format(prompt=problem)


@functools.lru_cache(maxsize=16)
def _compile_template(source):
    """A chat template compiled the way transformers compiles it: a sandboxed, immutable jinja environment (the
    template comes from a downloaded file, so it may not touch Python internals or mutate its inputs), blocks
    trimmed, loop controls on, and the helpers chat templates call: raise_exception, tojson, strftime_now."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])

    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def render_template(source, messages, add_generation_prompt=True, **special_tokens):
    """Render a jinja chat template (tokenizer_config.json's "chat_template") over the messages."""
    try:
        return _compile_template(source).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                                **special_tokens)
    except TemplateError as e:
        raise ValueError(f"the checkpoint's chat template failed on this conversation: {e}") from None


class Tokenizer:
    def __init__(self, tok: HFTokenizer, eos_ids, pad_id, chat_template=None, special_tokens=None):
        self.tok = tok
        self.eos_ids = set(eos_ids)
        self.pad_id = pad_id
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        self.chat_template = chat_template  # jinja source from the checkpoint, None: ChatML by hand
        self.special_tokens = special_tokens or {}  # bos_token, eos_token, ... as the template sees them

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
        special = {k: _token_content(tc.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
        return cls(tok, eos, pad_id, _chat_template(path, tc), {k: v for k, v in special.items() if v})

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special=True):
        return self.tok.decode(list(ids), skip_special_tokens=skip_special)

    def decode_batch(self, seqs, skip_special=True):
        """decode for many sequences at once (in parallel threads, in the tokenizers library)."""
        return self.tok.decode_batch([list(ids) for ids in seqs], skip_special_tokens=skip_special)

    def token_id(self, token):
        return self.tok.token_to_id(token)

    def chat(self, messages, add_generation_prompt=True):
        """The conversation as text, through the checkpoint's own chat template (ChatML when it has none)."""
        if self.chat_template is None:
            return render_chat(messages, add_generation_prompt)
        return render_template(self.chat_template, messages, add_generation_prompt, **self.special_tokens)


def _token_content(t):
    return t.get("content") if isinstance(t, dict) else t


def _chat_template(path, tokenizer_config):
    """The checkpoint's chat template: chat_template.jinja (newer checkpoints) or tokenizer_config.json's
    "chat_template" (a string, or a list of named templates of which "default" is the chat one)."""
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    t = tokenizer_config.get("chat_template")
    if isinstance(t, list):
        t = next((x["template"] for x in t if x.get("name") == "default"), None)
    return t or None
