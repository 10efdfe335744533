"""
Supervised fine-tuning: the cold start of DeepSeek-R1 (§2.3.1: a few thousand long reasoning traces before RL)
and distillation (§2.4: a small model trained on a stronger model's verified traces, see distill.py).

    python sft.py --model qwen2.5-0.5b --data traces.jsonl --output-dir runs/sft
    python sft.py --from-scratch tiny --data traces.jsonl --output-dir runs/sft    # new tokenizer + random model
    python sft.py --model qwen2.5-0.5b --data traces.jsonl --output-dir runs/sft --resume runs/sft

Data: jsonl, one example per line, either {"prompt": "...", "response": "..."} (an EOS is appended to the
response) or {"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]} (ChatML,
the assistant turns are learnt), or {"text": "..."} (plain text, every token learnt; --pretrain learns every token of
every row: a base model, as demo.py --recipe r1-zero pretrains one). Reasoning traces are plain text:
"<think> ... </think> <answer> ... </answer>".

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

--from-scratch builds a byte-level BPE tokenizer on the data's text and a small Qwen2-architecture model with
random weights (scratch.py), written as an ordinary Hugging Face directory OUT/init that then loads like any
downloaded checkpoint: the R1-in-miniature demo needs no download.

From Python: `sft.train(sft.SFTConfig(data=..., output_dir=..., model=...))` returns a train_utils.TrainResult.

Several GPUs: torchrun --nproc_per_node=N sft.py ... (data parallel; --fsdp shards; train_utils, distributed).
Deliberately left out: LoRA, NEFTune, completion-only packing of multi-turn tool traces.

Shape legend: T tokens in a packed row, C hidden, V vocab, N learnt tokens.
"""
import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import train_utils as tu
from model import load_model, pick_device
from scratch import SCRATCH_CONFIGS, build_from_scratch
from tasks import iter_jsonl
from tokenizer import render_chat
from train_utils import REQUIRED, option

IGNORE = -100  # label of a token that is seen but not learnt (prompt, user turns, chat scaffolding)
PACKING_SEED_STRIDE = 100_003  # epoch e packs the documents shuffled with seed --seed * PACKING_SEED_STRIDE + e

# ------------------------------------------------------------------------------------------ data


