"""Where a decode step's time goes (development aid): replay-only time and a torch.profiler table."""
import sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model import ModelConfig, Qwen2, KVCache  # noqa: E402
from sample import DecodeStep, sample_token, generate  # noqa: E402
from bench_sample import QWEN25_05B  # noqa: E402

torch.manual_seed(0)
m = Qwen2(ModelConfig(**QWEN25_05B)).cuda().to(torch.bfloat16).eval()
m.lm_head.weight = m.model.embed_tokens.weight
for kern in ([False, True] if len(sys.argv) > 1 else [False]):
    m.use_kernels = kern
    for B in (1, 64, 256):
        with torch.no_grad():
            cache = KVCache(m.config, B, 64 + 512, "cuda", torch.bfloat16)
            start = torch.zeros(B, dtype=torch.long, device="cuda")
            step = DecodeStep(m, cache, start, 64, True)
            tok = torch.zeros(B, dtype=torch.long, device="cuda")
            for i in range(5): step(tok, 64 + i)
            torch.cuda.synchronize(); t = time.perf_counter()
            for i in range(100): logits = step(tok, 64 + i)
            torch.cuda.synchronize(); dt_step = (time.perf_counter() - t) / 100
            t = time.perf_counter()
            for i in range(100): sample_token(logits, 1.0)
            torch.cuda.synchronize(); dt_samp = (time.perf_counter() - t) / 100
            p = torch.randint(0, 1000, (B, 64)).tolist()
            generate(m, p, max_new_tokens=16, seed=0)
            torch.cuda.synchronize(); t = time.perf_counter()
            generate(m, p, max_new_tokens=256, seed=0)
            torch.cuda.synchronize(); dt_gen = (time.perf_counter() - t) / 256
        print(f"kernels={kern} B={B}: replay {dt_step * 1e3:.2f} ms, sample_token {dt_samp * 1e3:.2f} ms, "
              f"generate {dt_gen * 1e3:.2f} ms/token-step", flush=True)
activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
with torch.profiler.profile(activities=activities) as prof:
    with torch.no_grad():
        generate(m, torch.randint(0, 1000, (64, 64)).tolist(), max_new_tokens=64, seed=0)
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25))
