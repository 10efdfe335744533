"""Final answers: where the answer is in a completion, its canonical form, and when two answers are the same value.

rewards.py turns these into rewards; evaluate.py groups equivalent answers for maj@k. Everything here is pure,
never evals or execs model text (arithmetic goes through algebra.py's parser, over a fixed token set) and returns
in bounded time on any input: an answer longer than MAX_ANSWER_CHARS is different from every gold without being
read, and the parser has budgets on nesting, terms, exponents, digits and work.

    python -m pytest tests/test_answers.py -q    # the equivalence table, by kind of misjudgement, negatives included
    python bench/rewards_check.py                # GSM8K / MATH-500 figures of docs/rewards_measurements.md

How answers_match decides (first rule that applies):
1. Strings equal after normalize_answer (layout, \\text{}, units, $ \\( \\) \\[ \\], `x =`, thousands commas).
2. Unions piece by piece; tuples, intervals and vectors element by element in order (brackets must agree); bare
   lists and {sets} element by element in any order (a set equals the bare list of its elements). Matrices keep
   their shape: a 2x2 matrix is a pair of rows, never a 4-tuple; a single row or column is a vector (a tuple).
3. Values, exactly: algebra.py turns each side into a canonical quotient of integer polynomials over variables,
   \\pi, i and square roots (our own, not sympy: dependency-free, exact, bounded in time on hostile text), so
   b - a = -a + b, 2(x+1) = 2x+2, 1/\\sqrt{3} = \\sqrt{3}/3, 2 1/3 = 7/3 (a mixed number), 9876543211 != 9876543210.
4. Tolerance only where a decimal approximates an irrational: a side with a decimal point against a side with \\pi
   or a square root, no variables, compare to 1e-9 relative (3.14159265358979 ~ \\pi; 3.14 !~ \\pi, a rounding the
   problem did not ask for). Rational against rational is always exact: 1.5 = 3/2, 0.333 != 1/3.
Bases compare as written (101_{2} = 101_2, 101_2 != 101_3, 101_2 != 5): a base is part of what was asked.
Functions (\\sin, \\log), equations between two expressions and inequalities are compared as strings only.
math_verify_match is HuggingFace's math-verify (optional package) behind the same signature, for figures
comparable with open-r1's.
"""
import re
import threading
from functools import lru_cache
from fractions import Fraction

from algebra import parse_value

MAX_ANSWER_CHARS = 1000  # longer answers are wrong by definition and never parsed
TAIL_CHARS = 1000  # the GSM8K last-number fallback only reads the end of the completion
MATH_VERIFY_TIMEOUT_S = 1  # math-verify's own parse and verify alarms (seconds, whole numbers)

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

def plain_number(s):
    """Exact value of an answer that is a plain number ('$1,234.00' -> 1234), else None."""
    s = normalize_answer(s) if s is not None and len(s) <= MAX_ANSWER_CHARS else ""
    return Fraction(s) if re.fullmatch(r"-?(\d+\.?\d*|\.\d+)", s, re.ASCII) else None

def final_answer(completion, task="math"):
    """The answer a task's accuracy rule reads: extract_answer, and for GSM8K the last number as a fallback."""
    pred = extract_answer(completion, last_number=task == "gsm8k")
    if task == "gsm8k" and pred is not None and plain_number(pred) is None:  # '<answer>She earns $18.</answer>'
        pred = _last_number(pred)
    return pred

# -------------------------------------------------------------------------------------- normalisation

_WRAPPERS = ("\\text{", "\\textbf{", "\\textrm{", "\\mathrm{", "\\mathbf{", "\\mbox{", "\\boxed{")
_DELIMITERS = re.compile(r"\\?\$|(?<!\\)\\[()\[\]]")  # $ … $, \( … \), \[ … \] (and \$ of dollars)
_DROP = re.compile(  # layout and decoration that never changes the value
    r"\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])|(?<!\\)\\[,;:! ]|\\q?quad|\\displaystyle"
    r"|\^\{?\\circ\}?|\\circ|°|\\?%|\s+")
