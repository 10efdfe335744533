"""
Supervised fine-tuning: the cold start of DeepSeek-R1 (§2.3.1: a few thousand long reasoning traces before RL)
and distillation (§2.4: a small model trained on a stronger model's verified traces, see distill.py).

    python sft.py --model qwen2.5-0.5b --data traces.jsonl --output-dir runs/sft
    python sft.py --from-scratch tiny --data traces.jsonl --output-dir runs/sft    # new tokenizer + random model
    python sft.py --model qwen2.5-0.5b --data traces.jsonl --output-dir runs/sft --resume runs/sft

Data: jsonl, one example per line, either {"prompt": "...", "response": "..."} (an EOS is appended to the
response) or {"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]} (ChatML,
the assistant turns are learnt). Reasoning traces are plain text: "<think> ... </think> <answer> ... </answer>".

How a step works:
  1. Each example becomes token ids and labels: the id where the token is learnt (response / assistant turns,
     EOS included), IGNORE elsewhere. Inputs and targets are shifted inside each document, so no document ever
     predicts the first token of the next one.
  2. Documents are packed end to end into rows of at most --max-length tokens (shuffled each epoch with the seed).
     A row is a (1, T) batch with `cu_seqlens` marking the documents: attention stays inside a document (the
     varlen kernel on GPU, a block-diagonal mask on CPU) and positions restart at 0 in each, so a packed row
     computes exactly what the documents would compute one by one, with no padding.
  3. --gradient-accumulation-steps rows make one optimizer step. The loss is the sum of the token losses over all
     of them divided by the number of learnt tokens in the step: every learnt token weighs the same, however the
     documents were packed (a mean per row would weigh tokens of short rows more).

--from-scratch builds a byte-level BPE tokenizer (the `tokenizers` library) on the data's text and a small
Qwen2-architecture model (SCRATCH_CONFIGS), written as an ordinary Hugging Face directory OUT/init that then
loads through Qwen2.from_pretrained like any downloaded checkpoint: the R1-in-miniature demo needs no download.

Deliberately left out: multi-GPU, LoRA, NEFTune, completion-only packing of multi-turn tool traces.

Shape legend: T tokens in a packed row, C hidden, V vocab, N learnt tokens.
"""
import argparse
import json
import math
import random
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from model import ModelConfig, Qwen2, pick_device, pick_dtype
from tasks import iter_jsonl
from tokenizer import Tokenizer, render_chat
import train_utils as tu

IGNORE = -100  # label of a token that is seen but not learnt (prompt, user turns, chat scaffolding)

# ------------------------------------------------------------------------------------------ data


