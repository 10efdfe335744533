"""
What every training script here needs and none of them is about: the optimizer with fp32 master weights, the
learning-rate schedule, atomic checkpoints and exact resume, metrics (jsonl, a printed line, PNG curves), Ctrl-C,
skipping non-finite steps, the data order, a memory estimate before the first step, and the config dataclasses
every command's flags come from. grpo.py and sft.py both use it; nothing in here knows what the loss is.

A checkpoint is a directory OUT/checkpoint-STEP/ holding
  - config.json, model.safetensors, tokenizer files: a normal Hugging Face model directory (Qwen2.save_pretrained),
    so `python sample.py --model OUT/checkpoint-STEP` or transformers load it as is;
  - trainer_state.pt: optimizer (and fp32 master weights), step, data position, RNG states, the run's flags;
    written with torch.save and read back with torch.load(weights_only=True): tensors, numbers, strings only.
It is written as checkpoint-STEP.tmp/ and renamed when complete, then OUT/latest (one line, the directory name)
is replaced atomically: a crash at any moment leaves the previous checkpoint intact and `latest` pointing to it.
No checkpoint holding a NaN or inf tensor is ever written, and a fresh run refuses an output directory that already
holds a run (prepare_output_dir). The "scheduler state" is the step: the learning rate is a pure function of it."""
import argparse
import dataclasses
import inspect
import json
import math
import os
import random
import shutil
import signal
import sys
import time
import types
import typing
from pathlib import Path

import torch

import sample

# ------------------------------------------------------------------- configuration: one dataclass per command


REQUIRED = dataclasses.MISSING  # option(REQUIRED, ...): a field with no default, a flag that must be given


def option(default, help, **argparse_kw):
    """A config field: its default, its --help text and any argparse extras (choices, metavar). The dataclass
    is the one source of truth: the command-line parser is built from it and Python callers construct it."""
    return dataclasses.field(default=default, metadata={"help": help, **argparse_kw})


def config_parser(cls, suppress_defaults=False):
    """An argparse parser with one --flag-name per field of the dataclass `cls`. A bool field is a switch
    (--flag when it defaults to False, --flag/--no-flag when True); `T | None` fields parse as T; a tuple field
    takes as many values as its type names."""
    p = argparse.ArgumentParser(description=inspect.cleandoc(cls.__doc__ or ""), formatter_class=_HelpFormatter,
                                argument_default=argparse.SUPPRESS if suppress_defaults else None)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kw, flag = dict(f.metadata), "--" + f.name.replace("_", "-")
        default = {} if suppress_defaults else {"default": f.default}
        if f.default is REQUIRED and not suppress_defaults:  # (the given-flags parser requires nothing)
            default, kw["required"] = {}, True
        t = hints[f.name]
        if typing.get_origin(t) in (typing.Union, types.UnionType):
            t = next(a for a in typing.get_args(t) if a is not type(None))  # Optional[T] -> T
        if t is bool:
            kw["action"] = "store_true" if not f.default else argparse.BooleanOptionalAction
        elif typing.get_origin(t) is tuple:
            kw.setdefault("nargs", len(typing.get_args(t)))
            kw.setdefault("type", typing.get_args(t)[0])
        else:
            kw.setdefault("type", t)
        p.add_argument(flag, dest=f.name, **default, **kw)
    return p


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the description's line breaks and shows each flag's default."""


def parse_config(cls, argv=None):
    """(config, given): the dataclass filled from argv (sys.argv[1:] by default), and the names of the fields
    the command line set explicitly (so that, say, a resumed run can tell a user's flag from a default)."""
    args = vars(config_parser(cls).parse_args(argv))
    given = set(vars(config_parser(cls, suppress_defaults=True).parse_args(argv)))
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}), given


@dataclasses.dataclass
class TrainResult:
    """What grpo.train and sft.train return."""
    model: torch.nn.Module  # the trained model, in memory
    tokenizer: object  # tokenizer.Tokenizer
    history: list  # the metrics rows, one per step (as in OUTPUT_DIR/metrics.jsonl)
    output_dir: Path
    last_checkpoint: Path | None  # the checkpoint written last (None if none was)


# ------------------------------------------------------------------------------------------ optimizer


