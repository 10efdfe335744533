"""
One GRPO step at the size people run on one GPU — Qwen2.5-0.5B shape (random weights), 8 prompts x 16 completions
x 1,024 new tokens — through grpo.py's own loop, with beta = 0 and beta > 0; then the same step built from
`transformers` alone (generate, then forward/backward), in the same process, and the ratio.

    python bench/bench_grpo.py                          # needs a GPU; JSON to $OUT (or .) as bench_grpo.json
    python bench/bench_grpo.py --tokenizer-dir DIR      # another tokenizer (default: the in-repo fixture)
    python bench/bench_grpo.py --tiny --skip-hf         # a seconds-long smoke test of this script, CPU is fine

How the figures are taken:
- Ours: `grpo.main` for 3 steps on the countdown task (R1-Zero template, prompts of ~150 tokens). Random weights
  solve nothing, so every group would have zero spread and be skipped: the accuracy reward is replaced by a
  seeded random number, which keeps every row in training, as a hard step of a real run. Random weights also
  almost never emit EOS, so every completion runs to 1,024 tokens. Step 1 pays for compilation and CUDA-graph
  capture; the figures are the mean of steps 2-3, read from metrics.jsonl. `ours_beta0_unfused` is the β = 0 step
  with q/k/v and gate/up as separate GEMMs in the training pass (model.fused_linear's twin), for the A/B;
  `ours_beta0_per_op` with model.COMPILE_BLOCKS off (the fused functions compiled one by one, not whole layers).
- generate_phases_ms: where the generate call of steps 2.. spends its time (bench/phases.py: reset, prefill, decode
  loop, ...); what generation_s holds beyond it is the rollout's own work.
- Training MFU = 6 * n_params * tokens trained / train time / 989 TFLOP/s (H100/H200 SXM bf16 dense), the formula
  the 18% transformers figure in ../shared/reference used; attention FLOPs are not counted in either.
- transformers: Qwen2ForCausalLM (sdpa attention), `generate` of 8 x 16 rows (min_new_tokens = 1,024) — eager,
  and again with its strongest setting, a static cache (which transformers compiles; warmed up untimed) — then a
  no-grad pass for the old log-probs and the clipped loss forward/backward in micro-batches of 8 with gradient
  checkpointing and one AdamW step, as a user writes it without a framework.

Results, with device and date: README.md (GRPO section) and docs/bench/bench_grpo_*.json.
"""
import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("TQDM_DISABLE", "1")  # one printed line per step is enough in a log
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))
import grpo  # noqa: E402
import model  # noqa: E402
from phases import mean_phases, phased  # noqa: E402
from model import ModelConfig, Qwen2  # noqa: E402

QWEN05 = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
              num_attention_heads=14, num_key_value_heads=2, rope_theta=1e6, rms_norm_eps=1e-6,
              tie_word_embeddings=True, max_position_embeddings=32768, eos_token_id=151643)
PEAK_FLOPS = 989e12  # H100 SXM, bf16 dense
P, G, NEW = 8, 16, 1024
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def random_checkpoint(out_dir, tokenizer_dir):
    """The 0.5B shape with weights drawn like transformers initialises them (std 0.02, norms 1)."""
    torch.manual_seed(0)
    m = Qwen2(ModelConfig(**QWEN05)).to(DEV, torch.bfloat16 if DEV == "cuda" else torch.float32)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.fill_(1.0) if "norm" in name else p.normal_(0, 0.02)
    m.save_pretrained(out_dir, tokenizer_dir=tokenizer_dir)
    return sum(p.numel() for p in m.parameters())


def separate_linears(x, linears):
    """model.fused_linear's naive twin: each projection its own GEMM (the training pass before fusion, for A/B)."""
    return torch.cat([lin(x) for lin in linears], dim=-1)


