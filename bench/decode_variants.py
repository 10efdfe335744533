"""
How kernels/step.py's row bounds and the tilings of its Triton GEMMs were chosen: each alternative measured in the
same process, on the Qwen2.5-0.5B shape (random weights, bf16).

    python bench/decode_variants.py                  # all three parts; JSON to $OUT (or .) as decode_variants.json
    python bench/decode_variants.py gate_up lm_head  # only the kernel sweeps

  gate_up  kernels/skinny.py's gate_up_silu under 14 tilings against cuBLAS's GEMM + silu_mul, at 1-256 rows, with
           cold weights (24 layers' worth, one CUDA graph over them, as a decode step meets them).
  lm_head  kernels/sampling.py's sample_lm_head under 8 tilings against cuBLAS's LM head + sample_race; a tiling
           whose tokens differ from the twin's (sample_race_ref on race_noise) is reported, not timed.
  step     whole decode steps replayed as CUDA graphs (bench_sample.replay_seconds, 512 new tokens) with each
           switch of kernels/step.py and kernels/decode.py the other way round from the default (the norm-in-prologue
           fold at 1, 4, 16 and 64 rows, the others at 1, 64, 128 and 256).
Each row is microseconds (kernels) or milliseconds per step (steps); ratios are for the reader to take.
"""
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import kernels.decode as decode  # noqa: E402
import kernels.sampling as sampling  # noqa: E402
import kernels.skinny as skinny  # noqa: E402
import kernels.step as step  # noqa: E402
from bench_sample import QWEN25_05B, replay_seconds  # noqa: E402
from kernels.fused import silu_mul  # noqa: E402
from kernels.skinny import graph_us  # noqa: E402
from model import ModelConfig, Qwen2  # noqa: E402

GATE_UP_TILINGS = [(16, 32, 128, 4, 4), (16, 32, 128, 4, 3), (16, 64, 128, 4, 4), (16, 16, 128, 4, 4),
                   (16, 32, 256, 4, 3), (32, 32, 128, 4, 4), (64, 32, 128, 4, 4), (64, 32, 128, 4, 3),
                   (64, 64, 128, 4, 3), (64, 64, 64, 4, 4), (64, 64, 128, 8, 3), (128, 64, 64, 8, 3),
                   (128, 32, 64, 4, 3), (64, 128, 64, 8, 3)]  # (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages)
LM_HEAD_TILINGS = [(16, 128, 128, 4, 3), (16, 256, 64, 4, 3), (16, 64, 128, 4, 3), (64, 128, 64, 8, 3),
                   (64, 128, 64, 4, 3), (64, 64, 128, 4, 3), (128, 128, 64, 8, 3), (128, 64, 64, 8, 3)]


def sweep(module, config_name, tilings, batches, baseline, contender, check=None):
    """{B: {"baseline": us, str(tiling): us or why not}} with module.<config_name> patched to each tiling."""
    real, out = getattr(module, config_name), {}
    try:
        for B in batches:
            x = torch.randn(B, 896, device="cuda", dtype=torch.bfloat16)
            row = {"baseline": baseline(x)}
            for tiling in tilings:
                if tiling[0] > 16 and B == 1:
                    continue
                setattr(module, config_name, lambda B, t=tiling: t)
                bad = check(x) if check else None
                row[str(tiling)] = bad or contender(x)
            row["default"] = str(real(B))
            out[B] = row
            print(f"B={B:3d}", {k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    finally:
        setattr(module, config_name, real)
    return out


def main():
    parts = sys.argv[1:] or ["gate_up", "lm_head", "step"]
    res = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
               date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    if "gate_up" in parts:
        ws = [torch.randn(2 * 4864, 896, device="cuda", dtype=torch.bfloat16) for _ in range(24)]
        res["gate_up_us"] = sweep(skinny, "gate_up_config", GATE_UP_TILINGS, (1, 16, 64, 128, 256),
                                  lambda x: graph_us(lambda w: silu_mul(F.linear(x, w)), ws),
                                  lambda x: graph_us(lambda w: skinny.gate_up_silu(x, w), ws))
    if "lm_head" in parts:
        w = 0.02 * torch.randn(151936, 896, device="cuda", dtype=torch.bfloat16)  # 272 MB: never in L2
        seed, t = torch.tensor([5], device="cuda"), torch.tensor([3], device="cuda")

        def check(x):
            tok, _ = sampling.sample_lm_head(x, w, 1.0, seed, t)
            logits = F.linear(x.float(), w.float()).to(torch.bfloat16)  # exact sums rounded once, as the kernel
            ref, _ = sampling.sample_race_ref(logits, sampling.race_noise(seed, t, x.shape[0], w.shape[0]), 1.0)
            return None if torch.equal(tok, ref) else f"tokens differ in {(tok != ref).sum().item()} rows"
        res["lm_head_us"] = sweep(sampling, "lm_head_race_config", LM_HEAD_TILINGS, (1, 64, 128, 256),
                                  lambda x: graph_us(lambda w: sampling.sample_race(F.linear(x, w), 1.0, seed, t),
                                                     [w], reps=50),
                                  lambda x: graph_us(lambda w: sampling.sample_lm_head(x, w, 1.0, seed, t), [w],
                                                     reps=50), check)
    if "step" in parts:
        torch.manual_seed(0)
        model = Qwen2(ModelConfig(**QWEN25_05B)).to("cuda", torch.bfloat16).eval()
        model.lm_head.weight = model.model.embed_tokens.weight
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.02)
        model.use_kernels = True
        one_chunk = lambda B, K, S, device: 1  # decode attention over the whole cache in one program per (row, head)
        variants = {"default": {}, "cuBLAS LM head + sample_race": dict(LM_RACE_MAX_ROWS=0),
                    "cuBLAS gate/up + silu_mul": dict(GATE_UP_MAX_ROWS=0),
                    "decode attention in one chunk": dict(default_num_splits=one_chunk),
                    "add + RMSNorm in the GEMMs' prologues": dict(NORM_GEMM_MAX_ROWS=64)}
        # Each at 1, 64, 128 and 256 rows, but the fold (it needs gate_up_silu: up to 64 rows) at 1, 4, 16 and 64.
        batches = {"default": (1, 4, 16, 64, 128, 256), "add + RMSNorm in the GEMMs' prologues": (1, 4, 16, 64)}
        home = {"LM_RACE_MAX_ROWS": step, "GATE_UP_MAX_ROWS": step, "NORM_GEMM_MAX_ROWS": step,
                "default_num_splits": decode}
        real = {name: getattr(module, name) for name, module in home.items()}
        res["step_ms"] = {}
        try:
            for B in batches["default"]:
                for label, settings in variants.items():
                    if B not in batches.get(label, (1, 64, 128, 256)):
                        continue
                    for name, value in {**real, **settings}.items():
                        setattr(home[name], name, value)
                    ms = replay_seconds(model, B, 64, 512) * 1e3
                    res["step_ms"][f"B={B} {label}"] = ms
                    print(f"B={B:3d} {label:32s} replay {ms:.3f} ms ({B / ms * 1e3:,.0f} tok/s)", flush=True)
        finally:
            for name, value in real.items():
                setattr(home[name], name, value)
    out = Path(os.environ.get("OUT", ".")) / "decode_variants.json"
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
