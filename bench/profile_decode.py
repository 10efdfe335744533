"""Where a decode step's GPU time goes (development aid): what a generate call spends outside the replays (prefill
and packing, warm-up and capture), then the kernels of one step of the fast path, by total time.

    python bench/profile_decode.py [BATCH [CONTEXT]]   # default 64 rows, 64 cache slots filled before the step;
                                                       # the Qwen2.5-0.5B shape, random weights, bf16
The kernel table is taken with programmatic dependent launch off: with it, a kernel's time would include its wait
for the kernel before it.
"""
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_sample import QWEN25_05B, make_step  # noqa: E402
from model import ModelConfig, Qwen2  # noqa: E402
import kernels.step as step_kernels  # noqa: E402

B = int(sys.argv[1]) if len(sys.argv) > 1 else 64
CONTEXT = int(sys.argv[2]) if len(sys.argv) > 2 else 64
torch.manual_seed(0)
m = Qwen2(ModelConfig(**QWEN25_05B)).cuda().to(torch.bfloat16).eval()
m.lm_head.weight = m.model.embed_tokens.weight
m.use_kernels = True


def seconds(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t


make_step(m, B, CONTEXT, 512).capture()  # warm-up: autotuning and first compiles
step, t_make = seconds(lambda: make_step(m, B, CONTEXT, 512))
_, t_capture = seconds(step.capture)
_, t_replay = seconds(lambda: [step() for _ in range(511)])
print(f"batch {B}: prefill + pack {t_make * 1e3:.1f} ms, warm-up + capture {t_capture * 1e3:.1f} ms, "
      f"511 replays {t_replay * 1e3:.1f} ms ({t_replay / 511 * 1e3:.3f} ms each)")
step_kernels.PDL_MAX_ROWS = 0
step = make_step(m, B, CONTEXT, 64)
with torch.no_grad():
    for _ in range(3):
        step._step()  # warm-up (autotuning)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            step._step()
        torch.cuda.synchronize()
print(f"batch {B}, context {CONTEXT}, 10 eager decode steps (the kernels a graph replay runs), PDL off")
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=90))