def ours(ckpt, out_dir, n_params, beta, micro_batch, steps=3, checkpointing=False, fused=True, blocks=True):
    """Mean figures of steps 2.. of `grpo.py` itself, from its metrics. fused=False: q/k/v and gate/up as separate
    GEMMs in training (the sampler packs its own copy either way). blocks=False: model.COMPILE_BLOCKS off (each
    fused function compiled on its own in training, not whole decoder layers)."""
    rng = random.Random(0)
    real, real_linear, real_blocks = grpo.rewards.accuracy_reward, model.fused_linear, model.COMPILE_BLOCKS
    real_generate, calls = grpo.generate, []
    if not fused:
        model.fused_linear = separate_linears
    model.COMPILE_BLOCKS = blocks
    grpo.rewards.accuracy_reward = lambda completion, example, checker=None: rng.random()  # every group: spread
    if DEV == "cuda":
        grpo.generate = phased(real_generate, calls)  # each rollout's generate call, its phases marked
    try:
        config = grpo.GRPOConfig(model=str(ckpt), task="countdown", num_prompts=P, num_generations=G,
                                 max_completion_length=NEW, max_steps=steps, eval_steps=0, save_steps=0,
                                 output_dir=str(out_dir), beta=beta, micro_batch_size=micro_batch, plot_every=1000,
                                 gradient_checkpointing=checkpointing)
        history = grpo.train(config).history
    finally:
        grpo.rewards.accuracy_reward, model.fused_linear, model.COMPILE_BLOCKS = real, real_linear, real_blocks
        grpo.generate = real_generate
    rows = history[1:]  # step 1 compiles kernels and captures CUDA graphs
    mean = lambda k: sum(r[k] for r in rows) / len(rows)
    return {
        "beta": beta, "micro_batch": micro_batch or "auto", "gradient_checkpointing": checkpointing,
        "fused_projections": fused, "compiled_blocks": blocks,
        "step_s": mean("step_time"), "generation_s": mean("gen_time"), "scoring_s": mean("score_time"),
        "training_s": mean("train_time"), "gen_tok_s": mean("gen_tok_s"), "train_tok_s": mean("train_tok_s"),
        "train_mfu": 6 * n_params * mean("train_tok_s") / PEAK_FLOPS,
        "peak_gib": max(r["peak_mem_gib"] or 0 for r in history), "completion_len": mean("completion_len"),
        "logp_gap": mean("logp_gap"), "first_step_s": history[0]["step_time"],
        "training_s_each_step": [r["train_time"] for r in history],
        "generate_phases_ms": mean_phases(calls[1:]),  # (steps 2..: kept calls; the rest of gen_time is the rollout's)
    }


