"""Tasks: the benchmark files as lists of examples, plus two seeded generated tasks (countdown and arith).

An example is a dict with `problem`, `answer`, `task` (which accuracy rule rewards.py applies) and task fields.

    load_task("math500")                      # data/math500_test.jsonl (shipped in the repo), task "math"
    load_task("gsm8k", split="train")         # gsm8k_train.jsonl, task "gsm8k"
    load_task("countdown", n=1000, seed=0)    # TinyZero's game: numbers + target, answer is an expression
    load_task("arith", n=1000)                # '3+4*2' -> '11': a task a tiny CPU model can learn
    load_task("my_data.jsonl")                # any jsonl with "problem" and "answer" on every line
    load_task("openai/gsm8k")                 # a Hub dataset id, if the optional `datasets` package is installed

The generated tasks keep train and test apart by a hash of the problem text: test holds the problems whose
crc32 % 10 == 0, train the rest, so no test problem is ever trained on, whatever n and seed are.
`arith_trace(example)` writes a short worked solution, '<think>3+4*2=3+8=11</think> <answer>11</answer>', the
kind of cold-start data (DeepSeek-R1 §2.3.1) that sft.py trains on before RL.
"""
import json
import random
import zlib
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"  # shipped with the repo: sources and licences in data/README.md
FILES = {  # name -> (file pattern, task for rewards.accuracy_reward)
    "gsm8k": ("gsm8k_{split}.jsonl", "gsm8k"),
    "math500": ("math500_test.jsonl", "math"),
    "aime24": ("aime24_test.jsonl", "math"),
    "amc23": ("amc23_test.jsonl", "math"),
}
GENERATED = ("countdown", "arith")
NAMES = tuple(FILES) + GENERATED


def iter_jsonl(path):
    """(line number, object) for each non-blank line of a jsonl file; bad JSON, bytes that are not UTF-8 and
    escaped lone surrogates (text no tokenizer can encode) raise ValueError naming file:line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig")  # (a byte-order mark at the start is allowed)
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: byte {raw[e.start]:#04x} at column {e.start + 1} is not UTF-8: "
                                 f"save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                json.dumps(row, ensure_ascii=False).encode("utf-8")  # a "\ud800" escape decodes to a lone surrogate
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg}); write one JSON object per line") from None
            except UnicodeEncodeError:
                raise ValueError(f"{path}:{lineno}: holds a lone surrogate escape (like \\ud800), which is not text: "
                                 f"fix or drop that line") from None
            yield lineno, row


def read_jsonl(path, task="math"):
    """Examples from a jsonl file; each line a JSON object with string-able "problem" and "answer" fields.
    A line's own "task" field wins over `task`. A bad line raises ValueError naming file:line."""
    examples = []
    for lineno, row in iter_jsonl(path):
        if not isinstance(row, dict) or "problem" not in row or "answer" not in row:
            raise ValueError(f"{path}:{lineno}: needs an object with 'problem' and 'answer' fields, got "
                             f"{sorted(row) if isinstance(row, dict) else type(row).__name__}")
        if not isinstance(row["problem"], str) or not isinstance(row["answer"], (str, int, float)):
            raise ValueError(f"{path}:{lineno}: 'problem' must be a string and 'answer' a string or number")
        examples.append({**row, "answer": str(row["answer"]), "task": row.get("task", task)})
    if not examples:
        raise ValueError(f"{path} holds no examples: write one JSON object with 'problem' and 'answer' per line")
    return examples


