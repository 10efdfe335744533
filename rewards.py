"""Rule-based rewards of DeepSeek-R1: answer extraction, answer equivalence, format, accuracy, language.

R1-Zero (DeepSeek-R1 §2.2.2) learns from two rules and no reward model: an *accuracy* reward (is the final
answer right?) and a *format* reward (is the reasoning inside <think></think> and the answer inside
<answer></answer>?); §2.3.3 adds a *language-consistency* reward against language mixing. Every reward here is
a pure `(completion: str, example: dict) -> float` that never evals or execs model text (arithmetic goes through
the small parser below, over a fixed token set) and returns in bounded time on any input: an answer longer than
MAX_ANSWER_CHARS is wrong without being read, the parser has a nesting budget, exponents go through math.pow
(OverflowError, never a 10^(10^10)-digit integer), and whole-completion scans are C-level (str.count, rfind).

    python -m pytest tests/test_rewards.py -q    # equivalence table, countdown verifier, hostile inputs timed
    python bench/rewards_check.py                # GSM8K / MATH-500 figures of docs/rewards_measurements.md

Choices (and where they depart from a reference):
1. Format reward: the *strict* variant is the default: the whole completion is `<think>…</think> <answer>…</answer>`
   with only whitespace outside the tags, one of each. It is the shape the R1-Zero template shows the model, and
   the lenient variant (the two blocks in order, anything around them) also pays for chatter before <think> and
   for text after </answer>, which RL then keeps (longer rollouts for the same reward). Use lenient
   (`format_reward(c, ex, strict=False)`) for chat models that open with a preamble you do not want to fight.
2. Countdown: each given number may be used *at most once* (the task as issue 4 states it); TinyZero demands
   every number exactly once. Our generator's solutions use all numbers, so both rules accept them.
3. answers_match is self-contained (sympy is not a runtime dependency): string equality after normalisation,
   then tuples/intervals/sets element by element, then numeric equality (relative tolerance 1e-9) of expressions
   built from numbers, + - * / ^, \\frac, \\sqrt and \\pi. Symbolic equality (x+1 vs 1+x) is not attempted.
4. GSM8K and the synthetic `arith` task compare *plain numbers*, not expressions, so copying the question
   ("<answer>3+4*2</answer>") earns nothing; only GSM8K falls back to the last number (its answers are sentences).
5. Language consistency (§2.3.3) is the share of words in the <think> block written in the problem's script
   (Latin vs CJK vs other); it is off by default (`combined_reward(..., language_weight=0.0)`): the paper adds it
   only in the later stage and notes it costs a little accuracy.
"""
import math
import re
from collections import Counter
from fractions import Fraction

MAX_ANSWER_CHARS = 1000  # longer answers are wrong by definition and never parsed
MAX_DEPTH = 50  # nesting (parentheses, braces, exponents) the arithmetic parser accepts
TAIL_CHARS = 1000  # the GSM8K last-number fallback only reads the end of the completion
TAGS = ("<think>", "</think>", "<answer>", "</answer>")

# ----------------------------------------------------------------------------------------- extraction

def _match_brace(s, i):
    """Index of the "}" closing the "{" at s[i], or -1 (looks at most MAX_ANSWER_CHARS ahead)."""
    depth = 0
    for j in range(i, min(len(s), i + MAX_ANSWER_CHARS)):
        depth += (s[j] == "{") - (s[j] == "}")
        if depth == 0:
            return j
    return -1

def _last_boxed(text):
    """Content of the last closed \\boxed{...} (or \\fbox{...}), nested braces included."""
    end = len(text)
    for _ in range(8):  # an unclosed \boxed{ falls back to the one before it, a few times at most
        i = max(text.rfind("\\boxed{", 0, end), text.rfind("\\fbox{", 0, end))
        if i < 0:
            return None
        brace = text.index("{", i)
        j = _match_brace(text, brace)
        if j > 0:
            return text[brace + 1:j]
        end = i
    return None

_NUMBER = re.compile(r"-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+", re.ASCII)  # ASCII: '٣', '²' are no digits

def _last_number(text):  # '-$1,234.50' -> '-1234.50'
    found = _NUMBER.findall(text[-TAIL_CHARS:])
    return found[-1].replace(",", "").replace("$", "") if found else None

def extract_answer(text, last_number=False):
    """The last <answer>…</answer> (a \\boxed{} inside it wins), else the last \\boxed{…}, else (GSM8K-style tasks,
    last_number=True) the last number in the text, else None."""
    close = text.rfind("</answer>")
    open_ = text.rfind("<answer>", 0, close) if close >= 0 else -1
    if open_ >= 0:
        inner = text[open_ + len("<answer>"):close]
        return (_last_boxed(inner) or inner).strip()
    boxed = _last_boxed(text)
    return boxed.strip() if boxed is not None else _last_number(text) if last_number else None