def hf_step(prompt_len, micro_batch=8, static_compile=False):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = Qwen2Config(**{k: v for k, v in QWEN05.items() if k != "eos_token_id"})
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    m = Qwen2ForCausalLM(cfg).to(DEV, torch.bfloat16 if DEV == "cuda" else torch.float32).eval()
    sync = torch.cuda.synchronize if DEV == "cuda" else (lambda: None)
    if DEV == "cuda":
        torch.cuda.reset_peak_memory_stats()
    x = torch.randint(0, cfg.vocab_size - 1000, (P, prompt_len), device=DEV).repeat_interleave(G, 0)  # (N, L)
    gen = lambda: m.generate(x, attention_mask=torch.ones_like(x), do_sample=True, temperature=1.0, top_p=1.0,
                             top_k=0, max_new_tokens=NEW, min_new_tokens=NEW, pad_token_id=0,
                             **({"cache_implementation": "static"} if static_compile else {}))  # (N, L + NEW)
    t_warm = None
    if static_compile:  # transformers compiles the decode step of a static cache on first use: warm up untimed
        t0 = time.perf_counter()
        gen()
        sync()
        t_warm = time.perf_counter() - t0
    sync()
    t0 = time.perf_counter()
    seqs = gen()
    sync()
    t_gen = time.perf_counter() - t0
    m.train()
    m.gradient_checkpointing_enable()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-6)

    def logp(ids):  # (M, L + NEW) -> (M, NEW) fp32
        logits = m(ids).logits[:, prompt_len - 1:-1].float()
        return logits.log_softmax(-1).gather(2, ids[:, prompt_len:, None])[..., 0]

    t1 = time.perf_counter()
    with torch.no_grad():
        old = torch.cat([logp(seqs[i:i + micro_batch]) for i in range(0, P * G, micro_batch)])
    sync()
    t2 = time.perf_counter()
    adv = torch.randn(P * G, 1, device=DEV)
    for i in range(0, P * G, micro_batch):
        ratio = (logp(seqs[i:i + micro_batch]) - old[i:i + micro_batch]).exp()
        a = adv[i:i + micro_batch]
        loss = -torch.min(ratio * a, ratio.clamp(0.8, 1.2) * a).mean() * micro_batch / (P * G)
        loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync()
    t_old, t_train = t2 - t1, time.perf_counter() - t2
    n_params = sum(p.numel() for p in m.parameters())
    tokens = P * G * (prompt_len + NEW)
    return {"step_s": t_gen + t_old + t_train, "generation_s": t_gen, "old_logprob_s": t_old, "training_s": t_train,
            "gen_tok_s": P * G * NEW / t_gen, "train_tok_s": tokens / t_train,
            "train_mfu": 6 * n_params * tokens / t_train / PEAK_FLOPS, "prompt_len": prompt_len,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if DEV == "cuda" else None,
            "generation": "static cache + torch.compile" if static_compile else "eager", "warmup_s": t_warm}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer-dir", default=str(ROOT / "tests" / "fixtures" / "qwen2.5-0.5b"))
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--skip-hf-compile", action="store_true", help="no static cache + compile transformers run")
    ap.add_argument("--profile", action="store_true", help="also a kernel-by-kernel profile of two steps")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model, 2 x 2 x 8 tokens: checks this script")
    ap.add_argument("--only", nargs="*", default=None, help="run only these of our configurations (ours_beta0, ...)")
    args = ap.parse_args()
    if args.tiny:
        global P, G, NEW
        P, G, NEW = 2, 2, 8
        QWEN05.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    out = Path(os.environ.get("OUT", "."))
    res = {"device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu", "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "P": P, "G": G, "new_tokens": NEW}

    def save():
        (out / "bench_grpo.json").write_text(json.dumps(res, indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        n_params = random_checkpoint(Path(tmp) / "ckpt", args.tokenizer_dir)
        res["n_params"] = n_params
        # micro-batch 0 is grpo.py's default, auto: the largest of 16, 8, .. that fits (16 on an 80 GB GPU)
        for name, beta, mb, fused, blocks in (("ours_beta0", 0.0, 0, True, True),
                                              ("ours_beta0.04", 0.04, 0, True, True),
                                              ("ours_beta0_mb8", 0.0, 8, True, True),
                                              ("ours_beta0_unfused", 0.0, 0, False, True),
                                              ("ours_beta0_per_op", 0.0, 0, True, False)):
            if args.only is not None and name not in args.only:
                continue
            try:
                res[name] = ours(Path(tmp) / "ckpt", Path(tmp) / name, n_params, beta, mb, fused=fused, blocks=blocks)
            except Exception as e:  # keep the other figures if one configuration fails
                res[name] = f"{type(e).__name__}: {str(e)[:300]}"
            print(name, res[name], flush=True)
            save()
            if DEV == "cuda":
                torch.cuda.empty_cache()
        if args.profile:  # where the GPU time of two steps goes, kernel by kernel
            from torch.profiler import ProfilerActivity, profile
            cuda = DEV == "cuda"
            with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
                ours(Path(tmp) / "ckpt", Path(tmp) / "profiled", n_params, 0.0, 16, 2)
            table = prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total",
                                              row_limit=30, max_name_column_width=70)
            (out / "profile_grpo.txt").write_text(table)
            print(table, flush=True)
    if not args.skip_hf:
        from tokenizer import Tokenizer, r1_zero_prompt
        from tasks import load_task
        tok = Tokenizer.from_dir(args.tokenizer_dir)
        prompt_len = max(len(tok.encode(r1_zero_prompt(ex["problem"]))) for ex in load_task("countdown", "train", n=64))
        for name, static in (("transformers", False), ("transformers_static_compile", True)):
            if args.skip_hf_compile and static:
                continue
            try:
                res[name] = hf_step(prompt_len, static_compile=static)
            except Exception as e:  # keep the other figures
                res[name] = f"{type(e).__name__}: {str(e)[:300]}"
            print(name, res[name], flush=True)
            save()
            if DEV == "cuda":
                torch.cuda.empty_cache()
        base, hf = res.get("ours_beta0"), res.get("transformers")
        if isinstance(base, dict) and isinstance(hf, dict):
            res["speedup_step"] = hf["step_s"] / base["step_s"]
            res["speedup_generation"] = hf["generation_s"] / base["generation_s"]
            ours_train = base["training_s"] + base["scoring_s"]
            res["speedup_training"] = (hf["old_logprob_s"] + hf["training_s"]) / ours_train
            hc = res.get("transformers_static_compile")
            if isinstance(hc, dict):  # the strongest transformers setting: compiled generation, same training part
                res["speedup_step_vs_static_compile"] = hc["step_s"] / base["step_s"]
                res["speedup_generation_vs_static_compile"] = hc["generation_s"] / base["generation_s"]
        save()
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