def read_sft_jsonl(path):
    """Rows of an SFT jsonl file; a bad line raises ValueError naming file:line."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found: pass a jsonl file with 'prompt'/'response' or 'messages' per line")
    rows = []
    for lineno, row in iter_jsonl(path):
        ok = isinstance(row, dict) and (isinstance(row.get("messages"), list) or isinstance(row.get("text"), str) or (
            isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str)))
        turns = row.get("messages") if ok and "messages" in row else []
        ok = ok and all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                        for m in turns)
        if not ok:
            raise ValueError(f"{path}:{lineno}: needs 'prompt' and 'response' strings, a 'text' string or a "
                             f"'messages' list of {{'role', 'content'}} turns, each with string values")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no examples")
    return rows


def tokenize_example(tok, row, eos_id, every_token=False):
    """One example -> (ids, labels), both lists of the same length; labels[i] = ids[i] where the token is learnt.
    Each piece is encoded on its own, so the prompt/response boundary is a token boundary. A {"text": ...} row
    (plain text, an EOS appended) learns every token, and so does every row when every_token (--pretrain)."""
    if "text" in row:
        ids = tok.encode(row["text"]) + [eos_id]
        return ids, list(ids)
    if every_token:
        ids, _ = tokenize_example(tok, row, eos_id)
        return ids, list(ids)
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
    random.Random(seed * PACKING_SEED_STRIDE + epoch).shuffle(order)
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
    core = tu.unwrap(model)  # DIST: the forward goes through DDP, the attributes are the model's
    if core.use_kernels and h.is_cuda:  # never materialises the (N, V) logits
        from kernels.logprob import fused_logprob
        return -fused_logprob(h, core.lm_head.weight, targets).sum(), len(targets)
    logits = core.lm_head(h).float()  # (N, V)
    return F.cross_entropy(logits, targets, reduction="sum"), len(targets)


@torch.no_grad()
def eval_loss(model, rows, device):
    """Mean loss per learnt token over the evaluation rows (the model is left in training mode)."""
    sums = [row_loss_sum(model.eval(), row, device) for row in rows]
    model.train()
    return sum(float(s) for s, _ in sums) / max(sum(n for _, n in sums), 1)


def example_texts(rows):
    """The text of each SFT example, as the model will see it (what a from-scratch tokenizer is trained on)."""
    return [render_chat(r["messages"], add_generation_prompt=False) if "messages" in r else r["text"] if "text" in r
            else r["prompt"] + r["response"] for r in rows]


# ------------------------------------------------------------------------------------------ training

LOG_FIELDS = [("step", "step", "d"), ("loss", "loss", ".4f"), ("eval", "eval_loss", ".4f"), ("lr", "lr", ".2e"),
              ("|g|", "grad_norm", ".3f"), ("tok/s", "tokens_per_s", ".0f")]


@dataclass
class SFTConfig:
    """Supervised fine-tuning on prompt/response or chat jsonl: the cold start of DeepSeek-R1 and distillation."""
    data: str = option(REQUIRED, "training jsonl (prompt/response, text or messages)")
    output_dir: str = option(REQUIRED, "metrics.jsonl, curves.png and checkpoint-STEP directories go here")
    model: str | None = option(None, "checkpoint directory or known name to fine-tune")
    from_scratch: str | None = option(None, "train a new tokenizer and model of this size instead",
                                      choices=list(SCRATCH_CONFIGS))
    vocab_size: int = option(512, "BPE vocabulary of a --from-scratch tokenizer")
    pretrain: bool = option(False, "loss on every token, prompts included (pretraining a base model; a "
                                   "--from-scratch tokenizer then spells the R1 tags in pieces: scratch.py)")
    eval_data: str | None = option(None, "evaluation jsonl (default: --eval-fraction of --data held out)")
    eval_fraction: float = option(0.05, "share of --data held out for evaluation when there is no --eval-data")
    max_length: int = option(2048, "tokens per packed row")
    gradient_accumulation_steps: int = option(1, "packed rows per optimizer step (all processes' together)")
    num_train_epochs: float = option(3.0, "passes over the data (when --max-steps is 0)")
    max_steps: int = option(0, "optimizer steps (0: from --num-train-epochs)")
    learning_rate: float = option(1e-5, "AdamW learning rate (peak, after warm-up)")
    lr_scheduler_type: str = option("cosine", "after warm-up", choices=["constant", "cosine"])
    warmup_steps: int = option(10, "steps of linear learning-rate warm-up")
    min_lr_ratio: float = option(0.1, "the cosine schedule ends at this share of --learning-rate")
    weight_decay: float = option(0.0, "AdamW weight decay")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: no clipping)")
    eval_steps: int = option(50, "evaluation loss every N steps and at the end")
    save_steps: int = option(200, "checkpoint every N steps (0: at the end only)")
    logging_steps: int = option(10, "print a line and redraw curves.png every N steps")
    resume: str | None = option(None, "run directory (its 'latest') or checkpoint-STEP directory to continue from; "
                                      "the run's own settings are restored, a flag given here wins")
    overwrite_output_dir: bool = option(False, "start over in an --output-dir that holds a run (deletes it)")
    seed: int = option(0, "seeds the data order (and a --from-scratch model's initial weights)")
    device: str | None = option(None, "cpu, cuda, cuda:1, ... (default: cuda when present)")
    dtype: str | None = option(None, "default: bfloat16 on cuda, float32 on cpu")
    no_kernels: bool = option(False, "PyTorch reference attention and loss")
    gradient_checkpointing: bool = option(False, "recompute activations in backward (less memory)")
    quiet: bool = option(False, "no progress bar or per-step lines")
    fsdp: bool = option(False, "under torchrun: shard weights, gradients and optimizer state over the processes "
                               "(FSDP2) instead of a full replica per process (DDP)")


def load_data(config):
    """The training rows and the evaluation rows: --eval-data, else a held-out --eval-fraction of --data."""
    if not 0 <= config.eval_fraction < 1:
        raise ValueError(f"--eval-fraction is {config.eval_fraction}: it must leave training examples, pass a number "
                         f"in [0, 1) (0.05 is usual)")
    rows = read_sft_jsonl(config.data)
    if config.eval_data:
        return rows, read_sft_jsonl(config.eval_data)
    # A fixed (seed-independent) held-out slice, so runs with different seeds see the same eval set.
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    n_eval = int(len(rows) * config.eval_fraction)
    return [rows[i] for i in order[n_eval:]], [rows[i] for i in order[:n_eval]]


def learn_rows(model, optimizer, batch, max_grad_norm, device):
    """One optimizer step on the packed rows of `batch` (the global batch: every rank has it all and learns its
    share): (loss per learnt token, gradient norm, tokens/s)."""
    n_learnt = sum(sum(t != IGNORE for t in r["targets"]) for r in batch)  # (of the global batch)
    mine = tu.share(batch, "--gradient-accumulation-steps")  # DIST: this rank's rows
    with tu.Timer() as timer:
        loss_sum = 0.0
        for j, r in enumerate(mine):
            with tu.grad_sync(model, last=j == len(mine) - 1):  # DIST: gradients cross ranks after the last row
                s, _ = row_loss_sum(model, r, device)
                # The step's loss: all learnt tokens of all rows weigh the same. DIST: x world size, since DDP
                # averages the ranks' gradients and the loss is their sum (train_utils, distributed).
                (s / n_learnt * tu.loss_scale()).backward()
            loss_sum += float(s.detach())
        loss_sum = tu.all_sum(loss_sum)  # DIST
        grad_norm = optimizer.step(max_grad_norm)
        optimizer.zero_grad()
    return loss_sum / n_learnt, grad_norm, sum(len(r["inputs"]) for r in batch) / timer.seconds


def train(config):
    """Run SFT as `config` says; returns a train_utils.TrainResult (model, tokenizer, metrics, last checkpoint)."""
    from tqdm import tqdm
    if (config.model is None) == (config.from_scratch is None) and not config.resume:
        raise ValueError("pass exactly one of --model or --from-scratch")
    device = tu.init_distributed(pick_device(config.device), config.fsdp)  # DIST: this rank's GPU
    out, (rows, eval_rows) = Path(config.output_dir), load_data(config)
    ckpt = tu.find_checkpoint(config.resume) if config.resume else None
    if tu.is_main():  # DIST: rank 0 prepares OUT (and builds a from-scratch init/), the others then read it
        tu.prepare_output_dir(out, ckpt, config.overwrite_output_dir)  # never over another run (nor its init/)
        if not (ckpt or config.model):
            build_from_scratch(example_texts(rows), out / "init", config.from_scratch, config.vocab_size, config.seed,
                               tag_tokens=not config.pretrain)
    tu.barrier()
    source = ckpt or config.model or out / "init"
    model, tok = load_model(source, device, config.dtype, kernels=not config.no_kernels)
    model.gradient_checkpointing, device = config.gradient_checkpointing, model.lm_head.weight.device
    eos_id = min(tok.eos_ids)  # <|endoftext|> in Qwen2.5 (base and instruct) and in our from-scratch tokenizer
    docs = [tokenize_example(tok, r, eos_id, config.pretrain) for r in rows]
    eval_set = pack([tokenize_example(tok, r, eos_id, config.pretrain) for r in eval_rows], config.max_length)
    tu.share(range(config.gradient_accumulation_steps), "--gradient-accumulation-steps")  # DIST: refuse early
    # DIST: `full` is the full copy that evaluates and is saved (--fsdp: one per rank); the model DDP or FSDP2.
    model, full, optimizer, step, (epoch, index) = tu.setup_training(model, config, ckpt, position=(0, 0))
    if ckpt:
        print(f"resumed from {ckpt} at step {step} (epoch {epoch}, row {index})")
    rows_per_epoch = len(epoch_rows(docs, config.max_length, config.seed, 0))
    if rows_per_epoch == 0:  # (the row stream would look for a row forever)
        raise ValueError(f"no example has a token to learn within --max-length {config.max_length}: raise --max-length "
                         f"(the examples' prompts may fill it) or check that the responses are not empty")
    total = config.max_steps or math.ceil(config.num_train_epochs * rows_per_epoch / config.gradient_accumulation_steps)
    print(f"sft: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters on {device}, {len(docs)} examples "
          f"in {rows_per_epoch} rows of <= {config.max_length} tokens, {len(eval_set)} eval rows, {total} steps")
    _, metrics = tu.open_run(out, ("loss", "eval_loss", "lr", "grad_norm"), config.logging_steps,
                             resume_step=step if ckpt else None)  # a resumed run keeps its curve up to the checkpoint
    stream = row_stream(docs, config.max_length, config.seed, epoch, index)
    bar, last_ckpt = tqdm(total=total, initial=step, desc="sft", unit="step",
                          disable=config.quiet or not tu.is_main()), None
    with tu.StopOnCtrlC() as stop:
        while step < total and not stop.requested:
            lr = tu.lr_at(step, config.learning_rate, config.warmup_steps, total, config.lr_scheduler_type,
                          config.min_lr_ratio)
            optimizer.set_lr(lr)
            batch = [next(stream) for _ in range(config.gradient_accumulation_steps)]
            loss, grad_norm, tokens_per_s = learn_rows(model, optimizer, [r for _, _, r in batch],
                                                       config.max_grad_norm, device)
            epoch, index = batch[-1][0], batch[-1][1] + 1
            step += 1
            bar.update(1)
            row = {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "epoch": epoch,
                   "tokens_per_s": tokens_per_s}
            if not math.isfinite(grad_norm):
                row["skipped"] = 1  # MasterAdamW left the weights untouched
                tqdm.write(f"step {step}: non-finite gradient norm, update skipped")
            if eval_set and (step % config.eval_steps == 0 or step == total):  # DIST: rank 0, on the full copy
                tu.refresh_copy(full, model)
                row["eval_loss"] = eval_loss(full, eval_set, device) if tu.is_main() else None
            metrics.log(row)
            if not config.quiet and (step % config.logging_steps == 0 or "eval_loss" in row):
                tqdm.write(tu.format_line(row, LOG_FIELDS))
            stop.requested = tu.all_sum(stop.requested, "max")  # DIST: every rank stops at the same step
            if (config.save_steps and step % config.save_steps == 0) or step == total or stop.requested:
                last_ckpt = tu.save_checkpoint(out, tu.refresh_copy(full, model), optimizer, step, (epoch, index),
                                               config)  # DIST: rank 0 writes
    bar.close()
    if tu.is_main():
        tu.plot_curves(metrics.history, out / "curves.png", metrics.plot_keys)
    return tu.TrainResult(tu.refresh_copy(full, model), tok, metrics.history, out, last_ckpt)


def main(argv=None):
    return train(tu.command_config(SFTConfig, argv))


if __name__ == "__main__":
    tu.run_cli(main)