# -------------------------------------------------------------------------------------- normalisation

_WRAPPERS = ("\\text{", "\\textbf{", "\\textrm{", "\\mathrm{", "\\mathbf{", "\\mbox{", "\\boxed{")
_DROP = re.compile(  # layout and decoration that never changes the value
    r"\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])|(?<!\\)\\[,;:! ]|\\q?quad|\\displaystyle"
    r"|\^\{?\\circ\}?|\\circ|°|\\?%|\\?\$|\s+")
_UNITS = (r"degrees?|cents?|dollars?|units?|square|sq|cm|mm|km|meters?|inch(?:es)?|feet|foot|ft|yards?|miles?|mph"
          r"|hours?|minutes?|seconds?|days?|weeks?|months?|years?|pounds?|ounces?|grams?|kg|liters?|percent")
_UNIT_TAIL = re.compile(rf"(?<=[\d}}])(?:(?:{_UNITS})(?:\^\{{?[23]\}}?)?)+$")
_VAR_PREFIX = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?(?:=|\\in)(?!=)")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", re.ASCII)
_MATRIX = re.compile(r"\\begin\{[pbvB]?matrix\}(.*)\\end\{[pbvB]?matrix\}")

def _unwrap(s):
    """\\text{abc} -> abc for every wrapper command (nested braces handled)."""
    for _ in range(20):
        hits = [(s.find(w), w) for w in _WRAPPERS if w in s]
        if not hits:
            return s
        i, w = min(hits)
        j = _match_brace(s, i + len(w) - 1)
        if j < 0:
            return s
        s = s[:i] + s[i + len(w):j] + s[j + 1:]
    return s

def normalize_answer(s):
    """Canonical string form of a final answer: '\\left( \\dfrac{1}{2}, 3 \\right)' -> '(\\frac{1}{2},3)'."""
    s = _DROP.sub("", _unwrap(s.strip()))
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\{", "{").replace("\\}", "}")
    s = s.replace("\\cup", "∪").replace("\\infty", "∞").replace("{,}", ",")  # 1{,}000 is 1,000
    # LaTeX shorthands: \frac12 = \frac{1}{2}, \frac1{10}, \frac{270}7, \sqrt2 = \sqrt{2} (one digit, as TeX reads it)
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac(\d)(?=\{)", r"\\frac{\1}", s)
    s = re.sub(r"\\frac(\{[^{}]*\})(\d)", r"\\frac\1{\2}", s)
    s = re.sub(r"\\sqrt(\d)", r"\\sqrt{\1}", s)
    s = _MATRIX.sub(lambda m: "(" + re.sub(r"\\\\|&", ",", m.group(1)).strip(",") + ")", s)
    s = _VAR_PREFIX.sub("", _UNIT_TAIL.sub("", s)).rstrip(".")
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if re.fullmatch(r"\(([A-Ea-e])\)", s):  # multiple choice "(C)" -> "C"
        s = s[1]
    return s.lower() if s.isascii() and s.isalpha() else s

# ------------------------------------------------------------------------------- arithmetic parser

_TOKEN = re.compile(r"\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+|\\[a-zA-Z]+|\S", re.ASCII)
_MUL, _DIV = ("*", "\\times", "\\cdot", "×", "·"), ("/", "÷", "\\div")
_FUNCS = ("\\frac", "\\sqrt", "\\pi")

class _Arith:
    """Recursive descent over numbers, + - * / and parentheses. exact=True (countdown): Fractions over whole numbers
    only, recording each number read. exact=False (answers): floats, plus ^, {…}, \\frac{}{}, \\sqrt{}, \\pi and
    implicit products (2\\sqrt{3}). Any other token raises ValueError: unknown text is never interpreted.

        expr := term (('+'|'-') term)*      term := signed ((MUL|DIV)? signed)*
        signed := ('+'|'-')* power          power := primary ('^' signed)?
    """

    def __init__(self, text, exact):
        self.toks, self.i, self.depth, self.exact, self.numbers = _TOKEN.findall(text), 0, 0, exact, []

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, want=None):
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise ValueError(f"expected {want or 'more'} at token {self.i}")
        self.i += 1
        return tok

    def parse(self):
        value = self.expr()
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek()!r}")
        return value

    def expr(self):
        value = self.term()
        while self.peek() in ("+", "-"):
            value = value + self.term() if self.take() == "+" else value - self.term()
        return value

    def term(self):
        value = self.signed()
        while True:
            tok = self.peek()
            if tok in _MUL or tok in _DIV:
                self.take()
                value = value * self.signed() if tok in _MUL else value / self.signed()  # ZeroDivisionError on /0
            elif not self.exact and tok is not None and (tok[0] in "0123456789.({" or tok in _FUNCS):
                value = value * self.power()  # implicit product: 3\sqrt{13}, 2\pi
            else:
                return value

    def signed(self):
        self.depth += 1  # every nesting (parentheses, braces, exponents) passes here: 10,000 '(' stop at MAX_DEPTH
        if self.depth > MAX_DEPTH:
            raise ValueError("nested too deep")
        sign = 1
        while self.peek() in ("+", "-"):
            sign = -sign if self.take() == "-" else sign
        value = sign * self.power()
        self.depth -= 1
        return value

    def power(self):
        base = self.primary()
        if self.exact or self.peek() != "^":
            return base
        self.take()
        return math.pow(base, self.signed())  # float: OverflowError for 9^9^9^9, ValueError for (-8)^(1/3)

    def primary(self):
        tok = self.take()
        if tok[0] in "0123456789.":
            if not self.exact:
                return float(tok)
            if not tok.isdigit():
                raise ValueError(f"countdown uses whole numbers, got {tok!r}")
            self.numbers.append(int(tok))
            return Fraction(int(tok))
        if tok == "(" or (tok == "{" and not self.exact):
            value = self.expr()
            self.take(")" if tok == "(" else "}")
            return value
        if not self.exact and tok == "\\frac":
            return self.primary() / self.primary()
        if not self.exact and tok in ("\\sqrt", "\\pi"):
            return math.sqrt(self.primary()) if tok == "\\sqrt" else math.pi
        raise ValueError(f"unexpected {tok!r}")

