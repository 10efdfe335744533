"""
One decode step of generation as one unit, and the sampling rule it applies.

sample.generate prefills the prompts, then calls a DecodeStep once per new token. The step does all the per-token
work on the device: the forward over the KV cache, temperature / top-k / top-p, the exponential-race draw
(argmax p / E, E ~ Exp(1): multinomial sampling with no host sync), the sampled token's log-prob, EOS / done
bookkeeping and the writes into the output buffers. Nothing in it reads a value back to the host, so on CUDA
`capture()` records it as one CUDA graph and each token costs one replay; the host looks at the buffers only
every few steps (sample.CHECK_EVERY), for stop strings and for "all rows done".

Two forwards sit behind it: the plain model forward (model.Qwen2 with a cache: the readable path, CPU,
--no-kernels) and the fast path of kernels/step.py (packed q/k/v and gate/up GEMMs, fused Triton kernels, and
plain temperature sampling inside the LM head's GEMM: sample_token's exponential race on each tile of logits, its
noise drawn in the kernel by Philox keyed by the call's seed, so a seeded run repeats its tokens; and the booking
of the token, record_step_ref below, as one kernel).

Shape legend: N rows, V vocab.
"""
import functools

import torch

from kernels import HEAD_DIMS
from model import strict_compile


def sample_token(logits, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    """logits (N, V) fp32 -> token (N,), its log-prob (N,) under softmax(logits / temperature)."""
    if temperature == 0:  # greedy
        tok = logits.argmax(-1)
        return tok, logits.log_softmax(-1).gather(1, tok[:, None])[:, 0]
    logits = logits / temperature
    logp = logits.log_softmax(-1)  # (N, V) what the trainer scores
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        # Nucleus: keep the smallest set of most likely tokens whose mass reaches top_p (always at least one).
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # mass before this token already reached top_p
        drop[:, 0] = False  # the most likely token always stays, whatever top_p
        logits = logits.scatter(1, order, sorted_logits.masked_fill(drop, float("-inf")))
    # Sampling as argmax(p / E) with E ~ Exp(1): the same distribution as multinomial, with no host sync.
    probs = logits.softmax(-1)
    noise = torch.empty_like(probs).exponential_(1, generator=generator)
    tok = (probs / noise).argmax(-1)
    return tok, logp.gather(1, tok[:, None])[:, 0]


def record_step_ref(tok, lp, eos, t, slot, tokens, logprobs, lengths, done, tok_next, advance_slot):
    """Book sampled tokens tok (N,), log-probs lp (N,) into output column t (a (1,) device tensor), in place: a
    finished row records padding (0, 0.0); a row whose token is in eos (E,) ends here (lengths = t + 1, done);
    tok_next = tok feeds the next step; t += 1, and slot += 1 if advance_slot. (kernels/sampling.py: record_step
    is the same in one kernel.)"""
    tokens.index_copy_(1, t, tok.masked_fill(done, 0)[:, None])
    logprobs.index_copy_(1, t, lp.masked_fill(done, 0.0)[:, None])
    hit = (tok[:, None] == eos).any(1) & ~done  # (torch.isin sorts many ids: uncapturable)
    lengths.copy_(torch.where(hit, t + 1, lengths))
    done |= hit
    tok_next.copy_(tok)
    t += 1
    if advance_slot:
        slot += 1


def decode_forward(model, tok, slot, start, cache):
    """The plain decode step: tok (N,) written to cache slot (1,) -> next-token logits (N, V)."""
    return model.lm_head(model(tok[:, None], start=start, cache=cache, slots=slot, return_hidden=True)[:, -1])


@functools.cache
def compiled_decode():
    """decode_forward through torch.compile (generate(compile=True)): for the plain path only (--no-kernels, CPU);
    the fast path is already fused kernels in one CUDA graph. Built once, one compile per (N, S) shape."""
    return strict_compile(decode_forward, dynamic=False)


class DecodeStep:
    """The whole decode step: forward over the cache, sampling, the token's log-prob, EOS / done bookkeeping and
    the writes into `tokens`, `logprobs`, `lengths`, `done`, all on the device (no host sync), so that capture()
    makes it one CUDA graph. Fast path (model.use_kernels on CUDA): kernels/step.py, with plain temperature
    sampling in one kernel (sample_token's race on in-kernel noise); else the plain forward and sample_token."""

    def __init__(self, model, cache, start, first_slot, max_new_tokens, temperature, top_k, top_p, eos_ids,
                 generator=None, compile=False):
        N, dev = cache.k.shape[1], cache.k.device
        self.cache, self.start, self.gen, self.sampling = cache, start, generator, (temperature, top_k, top_p)
        self.fast = None
        if model.use_kernels and dev.type == "cuda" and model.config.head_dim in HEAD_DIMS:
            from kernels.step import FastDecode
            self.fast = FastDecode(model)  # packs this call's weights
        self.forward = self.fast or functools.partial(compiled_decode() if compile else decode_forward, model)
        self.eos = torch.tensor(sorted(eos_ids), dtype=torch.long, device=dev)
        self.tok = torch.zeros(N, dtype=torch.long, device=dev)  # the token fed to the next step
        self.slot = torch.full((1,), first_slot, dtype=torch.long, device=dev)  # the cache slot it is written to
        self.t = torch.zeros(1, dtype=torch.long, device=dev)  # the output column of the next sampled token
        self.key = torch.tensor([self.noise_key()], device=dev)  # the fast sampler's Philox key, one per call
        self.tokens = torch.zeros(N, max_new_tokens, dtype=torch.long, device=dev)
        self.logprobs = torch.zeros(N, max_new_tokens, device=dev)
        self.done = torch.zeros(N, dtype=torch.bool, device=dev)
        self.lengths = torch.full((N,), max_new_tokens, device=dev)
        self.graph = None

    def reset(self, start, first_slot, seed=None):
        """Ready this step for another generate call of the same shape (generate(keep=True)): the weights packed
        again (the trainer may have changed them), the buffers cleared, the generator seeded. Every buffer keeps its
        address, so a captured CUDA graph replays the new call as it is."""
        if self.fast is not None:
            self.fast.repack()
        if start is not None:
            self.start.copy_(start)
        self.slot.fill_(first_slot)
        for b in (self.t, self.tokens, self.logprobs, self.done):
            b.zero_()
        self.lengths.fill_(self.tokens.shape[1])
        if seed is not None:
            self.gen.manual_seed(seed)
        self.key.fill_(self.noise_key())

    def noise_key(self):
        """The fast sampler's Philox key, an int drawn on the host: the generator's seed when the call is seeded (a
        seeded run repeats its tokens), else a draw from torch's CPU stream. Never a draw from the CUDA generator:
        one registered with a captured graph refuses draws outside the graph."""
        return self.gen.initial_seed() if self.gen is not None else int(torch.randint(2**62, (1,)))

    def fast_sampling(self):
        """Plain temperature sampling on the fast path: the race kernels draw the token (else sample_token)."""
        temperature, top_k, top_p = self.sampling
        return self.fast is not None and temperature > 0 and top_k == 0 and top_p == 1.0

    def sample(self, logits):
        """logits (N, V) -> token (N,), fp32 log-prob (N,) under softmax(logits / temperature)."""
        temperature, top_k, top_p = self.sampling
        if self.fast_sampling():
            return self.fast.sample(logits, temperature, self.key, self.t)  # noise from (key, output column)
        return sample_token(logits.float(), temperature, top_k, top_p, self.gen)

    def book(self, tok, lp, advance_slot):
        """Book the sampled tokens into column t (record_step_ref); advance_slot: also move on to the next cache
        slot (a decode step; not the prefill's token)."""
        book = self.fast.record if self.fast is not None else record_step_ref
        book(tok, lp, self.eos, self.t, self.slot, self.tokens, self.logprobs, self.lengths, self.done, self.tok,
             advance_slot)

    def record(self, logits):
        """Sample from logits (N, V) and book the token; a finished row records padding."""
        self.book(*self.sample(logits), advance_slot=False)

    def _step(self):
        if self.fast_sampling() and self.forward is self.fast:  # LM head + race in one pass, no logits tensor
            tok, lp = self.fast.sample_next(self.tok, self.slot, self.start, self.cache, self.sampling[0], self.key,
                                            self.t)
        else:
            tok, lp = self.sample(self.forward(self.tok, self.slot, self.start, self.cache))  # logits (N, V)
        self.book(tok, lp, advance_slot=True)

    def capture(self):
        """Record the step as a CUDA graph. The warm-up runs it twice for real (compiling kernels, setting up
        cuBLAS): the state it changes is put back after, and its two cache writes go to the slots the first two
        replays rewrite."""
        buffers = (self.tok, self.slot, self.t, self.tokens, self.logprobs, self.done, self.lengths)
        state = [b.clone() for b in buffers]
        rng = self.gen.get_state() if self.gen is not None else None
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._step()
        torch.cuda.current_stream().wait_stream(stream)
        for b, s in zip(buffers, state):
            b.copy_(s)
        self.graph = torch.cuda.CUDAGraph()
        if self.gen is not None:  # registered: each replay draws fresh numbers from the seeded stream
            self.gen.set_state(rng)
            self.graph.register_generator_state(self.gen)
        with torch.cuda.graph(self.graph):
            self._step()

    def __call__(self):
        """Decode one token for every row."""
        if self.graph is not None:
            self.graph.replay()
        else:
            self._step()
