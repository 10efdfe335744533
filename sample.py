"""
Batched generation with a static KV cache: prefill each prompt once, then decode one token per step for every
sequence, each stopping on its own. The RL loop and evaluate.py call `generate`; the command line streams its text.

    python sample.py --model qwen2.5-0.5b-instruct --prompt "What is 17 * 23?"
    python sample.py --model qwen2.5-0.5b --template r1 --prompt "What is 17 * 23?" --num-samples 4
    (evaluation on a dataset is its own command: python evaluate.py --model X --dataset math500)

How it works (gpt-fast style, no framework):
  1. Prompts of different lengths are left-padded to one length Tp; `start[b]` marks the first real token, so
     positions count from there and padding is masked out of attention.
  2. Prefill: one forward over the P prompts writes cache slots 0..Tp-1. With G samples per prompt the cache has
     P*G rows and each prompt's keys/values are copied to its G rows (KVCache.update), so a prompt costs one
     prefill, not G.
  3. Decode: step t feeds the token sampled at t-1 into slot Tp+t. The whole step (forward, sampling, log-prob,
     EOS bookkeeping, output writes) is one DecodeStep (decode_step.py); on CUDA it is captured once as a CUDA
     graph and replayed, one replay per token (launch overhead dominates decoding otherwise).
  4. A finished row keeps decoding padding (the batch stays rectangular); the host checks every 16 steps whether
     all rows are done and whether a stop string appeared, so the GPU is not stalled by a sync every token. On
     CUDA it looks at a copy made one check earlier (HostChecks), so the GPU decodes on while it searches text.

The log-prob returned for each sampled token is under softmax(logits / temperature) over the full vocabulary,
before top-k/top-p filtering: that is the distribution the GRPO trainer scores, so the two can be compared.

Shape legend: P prompts, G samples per prompt, N = P*G rows, T time, V vocab.
"""
import argparse
import math
import sys
from dataclasses import dataclass, field

import torch

from decode_step import DecodeStep, sample_token  # noqa: F401 (sample_token: this module's API too)
from model import KVCache, load_model
from tokenizer import TEMPLATES, render_prompt, resolve_template

CHECK_EVERY = 16  # decode steps between host checks for "all done" and stop strings
STOP_MARGIN = 16  # tokens of the previous check searched again: a stop string may straddle two checks
OVERLAP_CHECKS = None  # HostChecks' overlap: None = on CUDA only (True / False: forced, for tests)


@dataclass
class Generation:
    tokens: torch.Tensor  # (N, T) completion ids, 0 past `lengths`
    lengths: torch.Tensor  # (N,) tokens generated, the EOS or stop string included
    logprobs: torch.Tensor  # (N, T) fp32 log-prob of each sampled token, 0 past `lengths`
    finish: list  # per row: "eos", "stop" or "length"
    texts: list = field(default_factory=list)  # decoded completions, when a tokenizer was given

    @staticmethod
    def cat(gens):
        """One Generation of the rows of several (grpo's dynamic sampling), padded to the longest."""
        T = max(g.tokens.shape[1] for g in gens)
        pad = lambda t: torch.nn.functional.pad(t, (0, T - t.shape[1]))
        return Generation(torch.cat([pad(g.tokens) for g in gens]), torch.cat([g.lengths for g in gens]),
                          torch.cat([pad(g.logprobs) for g in gens]), sum((g.finish for g in gens), []),
                          sum((g.texts for g in gens), []))


def check_sampling(temperature, top_p, top_k, max_new_tokens, num_samples, length_flag="--max-new-tokens"):
    """Refuse, in one line, sampling settings that mean nothing (a NaN temperature, an empty nucleus, ...);
    length_flag: what the caller's command calls max_new_tokens."""
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"--temperature is {temperature}: pass a finite number >= 0 (0: greedy)")
    if not 0 < top_p <= 1:  # (NaN fails too)
        raise ValueError(f"--top-p is {top_p}: pass a number in (0, 1] (1: no nucleus filtering)")
    for flag, v, least in (("--top-k", top_k, 0), (length_flag, max_new_tokens, 1),
                           ("--num-samples", num_samples, 1)):
        if not v >= least:
            raise ValueError(f"{flag} is {v}: pass a whole number >= {least}")


def pad_left(seqs):
    """Token lists -> idx (B, T) left-padded with 0, start (B,) = index of each row's first real token."""
    T = max(len(s) for s in seqs)
    idx = torch.zeros(len(seqs), T, dtype=torch.long)
    for r, s in enumerate(seqs):
        idx[r, T - len(s):] = torch.tensor(s)
    return idx, torch.tensor([T - len(s) for s in seqs])