def _value(s):
    """Float value of a normalised numeric answer, or None (text, symbols, overflow, division by zero)."""
    s = re.sub(r"^(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}$", r"\1(\2+\3/\4)", s)  # 1\frac{4}{5} is one and four fifths
    try:
        value = float(_Arith(s, exact=False).parse())
    except (ValueError, ArithmeticError, TypeError):  # OverflowError and ZeroDivisionError are ArithmeticErrors
        return None
    return value if math.isfinite(value) else None

# ------------------------------------------------------------------------------------ equivalence

def _split_top(s, seps):
    """Split s at separator characters outside every bracket; None if a bracket closes that never opened."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        depth += (ch in "([{") - (ch in ")]}")
        if depth < 0:
            return None
        if depth == 0 and ch in seps:
            parts.append(s[start:i])
            start = i + 1
    return parts + [s[start:]]

def _items(s):
    """('(', ']', ['3','4']) for '(3,4]'; ('', '', ['1','-2']) for the bare list '1,-2' and for '(1,2),(3,4)'."""
    inner = _split_top(s[1:-1], ",") if len(s) >= 2 and s[0] in "([{" and s[-1] in ")]}" else None
    return (s[0], s[-1], inner) if inner else ("", "", _split_top(s, ",") or [s])

def _equivalent(p, g, depth=0):
    if p == g:
        return True
    if depth > 3 or not p or not g:
        return False
    pu, gu = _split_top(p, "∪") or [p], _split_top(g, "∪") or [g]  # unions of intervals: piece by piece, in order
    if len(pu) > 1 or len(gu) > 1:
        return len(pu) == len(gu) and all(_equivalent(a, b, depth + 1) for a, b in zip(pu, gu))
    (po, pc, pi), (go, gc, gi) = _items(p), _items(g)
    if len(pi) > 1 or len(gi) > 1:  # tuples, intervals, vectors in order; bare lists and {sets} in any order
        if (po, pc) != (go, gc) or len(pi) != len(gi) or len(pi) > 32:
            return False
        if po in ("", "{"):
            left = list(gi)
            for a in pi:
                k = next((j for j, b in enumerate(left) if _equivalent(a, b, depth + 1)), None)
                if k is None:
                    return False
                left.pop(k)
            return True
        return all(_equivalent(a, b, depth + 1) for a, b in zip(pi, gi))
    a, b = _value(p), _value(g)
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)

def answers_match(pred, gold):
    """Is the predicted final answer equivalent to the gold? '\\dfrac{1}{2}' ~ '0.5' ~ '1/2', '(1,2]' !~ '(1,2)'."""
    if not isinstance(pred, str) or not isinstance(gold, str) or len(pred) > MAX_ANSWER_CHARS:
        return False
    p, g = normalize_answer(pred), normalize_answer(gold)
    return bool(p) and _equivalent(p, g)

def _plain_number(s):
    s = normalize_answer(s) if s is not None and len(s) <= MAX_ANSWER_CHARS else ""
    return Fraction(s) if re.fullmatch(r"-?(\d+\.?\d*|\.\d+)", s, re.ASCII) else None

# ------------------------------------------------------------------------------------------ rewards

def format_reward(completion, example=None, strict=True):
    """1.0 for exactly one <think>…</think> followed by one non-empty <answer>…</answer>, else 0.0.
    strict (default): nothing but whitespace outside the tags; lenient: any text before and after."""
    if any(completion.count(t) != 1 for t in TAGS):
        return 0.0
    a, b, c, d = (completion.find(t) for t in TAGS)
    if not a < b < c < d or not completion[c + len("<answer>"):d].strip():
        return 0.0
    outside = completion[:a] + completion[b + len("</think>"):c] + completion[d + len("</answer>"):]
    return float(not strict or not outside.strip())

def countdown_verify(expression, numbers, target):
    """Does the arithmetic expression use only the given numbers (each at most once) and equal target exactly?
    An optional trailing '= target' is ignored; division by zero, decimals and unknown symbols fail."""
    if not isinstance(expression, str) or len(expression) > MAX_ANSWER_CHARS:
        return False
    parser = _Arith(expression.split("=")[0], exact=True)
    try:
        value = parser.parse()
    except (ValueError, ArithmeticError):
        return False
    unavailable = Counter(parser.numbers) - Counter(numbers)  # numbers not given, or used more often than given
    return bool(parser.numbers) and not unavailable and value == target

def final_answer(completion, task="math"):
    """The answer a task's accuracy rule reads: extract_answer, and for GSM8K the last number as a fallback."""
    pred = extract_answer(completion, last_number=task == "gsm8k")
    if task == "gsm8k" and pred is not None and _plain_number(pred) is None:  # '<answer>She earns $18.</answer>'
        pred = _last_number(pred)
    return pred