def read_sft_jsonl(path):
    """Rows of an SFT jsonl file; a bad line raises ValueError naming file:line."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found: pass a jsonl file with 'prompt'/'response' or 'messages' per line")
    rows = []
    for lineno, row in iter_jsonl(path):
        ok = isinstance(row, dict) and (isinstance(row.get("messages"), list) or (
            isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str)))
        turns = row.get("messages") if ok and "messages" in row else []
        ok = ok and all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                        for m in turns)
        if not ok:
            raise ValueError(f"{path}:{lineno}: needs 'prompt' and 'response' strings or a 'messages' list "
                             f"of {{'role', 'content'}} turns, each with string values")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no examples")
    return rows


def tokenize_example(tok, row, eos_id):
    """One example -> (ids, labels), both lists of the same length; labels[i] = ids[i] where the token is learnt.
    Each piece is encoded on its own, so the prompt/response boundary is a token boundary."""
    if "messages" in row:
        text = render_chat(row["messages"], add_generation_prompt=False)
        # Split the rendered ChatML at the assistant turns: "<|im_start|>assistant\n" is given, the content and
        # its "<|im_end|>" are learnt (that is how the model learns to stop), the newline after it is given.
        pieces, rest = [], text
        for m in row["messages"]:
            if m["role"] != "assistant":
                continue
            head = "<|im_start|>assistant\n"
            before, rest = rest.split(head + m["content"] + "<|im_end|>", 1)
            pieces += [(before + head, False), (m["content"] + "<|im_end|>", True)]
        pieces.append((rest, False))
        ids, labels = [], []
        for piece, learnt in pieces:
            p = tok.encode(piece) if piece else []
            ids += p
            labels += p if learnt else [IGNORE] * len(p)
        return ids, labels
    prompt, response = tok.encode(row["prompt"]), tok.encode(row["response"]) + [eos_id]
    return prompt + response, [IGNORE] * len(prompt) + response


def pack(docs, max_length):
    """Documents [(ids, labels)] -> rows, each a dict of equal-length lists `inputs`, `targets`, `positions` and
    `cu_seqlens` (document boundaries in the row). A document of n tokens gives n-1 (input, target) pairs;
    longer than max_length + 1 tokens it is cut. Packing is greedy in the given order."""
    rows, cur = [], None
    for ids, labels in docs:
        ids, labels = ids[:max_length + 1], labels[:max_length + 1]
        n = len(ids) - 1
        if n < 1 or all(t == IGNORE for t in labels[1:]):
            continue  # nothing to learn in it
        if cur is None or len(cur["inputs"]) + n > max_length:
            cur = {"inputs": [], "targets": [], "positions": [], "cu_seqlens": [0]}
            rows.append(cur)
        cur["inputs"] += ids[:-1]
        cur["targets"] += labels[1:]  # target i is the label of the token after input i, inside this document
        cur["positions"] += range(n)
        cur["cu_seqlens"].append(cur["cu_seqlens"][-1] + n)
    return rows


def epoch_rows(docs, max_length, seed, epoch):
    """This epoch's packed rows: the documents shuffled by (seed, epoch), then packed. A pure function of its
    arguments, so a resumed run rebuilds exactly the rows it was in the middle of."""
    order = list(range(len(docs)))
    random.Random(seed * 100003 + epoch).shuffle(order)
    return pack([docs[i] for i in order], max_length)


def row_stream(docs, max_length, seed, epoch=0, index=0):
    """Endless (epoch, index, row) from the data position (epoch, index) on."""
    while True:
        rows = epoch_rows(docs, max_length, seed, epoch)
        for i in range(index, len(rows)):
            yield epoch, i, rows[i]
        epoch, index = epoch + 1, 0


# ------------------------------------------------------------------------------------------ loss


def row_loss_sum(model, row, device):
    """Summed cross-entropy (fp32) over the learnt tokens of one packed row, and how many there are."""
    t = lambda key, dtype=torch.long: torch.tensor(row[key], dtype=dtype, device=device)
    idx, positions, targets = t("inputs")[None], t("positions")[None], t("targets")  # (1, T), (1, T), (T,)
    h = model(idx, positions=positions, cu_seqlens=t("cu_seqlens", torch.int32), return_hidden=True)[0]  # (T, C)
    learnt = targets != IGNORE
    h, targets = h[learnt], targets[learnt]  # (N, C), (N,): the LM head only runs where a loss is taken
    if model.use_kernels and h.is_cuda:  # never materialises the (N, V) logits
        from kernels.logprob import fused_logprob
        return -fused_logprob(h, model.lm_head.weight, targets).sum(), len(targets)
    logits = model.lm_head(h).float()  # (N, V)
    return F.cross_entropy(logits, targets, reduction="sum"), len(targets)


@torch.no_grad()
def eval_loss(model, rows, device):
    """Mean loss per learnt token over the evaluation rows (the model is left in training mode)."""
    sums = [row_loss_sum(model.eval(), row, device) for row in rows]
    model.train()
    return sum(float(s) for s, _ in sums) / max(sum(n for _, n in sums), 1)


# ------------------------------------------------------------------------------------------ from scratch

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


def train_tokenizer(texts, vocab_size):
    """A byte-level BPE tokenizer trained on texts: any string encodes (unknown bytes fall back to the 256 byte
    tokens), with the special tokens the chat and R1 templates need."""
    from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer
    tok = HFTokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    return tok


def build_from_scratch(texts, out_dir, size="tiny", vocab_size=512, seed=0, std=0.02):
    """Train a tokenizer on texts and write OUT_DIR as a Hugging Face checkpoint of a randomly initialised Qwen2:
    tokenizer.json, tokenizer_config.json, config.json, model.safetensors. Returns out_dir."""
    if size not in SCRATCH_CONFIGS:
        raise ValueError(f"unknown --from-scratch size {size!r}: pass one of {', '.join(SCRATCH_CONFIGS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_tok = train_tokenizer(texts, vocab_size)
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


def example_texts(rows):
    """The text of each SFT example, as the model will see it (what a from-scratch tokenizer is trained on)."""
    return [render_chat(r["messages"], add_generation_prompt=False) if "messages" in r else r["prompt"] + r["response"]
            for r in rows]


# ------------------------------------------------------------------------------------------ training

LOG_FIELDS = [("step", "step", "d"), ("loss", "loss", ".4f"), ("eval", "eval_loss", ".4f"), ("lr", "lr", ".2e"),
              ("|g|", "grad_norm", ".3f"), ("tok/s", "tokens_per_s", ".0f")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", help="checkpoint directory or known name to fine-tune")
    p.add_argument("--from-scratch", choices=list(SCRATCH_CONFIGS), help="train a new tokenizer and model instead")
    p.add_argument("--vocab-size", type=int, default=512, help="BPE vocabulary of a --from-scratch tokenizer")
    p.add_argument("--data", required=True, help="training jsonl (prompt/response or messages)")
    p.add_argument("--eval-data", help="evaluation jsonl (default: --eval-fraction of --data held out)")
    p.add_argument("--eval-fraction", type=float, default=0.05)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--max-length", type=int, default=2048, help="tokens per packed row")
    p.add_argument("--gradient-accumulation-steps", type=int, default=1, help="packed rows per optimizer step")
    p.add_argument("--num-train-epochs", type=float, default=3.0)
    p.add_argument("--max-steps", type=int, default=0, help="optimizer steps (0: from --num-train-epochs)")
    p.add_argument("--learning-rate", type=float, default=1e-5)
    p.add_argument("--lr-scheduler-type", choices=["constant", "cosine"], default="cosine")
    p.add_argument("--warmup-steps", type=int, default=10)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--eval-steps", type=int, default=50)
    p.add_argument("--save-steps", type=int, default=200, help="0: save at the end only")
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--resume", help="run directory (its 'latest') or checkpoint-STEP directory to continue from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--no-kernels", action="store_true", help="PyTorch reference attention and loss")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-step lines")
    args = p.parse_args(argv)
    if (args.model is None) == (args.from_scratch is None) and not args.resume:
        p.error("pass exactly one of --model or --from-scratch")
    return args


def main(argv=None):
    """Train; returns the final checkpoint directory."""
    from tqdm import tqdm
    args = parse_args(argv)
    out, device = Path(args.output_dir), pick_device(args.device)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_sft_jsonl(args.data)
    if args.eval_data:
        eval_rows = read_sft_jsonl(args.eval_data)
    else:  # a fixed (seed-independent) held-out slice, so runs with different seeds see the same eval set
        order = list(range(len(rows)))
        random.Random(0).shuffle(order)
        n_eval = int(len(rows) * args.eval_fraction)
        eval_rows, rows = [rows[i] for i in order[:n_eval]], [rows[i] for i in order[n_eval:]]

    ckpt = tu.find_checkpoint(args.resume) if args.resume else None
    source = ckpt or args.model
    if source is None:
        source = build_from_scratch(example_texts(rows), out / "init", args.from_scratch, args.vocab_size, args.seed)
    model = Qwen2.from_pretrained(source, device=device, dtype=pick_dtype(device, args.dtype)).train()
    model.use_kernels = device.type == "cuda" and not args.no_kernels
    model.gradient_checkpointing = args.gradient_checkpointing
    tok = Tokenizer.from_dir(model.source_dir)
    eos_id = min(tok.eos_ids)  # <|endoftext|> in Qwen2.5 (base and instruct) and in our from-scratch tokenizer
    docs = [tokenize_example(tok, r, eos_id) for r in rows]
    eval_set = pack([tokenize_example(tok, r, eos_id) for r in eval_rows], args.max_length)

    optimizer = tu.MasterAdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    step, (epoch, index) = 0, (0, 0)
    if ckpt:
        step, (epoch, index) = tu.load_trainer_state(ckpt, optimizer)
        print(f"resumed from {ckpt} at step {step} (epoch {epoch}, row {index})")
    rows_per_epoch = len(epoch_rows(docs, args.max_length, args.seed, 0))
    total = args.max_steps or math.ceil(args.num_train_epochs * rows_per_epoch / args.gradient_accumulation_steps)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"sft: {n_params / 1e6:.1f}M parameters on {device}, {len(docs)} examples in {rows_per_epoch} rows of "
          f"<= {args.max_length} tokens, {len(eval_set)} eval rows, {total} steps")

    metrics = tu.Metrics(out, plot_keys=("loss", "eval_loss", "lr", "grad_norm"), plot_every=args.logging_steps,
                         resume_step=step if ckpt else None)  # a resumed run keeps its curve up to the checkpoint
    stream = row_stream(docs, args.max_length, args.seed, epoch, index)
    bar = tqdm(total=total, initial=step, desc="sft", unit="step", disable=args.quiet)
    with tu.StopOnCtrlC() as stop:
        while step < total and not stop.requested:
            lr = tu.lr_at(step, args.learning_rate, args.warmup_steps, total, args.lr_scheduler_type, args.min_lr_ratio)
            optimizer.set_lr(lr)
            batch = [next(stream) for _ in range(args.gradient_accumulation_steps)]
            n_learnt = sum(sum(t != IGNORE for t in r["targets"]) for _, _, r in batch)
            with tu.Timer() as timer:
                loss_sum = 0.0
                for _, _, r in batch:
                    s, _ = row_loss_sum(model, r, device)
                    (s / n_learnt).backward()  # the step's loss: all learnt tokens of all rows weigh the same
                    loss_sum += float(s.detach())
                grad_norm = optimizer.step(args.max_grad_norm)
                optimizer.zero_grad()
            epoch, index = batch[-1][0], batch[-1][1] + 1
            step += 1
            bar.update(1)
            row = {"step": step, "loss": loss_sum / n_learnt, "lr": lr, "grad_norm": grad_norm, "epoch": epoch,
                   "tokens_per_s": sum(len(r["inputs"]) for _, _, r in batch) / timer.seconds}
            if not math.isfinite(grad_norm):
                row["skipped"] = 1  # MasterAdamW left the weights untouched
                tqdm.write(f"step {step}: non-finite gradient norm, update skipped")
            if eval_set and (step % args.eval_steps == 0 or step == total):
                row["eval_loss"] = eval_loss(model, eval_set, device)
            metrics.log(row)
            if not args.quiet and (step % args.logging_steps == 0 or "eval_loss" in row):
                tqdm.write(tu.format_line(row, LOG_FIELDS))
            if (args.save_steps and step % args.save_steps == 0) or step == total or stop.requested:
                tu.save_checkpoint(out, model, optimizer, step, (epoch, index), args)
    bar.close()
    tu.plot_curves(metrics.history, out / "curves.png", metrics.plot_keys)
    return out / (out / "latest").read_text().strip()


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
