"""
Generation throughput on the Qwen2.5-0.5B shape (random weights, bf16): our sample.generate against transformers'
`generate` with the same weights and settings, measured in the same run, and how close a decode step comes to the
memory roofline.

    python bench/bench_sample.py                 # batch 1, 64, 256 x 512 new tokens; JSON to $OUT or .
    python bench/bench_sample.py --batches 64 --new-tokens 128 --skip-hf

Settings for every contender: 64-token random prompts, sampling at temperature 1 (no top-k/top-p), no EOS (every
row generates exactly --new-tokens tokens). Baseline: transformers' strongest single-GPU setting, a static cache
with torch.compile (--hf-eager adds its default dynamic cache). Ratios are ours over each baseline.
Each contender is timed on its second call at the shape, as an RL loop calls it: transformers' static cache and
compiled graphs are reused from the warm-up call, and so is our decode step (generate(keep=True): its KV cache,
buffers and CUDA graph). first_call_s times one of ours that builds its own step (keep=False).

Two more of ours try kernels/step.py's few-row settings the other way round from the default, at the batches where
they differ from it: ours_cublas (every projection by cuBLAS, plain launches) and ours_few_rows (q/k/v, o_proj and
down_proj by kernels/skinny.py's split-K GEMM, programmatic dependent launch).
For our default path (Triton kernels + the whole step as one CUDA graph) it also reports:
  - kernels per decode step, and per layer: counted with torch.profiler over eager runs of the step the graph
    captures (a model cut to 1 and 2 layers gives the per-layer count and the count outside the layers);
  - replay-only time: the captured step replayed for every token, no host work at all;
  - the phases of a kept call (set-up, reset, prefill, token 0, decode loop, finish: bench/phases.py), so that
    what a call spends beyond its replays (~70 ms at every batch on 2026-12-08) is accounted for;
  - roofline share: a step must read every weight once (tied embedding once: the LM head reads it all) and the
    KV cache up to the current slot; bytes / step time against the device-to-device copy bandwidth measured at
    the start of this run (bytes read + bytes written of a 1 GiB copy).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model import KVCache, ModelConfig, Qwen2  # noqa: E402
from decode_step import DecodeStep  # noqa: E402
import sample  # noqa: E402
from sample import generate  # noqa: E402
import kernels.step as step_kernels  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parent))
from phases import phased  # noqa: E402

QWEN25_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, rope_theta=1e6, rms_norm_eps=1e-6,
                  tie_word_embeddings=True, max_position_embeddings=32768)


def timed(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t, torch.cuda.max_memory_allocated() / 2**30


def copy_bandwidth():
    """Device-to-device copy rate in bytes/s (read + write), median of 20 copies of 1 GiB."""
    x = torch.randn(2**29, device="cuda", dtype=torch.bfloat16)
    y = torch.empty_like(x)
    times = []
    for _ in range(22):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        y.copy_(x)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return 2 * x.numel() * x.element_size() / sorted(times[2:])[len(times[2:]) // 2]


def step_bytes(model, B, context):
    """Bytes a decode step must read: every weight once, and k + v of `context` cache slots per row and layer."""
    cfg = model.config
    weights = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())
    kv = 2 * cfg.num_hidden_layers * B * cfg.num_key_value_heads * context * cfg.head_dim * 2  # bf16
    return weights + kv


def make_step(model, B, prompt_len, n_new):
    """A DecodeStep as generate builds it, after a prefill of random prompts, with token 0 recorded."""
    cfg, dev = model.config, "cuda"
    idx = torch.randint(0, 151000, (B, prompt_len), device=dev)
    cache = KVCache(cfg, B, -(-(prompt_len + n_new) // 256) * 256, dev, torch.bfloat16)
    with torch.no_grad():
        h = model(idx, cache=cache, slots=torch.arange(prompt_len, device=dev), return_hidden=True)
        step = DecodeStep(model, cache, None, prompt_len, n_new, 1.0, 0, 1.0, (),
                          torch.Generator(dev).manual_seed(0))
        step.record(model.lm_head(h[:, -1]))
    return step


def replay_seconds(model, B, prompt_len, n_new):
    """Seconds per decode step when the captured step is replayed for every token and nothing else runs."""
    step = make_step(model, B, prompt_len, n_new)
    with torch.no_grad():
        step.capture()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n_new - 1):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / (n_new - 1)


def kernels_per_step(model, B, prompt_len):
    """(kernels per decode step, per layer) of the step the graph captures, counted by torch.profiler."""
    from torch.profiler import ProfilerActivity, profile
    layers, counts = model.model.layers, {}
    try:
        for n in (1, 2, len(layers)):
            model.model.layers = torch.nn.ModuleList(layers[:n])
            step = make_step(model, B, prompt_len, 8)
            with torch.no_grad():
                step._step()  # warm-up: autotuning and first-call work stay out of the count
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    step._step()
                    torch.cuda.synchronize()
            counts[n] = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    finally:
        model.model.layers = layers
    return counts[len(layers)], counts[2] - counts[1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256])
    p.add_argument("--new-tokens", type=int, default=512)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--hf-eager", action="store_true", help="also transformers' default (dynamic-cache) generate")
    p.add_argument("--only", nargs="*", default=None, help="run only these contenders (ours, ours_cublas, ...)")
    args = p.parse_args()
    dev, N = "cuda", args.new_tokens
    torch.manual_seed(0)
    import transformers
    hf_cfg = transformers.Qwen2Config(**QWEN25_05B)
    hf_cfg._attn_implementation = "sdpa"
    hf = transformers.Qwen2ForCausalLM(hf_cfg).to(dev, torch.bfloat16).eval()
    ours = Qwen2(ModelConfig(**QWEN25_05B)).to(dev, torch.bfloat16).eval()
    ours.lm_head.weight = ours.model.embed_tokens.weight
    ours.load_state_dict({k: v for k, v in hf.state_dict().items() if k in ours.state_dict()})
    bw = copy_bandwidth()
    res = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, transformers=transformers.__version__,
               date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), new_tokens=N, prompt_len=args.prompt_len,
               copy_bandwidth_tb_s=bw / 1e12, results={})
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s", flush=True)
    out = Path(os.environ.get("OUT", ".")) / "bench_sample.json"

    default_rows = step_kernels.SKINNY_MAX_ROWS, step_kernels.PDL_MAX_ROWS

    def ours_gen(B, use_kernels, rows=default_rows, keep=True, **kw):  # rows: (SKINNY_MAX_ROWS, PDL_MAX_ROWS)
        ours.use_kernels = use_kernels
        step_kernels.SKINNY_MAX_ROWS, step_kernels.PDL_MAX_ROWS = rows
        prompts = torch.randint(0, 151000, (B, args.prompt_len)).tolist()
        return generate(ours, prompts, max_new_tokens=N, temperature=1.0, seed=0, keep=keep, **kw)

    def hf_gen(B, **kw):
        x = torch.randint(0, 151000, (B, args.prompt_len), device=dev)
        return hf.generate(x, attention_mask=torch.ones_like(x), do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                           max_new_tokens=N, min_new_tokens=N, eos_token_id=None, pad_token_id=0, **kw)

    few_row_contenders = {"ours_cublas": lambda B: (0, 0), "ours_few_rows": lambda B: (B, B)}  # B -> their rows
    contenders = [("ours", lambda B: ours_gen(B, True)), ("ours_plain_graph", lambda B: ours_gen(B, False))]
    contenders += [(name, lambda B, rows=rows: ours_gen(B, True, rows=rows(B)))
                   for name, rows in few_row_contenders.items()]
    if not args.skip_hf:
        contenders += [("hf_static_compile", lambda B: hf_gen(B, cache_implementation="static"))]
        contenders += [("hf_eager", hf_gen)] if args.hf_eager else []
    contenders = [(name, fn) for name, fn in contenders if args.only is None or name in args.only]
    for name, fn in contenders:  # contender-major: ours first, the slow-to-compile baseline last
        for B in args.batches:
            if name == "ours_plain_graph" and B != 64:
                continue  # the plain PyTorch path, to show what the kernels buy
            if name in few_row_contenders:  # only where the default differs: what the few-row settings buy or cost
                if all((B <= r) == (B <= d) for r, d in zip(few_row_contenders[name](B), default_rows)):
                    continue
            try:
                fn(B)  # warm-up at the timed shape: autotuning and torch.compile stay out of the timed call
                _, dt, peak = timed(lambda: fn(B))
                r = dict(tok_s=B * N / dt, s=dt, peak_gib=peak)
                if name == "ours":
                    calls = []  # a kept call again, its phases marked
                    phased(lambda max_new_tokens, **kw: ours_gen(B, True, **kw), calls)(max_new_tokens=N)
                    r["phases_ms"] = calls[0]
                    _, r["first_call_s"], _ = timed(lambda: ours_gen(B, True, keep=False))  # builds its own step
                    context = args.prompt_len + N / 2  # mean cache length over the generation
                    r["replay_ms"] = replay_seconds(ours, B, args.prompt_len, N) * 1e3
                    r["kernels_per_step"], r["kernels_per_layer"] = kernels_per_step(ours, B, args.prompt_len)
                    r["bytes_per_step"] = step_bytes(ours, B, context)
                    r["roofline_tok_s"] = B * bw / r["bytes_per_step"]
                    r["roofline_share"] = r["tok_s"] / r["roofline_tok_s"]
                    r["replay_roofline_share"] = r["bytes_per_step"] / (r["replay_ms"] / 1e3) / bw
                if name in few_row_contenders:  # (ours_gen left its settings)
                    r["replay_ms"] = replay_seconds(ours, B, args.prompt_len, N) * 1e3
            except Exception as e:  # a baseline that fails is reported, not fatal
                r = dict(error=f"{type(e).__name__}: {str(e)[:300]}")
            sample.release()  # (the kept decode step of this shape)
            res["results"][f"{name}_B{B}"] = r
            print(f"B={B:4d} {name:18s} {r}", flush=True)
            out.write_text(json.dumps(res, indent=1))  # after every result: a run cut short still reports

    print(f"\n{res['device']}, {N} new tokens, prompt {args.prompt_len}, sampling T=1, copy {bw / 1e12:.2f} TB/s")
    print(f"{'batch':>6} {'ours tok/s':>11} {'hf static+compile':>18} {'x':>6} {'replay ms':>10} {'roofline':>9} "
          f"{'(replay)':>9} {'kernels/layer':>14} {'/step':>6} {'peak GiB':>9}")
    for B in args.batches:
        r = res["results"]
        o, hc = r.get(f"ours_B{B}", {}), r.get(f"hf_static_compile_B{B}", {}).get("tok_s")
        ratio = o.get("tok_s", 0) / hc if hc and o.get("tok_s") else None
        res["results"][f"ratio_B{B}"] = dict(vs_static_compile=ratio)
        if "tok_s" in o:
            print(f"{B:>6} {o['tok_s']:>11.0f} {hc or 0:>18.0f} {ratio or 0:>6.1f} {o['replay_ms']:>10.3f} "
                  f"{o['roofline_share']:>9.1%} {o['replay_roofline_share']:>9.1%} {o['kernels_per_layer']:>14} "
                  f"{o['kernels_per_step']:>6} {o['peak_gib']:>9.2f}")
    for B in args.batches:
        phases = res["results"].get(f"ours_B{B}", {}).get("phases_ms")
        if phases:
            print(f"batch {B}, one kept call, ms: " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
