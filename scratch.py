"""
A model trained from nothing: a byte-level BPE tokenizer trained on the data's own text and a Qwen2-architecture
model with random weights, written together as an ordinary Hugging Face directory. Everything downstream then
loads it through Qwen2.from_pretrained like a downloaded checkpoint, which is how `sft.py --from-scratch` and the
R1-in-miniature demo (demo.py) need no download.

    python sft.py --from-scratch tiny --data traces.jsonl --output-dir runs/sft    # writes runs/sft/init, trains it
    python -c "import scratch; scratch.build_from_scratch(['1+2=3', '2*3=6'], 'runs/init', vocab_size=300)"

Deliberately left out: tokenizer merges tuned for a language (the pre-tokenizer below is for arithmetic and
English), initialisation schemes other than GPT-2's N(0, 0.02).
"""
import json
from pathlib import Path

import torch

from model import ModelConfig, Qwen2

# Qwen2-architecture shapes for models trained here from nothing (vocab_size comes from the trained tokenizer).
SCRATCH_CONFIGS = {
    "tiny": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512),  # ~0.8M parameters: a CPU in minutes
    "small": dict(hidden_size=768, intermediate_size=2304, num_hidden_layers=12, num_attention_heads=12,
                  num_key_value_heads=4, max_position_embeddings=1024),  # ~90M parameters: a GPU in minutes
}
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # EOS and ChatML, as in Qwen2.5
TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]  # one token each (plain text, not special)
# Pre-tokenization: one digit per token (arithmetic sees digits, as in Qwen2), words with their leading space,
# runs of punctuation, whitespace.
SPLIT_PATTERN = r"\p{N}| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+"
# The same for a base model that must read tags it never saw (tag_tokens=False): a word with no space before it
# (a tag name after '<' or '</') is spelt letter by letter, so '<think>' is ' <', 't', 'h', 'i', 'n', 'k', '>':
# pieces a corpus with other tag names trains. (With whole-word merges, 'think' and 'answer' would be tokens that
# only the template holds: their embeddings would stay random and the tags could neither be read nor copied.)
SPELL_SPLIT_PATTERN = r"\p{N}| \p{L}+|\p{L}| ?[^\s\p{L}\p{N}]+|\s+"


def train_tokenizer(texts, vocab_size, tag_tokens=True):
    """A byte-level BPE tokenizer trained on texts: any string encodes (unknown bytes fall back to the 256 byte
    tokens), with the special tokens of the chat template and, if tag_tokens, the R1 tags as one token each (else
    the tags are spelt in pieces, SPELL_SPLIT_PATTERN: what a base model pretrained without them needs)."""
    from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer
    tok = HFTokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN if tag_tokens else SPELL_SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    if tag_tokens:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    return tok


def build_from_scratch(texts, out_dir, size="tiny", vocab_size=512, seed=0, std=0.02, tag_tokens=True):
    """Train a tokenizer on texts and write OUT_DIR as a Hugging Face checkpoint of a randomly initialised Qwen2:
    tokenizer.json, tokenizer_config.json, config.json, model.safetensors. Returns out_dir. tag_tokens=False for
    a base model pretrained on plain text (train_tokenizer)."""
    if size not in SCRATCH_CONFIGS:
        raise ValueError(f"unknown --from-scratch size {size!r}: pass one of {', '.join(SCRATCH_CONFIGS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_tok = train_tokenizer(texts, vocab_size, tag_tokens)
    hf_tok.save(str(out_dir / "tokenizer.json"))
    eos = SPECIAL_TOKENS[0]
    (out_dir / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos, "pad_token": eos, "bos_token": None,
         "model_max_length": SCRATCH_CONFIGS[size]["max_position_embeddings"]}, indent=2))
    config = ModelConfig(vocab_size=hf_tok.get_vocab_size(with_added_tokens=True), rope_theta=10000.0,
                         tie_word_embeddings=True, rms_norm_eps=1e-6, eos_token_id=hf_tok.token_to_id(eos),
                         **SCRATCH_CONFIGS[size])
    torch.manual_seed(seed)
    model = Qwen2(config)
    with torch.no_grad():  # GPT-2 style: N(0, 0.02) weights, zero biases (PyTorch's default N(0, 1) embedding
        for name, p in model.named_parameters():  # tied to the LM head would start with huge logits)
            if "norm" not in name:
                p.copy_(torch.randn_like(p) * std if p.dim() > 1 else torch.zeros_like(p))
    model.save_pretrained(out_dir)
    return out_dir
