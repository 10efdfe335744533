"""
The files of a Hugging Face checkpoint directory, apart from the model: where a name points (a local directory, a
known short name, a Hub repo id), reading the safetensors weights (one file or shards), writing a file so that a
crash never leaves it torn, checking the tensors read against the model's. model.py builds the model from
what these return.
"""
import json
import os
from pathlib import Path

# Short names a user can pass instead of a directory; they are fetched from the Hugging Face Hub.
KNOWN_MODELS = {
    "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B",
    "qwen2.5-0.5b-instruct": "Qwen/Qwen2.5-0.5B-Instruct",
    "qwen2.5-1.5b": "Qwen/Qwen2.5-1.5B",
    "qwen2.5-1.5b-instruct": "Qwen/Qwen2.5-1.5B-Instruct",
    "qwen2.5-3b": "Qwen/Qwen2.5-3B",
    "qwen2.5-math-1.5b": "Qwen/Qwen2.5-Math-1.5B",
    "qwen2.5-math-1.5b-instruct": "Qwen/Qwen2.5-Math-1.5B-Instruct",
    "deepseek-r1-distill-qwen-1.5b": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json",
                   "vocab.json", "merges.txt")


def atomic_write(path, write):
    """write(tmp_path), then rename over path: readers see the old file or the new one, never a torn one."""
    tmp = f"{path}.tmp{os.getpid()}"
    write(tmp)
    os.replace(tmp, path)


def read_tokenizer_files(path):
    """{file name: bytes} of the tokenizer files in a checkpoint directory (those of TOKENIZER_FILES it has)."""
    path = Path(path)
    return {name: (path / name).read_bytes() for name in TOKENIZER_FILES if (path / name).is_file()}


def resolve_checkpoint(name_or_dir):
    """A local directory as is; a known short name or a Hub repo id ("owner/name") through huggingface_hub."""
    name = str(name_or_dir)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    looks_like_repo = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if name.lower() not in KNOWN_MODELS and not looks_like_repo:
        raise FileNotFoundError(f"model directory {name} not found and not a known name: pass a Hugging Face model "
                                f"directory or one of {', '.join(KNOWN_MODELS)}")
    repo = KNOWN_MODELS.get(name.lower(), name)
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(repo, allow_patterns=["*.json", "*.safetensors", "*.jinja", "merges.txt"]))
    except Exception as e:
        raise FileNotFoundError(f"could not fetch {repo} from the Hugging Face Hub ({type(e).__name__}); download "
                                f"it where there is network (`hf download {repo} --local-dir DIR`) and pass --model "
                                f"DIR") from None


def load_safetensors(path):
    """All tensors of a checkpoint directory: model.safetensors, or the shards named by model.safetensors.index.json."""
    from safetensors.torch import load_file
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ValueError(f"{index} is not a valid shard index (JSON with a 'weight_map' object): re-download "
                             f"it") from None
    elif (path / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {path}: "
                                f"weights must be in safetensors format")
    state = {}
    for f in files:
        if not (path / f).is_file():
            raise FileNotFoundError(f"{path / f} is named in model.safetensors.index.json but missing")
        try:
            state.update(load_file(path / f))
        except Exception as e:  # safetensors' own error for a torn, empty or foreign file
            why = (str(e).splitlines() or [type(e).__name__])[0]
            raise ValueError(f"{path / f} is not a readable safetensors file ({why}): it is truncated or corrupt; "
                             f"re-download it, or use an earlier checkpoint") from None
    return state


def checked_state(state, expected, path, device, dtype):
    """A checkpoint's tensors (name -> tensor, as read) checked against the model's state dict `expected` (a tied
    model without lm_head.weight) and moved to device and dtype; every mismatch is a one-line error naming the
    tensor: missing, unexpected, of another shape, or holding NaN / inf."""
    state = dict(state)
    if "lm_head.weight" not in expected:
        state.pop("lm_head.weight", None)  # some tied checkpoints store the shared matrix twice
    for name in list(state):
        if name.endswith("rotary_emb.inv_freq"):
            del state[name]  # a buffer older transformers versions saved; we compute it
    missing = [n for n in expected if n not in state]
    if missing:
        raise ValueError(f"checkpoint {path} lacks tensor {missing[0]} ({len(missing)} missing): "
                         f"is it a Qwen2 model matching its config.json?")
    unexpected = [n for n in state if n not in expected]
    if unexpected:
        raise ValueError(f"checkpoint {path} has unexpected tensor {unexpected[0]}: not a Qwen2 checkpoint?")
    for n, t in state.items():
        if t.shape != expected[n].shape:
            raise ValueError(f"checkpoint {path}: tensor {n} has shape {tuple(t.shape)} but config.json "
                             f"implies {tuple(expected[n].shape)}")
    state = {n: t.to(device=device, dtype=dtype) for n, t in state.items()}
    bad = next((n for n, t in state.items() if not t.isfinite().all()), None)  # (on the device: fast)
    if bad is not None:
        raise ValueError(f"checkpoint {path}: tensor {bad} holds NaN or inf: the weights are corrupt (a diverged "
                         f"run?); load an earlier checkpoint")
    return state
