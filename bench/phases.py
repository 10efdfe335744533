"""
Where a generate call's time goes (a benchmark aid): sample.generate wrapped so that each call records, in ms, the
phases between device syncs:
  set_up       the host's work before the kept decode step's reset (argument checks, padding, the step's key);
  reset        the weights packed again and the buffers cleared (decode_step.DecodeStep.reset);
  prefill      the prompts' forward over the KV cache;
  token_0      the prefill's last logits sampled and booked;
  decode_loop  the decode steps (graph replays) and the host checks up to the last new token;
  finish       the last check, the copies to the host, the NaN check, the texts.
A call that builds its own step (the first of a shape) or stops before its last token records only its total.

    calls = []
    gen = phased(sample.generate, calls)    # then call gen as generate; calls[i] is the i-th call's phases
"""
import time

import torch

from decode_step import DecodeStep

PHASES = ("set_up", "reset", "prefill", "token_0", "decode_loop", "finish")


def phased(generate, calls):
    """generate(*args, max_new_tokens=..., **kw) wrapped: each call appends its phases (ms) to calls."""
    def run(*args, **kw):
        marks, n_new = [], kw["max_new_tokens"]

        def mark():
            torch.cuda.synchronize()
            marks.append(time.perf_counter())

        def reset(self, *a, **k):
            mark()
            plain_reset(self, *a, **k)
            mark()

        def record(self, *a, **k):
            mark()
            plain_record(self, *a, **k)

        plain_reset, plain_record = DecodeStep.reset, DecodeStep.record
        DecodeStep.reset, DecodeStep.record = reset, record
        try:
            mark()
            out = generate(*args, on_step=lambda tokens, done: mark() if tokens.shape[1] in (1, n_new) else None,
                           **kw)
            mark()
        finally:
            DecodeStep.reset, DecodeStep.record = plain_reset, plain_record
        total = {"total": (marks[-1] - marks[0]) * 1e3}
        if len(marks) != len(PHASES) + 1:
            calls.append(total)
        else:
            calls.append({k: (b - a) * 1e3 for k, a, b in zip(PHASES, marks, marks[1:])} | total)
        return out
    return run


def mean_phases(calls):
    """The mean of each phase over the calls that recorded them all ({} if none did)."""
    full = [c for c in calls if len(c) > 1]
    return {k: sum(c[k] for c in full) / len(full) for k in (*PHASES, "total")} if full else {}
