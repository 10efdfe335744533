"""
Generation throughput on the Qwen2.5-0.5B shape (random weights, bf16): our sample.generate against transformers'
`generate` with the same weights and settings, measured in the same run.

    python bench/bench_sample.py                 # batch 1, 64, 256 x 512 new tokens; JSON to $OUT or .
    python bench/bench_sample.py --batches 64 --new-tokens 128

Settings for every contender: 64-token random prompts, sampling at temperature 1 (no top-k/top-p), no EOS (every
row generates exactly --new-tokens tokens). Baselines: transformers eager (dynamic cache) and its strongest
single-GPU setting, a static cache with torch.compile. Ratios are ours over each baseline.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model import ModelConfig, Qwen2  # noqa: E402
from sample import generate  # noqa: E402

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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256])
    p.add_argument("--new-tokens", type=int, default=512)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--only", nargs="*", default=None, help="run only these contenders (names as printed)")
    p.add_argument("--hf-compile-batches", type=int, nargs="*", default=None,
                   help="batches for the static-cache + compile baseline (default: all)")
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
    res = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, transformers=transformers.__version__,
               new_tokens=N, prompt_len=args.prompt_len, results={})

    def ours_gen(B, use_kernels, cuda_graph, n=N, compile=False):
        ours.use_kernels = use_kernels
        prompts = torch.randint(0, 151000, (B, args.prompt_len)).tolist()
        return generate(ours, prompts, max_new_tokens=n, temperature=1.0, seed=0, cuda_graph=cuda_graph,
                        compile=compile)

    def hf_gen(B, n=N, **kw):
        x = torch.randint(0, 151000, (B, args.prompt_len), device=dev)
        return hf.generate(x, attention_mask=torch.ones_like(x), do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                           max_new_tokens=n, min_new_tokens=n, eos_token_id=None, pad_token_id=0, **kw)

    try:
        import kernels.decode  # noqa: F401
        have_kernels = True
    except ImportError:
        have_kernels = False
    contenders = [("ours_kernels_graph", lambda B, n=N: ours_gen(B, True, True, n))] if have_kernels else []
    contenders += [("ours_kernels_compile_graph", lambda B, n=N: ours_gen(B, True, True, n, True))] if have_kernels \
        else []
    contenders += [("ours_ref_compile_graph", lambda B, n=N: ours_gen(B, False, True, n, True)),
                   ("ours_ref_graph", lambda B, n=N: ours_gen(B, False, True, n)),
                   ("ours_ref_eager", lambda B, n=N: ours_gen(B, False, False, n))]
    if not args.skip_hf:
        contenders += [("hf_eager", lambda B, n=N: hf_gen(B, n))]
        compile_batches = args.hf_compile_batches if args.hf_compile_batches is not None else args.batches
        contenders += [("hf_static_compile", lambda B, n=N: hf_gen(B, n, cache_implementation="static")
                        if B in compile_batches else None)]
    if args.only:
        contenders = [(n, f) for n, f in contenders if n in args.only]
    out = Path(os.environ.get("OUT", ".")) / "bench_sample.json"
    for name, fn in contenders:  # contender-major: ours first, the slow-to-compile baseline last
        for B in args.batches:
            if name == "ours_ref_eager" and B != 64:
                continue  # only to show what the CUDA graph buys
            try:
                # Warm-up at the timed shapes (steady state, as in training): Triton autotunes and torch.compile
                # compiles once per shape, which a shorter warm-up would leave inside the timed call.
                if fn(B, N if name.startswith("ours") or "compile" in name else 16) is None:
                    continue
                _, dt, peak = timed(lambda: fn(B))
                r = dict(tok_s=B * N / dt, s=dt, peak_gib=peak, name=name)
            except Exception as e:  # a baseline that fails is reported, not fatal
                r = dict(error=f"{type(e).__name__}: {str(e)[:200]}")
            res["results"][f"{name}_B{B}"] = r
            print(f"B={B:4d} {name:26s} {r}", flush=True)
            out.write_text(json.dumps(res, indent=1))  # after every result: a run cut short still reports

    print(f"\n{res['device']}, {N} new tokens, prompt {args.prompt_len}, sampling T=1")
    print(f"{'batch':>6} {'ours tok/s':>11} {'hf eager':>10} {'hf static+compile':>18} {'x eager':>8} "
          f"{'x compile':>9} {'peak GiB':>9}")
    for B in args.batches:
        r = res["results"]
        ours_runs = [r[k] for k in r if k.startswith("ours_") and k.endswith(f"_B{B}") and "tok_s" in r[k]]
        best = max(ours_runs, key=lambda x: x["tok_s"], default={})
        he, hc = r.get(f"hf_eager_B{B}", {}).get("tok_s"), r.get(f"hf_static_compile_B{B}", {}).get("tok_s")
        ours_ts = best.get("tok_s")

        def ratio(x):
            return f"{ours_ts / x:.1f}" if ours_ts and x else "-"
        print(f"{B:>6} {ours_ts or 0:>11.0f} {he or 0:>10.0f} {hc or 0:>18.0f} {ratio(he):>8} {ratio(hc):>9} "
              f"{best.get('peak_gib', 0):>9.2f}  {best.get('name', '')}")
        res["results"][f"ratio_B{B}"] = dict(vs_eager=ours_ts / he if ours_ts and he else None,
                                            vs_static_compile=ours_ts / hc if ours_ts and hc else None)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