_UNITS = (r"degrees?|cents?|dollars?|units?|square|sq|cm|mm|km|meters?|inch(?:es)?|feet|foot|ft|yards?|miles?|mph"
          r"|hours?|minutes?|seconds?|days?|weeks?|months?|years?|pounds?|ounces?|grams?|kg|liters?|percent")
_UNIT_TAIL = re.compile(rf"(?<=[\d}}])(?:(?:{_UNITS})(?:\^\{{?[23]\}}?)?)+$")
_VAR_PREFIX = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?(?:=|\\in)(?!=)")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", re.ASCII)
_MATRIX = re.compile(r"\\begin\{[pbvB]?matrix\}(.*?)\\end\{[pbvB]?matrix\}")
_MIXED = re.compile(r"(^|[,(\[{=])\s*(-?\d+)\s+(\d+)\s*/\s*(\d+)(?=\s*(?:$|[,)\]}]))")  # '2 1/3': before spaces go
_OR = re.compile(r"\\(?:text|mbox|textrm)\{\s*(?:or|and)\s*\}|\s+(?:or|and)\s+")  # 'x=2 \text{ or } x=-3'

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

def _matrix(m):
    """A matrix body as nested tuples: 'a&b\\\\c&d' -> '((a,b),(c,d))'; one row or one column -> '(a,b)'."""
    rows = [row.split("&") for row in m.group(1).strip("\\").split("\\\\")]
    if len(rows) == 1 or all(len(row) == 1 for row in rows):
        return "(" + ",".join(cell for row in rows for cell in row) + ")"
    return "(" + ",".join("(" + ",".join(row) + ")" for row in rows) + ")"

def _strip_var_prefixes(s):
    """'x=5' -> '5', 'x=2,x=-3' -> '2,-3', 'x=2,-3' -> '2,-3'; 'x=2,y=3' stays (a system's names matter)."""
    parts = _split_top(s, ",") or [s]
    prefixes = [m.group() if m else None for m in map(_VAR_PREFIX.match, parts)]
    if prefixes[0] and (len(set(prefixes)) == 1 or not any(prefixes[1:])):  # one name on all, or on the first only
        return ",".join(p[len(prefix or ""):] for p, prefix in zip(parts, prefixes))
    return s

_REWRITES = [(re.compile(pattern), replacement) for pattern, replacement in [
    (r"(^|[(\[,])\+∞", r"\1∞"),  # (1, +\infty) is (1, \infty)
    (r"_\{(\w+)\}", r"_\1"),  # bases: 101_{2} is 101_2
    # LaTeX shorthands: \frac12 = \frac{1}{2}, \frac1{10}, \frac{270}7, \sqrt2 = \sqrt{2} (one digit, as TeX reads it)
    (r"\\frac(\d)(\d)", r"\\frac{\1}{\2}"), (r"\\frac(\d)(?=\{)", r"\\frac{\1}"),
    (r"\\frac(\{[^{}]*\})(\d)", r"\\frac\1{\2}"), (r"\\sqrt(\d)", r"\\sqrt{\1}")]]
_PLAIN = re.compile(r"-?\d+(?:\.\d+)?", re.ASCII)  # most answers: nothing to normalise
_CHOICE = re.compile(r"\(([A-Ea-e])\)")

def normalize_answer(s):
    """Canonical string form of a final answer: '\\left( \\dfrac{1}{2}, 3 \\right)' -> '(\\frac{1}{2},3)'."""
    s = s.strip()
    if _PLAIN.fullmatch(s):
        return s
    s = _MIXED.sub(r"\1\2\\frac{\3}{\4}", _OR.sub(",", _DELIMITERS.sub("", s)).strip())
    s = _DROP.sub("", _unwrap(s))
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\{", "{").replace("\\}", "}")
    s = s.replace("\\cup", "∪").replace("\\infty", "∞").replace("{,}", ",")  # 1{,}000 is 1,000
    for pattern, replacement in _REWRITES:
        s = pattern.sub(replacement, s)
    s = _MATRIX.sub(_matrix, s)
    s = _strip_var_prefixes(_UNIT_TAIL.sub("", s)).rstrip(".")
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if _CHOICE.fullmatch(s):  # multiple choice "(C)" -> "C"
        s = s[1]
    return s.lower() if s.isascii() and s.isalpha() else s