def accuracy_reward(completion, example):
    """1.0 if the completion's final answer is right for example["task"], else 0.0."""
    task = example.get("task", "math")
    pred = final_answer(completion, task)
    if task == "countdown":
        return float(countdown_verify(pred, example["numbers"], example["target"]))
    if task in ("gsm8k", "arith"):  # plain numbers, compared exactly: '$1,234.00' == '1234'
        value = _plain_number(pred)
        return float(value is not None and value == _plain_number(str(example["answer"])))
    return float(answers_match(pred, str(example["answer"])))

_LATIN = r"A-Za-z\u00c0-\u024f"
_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
_SCRIPTS = {"latin": re.compile(f"[{_LATIN}]+"), "cjk": re.compile(f"[{_CJK}]"),  # one CJK character ~ one word
            "other": re.compile(rf"[^\W\d_{_LATIN}{_CJK}]+")}
LANGUAGE_WINDOWS, LANGUAGE_WINDOW_CHARS = 16, 2048  # longer thinking is sampled in evenly spaced windows

def _word_counts(text):
    """Words per script; beyond 32k characters an estimate from 16 evenly spaced 2k windows (bounded time)."""
    if len(text) > LANGUAGE_WINDOWS * LANGUAGE_WINDOW_CHARS:
        step = (len(text) - LANGUAGE_WINDOW_CHARS) // (LANGUAGE_WINDOWS - 1)
        text = " ".join(text[i * step:i * step + LANGUAGE_WINDOW_CHARS] for i in range(LANGUAGE_WINDOWS))
    return {name: sum(1 for _ in pattern.finditer(text)) for name, pattern in _SCRIPTS.items()}

def language_reward(completion, example):
    """Share of the words inside <think>…</think> written in the problem's script (DeepSeek-R1 §2.3.3)."""
    a, b = completion.find("<think>"), completion.find("</think>")
    if a < 0 or b < a:
        return 0.0
    counts = _word_counts(completion[a + len("<think>"):b])
    total = sum(counts.values())
    problem = _word_counts(example.get("problem", ""))
    target = max(problem, key=problem.get) if any(problem.values()) else "latin"
    return counts[target] / total if total else 0.0

def combined_reward(completion, example, format_weight=1.0, language_weight=0.0, strict=True):
    """accuracy + format_weight * format + language_weight * language (R1-Zero: accuracy + format)."""
    total = accuracy_reward(completion, example) + format_weight * format_reward(completion, example, strict)
    return total + (language_weight * language_reward(completion, example) if language_weight else 0.0)