class MasterAdamW:
    """AdamW whose state is fp32 even when the model's weights are bf16.

    A bf16 weight has 8 significant bits: an update smaller than 1/256 of the weight (lr 1e-6 on weights ~0.02 is
    1/20000) rounds away to nothing. So the optimizer keeps an fp32 master copy of every low-precision parameter,
    steps on it with the gradient cast to fp32, and copies the result back to the bf16 weight the model computes
    with. fp32 parameters are stepped in place (no copy): on CPU this is plain AdamW."""

    def __init__(self, params, lr, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.master = [p if p.dtype == torch.float32 else p.detach().float().clone().requires_grad_()
                       for p in self.params]
        # One fused kernel for all parameters on GPU (plain tensors: FSDP's sharded DTensors take the default).
        fused = all(p.is_cuda and not hasattr(p, "device_mesh") for p in self.master) or None
        self.opt = torch.optim.AdamW(self.master, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps, fused=fused)

    @property
    def param_groups(self):  # AdamW's current list: load_state_dict replaces it, so it is never cached here
        return self.opt.param_groups

    def set_lr(self, lr):
        for g in self.opt.param_groups:
            g["lr"] = lr

    @torch.no_grad()
    def step(self, max_grad_norm=0.0):
        """Clip the (fp32) gradient to max_grad_norm (0: no clipping) and step. Returns the norm before clipping;
        when it is inf or nan nothing is updated (the caller reports the skipped step). An update that makes a
        weight NaN or inf (a finite gradient times a huge or inf learning rate) stops the run with ValueError:
        nothing later could be trusted, and no checkpoint of such weights is ever written."""
        for p, m in zip(self.params, self.master):
            if m is not p:
                m.grad = None if p.grad is None else p.grad.float()
        grads = [m for m in self.master if m.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(grads, max_grad_norm if max_grad_norm > 0 else float("inf"))
        norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # FSDP: the norm over all shards
        if not math.isfinite(norm):
            return norm
        self.opt.step()
        if not bool(torch.stack([m.isfinite().all() for m in self.master]).all()):  # one host sync
            raise ValueError(f"the update made a weight NaN or inf (learning rate {self.param_groups[0]['lr']:g}): "
                             f"lower --learning-rate; the run's last checkpoint is intact (--resume OUTPUT_DIR)")
        for p, m in zip(self.params, self.master):
            if m is not p:
                p.copy_(m)  # round the fp32 master to the model's dtype
        return norm

    def zero_grad(self):
        for p, m in zip(self.params, self.master):
            p.grad = m.grad = None

    def state_dict(self):
        masters = [m.detach() for p, m in zip(self.params, self.master) if m is not p]
        return {"adamw": self.opt.state_dict(), "master": masters}

    def load_state_dict(self, state):
        self.opt.load_state_dict(state["adamw"])
        with torch.no_grad():
            for m, saved in zip([m for p, m in zip(self.params, self.master) if m is not p], state["master"]):
                m.copy_(saved)


def lr_at(step, lr, warmup_steps, total_steps, kind="constant", min_lr_ratio=0.0):
    """Linear warm-up over warmup_steps, then constant or cosine decay to min_lr_ratio * lr at total_steps."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if kind == "constant":
        return lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# The seed of the data order of each epoch is --seed * SHUFFLE_SEED_STRIDE + epoch: a prime stride, so that the
# epochs of nearby seeds do not share an order.
SHUFFLE_SEED_STRIDE = 7919


def next_examples(examples, position, n, seed):
    """Examples position .. position+n-1 of an endless stream of seeded shuffles (one per epoch): the data
    position is a single integer, which is what a checkpoint stores."""
    out, perms = [], {}
    for k in range(position, position + n):
        epoch, i = divmod(k, len(examples))
        if epoch not in perms:
            g = torch.Generator().manual_seed(seed * SHUFFLE_SEED_STRIDE + epoch)
            perms[epoch] = torch.randperm(len(examples), generator=g)
        out.append(examples[perms[epoch][i]])
    return out


# ------------------------------------------------------------------------------------------ checkpoints


def rng_state():
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_initialized():  # only a run that uses the GPU (a CPU run on a GPU machine never touches it)
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def prepare_output_dir(out_dir, resume=None, overwrite=False):
    """Create OUT for a run. A run that does not resume from a checkpoint inside OUT refuses an OUT that already
    holds one (checkpoints, `latest`, metrics.jsonl): it would write over them, step number by step number.
    overwrite=True (--overwrite-output-dir) deletes those first, as a new run's own files. Returns OUT."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output-dir {out} is a file, not a directory: pass the path of a directory (it is created)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create --output-dir {out} ({e.strerror}): pass a directory you can write") from None
    if resume is not None and Path(resume).resolve().parent == out.resolve():
        return out  # continuing this run: its files are the run's own
    found = sorted(p.name for p in out.iterdir() if p.name in ("latest", "metrics.jsonl") or _is_checkpoint(p))
    if found and not overwrite:
        raise ValueError(f"--output-dir {out} already holds a run ({', '.join(found)}): continue it with --resume "
                         f"{out}, start over with --overwrite-output-dir (deletes those), or pick another --output-dir")
    if found:
        print(f"--overwrite-output-dir: deleting {', '.join(found)} in {out}")
    for name in found:
        shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
    return out


def _is_checkpoint(path):
    return path.is_dir() and path.name.startswith("checkpoint-") and path.name.split("-", 1)[1].isdigit()


def _checkpoints(out_dir):
    """OUT's checkpoint-STEP directories, oldest first."""
    return sorted((p for p in Path(out_dir).iterdir() if _is_checkpoint(p)), key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(out_dir, model, optimizer, step, data_position, args, keep=2, tokenizer_dir=None):
    """OUT/checkpoint-STEP/ (model + trainer_state.pt), then OUT/latest -> it; keeps the newest `keep` checkpoints
    (0: all), never deleting the one just written. Refuses (ValueError, nothing written) when a weight or an
    optimizer tensor is NaN or inf. Under torchrun every rank calls it (FSDP gathers the optimizer state from
    all) and rank 0 alone writes; `model` holds the full weights (under --fsdp the refreshed full_copy)."""
    out_dir = Path(out_dir)
    final = out_dir / f"checkpoint-{step}"
    optimizer_state = _full(optimizer.state_dict())  # (under FSDP gathered from every rank)
    if not is_main():
        barrier()  # returns once rank 0 has written it
        return final
    tmp = out_dir / f"checkpoint-{step}.tmp"
    state = {"step": step, "data_position": data_position, "optimizer": optimizer_state,
             "rng": rng_state(), "args": {k: v for k, v in vars(args).items() if _plain(v)}}
    bad = _first_non_finite(state["optimizer"])
    if bad is not None:
        raise ValueError(f"not saving {final.name}: optimizer tensor {bad} holds NaN or inf (the run diverged): "
                         f"lower --learning-rate, or resume from the last checkpoint")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, tokenizer_dir=tokenizer_dir)  # (refuses non-finite weights before writing)
    torch.save(state, tmp / "trainer_state.pt")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    pointer = out_dir / "latest.tmp"
    pointer.write_text(final.name + "\n")
    os.replace(pointer, out_dir / "latest")
    older = [c for c in _checkpoints(out_dir) if c != final]
    for stale in older[:max(0, len(older) - (keep - 1))] if keep > 0 else []:
        shutil.rmtree(stale, ignore_errors=True)
    barrier()
    return final


def _first_non_finite(obj, name="state"):
    """The name of the first floating-point tensor in a nest of dicts and lists that holds NaN or inf, else None."""
    if isinstance(obj, torch.Tensor):
        return name if obj.is_floating_point() and not bool(obj.isfinite().all()) else None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    return next((bad for k, v in items if (bad := _first_non_finite(v, f"{name}.{k}")) is not None), None)


def _plain(v):
    return v is None or isinstance(v, (bool, int, float, str)) or (
        isinstance(v, (list, tuple)) and all(isinstance(x, (bool, int, float, str)) for x in v))


def find_checkpoint(path):
    """--resume PATH: a checkpoint-STEP directory, or a run directory whose `latest` names one."""
    path = Path(path)
    if (path / "latest").is_file():
        named = path / (path / "latest").read_text().strip()
        if not (named / "trainer_state.pt").is_file():
            raise FileNotFoundError(f"{path}/latest names {named.name}, which is missing or incomplete: "
                                    f"{_offer_older(path, named)}")
        path = named
    if not (path / "trainer_state.pt").is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: pass --resume OUTPUT_DIR (with a 'latest' file) or "
                                f"OUTPUT_DIR/checkpoint-STEP")
    return path


def _offer_older(run_dir, bad):
    """'resume from the intact RUN/checkpoint-N instead (...)', N the newest other checkpoint whose trainer
    state loads; or what to do when there is none."""
    for d in reversed(_checkpoints(run_dir)):
        if d.name != Path(bad).name and _read_state(d) is not None:
            return f"resume from the intact {d} instead (--resume {d})"
    return f"no intact checkpoint is left in {run_dir}: start over from --model"


def _read_state(ckpt_dir):
    """trainer_state.pt as a dict, or None when it is missing, torn or not ours."""
    try:
        state = torch.load(Path(ckpt_dir) / "trainer_state.pt", map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a truncated zip, a foreign pickle (refused by weights_only), a missing file
        return None
    need = ("step", "data_position", "optimizer", "rng")
    return state if isinstance(state, dict) and all(k in state for k in need) else None


def load_trainer_state(ckpt_dir, optimizer):
    """Restore optimizer and RNG from ckpt_dir/trainer_state.pt; returns (step, data_position). The model weights
    are loaded by the caller with Qwen2.from_pretrained(ckpt_dir). The state is full (world-size free): under
    --fsdp each rank keeps its shard of it."""
    state = _read_state(ckpt_dir)
    if state is None:
        raise ValueError(f"{Path(ckpt_dir) / 'trainer_state.pt'} is unreadable (truncated or corrupt): "
                         f"{_offer_older(Path(ckpt_dir).parent, ckpt_dir)}")
    optimizer.load_state_dict(_shard_optimizer_state(state["optimizer"], optimizer))
    set_rng_state(state["rng"])
    return state["step"], state["data_position"]


def saved_args(ckpt_dir):
    """The flags a checkpoint's run was started with ({} for a checkpoint that has none)."""
    state = _read_state(ckpt_dir)
    return dict(state.get("args", {})) if state is not None else {}


def run_cli(main):
    """A command's entry point: a mistake the user can act on (a wrong path, a bad value, a missing optional package
    such as math-verify) ends the run with its one-line message instead of a traceback."""
    try:
        main()
    except (FileNotFoundError, ValueError, ImportError) as e:
        sys.exit(f"error: {e}")


def command_config(cls, argv=None):
    """What a command runs with: its flags (parse_config), or with --resume the run's own settings for every flag
    not given (resumed_config); a required flag (sft's --data) may then be left out: the run's value is used."""
    given = vars(config_parser(cls, suppress_defaults=True).parse_args(argv))  # {field: value} of the flags given
    if given.get("resume") is None:
        return parse_config(cls, argv)[0]
    return resumed_config(cls, given, find_checkpoint(given["resume"]))


def resumed_config(cls, given, ckpt_dir):
    """--resume: the config (dataclass `cls`) a run continues with: its defaults, then the run's own settings from
    its checkpoint, so that it keeps its learning rate, batch shape and --model (the KL reference) rather than the
    defaults, and --output-dir becomes the checkpoint's run directory; then the flags given on this command line
    ({field: value}), each of which wins with a printed notice when it differs from the run's. Never restored:
    --resume itself, --overwrite-output-dir (deleting needs saying each time) and --fsdp (how a run is spread
    over GPUs is this launch's choice)."""
    fields, saved = {f.name: f for f in dataclasses.fields(cls)}, saved_args(ckpt_dir)
    saved = {k: v for k, v in saved.items() if k in fields and k not in ("resume", "overwrite_output_dir", "fsdp")}
    values = {n: f.default for n, f in fields.items() if f.default is not REQUIRED}
    values.update(saved, output_dir=str(Path(ckpt_dir).parent))
    as_list = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # (a tuple may come back as a list)
    for k in sorted(set(given) & set(saved) - {"output_dir"}):
        if as_list(given[k]) != as_list(saved[k]):
            print(f"--{k.replace('_', '-')} {given[k]} (the run was started with {saved[k]}): the command line wins")
    values.update(given)
    missing = [n for n in fields if n not in values]
    if missing:
        raise ValueError(f"--{missing[0].replace('_', '-')} is required: {ckpt_dir} does not record it")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


class StopOnCtrlC:
    """The first Ctrl-C asks the loop to stop after the current step (it then saves and exits); a second one
    interrupts at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: finishing this step, saving a checkpoint, then exiting (Ctrl-C again to abort now)",
              file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._old)


# ------------------------------------------------------------------------------------------ log-probs


def completion_logprobs(model, idx, start, Tp, tokens, sel, temperature, entropy=False):
    """The trainer's log-probs (M, Tc) fp32 of the completion tokens (M, Tc) of sequences idx (M, Tp + Tc) =
    left-padded prompt + completion, computed only at sel (n,), the flat positions of the real tokens in (M, Tc)
    (padding costs no LM-head work; 0 is returned there); and the entropy (n,) of those positions if asked."""
    M, Tc = tokens.shape
    h = model(idx, start=start, return_hidden=True)[:, Tp - 1:-1]  # (M, Tc, C): position t predicts token t
    h = h.reshape(M * Tc, -1).index_select(0, sel)  # (n, C)
    from kernels.logprob import fused_logprob, logprob_ref  # fused: never holds the (n, V) logits
    core = unwrap(model)  # DIST: the forward goes through DDP, the attributes are the model's
    fn = fused_logprob if core.use_kernels and idx.is_cuda else logprob_ref
    out = fn(h, core.lm_head.weight, tokens.flatten()[sel], temperature, return_entropy=entropy)  # (n,)
    lp, ent = out if entropy else (out, None)
    logp = torch.zeros(M * Tc, device=h.device).index_copy(0, sel, lp).view(M, Tc)
    return logp, ent


def micro_batches(rows, lengths, mask, size, device):
    """Micro-batches of `size` of the rows (R,) of a padded batch, longest first, each cut to its longest row
    (Tm <= T; sorted, so little padding), with the flat positions (n,) of its real tokens in (M, Tm): [(rows (M,),
    Tm, sel (n,))]. Made on the host from lengths (N,) and mask (N, T), so the device never waits."""
    rows, micro = rows[lengths[rows].argsort(descending=True)], []
    for i in range(0, len(rows), size):
        chunk = rows[i:i + size]
        Tm = int(lengths[chunk].max())
        micro.append((chunk.to(device), Tm, mask[chunk, :Tm].flatten().nonzero()[:, 0].to(device)))
    return micro


# ------------------------------------------------------------------------------------------ metrics


class Metrics:
    """Appends one JSON line per step to OUT/metrics.jsonl and redraws OUT/curves.png every `plot_every` steps.
    write=False (ranks > 0 under torchrun) keeps the history in memory and writes nothing."""

    def __init__(self, out_dir, plot_keys=(), plot_every=10, wandb_run=None, resume_step=None, write=True):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.png = Path(out_dir) / "curves.png"
        self.plot_keys, self.plot_every, self.wandb, self.write = plot_keys, plot_every, wandb_run, write
        self.history = []
        if write and resume_step is not None and self.path.is_file():  # keep the curves up to the checkpoint
            self.history = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
        if write:
            tmp = self.path.with_suffix(".jsonl.tmp")  # rewritten whole, then renamed: a crash here loses no line
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.history))
            os.replace(tmp, self.path)

    def log(self, row):
        self.history.append(row)
        if not self.write:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.wandb is not None:
            self.wandb.log(row, step=row.get("step"))
        if self.plot_keys and row.get("step", 0) % self.plot_every == 0:
            plot_curves(self.history, self.png, self.plot_keys)


def read_metrics(path):
    """The rows of a metrics.jsonl. A torn last line (the run was killed while writing it) is dropped with a
    notice; a bad line elsewhere is a ValueError naming file:line."""
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            row = json.loads(line) if line.strip() else None
        except ValueError:
            row = "torn"
        if row is None:
            continue
        if isinstance(row, dict):
            rows.append(row)
        elif i == len(lines):
            print(f"{path}:{i}: dropped a torn last line (the run was stopped while writing it)")
        else:
            raise ValueError(f"{path}:{i}: not a JSON object: fix or delete that line, or delete {path} "
                             f"(its curves then start over)")
    return rows


def open_run(out_dir, plot_keys, plot_every, resume_step=None, wandb_project=None, config=None):
    """OUT (created) and its Metrics, continuing the curves up to resume_step when resuming; a Weights & Biases
    run too when wandb_project is given. Under torchrun rank 0 alone writes there (the others keep the history)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = wandb_init(wandb_project, config) if wandb_project and is_main() else None
    return out, Metrics(out, plot_keys, plot_every, run, resume_step=resume_step, write=is_main())


def wandb_init(project, args):
    """Weights & Biases, if asked for (--wandb): an optional extra, not in requirements.txt."""
    try:
        import wandb
    except ImportError:
        raise ValueError("--wandb needs the wandb package: pip install wandb (or drop --wandb)") from None
    return wandb.init(project=project, config=vars(args))


def format_line(row, fields):
    """'step 12 | reward 0.41 | acc 0.33 | ...' from (label, key, format) triples; missing keys are skipped."""
    return " | ".join(f"{label} {row[key]:{fmt}}" for label, key, fmt in fields if row.get(key) is not None)


_warned_no_matplotlib = False


def plot_curves(history, png_path, keys):
    """One small panel per metric against step, written atomically. Needs matplotlib (optional)."""
    global _warned_no_matplotlib
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if not _warned_no_matplotlib:
            print("matplotlib not installed: no PNG curves (pip install matplotlib); metrics.jsonl has the data")
            _warned_no_matplotlib = True
        return
    keys = [k for k in keys if any(k in r for r in history)]
    if not keys:
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(r["step"], r[key]) for r in history if r.get(key) is not None and "step" in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    tmp = Path(png_path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, png_path)


class Timer:
    """with Timer() as t: ...; t.seconds (synchronises CUDA so that GPU work is counted where it happens)."""

    def __enter__(self):
        _sync()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        _sync()
        self.seconds = time.perf_counter() - self.t0


def peak_memory_gib(device, reset=False):
    """Peak GPU memory allocated since the last reset, in GiB (None on CPU); reset=True starts a new window."""
    if torch.device(device).type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    if reset:
        torch.cuda.reset_peak_memory_stats(device)
    return peak


def _sync():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------ memory preflight

# The share of the GPU's memory an estimate may fill: the estimate is good to ~20% on the activations, and the
# CUDA caching allocator's fragmentation takes a few percent more.
MEMORY_HEADROOM = 0.92


def estimate_memory(config, *, rows, seq_len, micro_batch, weight_bytes, reference=False, checkpointing=False,
                    fused_logprob=True, world=1, fsdp=False):
    """Rough peak GPU bytes of one RL/SFT step on one GPU, by part. rows: sequences this rank samples at once
    (P*G / world; 0 for SFT); seq_len: prompt + completion tokens; micro_batch: rows per forward/backward. With
    fsdp, weights, gradients and optimizer state are 1/world per rank, plus the full copy of the weights that
    samples and saves ("full_copy") and one gathered layer at a time; DDP replicates everything. Good to ~20%:
    it is for deciding what to change before a long run, not for packing memory to the last byte."""
    C, I, L, V = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    K, D = config.num_key_value_heads, config.head_dim
    H = config.num_attention_heads
    per_layer_params = C * H * D * 2 + 2 * C * K * D + H * D + 2 * K * D + 3 * C * I + 2 * C  # attn, biases, MLP, norms
    n = C * V * (1 if config.tie_word_embeddings else 2) + L * per_layer_params + C
    master = 4 * n if weight_bytes < 4 else 0
    tokens = micro_batch * seq_len
    # What one layer keeps for backward, per token; calibrated on the 0.5B shape against the peak that
    # bench/bench_grpo.py measures (README).
    per_layer = (16 * C + 3 * I) * weight_bytes
    if checkpointing:
        acts = tokens * (L * C * weight_bytes + per_layer)  # layer inputs, plus one layer recomputed at a time
    else:
        acts = tokens * L * per_layer
    logits = tokens * V * 4 * (0 if fused_logprob else 3)  # fp32 logits, log-softmax and its gradient
    shards = world if fsdp else 1
    parts = {
        "weights": n * weight_bytes // shards, "gradients": n * weight_bytes // shards,
        "optimizer": (8 * n + master) // shards,
        "full_copy": (n + per_layer_params) * weight_bytes if fsdp else 0,  # the sampler's copy + a gathered layer
        "reference": n * weight_bytes if reference else 0,  # (a full copy per rank under DDP and FSDP alike)
        "kv_cache": sample.buffer_bytes(config, rows, seq_len, weight_bytes),  # the sampler's KV cache and logits
        "activations": acts + logits,
    }
    # The sampler keeps its KV cache from one step to the next (generate(keep=True)), so it adds to training's.
    peak = sum(parts.values())
    return peak, parts


def gpu_memory(device):
    """Total bytes of the GPU `device`; None on CPU (nothing to measure an estimate against)."""
    device = torch.device(device)
    return torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None


def halvings(n):
    """n // 2, n // 4, ..., 1: the smaller micro-batches to try when n rows do not fit."""
    out = []
    while n > 1:
        n //= 2
        out.append(n)
    return out


def auto_micro_batch(estimate_fn, total_bytes, rows, largest=16):
    """--micro-batch-size 0: the largest of 16, 8, 4, 2, 1 (at most rows) whose estimate fits the GPU; 8 on CPU.
    On a GPU bigger is faster: each micro-batch pays a fixed host cost per layer, which a few rows of 1k tokens
    do not hide (measured in the README's GRPO table)."""
    if total_bytes is None:
        return min(8, rows)
    mb = min(largest, rows)
    while mb > 1 and estimate_fn(micro_batch=mb)[0] > MEMORY_HEADROOM * total_bytes:
        mb //= 2
    return mb


def plan_micro_batch(model, micro_batch, *, rows, seq_len, reference=False, checkpointing=False, otherwise="",
                     fsdp=False):
    """Before the first step: print the memory estimate of a step that samples `rows` sequences of seq_len tokens
    (this rank's share under torchrun) and trains on them micro_batch rows at a time, and return micro_batch (0:
    the largest that fits, up to 16). When it cannot fit, stop naming the first of smaller micro-batches,
    --gradient-checkpointing, or FSDP over more GPUs that would, else `otherwise` (the trainer's own advice)."""
    device, weight = model.lm_head.weight.device, model.lm_head.weight
    est = dict(rows=rows, seq_len=seq_len, micro_batch=min(micro_batch, rows), weight_bytes=weight.element_size(),
               reference=reference, checkpointing=checkpointing, fused_logprob=model.use_kernels, world=world(),
               fsdp=fsdp)
    estimate = lambda **kw: estimate_memory(model.config, **{**est, **kw})
    total = gpu_memory(device)
    if micro_batch == 0:
        micro_batch = est["micro_batch"] = auto_micro_batch(estimate, total, rows)
    fixes = [(f"--micro-batch-size {mb}", dict(micro_batch=mb)) for mb in halvings(est["micro_batch"])]
    if not checkpointing:
        fixes += [("--gradient-checkpointing", dict(checkpointing=True)),
                  ("--gradient-checkpointing --micro-batch-size 1", dict(checkpointing=True, micro_batch=1))]
    for w in (2, 4, 8):  # DIST: sharded over more GPUs, the global batch the same (fewer rows per GPU)
        if w > world():
            fewer = rows * world() // w
            fixes.append((f"torchrun --nproc_per_node={w} ... --fsdp --gradient-checkpointing",
                          dict(world=w, fsdp=True, checkpointing=True, rows=fewer,
                               micro_batch=min(est["micro_batch"], max(fewer, 1)))))
    print(preflight(estimate, total, fixes, otherwise))
    return micro_batch


def preflight(estimate_fn, total_bytes, fixes=(), otherwise="use a smaller configuration"):
    """Stop before the first step if the estimate exceeds the GPU's memory (total_bytes; None on CPU: report only).
    estimate_fn(**overrides) -> (peak bytes, parts). fixes: (flags, overrides) pairs in the order the caller
    prefers them; the error names the first whose estimate fits, else says `otherwise`."""
    peak, parts = estimate_fn()
    gib = lambda b: f"{b / 2**30:.1f} GiB"
    summary = ", ".join(f"{k} {gib(v)}" for k, v in parts.items() if v)
    if total_bytes is None:
        return f"memory estimate: {gib(peak)} ({summary})"
    if peak <= MEMORY_HEADROOM * total_bytes:
        return f"memory estimate: {gib(peak)} of {gib(total_bytes)} ({summary})"
    fits = [flags for flags, kw in fixes if estimate_fn(**kw)[0] <= MEMORY_HEADROOM * total_bytes]
    hint = f"this would fit: {fits[0]}" if fits else otherwise
    raise ValueError(f"estimated peak memory {gib(peak)} exceeds the GPU's {gib(total_bytes)} ({summary}); {hint}")


# ------------------------------------------------------------------------------------------ distributed (torchrun)
# `torchrun --nproc_per_node=N grpo.py ...` starts N copies of a trainer, each with RANK, LOCAL_RANK and WORLD_SIZE
# in its environment. Without torchrun there is no process group, world() is 1 and every helper below hands its
# input back unchanged: one process runs exactly as it always did. (The helpers read torch.distributed's own
# process-wide state, so nothing has to be passed down.) With N ranks the trainers do four things differently,
# each marked `# DIST` in grpo.py and sft.py:
#   1. The global batch (GRPO's P prompts, SFT's packed rows of one step) is cut into N equal contiguous shares;
#      a GRPO group never straddles ranks, so rewards and advantages stay per rank.
#   2. The loss normalisers (learnt tokens, sequences) are summed over the ranks, so each rank's loss is exactly
#      its part of the one-process loss on the global batch: the global loss is the SUM of the ranks' losses.
#   3. DDP all-reduces, and FSDP2 reduce-scatters, the AVERAGE of the ranks' gradients: (1/N) sum_r g_r. The
#      gradient of the global loss is sum_r g_r, so every rank backpropagates N * its loss (loss_scale()):
#      (1/N) sum_r N g_r = sum_r g_r, the one-process gradient, and clipping and AdamW then see the same numbers.
#   4. Rank 0 alone prints, writes metrics, curves and checkpoints; a checkpoint holds the full (gathered) weights
#      and optimizer state, so it resumes on any number of ranks that divides the batch.
# DDP keeps a full replica per rank (fastest while weights + gradients + optimizer state fit one GPU); --fsdp
# shards those three over the ranks with fully_shard (each decoder layer its own unit, gathered just before it
# runs) and keeps one plain full copy of the weights per rank for sampling and saving (see full_copy).


def _dist():
    import torch.distributed as dist
    return dist if dist.is_available() and dist.is_initialized() else None


def world():
    return _dist().get_world_size() if _dist() else 1


def rank():
    return _dist().get_rank() if _dist() else 0


def is_main():
    return rank() == 0


def loss_scale():
    return world()  # see 3. above: DDP / FSDP2 average the ranks' gradients, the loss is their sum


def init_distributed(device, fsdp=False):
    """This process's device. Under torchrun: join the process group (NCCL on GPUs, gloo on CPU), take GPU
    LOCAL_RANK, and silence stdout on ranks > 0 (errors still reach stderr). Otherwise `device` itself."""
    if "WORLD_SIZE" not in os.environ:
        if fsdp:
            raise ValueError("--fsdp shards the model over torchrun's processes: run it as torchrun "
                             "--nproc_per_node=N ... --fsdp")
        return device
    import torch.distributed as dist
    if device.type == "cuda":
        local, gpus = int(os.environ["LOCAL_RANK"]), torch.cuda.device_count()
        if local >= gpus:
            raise ValueError(f"torchrun started process {local + 1} on a machine with {gpus} GPU(s): use "
                             f"--nproc_per_node={gpus} or fewer (or --device cpu)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if rank() > 0:
        sys.stdout = open(os.devnull, "w")
    return device


def share(items, what="--num-prompts"):
    """This rank's contiguous share of the global batch `items` (all of it on one process)."""
    n, r = divmod(len(items), world())
    if r:
        raise ValueError(f"{what} is {len(items)}, which {world()} processes cannot share equally: make it a "
                         f"multiple of the number of processes (--nproc_per_node)")
    return items[rank() * n:(rank() + 1) * n]


def _comm_device():
    return torch.device("cuda", torch.cuda.current_device()) if _dist().get_backend() == "nccl" else torch.device("cpu")


def all_sum(x, op="sum"):
    """A number (or tensor) summed over the ranks (op="max": the largest); x itself on one process."""
    dist = _dist()
    if dist is None:
        return x
    t = (x.detach().to(_comm_device(), torch.float64) if torch.is_tensor(x) else
         torch.tensor(float(x), dtype=torch.float64, device=_comm_device()))
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t.to(x.device, x.dtype) if torch.is_tensor(x) else type(x)(t.item())


def all_gather(t):
    """(n, ...) on each rank -> (world * n, ...) in rank order on every rank: the global batch's values (for
    metrics computed exactly as one process would); t itself on one process."""
    dist = _dist()
    if dist is None:
        return t
    local = t.to(_comm_device(), torch.float64)
    parts = [torch.empty_like(local) for _ in range(world())]
    dist.all_gather(parts, local)
    return torch.cat(parts).to(t.device, t.dtype)


def barrier():
    if _dist():
        _dist().barrier()


def wrap_model(model, fsdp=False):
    """The module to train. One process: the model. DDP: a full replica per rank, gradients all-reduced in buckets
    while backward runs. FSDP2 (--fsdp): each decoder layer, then the rest (embeddings, final norm, LM head), is a
    fully_shard unit: weights, gradients and optimizer state live 1/N per rank, a unit's weights are all-gathered
    just before it runs and freed after, its gradients reduce-scattered in backward."""
    if fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        # The mesh on the model's own device: FSDP's default mesh takes the machine's accelerator, so a CPU run
        # (gloo, --device cpu) on a machine with GPUs would put its shards on GPUs the processes were not given.
        mesh = init_device_mesh(model.lm_head.weight.device.type, (world(),))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    if world() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP
    return DDP(model, device_ids=[model.lm_head.weight.device] if model.lm_head.weight.is_cuda else None,
               gradient_as_bucket_view=True)  # grads are views into DDP's buckets: no second copy of them


def unwrap(model):
    """The model inside DDP (its attributes: use_kernels, lm_head, config); the model itself otherwise."""
    return getattr(model, "module", model)


def grad_sync(model, last):
    """Context for one micro-batch's forward + backward: gradients cross ranks only on the step's last one (the
    others accumulate locally). Every rank must run the same number of micro-batches (see idle_backward)."""
    import contextlib
    if hasattr(model, "no_sync"):  # DDP
        return contextlib.nullcontext() if last else model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(last)
    return contextlib.nullcontext()


def idle_backward(model, idx):
    """A micro-batch with zero weight, for a rank that has fewer micro-batches than another: DDP's all-reduce
    and FSDP's gathers are collectives that every rank must enter. idx (1, T): any tokens."""
    (model(idx).float().sum() * 0.0).backward()


def full_copy(model, fsdp=False):
    """Under --fsdp, a plain (unsharded) copy of the model, made before sharding: the sampler and the checkpoint
    writer run on it, with no collectives inside generation (ranks stop at different lengths). It costs one full
    set of weights per rank (2 bytes a parameter in bf16: 15 GB for 7B, against ~61 GB for its sharded share of
    training state on 2 GPUs). Refresh it from the shards with refresh_copy. Without --fsdp: the model itself."""
    if not fsdp:
        return model
    import copy
    return copy.deepcopy(model).requires_grad_(False)


def setup_training(model, config, ckpt, position=0):
    """What grpo.py and sft.py both train with: the full copy that samples, evaluates and is saved (full_copy),
    the model wrapped for several processes (wrap_model), its MasterAdamW (config's learning_rate, weight_decay)
    and the step and data position, restored from ckpt (else 0 and `position`) -> (model, copy, optimizer, step,
    position)."""
    copy = full_copy(model, config.fsdp)  # before wrap_model shards the weights
    model = wrap_model(model, config.fsdp)  # before the optimizer sees the parameters
    optimizer = MasterAdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    step, position = load_trainer_state(ckpt, optimizer) if ckpt else (0, position)
    return model, copy, optimizer, step, position


@torch.no_grad()
def refresh_copy(copy, model):
    """Gather the sharded weights into the full copy (every rank takes part: one all-gather per parameter);
    the copy itself when it is the model."""
    if copy is unwrap(model):
        return copy
    for c, p in zip(copy.parameters(), model.parameters()):
        c.copy_(p.full_tensor() if hasattr(p, "full_tensor") else p)
    return copy


def _full(x):
    """Optimizer state with every sharded tensor (DTensor) gathered into a full one (collective under FSDP)."""
    if isinstance(x, dict):
        return {k: _full(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_full(v) for v in x]
    return x.full_tensor() if hasattr(x, "full_tensor") else x


def _shard_like(x, like):
    """The inverse of _full: a full tensor cut as the DTensor `like` is (collective)."""
    if not hasattr(like, "device_mesh") or not torch.is_tensor(x) or x.dim() == 0:
        return x
    from torch.distributed.tensor import distribute_tensor
    return distribute_tensor(x.to(like.device, like.dtype), like.device_mesh, like.placements)


def _shard_optimizer_state(state, optimizer):
    """MasterAdamW.state_dict() as saved (full tensors) -> this rank's shards of it, cut as its parameters are
    (the state itself when they are not sharded)."""
    stepped = optimizer.master  # what AdamW steps, in its order
    adamw = dict(state["adamw"], state={i: {k: _shard_like(v, stepped[i]) for k, v in s.items()}
                                        for i, s in state["adamw"]["state"].items()})
    low = [m for p, m in zip(optimizer.params, optimizer.master) if m is not p]
    return {"adamw": adamw, "master": [_shard_like(t, m) for t, m in zip(state["master"], low)]}