def buffer_bytes(config, rows, seq_len, dtype_bytes):
    """Bytes generate() allocates for `rows` sequences of up to seq_len tokens, weights aside: the KV cache (its
    length rounded up as generate rounds it) and about four (rows, V) fp32 logits buffers of a sampling step. The
    memory estimate before training (train_utils.estimate_memory) reads it."""
    S = min(-(-seq_len // 256) * 256, config.max_position_embeddings)
    kv = 2 * config.num_hidden_layers * rows * S * config.num_key_value_heads * config.head_dim * dtype_bytes
    return kv + 4 * rows * config.vocab_size * 4


@torch.no_grad()
def generate(model, prompts, *, num_samples=1, max_new_tokens=256, temperature=1.0, top_p=1.0, top_k=0,
             eos_ids=(), stop=(), tokenizer=None, seed=None, cuda_graph=None, compile=False, on_step=None, keep=False):
    """prompts: list of token-id lists. Row i*num_samples+g of the result is prompt i's g-th sample.
    keep: keep this call's decode step (its KV cache, output buffers and CUDA graph) for the next keep=True call
    with the same model weights, shape (rows, cache length, max_new_tokens) and sampling settings, which then skips
    the set-up (cache allocation, warm-up and graph capture: ~0.1 s on a GPU). The memory stays held until the
    next call that cannot reuse it, or release()."""
    check_sampling(temperature, top_p, top_k, max_new_tokens, num_samples)
    cfg, dev = model.config, model.lm_head.weight.device
    P, G = len(prompts), num_samples
    N, Tp = P * G, max(len(p) for p in prompts)
    if min(len(p) for p in prompts) == 0:
        raise ValueError("empty prompt: every prompt needs at least one token")
    if Tp + max_new_tokens > cfg.max_position_embeddings:
        raise ValueError(f"prompt of {Tp} tokens + {max_new_tokens} new tokens exceeds the model's context of "
                         f"{cfg.max_position_embeddings}: shorten the prompt or lower --max-new-tokens")
    if stop and tokenizer is None:
        raise ValueError("stop strings need a tokenizer to decode the text")
    idx, start = (t.to(dev) for t in pad_left(prompts))  # (P, Tp), (P,)

    # Cache length rounded up to a multiple of 256 so that calls with similar lengths share one shape (a kept or
    # compiled decode step is then reused); masks and kernels only ever read the slots written so far.
    S = min(-(-(Tp + max_new_tokens) // 256) * 256, cfg.max_position_embeddings)
    graph = (dev.type == "cuda" if cuda_graph is None else cuda_graph) and max_new_tokens > 1
    key = (id(model), tuple(p.data_ptr() for p in model.parameters()), model.use_kernels, N, S, max_new_tokens,
           temperature, top_k, top_p, tuple(sorted(eos_ids)), seed is None, compile, graph)
    step = _kept.pop(key, None) if keep else None
    _kept.clear()  # (a kept step of another shape is freed before this call allocates its own)
    if step is None:
        gen = torch.Generator(dev).manual_seed(seed) if seed is not None else None
        step = DecodeStep(model, KVCache(cfg, N, S, dev, model.lm_head.weight.dtype), start.repeat_interleave(G),
                          Tp, max_new_tokens, temperature, top_k, top_p, eos_ids, gen, compile)
    else:
        step.reset(start.repeat_interleave(G), Tp, seed)
    h = model(idx, start=start, cache=step.cache, slots=torch.arange(Tp, device=dev), return_hidden=True)
    step.record(model.lm_head(h[:, -1]).repeat_interleave(G, 0))  # token 0, from the prefill's logits (N, V)
    if graph and step.graph is None:
        step.capture()
    overlap = dev.type == "cuda" if OVERLAP_CHECKS is None else OVERLAP_CHECKS
    checks = HostChecks(step, stop, tokenizer, overlap)
    for t in range(max_new_tokens):  # t: the output column sampled last
        if t > 0:
            step()
        if on_step is not None:
            on_step(step.tokens[:, :t + 1], step.done)
        if (t + 1) % CHECK_EVERY == 0 or t == max_new_tokens - 1:  # the host looks at the results only here
            T = checks(t, last=t == max_new_tokens - 1)  # the output's columns, once every row is done
            if T is not None:
                break

    if bool(step.logprobs.isnan().any()):  # NaN logits: a sample of them is token 0, silently (one sync per call)
        raise ValueError("the model's logits are NaN (its weights or activations overflowed, as fp16 can): sample "
                         "in bfloat16 or float32 (--dtype), or load an earlier checkpoint")
    lengths = torch.where(step.done, step.lengths, T).cpu()
    real = torch.arange(T)[None] < lengths[:, None]  # (N, T)
    tokens, logprobs = step.tokens[:, :T].cpu() * real, step.logprobs[:, :T].cpu() * real
    eos_hit = torch.isin(tokens.gather(1, (lengths - 1).clamp(min=0)[:, None])[:, 0], step.eos.cpu())
    finish = ["stop" if r in checks.stopped else "eos" if eos_hit[r] else "length" for r in range(N)]
    texts = tokenizer.decode_batch([tokens[r, :lengths[r]].tolist() for r in range(N)]) if tokenizer else []
    if keep:
        _kept[key] = step
    return Generation(tokens, lengths, logprobs, finish, texts)


_kept = {}  # generate(keep=True)'s decode step, by its key: one at most


def release():
    """Free the decode step generate(keep=True) kept: its KV cache, buffers and CUDA graph."""
    _kept.clear()


class HostChecks:
    """What the host checks every CHECK_EVERY decode steps: stop strings in the new text, and whether every row is
    done. A check copies the new tokens and the done flags to the host. With `overlap` (the default on CUDA) the
    copy is not waited for: the host looks at the copy made one check earlier, while the GPU decodes the steps
    queued since, so searching text (milliseconds for a big batch) costs no GPU time. The result is the same;
    generation only ends up to CHECK_EVERY steps later than it would with a waiting look."""

    def __init__(self, step, stop, tokenizer, overlap):
        self.step, self.stop, self.tokenizer, self.overlap = step, stop, tokenizer, overlap
        self.stopped = {}  # row -> completion length cut at a stop string
        self.copied = 0  # output columns copied for the stop search so far
        self.views = []  # copies not looked at yet: (t, first column, tokens (N, W), done (N,), copy-done event)

    def __call__(self, t, last):
        """At output column t -> the number of output columns if every row is done by then (or at the last
        step), else None."""
        lo = max(0, self.copied - STOP_MARGIN) if self.stop else t + 1  # a stop string may straddle two checks
        copy = lambda x: x.to("cpu", non_blocking=True, copy=True)
        tokens, done = copy(self.step.tokens[:, lo:t + 1]), copy(self.step.done)
        event = torch.cuda.Event() if self.step.done.is_cuda else None  # (the copies went to pinned memory)
        if event is not None:
            event.record()
        self.views.append((t, lo, tokens, done, event))
        self.copied = t + 1
        while self.views and (last or not self.overlap or len(self.views) > 1):
            t_view, lo, tokens, done, event = self.views.pop(0)
            if event is not None:
                event.synchronize()
            if self._look(lo, tokens, done):
                return t_view + 1
        return t + 1 if last else None

    def _look(self, lo, tokens, done):
        """Stop strings in one copy: mark their rows done on the device -> whether every row is done now."""
        if self.stop:
            for r in self.stopped:
                done[r] = True  # (an earlier look found its stop: the copy was taken before that look)
            for r, n in _find_stops(tokens, done, self.stop, self.tokenizer).items():
                self.stopped[r], done[r] = lo + n, True
                self.step.done[r], self.step.lengths[r] = True, lo + n  # scalar fills: no wait for the GPU
        return bool(done.all())


def _find_stops(tokens, done, stop, tokenizer):
    """Rows not done whose text in tokens (N, W) contains a stop string -> the shortest prefix length that does."""
    rows = (~done).nonzero()[:, 0].tolist()
    tails = tokens[rows].tolist()
    found = {}
    for r, ids, text in zip(rows, tails, tokenizer.decode_batch(tails, skip_special=False)):
        if not any(s in text for s in stop):
            continue
        for n in range(1, len(ids) + 1):  # the shortest prefix that contains a stop string
            if any(s in tokenizer.decode(ids[:n], skip_special=False) for s in stop):
                found[r] = n
                break
    return found


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint directory or a known name (model.KNOWN_MODELS)")
    p.add_argument("--prompt", required=True, help="the problem or text to continue")
    p.add_argument("--template", choices=TEMPLATES, default="auto",
                   help="plain: the text as is; chat: the checkpoint's chat template; r1: the R1-Zero template; "
                        "r1-chat: its instruction as the system turn; auto: chat if the checkpoint's template opens "
                        "<think>, r1-chat for instruct models, else r1")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="bfloat16, float16 or float32 (default: bf16 on cuda, fp32 on cpu)")
    p.add_argument("--no-kernels", action="store_true", help="PyTorch reference attention instead of Triton")
    p.add_argument("--no-cuda-graph", action="store_true", help="launch every decode step eagerly")
    p.add_argument("--compile", action="store_true", help="torch.compile the plain decode step (--no-kernels or "
                   "CPU; slow first call). The default GPU path is fused kernels in one CUDA graph already")
    args = p.parse_args(argv)
    model, tok = load_model(args.model, args.device, args.dtype, kernels=not args.no_kernels)
    model.eval()
    text = render_prompt(args.prompt, resolve_template(args.template, args.model, tok), tok)
    printed = [0]

    def stream(tokens, done):  # one sample: print the text as it grows
        if done[0]:
            return
        new = tok.decode(tokens[0].tolist())
        if not new.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            print(new[printed[0]:], end="", flush=True)
            printed[0] = len(new)

    out = generate(model, [tok.encode(text)], num_samples=args.num_samples, max_new_tokens=args.max_new_tokens,
                   temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed,
                   eos_ids=tok.eos_ids, tokenizer=tok, compile=args.compile,
                   cuda_graph=model.lm_head.weight.is_cuda and not args.no_cuda_graph,
                   on_step=stream if args.num_samples == 1 else None)
    if args.num_samples == 1:
        print(out.texts[0][printed[0]:])
    else:
        for i, t in enumerate(out.texts):
            print(f"--- sample {i} ({out.lengths[i]} tokens, {out.finish[i]})\n{t}")


if __name__ == "__main__":
    try:  # train_utils.run_cli's rule, written out: train_utils imports this module
        main()
    except (FileNotFoundError, ValueError, ImportError) as e:
        sys.exit(f"error: {e}")