def load_task(name_or_path, split="test", n=None, seed=0, data_dir=None, **generator_flags):
    """Examples of a named task (gsm8k, math500, aime24, amc23, countdown, arith) or a .jsonl path.
    n keeps the first n examples (generated tasks: how many to make; default 1000); generator_flags go to
    make_countdown / make_arith (e.g. min_numbers=3, max_numbers=4, max_value=100)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name_or_path in GENERATED:
        make = make_countdown if name_or_path == "countdown" else make_arith
        return make(1000 if n is None else n, seed=seed, split=split, **generator_flags)
    if name_or_path in FILES:
        pattern, task = FILES[name_or_path]
        path = Path(data_dir or DATA_DIR) / pattern.format(split=split)
        if "{split}" not in pattern and split != "test":
            raise FileNotFoundError(f"{name_or_path} has only a test split: pass split='test'")
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: pass data_dir=<folder with the jsonl files> "
                                    f"(default: the repo's data/ folder)")
    else:
        path, task = Path(name_or_path), "math"
        if path.suffix != ".jsonl" and not path.exists() and _looks_like_hub_id(name_or_path):
            examples = load_hub_dataset(name_or_path, split)
            return examples[:n] if n is not None else examples
        if path.suffix != ".jsonl" or not path.exists():
            raise FileNotFoundError(f"unknown dataset {name_or_path!r}: pass one of {', '.join(NAMES)} "
                                    f"or the path of a .jsonl file with 'problem' and 'answer' fields")
    examples = read_jsonl(path, task)
    return examples[:n] if n is not None else examples


def _looks_like_hub_id(name):
    owner, _, rest = name.partition("/")
    return bool(owner) and bool(rest) and "/" not in rest and not name.startswith(".")


PROBLEM_KEYS, ANSWER_KEYS = ("problem", "question", "prompt"), ("answer", "solution")


def load_hub_dataset(dataset_id, split="test"):
    """A Hugging Face Hub dataset through the optional `datasets` package: the first column named like a problem
    (problem / question / prompt) and like an answer (answer / solution). GSM8K's "reasoning #### 42" answers keep
    only the final number; anything else is taken as it is, so pick a dataset whose answer column is final."""
    try:
        import datasets
    except ImportError:
        raise FileNotFoundError(f"{dataset_id!r} looks like a Hub dataset id, which needs the optional `datasets` "
                                f"package (pip install datasets); or pass a .jsonl file") from None
    try:
        rows = datasets.load_dataset(dataset_id, "main" if dataset_id.endswith("gsm8k") else None, split=split)
    except Exception as e:  # network, unknown id, unknown split: one line, whatever the library raised
        raise FileNotFoundError(f"could not load Hub dataset {dataset_id!r} split {split!r}: {e}") from None
    columns = rows.column_names
    pkey = next((k for k in PROBLEM_KEYS if k in columns), None)
    akey = next((k for k in ANSWER_KEYS if k in columns), None)
    if pkey is None or akey is None:
        raise ValueError(f"Hub dataset {dataset_id!r} has columns {columns}: need one of {PROBLEM_KEYS} and one of "
                         f"{ANSWER_KEYS}")
    task = "gsm8k" if "gsm8k" in dataset_id.lower() else "math"
    return [{"problem": str(r[pkey]), "answer": str(r[akey]).split("####")[-1].strip().replace(",", ""),
             "task": task} for r in rows]


def _in_split(problem, split):
    return (zlib.crc32(problem.encode()) % 10 == 0) == (split == "test")


def _draw(n, seed, split, make_one):
    """n distinct problems of one split from a seeded stream (make_one(rng) -> example or None to retry)."""
    rng, examples, seen = random.Random(seed), [], set()
    for _ in range(200 * n + 1000):
        if len(examples) == n:
            return examples
        ex = make_one(rng)
        if ex is not None and ex["problem"] not in seen and _in_split(ex["problem"], split):
            seen.add(ex["problem"])
            examples.append(ex)
    raise ValueError(f"could draw only {len(examples)} of {n} distinct {split} problems: widen the number "
                     f"range or ask for fewer")


# ------------------------------------------------------------------------------------------- countdown


def make_countdown(n, seed=0, split="train", min_numbers=3, max_numbers=4, min_value=1, max_value=100,
                   max_target=1000):
    """Solvable countdown problems: 3-6 numbers drawn from [min_value, max_value], the target the value of a
    random expression over all of them (exact divisions only, every intermediate and the target whole and
    positive, target <= max_target). The expression is kept as `solution`."""
    if not 3 <= min_numbers <= max_numbers <= 6 or not 1 <= min_value <= max_value:
        raise ValueError("need 3 <= min_numbers <= max_numbers <= 6 and 1 <= min_value <= max_value")

    def make_one(rng):
        numbers = [rng.randint(min_value, max_value) for _ in range(rng.randint(min_numbers, max_numbers))]
        terms = [(str(x), x) for x in numbers]
        while len(terms) > 1:  # combine two random terms until one is left: a random binary tree
            (a, x), (b, y) = terms.pop(rng.randrange(len(terms))), terms.pop(rng.randrange(len(terms)))
            op = rng.choice("+-*/")
            if op == "-" and x < y:
                (a, x), (b, y) = (b, y), (a, x)
            if op == "/" and x % y:  # exact divisions only: every intermediate stays a whole number
                op = "+"
            value = x + y if op == "+" else x - y if op == "-" else x * y if op == "*" else x // y
            if value <= 0:  # a zero would make a later division undefined
                return None
            terms.append((f"({a} {op} {b})", value))
        solution, target = terms[0][0][1:-1], terms[0][1]
        if target > max_target:
            return None
        shown = sorted(numbers)
        problem = (f"Using the numbers {shown}, create an equation that equals {target}. You can use +, -, *, / "
                   f"and parentheses, and each number at most once. Give the expression in <answer> </answer>.")
        return {"problem": problem, "answer": str(target), "task": "countdown", "numbers": shown,
                "target": target, "solution": solution}

    return _draw(n, seed, split, make_one)


# ----------------------------------------------------------------------------------------------- arith


def make_arith(n, seed=0, split="train", min_ops=1, max_ops=3, max_value=9, parens=0.3):
    """Short integer expressions over + - * with numbers 1..max_value (one digit by default), e.g. '3+4*2' or '(7-2)*3'.
    Every intermediate value is >= 0 so the worked trace never writes a negative number."""

    def make_one(rng):
        k = rng.randint(min_ops, max_ops)
        tokens = [str(rng.randint(1, max_value))]
        for _ in range(k):
            tokens += [rng.choice("+-*"), str(rng.randint(1, max_value))]
        if k >= 2 and rng.random() < parens:  # wrap one operation in parentheses
            i = 2 * rng.randrange(k)
            tokens = tokens[:i] + ["("] + tokens[i:i + 3] + [")"] + tokens[i + 3:]
        steps = _reduce_steps(tokens)
        if steps is None:
            return None
        return {"problem": "".join(tokens), "answer": steps[-1][0], "task": "arith"}

    return _draw(n, seed, split, make_one)


def _reduce_steps(tokens):
    """Token lists after each single operation: the innermost parentheses first, then * left to right, then
    + and - left to right. None if a step goes negative."""
    steps = []
    while len(tokens) > 1:
        lo, hi = 0, len(tokens)
        if "(" in tokens:
            lo = max(i for i, t in enumerate(tokens) if t == "(") + 1
            hi = tokens.index(")", lo)
            if hi - lo == 1:  # '(7)' -> '7'
                tokens = tokens[:lo - 1] + [tokens[lo]] + tokens[hi + 1:]
                continue
        inner = tokens[lo:hi]
        j = lo + (inner.index("*") if "*" in inner else 1)  # the operator to apply now
        a, op, b = int(tokens[j - 1]), tokens[j], int(tokens[j + 1])
        value = a * b if op == "*" else a + b if op == "+" else a - b
        if value < 0:
            return None
        tokens = tokens[:j - 1] + [str(value)] + tokens[j + 2:]
        if len(tokens) >= 3 and tokens[j - 2] == "(" and tokens[j] == ")":
            tokens = tokens[:j - 2] + [tokens[j - 1]] + tokens[j + 1:]
        steps.append(tokens)
    return steps or [tokens]


def arith_trace(example):
    """'<think>3+4*2=3+8=11</think> <answer>11</answer>' for {'problem': '3+4*2', ...}."""
    tokens = [t for t in example["problem"].replace("(", " ( ").replace(")", " ) ").replace("+", " + ")
              .replace("-", " - ").replace("*", " * ").split()]
    chain = [example["problem"]] + ["".join(step) for step in _reduce_steps(tokens)]
    if chain[-1] == chain[0]:
        chain = chain[:1]
    return f"<think>{'='.join(chain)}</think> <answer>{chain[-1]}</answer>"


# ------------------------------------------------------------------------------- a pretraining corpus for arith

# Tag names a worksheet may ask for, two drawn at random per page: so many that the page's own instruction is the
# only way to know them (a fixed few would be memorised, and the instruction never read). "think" and "answer" are
# never among them, nor "check"/"verify"/"wait" (rewards.self_check): the base model learns to follow a stated
# format, never the R1 one (the words themselves occur in the text, as on any web page).
WORKSHEET_TAGS = ("work", "result", "steps", "final", "calc", "value", "notes", "total", "draft", "sum", "scratch",
                  "reply", "method", "number", "reason", "end", "plan", "out", "idea", "goal", "path", "proof",
                  "claim", "solve", "output", "trace", "box", "part", "line", "text", "body", "note", "mind", "logic",
                  "sol", "res", "key", "tip", "memo", "step", "math", "deal", "fact", "task", "form", "ink", "pad")
HABITS = ("direct", "worked", "check", "slip")  # answer at once; step by step; with a check; a slip the check fixes


def worked_chain(example):
    """['3+4*2', '3+8', '11']: the problem, then the expression after each single operation (tasks._reduce_steps)."""
    tokens = [t for t in example["problem"].replace("(", " ( ").replace(")", " ) ").replace("+", " + ")
              .replace("-", " - ").replace("*", " * ").split()]
    chain = [example["problem"]] + ["".join(step) for step in _reduce_steps(tokens)]
    return chain[:1] if chain[-1] == chain[0] else chain


def _last_step(chain):
    """(x, op, y) of the last operation of a worked chain: '3+8' -> (3, '+', 8)."""
    for op in "+-*":
        left, sep, right = chain[-2].partition(op)
        if sep and left.isdigit() and right.isdigit():
            return int(left), op, int(right)
    return None


def solution_text(example, habit, rng):
    """The working of one habit, in plain text: '3+4*2 = 11' (direct), '3+4*2 = 3+8 = 11' (worked), the worked
    chain + 'Check: 11 - 8 = 3, so it is 11.' (check), or a slip in the last step that the check catches:
    '3+4*2 = 3+8 = 12. Check: 12 - 8 = 4, not 3, so it is 11.' (slip). Checks undo the last operation
    (a check of a product recomputes it the other way round)."""
    chain = worked_chain(example)
    step = _last_step(chain) if len(chain) > 2 or habit in ("check", "slip") else None
    if habit == "direct" or len(chain) < 2:
        return f"{chain[0]} = {chain[-1]}"
    if habit == "worked" or step is None:
        return " = ".join(chain)
    x, op, y = step
    z = int(chain[-1])
    shown = z
    if habit == "slip":
        shown = max(0, z + rng.choice([-2, -1, 1, 2]))
        shown = shown if shown != z else z + 1
    check = {"+": f"{shown} - {y} = {shown - y}", "-": f"{shown} + {y} = {shown + y}", "*": f"{y}*{x} = {z}"}[op]
    back = {"+": shown - y, "-": shown + y, "*": z}[op]
    expected = x if op != "*" else shown
    verdict = f", not {expected}" if back != expected else ""
    return " = ".join(chain[:-1] + [str(shown)]) + f". Check: {check}{verdict}, so it is {z}"


# The opening of the R1-Zero template (DeepSeek-R1 Table 1) without its sentence about the tags: a chat log's preamble.
CHAT_PREAMBLE = ("A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
                 "The assistant first thinks about the reasoning process in the mind and then provides the user with "
                 "the answer.")


def random_tag(rng):
    """A tag name of 3 to 7 random letters, never holding a word of the R1 format or of rewards.self_check."""
    while True:
        name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 7)))
        if not any(w in name for w in ("think", "answer", "check", "verify", "wait")):
            return name


def corpus_document(example, habit, layout, rng, tag_names="words"):
    """One plain-text document: a problem as a textbook, a Q&A page, a chat log or a worksheet would write it.
    A worksheet (a page or a chat log) names two tags and puts the working and the result in them; its chat form
    states the format in the words of the R1-Zero template, with other tags. tag_names: "words" (two of
    WORKSHEET_TAGS) or "random" (random_tag: only copying them from the page's own instruction predicts them)."""
    if tag_names not in ("words", "random"):
        raise ValueError(f"unknown tag_names {tag_names!r}: pass words or random")
    p, a, work = example["problem"], example["answer"], solution_text(example, habit, rng)
    if layout == "textbook":
        return f"Problem: {p}. Solution: {work}. The answer is {a}."
    if layout == "qa":
        return f"Q: What is {p}? A: {work}. So the answer is {a}."
    if layout == "chat":
        return f"{CHAT_PREAMBLE} User: {p}. Assistant: Let me think. {work}. The answer is {a}."
    w, r = rng.sample(WORKSHEET_TAGS, 2) if tag_names == "words" else (random_tag(rng), random_tag(rng))
    head = rng.choice([
        f"Worksheet. Write the working within <{w}> </{w}> and the result within <{r}> </{r}>. Problem: {p}. Solution:",
        f"Worksheet. Format: <{w}> working here </{w}> <{r}> result here </{r}>. Problem: {p}. Solution:",
        f"{CHAT_PREAMBLE} The working and result are enclosed within <{w}> </{w}> and <{r}> </{r}> tags, "
        f"respectively, i.e., <{w}> working here </{w}> <{r}> result here </{r}>. User: {p}. Assistant:",
        f"{CHAT_PREAMBLE} The reasoning process and answer are enclosed within <{w}> </{w}> and <{r}> </{r}> tags, "
        f"respectively, i.e., <{w}> reasoning process here </{w}> <{r}> answer here </{r}>. User: {p}. Assistant:"])
    return f"{head} <{w}> {work} </{w}> <{r}> {a} </{r}>"


def pretraining_corpus(examples, n_docs=None, seed=0, habits=(0.4, 0.4, 0.1, 0.1), worksheet=0.2,
                       tag_names="words"):
    """n_docs plain-text documents (default one per example; more cycle through the examples, each time drawn
    anew, as the web writes a problem many ways) for pretraining a base model from scratch (demo.py --recipe
    r1-zero). habits: the shares of HABITS; worksheet: the share of documents in the worksheet layout (the rest
    split evenly between textbook, Q&A and chat log); tag_names: a worksheet's tags (corpus_document). Never the
    <think>/<answer> format."""
    if len(habits) != len(HABITS) or abs(sum(habits) - 1) > 1e-6 or not 0 <= worksheet <= 1:
        raise ValueError(f"habits must be {len(HABITS)} shares summing to 1 ({', '.join(HABITS)}), worksheet in [0, 1]")
    rng = random.Random(seed)
    docs = []
    for i in range(len(examples) if n_docs is None else n_docs):
        ex = examples[i % len(examples)]
        habit = rng.choices(HABITS, weights=habits)[0]
        layout = "worksheet" if rng.random() < worksheet else rng.choice(["textbook", "qa", "chat"])
        docs.append(corpus_document(ex, habit, layout, rng, tag_names))
    return docs