_MIXED_FRAC = re.compile(r"^(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}$")

def _value(s):
    """Exact Value of a normalised answer (algebra.parse_value), or None; 1\\frac{4}{5} is a mixed number, 9/5."""
    return parse_value(_MIXED_FRAC.sub(r"\1(\2+\3/\4)", s))

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
    """('(', ']', ['3','4']) for '(3,4]'; ('', '', ['1','-2']) for the bare list '1,-2', for '{1,-2}' (a set is
    unordered like a bare list) and for '(1,2),(3,4)'."""
    inner = _split_top(s[1:-1], ",") if len(s) >= 2 and s[0] in "([{" and s[-1] in ")]}" else None
    if inner and s[0] == "{" and s[-1] == "}":
        return "", "", inner
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
        if po == "":
            left = list(gi)
            for a in pi:
                k = next((j for j, b in enumerate(left) if _equivalent(a, b, depth + 1)), None)
                if k is None:
                    return False
                left.pop(k)
            return True
        return all(_equivalent(a, b, depth + 1) for a, b in zip(pi, gi))
    a, b = _value(p), _value(g)
    try:
        return a is not None and b is not None and a.equals(b)
    except (ValueError, ArithmeticError):
        return False

def answers_match(pred, gold):
    """Is the predicted final answer equivalent to the gold? '\\dfrac{1}{2}' ~ '0.5' ~ '1/2', '(1,2]' !~ '(1,2)'."""
    if not isinstance(pred, str) or not isinstance(gold, str) or len(pred) > MAX_ANSWER_CHARS:
        return False
    p, g = normalize_answer(pred), normalize_answer(gold)
    return bool(p) and _equivalent(p, g)

# ------------------------------------------------------------------------------- optional: math-verify

@lru_cache(maxsize=4096)
def _math_verify_parse(answer, timeout):
    from math_verify import parse
    return parse(f"${answer}$", parsing_timeout=timeout)  # the $…$ anchor: the answer is one LaTeX expression

def math_verify_match(pred, gold):
    """answers_match by HuggingFace's math-verify (pip install math-verify), as open-r1 grades: both answers parsed
    to sympy and compared by math_verify.verify(gold, pred). Time is bounded by the same MAX_ANSWER_CHARS and by
    math-verify's own alarms (MATH_VERIFY_TIMEOUT_S, which need the main thread; elsewhere they are off)."""
    get_checker("math-verify")  # the package is installed, or an ImportError saying how to install it
    from math_verify import verify
    if not isinstance(pred, str) or not isinstance(gold, str) or len(pred) > MAX_ANSWER_CHARS or not pred.strip():
        return False
    timeout = MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    p, g = _math_verify_parse(pred, timeout), _math_verify_parse(gold, timeout)
    return bool(p) and bool(g) and verify(g, p, timeout_seconds=timeout)

CHECKERS = {"builtin": answers_match, "math-verify": math_verify_match}  # --answer-checker

def get_checker(name):
    """The answer checker named by --answer-checker; an unknown name, or math-verify without its package, fails here
    (at start-up) with a line saying what to do, not at the first reward."""
    if name not in CHECKERS:
        raise ValueError(f"unknown answer checker {name!r}: use one of {', '.join(CHECKERS)}")
    if name == "math-verify":
        try:
            import math_verify  # noqa: F401
        except ImportError:
            raise ImportError("answer checker 'math-verify' needs the math-verify package: pip install math-verify, "
                              "or use the builtin checker") from None
    return CHECKERS[name]
