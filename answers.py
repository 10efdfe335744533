"""Final answers: where the answer is in a completion, its canonical form, and when two answers are the same value.

rewards.py turns these into rewards; evaluate.py groups equivalent answers for maj@k. Everything here is pure,
never evals or execs model text (arithmetic goes through the small parser below, over a fixed token set) and
returns in bounded time on any input: an answer longer than MAX_ANSWER_CHARS is different from every gold without
being read, the parser has a nesting budget, and the algebra has budgets on terms, exponents, digits and work.

    python -m pytest tests/test_answers.py -q    # the equivalence table, by kind of misjudgement, negatives included
    python bench/rewards_check.py                # GSM8K / MATH-500 figures of docs/rewards_measurements.md

How answers_match decides (first rule that applies):
1. Strings equal after normalize_answer (layout, \\text{}, units, $ \\( \\) \\[ \\], `x =`, thousands commas).
2. Unions piece by piece; tuples, intervals and vectors element by element in order (brackets must agree); bare
   lists and {sets} element by element in any order (a set equals the bare list of its elements). Matrices keep
   their shape: a 2x2 matrix is a pair of rows, never a 4-tuple; a single row or column is a vector (a tuple).
3. Values, by a canonical form of our own (no sympy: the default stays dependency-free, exact and bounded in time on
   hostile text, which sympy's simplify is not): each side becomes a quotient of polynomials with exact Fraction
   coefficients over variables (x, k, \\alpha, ...), \\pi, i (i^2 = -1) and square roots of square-free integers
   (\\sqrt{20} = 2\\sqrt{5}); two quotients are equal when they cross-multiply to the same polynomial. So
   b - a = -a + b, 2(x+1) = 2x+2, 1/\\sqrt{3} = \\sqrt{3}/3, 2 1/3 = 7/3 (a mixed number) and 9876543211 != 9876543210.
4. Tolerance only where a decimal approximates an irrational: a side with a decimal point against a side with \\pi
   or a square root, no variables, compare to 1e-9 relative (3.14159265358979 ~ \\pi; 3.14 !~ \\pi, a rounding the
   problem did not ask for). Rational against rational is always exact: 1.5 = 3/2, 0.333 != 1/3.
Bases compare as written (101_{2} = 101_2, 101_2 != 101_3, 101_2 != 5): a base is part of what was asked.
Functions (\\sin, \\log), equations between two expressions and inequalities are compared as strings only.
math_verify_match is HuggingFace's math-verify (optional package) behind the same signature, for figures
comparable with open-r1's.
"""
import math
import re
import threading
from functools import lru_cache
from fractions import Fraction

MAX_ANSWER_CHARS = 1000  # longer answers are wrong by definition and never parsed
MAX_DEPTH = 50  # nesting (parentheses, braces, exponents) the parser accepts
TAIL_CHARS = 1000  # the GSM8K last-number fallback only reads the end of the completion
MAX_TERMS, MAX_POWER, MAX_BITS, MAX_WORK = 32, 64, 4096, 256  # algebra budgets: terms, exponent, digits, products
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
    """'x=5' -> '5', 'x=2,x=-3' -> '2,-3'; 'x=2,y=3' stays (a system's names matter)."""
    parts = _split_top(s, ",") or [s]
    names = {m.group() for m in map(_VAR_PREFIX.match, parts) if m}
    if len(names) != 1 or (len(parts) > 1 and not all(_VAR_PREFIX.match(p) for p in parts[1:])):
        return _VAR_PREFIX.sub("", s) if len(names) == 1 and _VAR_PREFIX.match(s) and len(parts) == 1 else s
    return ",".join(_VAR_PREFIX.sub("", p) for p in parts)

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

# ------------------------------------------------------------------- algebra: exact canonical forms
# A monomial is (r, j, vars): sqrt(r) * i^j * x1^e1 * ..., with r a square-free integer >= 1, j in {0, 1} and vars a
# sorted tuple of (name, exponent >= 1). A polynomial is {monomial: int}; a Value is num / den, two polynomials with
# integer coefficients (Python ints: exact and several times faster than Fractions). Square roots of distinct
# square-free integers are linearly independent over the rationals and i is not real, so two polynomials are the
# same value exactly when they are the same dict, and two Values when they cross-multiply to the same dict.

ONE = (1, 0, ())
_UNIT = {ONE: 1}  # the denominator of a polynomial (never mutated: every operation builds new dicts)
_PRIMES = [p for p in range(2, 1000) if all(p % d for d in range(2, math.isqrt(p) + 1))]

def _square_part(n):
    """(s, r) with n = s^2 r and r square-free, by trial division by the primes below 1000; a ValueError where a
    factor left over (all its primes above 1000) is too large to tell: over 1000^3 and not a square."""
    if n.bit_length() > 64:
        raise ValueError("radicand too large")
    s, rest = 1, n
    for p in _PRIMES:
        if p * p > rest:
            break
        while n % (p * p) == 0:
            n, s = n // (p * p), s * p
        while rest % p == 0:
            rest //= p
    root = math.isqrt(rest)
    if root * root == rest:  # rest = q^2 (q's primes all above 1000), or 1
        return s * root, n // rest
    if rest >= 1000 ** 3:
        raise ValueError("radicand not factored")
    return s, n  # rest is a prime or a product of two primes above 1000: square-free

def _mono_mul(a, b):
    """(coefficient, monomial) of a*b: sqrt(r1) sqrt(r2) = g sqrt(r1 r2 / g^2) with g = gcd; i*i = -1."""
    g = math.gcd(a[0], b[0])
    coef = g if a[1] + b[1] < 2 else -g
    if not b[2]:
        names = a[2]
    elif not a[2]:
        names = b[2]
    else:
        powers = dict(a[2])
        for name, e in b[2]:
            powers[name] = powers.get(name, 0) + e
        names = tuple(sorted(powers.items()))
    return coef, ((a[0] // g) * (b[0] // g), (a[1] + b[1]) % 2, names)

class _Budget:
    """Work counter shared by one parse: the products of polynomial terms it may still compute."""
    def __init__(self):
        self.left = MAX_WORK

def _check(p, bits=True):
    if len(p) > MAX_TERMS or (bits and any(c.bit_length() > MAX_BITS for c in p.values())):
        raise ValueError("expression too large")
    return p

def _add(p, q, sign=1):
    out = dict(p)
    for m, c in q.items():
        out[m] = out.get(m, 0) + sign * c
        if out[m] == 0:
            del out[m]
    return _check(out, bits=False)  # a sum adds at most one bit: only products are checked for size

def _mul(p, q, budget):
    budget.left -= len(p) * len(q) + 1  # + 1: every operation costs, however small
    if budget.left < 0:
        raise ValueError("expression too costly")
    out = {}
    for ma, ca in p.items():
        for mb, cb in q.items():
            coef, m = _mono_mul(ma, mb)
            out[m] = out.get(m, 0) + coef * ca * cb
            if out[m] == 0:
                del out[m]
    return _check(out)

class Value:
    """An exact value num / den (polynomials as above); decimal: a number with a decimal point was read.
    A one-term denominator is made canonical: no root or i in it (1/sqrt(3) -> sqrt(3)/3), a positive coefficient
    sharing no factor with the numerator's."""

    def __init__(self, num, den=None, decimal=False, budget=None):
        self.budget, self.decimal = budget or _Budget(), decimal
        self.num, self.den = num, _UNIT if den is None else den
        if len(self.den) == 1 and self.den != _UNIT:
            (r, j, names), c = next(iter(self.den.items()))
            if r > 1 or j:  # multiply through by sqrt(r) i^j
                conj = {(r, j, ()): 1}
                self.num, self.den = _mul(self.num, conj, self.budget), _mul(self.den, conj, self.budget)
                (_, c), = self.den.items()
            g = math.gcd(c, *self.num.values()) * (1 if c > 0 else -1)  # divides every coefficient exactly
            self.num, self.den = {m: v // g for m, v in self.num.items()}, {(1, 0, names): c // g}

    def _new(self, num, den, other):
        return Value(num, den, self.decimal or other.decimal, self.budget)

    def __add__(self, o):
        if self.den == o.den:
            return self._new(_add(self.num, o.num), self.den, o)
        b = self.budget
        return self._new(_add(_mul(self.num, o.den, b), _mul(o.num, self.den, b)), _mul(self.den, o.den, b), o)

    def __neg__(self):
        return Value({m: -c for m, c in self.num.items()}, self.den, self.decimal, self.budget)

    def __sub__(self, o):
        return self + (-o)

    def __mul__(self, o):
        return self._new(_mul(self.num, o.num, self.budget), _mul(self.den, o.den, self.budget), o)

    def __truediv__(self, o):
        if not o.num:
            raise ZeroDivisionError("division by zero")
        return self._new(_mul(self.num, o.den, self.budget), _mul(self.den, o.num, self.budget), o)

    def rational(self):
        """The value as a Fraction if it is a plain rational number, else None."""
        if len(self.den) == 1 and ONE in self.den and set(self.num) <= {ONE}:
            return Fraction(self.num.get(ONE, 0), self.den[ONE])
        return None

    def __pow__(self, o):
        e = o.rational()
        if e is None or e.denominator not in (1, 2):
            raise ValueError("only whole and half exponents of constants are exact")
        if e.denominator == 2:
            return self.sqrt() ** Value({ONE: e.numerator}, budget=self.budget)
        n, base = abs(int(e)), self.rational()
        bits = 0 if base is None else max(base.numerator.bit_length(), base.denominator.bit_length())
        if (base is None and n > MAX_POWER) or n * bits > MAX_BITS:
            raise ValueError("exponent too large")
        result, square = Value({ONE: 1}, budget=self.budget), self
        while n:  # square and multiply
            result, n = (result * square if n & 1 else result), n >> 1
            square = square * square if n else square
        return result if e >= 0 else Value({ONE: 1}, budget=self.budget) / result

    def sqrt(self):
        """sqrt of a rational constant: sqrt(p/q) = sqrt(p q) / q, the square part of p q taken out."""
        x = self.rational()
        if x is None:
            raise ValueError("square roots of expressions are not simplified")
        if x == 0:
            return Value({}, budget=self.budget)
        self.budget.left -= 16  # a trial division costs about as much as 16 products of terms
        out, r = _square_part(abs(x.numerator * x.denominator))
        return Value({(r, int(x < 0), ()): out}, {ONE: x.denominator}, budget=self.budget)

    def constant(self):
        """True if no variable other than \\pi appears."""
        return all(name == "\\pi" for p in (self.num, self.den) for _, _, names in p for name, _ in names)

    def irrational(self):
        return any(r > 1 or names for p in (self.num, self.den) for r, _, names in p)

    def complex(self):
        def ev(p):
            return sum(c * math.sqrt(r) * (1j if j else 1) * math.prod(math.pi ** e for _, e in names)
                       for (r, j, names), c in p.items())
        return complex(ev(self.num) / ev(self.den))

    def equals(self, o):
        """Exact equality by cross-multiplication; a decimal against an irrational constant to 1e-9 relative."""
        budget = _Budget()
        if _mul(self.num, o.den, budget) == _mul(o.num, self.den, budget):
            return True
        if not (self.decimal or o.decimal) or not (self.irrational() or o.irrational()):
            return False
        if not (self.constant() and o.constant()):
            return False
        a, b = self.complex(), o.complex()
        return abs(a - b) <= 1e-9 * max(abs(a), abs(b))

# ------------------------------------------------------------------------------------------- parser

_MUL, _DIV = ("*", "\\times", "\\cdot", "×", "·"), ("/", "÷", "\\div")
_GREEK = ("\\alpha", "\\beta", "\\gamma", "\\delta", "\\theta", "\\lambda", "\\mu", "\\phi", "\\omega", "\\pi")
_KNOWN = "|".join(re.escape(c) for c in ("\\frac", "\\sqrt", "\\times", "\\cdot", "\\div") + _GREEK)
_NUM = r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d{1,3}(?!\d))?"  # 1.5e-3; an exponent of at most 3 digits
_TOKEN = re.compile(f"{_NUM}|{_KNOWN}|\\\\[a-zA-Z]+|\\S", re.ASCII)  # known commands first: normalising removed the
# space that ended them ('2\\pi r' -> '2\\pir' is 2 pi r)
_WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}")  # 'east' is a word, not e*a*s*t (2xy is still a product)

class Arith:
    """Recursive descent over numbers, + - * / and parentheses.
    countdown=True: Fractions over whole numbers only, recording each number read (countdown_verify).
    countdown=False (answers): Values, plus ^, {…}, \\frac{}{}, \\sqrt{}, letters and Greek letters as variables,
    i as the imaginary unit, and implicit products (2\\sqrt{3}, 3x, (x+1)(x-1)). Any other token raises ValueError:
    unknown text is never interpreted.

        expr := term (('+'|'-') term)*      term := signed ((MUL|DIV)? signed)*
        signed := ('+'|'-')* power          power := primary ('^' signed)?
    """

    def __init__(self, text, countdown=False):
        if not countdown and _WORD.search(text):
            raise ValueError("words are not expressions")
        self.toks, self.i, self.depth, self.countdown, self.numbers = _TOKEN.findall(text), 0, 0, countdown, []
        self.budget = _Budget()

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
            elif not self.countdown and tok is not None and (tok[0] in "0123456789.({" or tok.isalpha()
                                                             or tok in ("\\frac", "\\sqrt") + _GREEK):
                value = value * self.power()  # implicit product: 3\sqrt{13}, 2\pi, 2k
            else:
                return value

    def signed(self):
        self.depth += 1  # every nesting (parentheses, braces, exponents) passes here: 10,000 '(' stop at MAX_DEPTH
        if self.depth > MAX_DEPTH:
            raise ValueError("nested too deep")
        negative = False
        while self.peek() in ("+", "-"):
            negative ^= self.take() == "-"
        value = self.power()
        self.depth -= 1
        return -value if negative else value

    def power(self):
        base = self.primary()
        if self.countdown or self.peek() != "^":
            return base
        self.take()
        return base ** self.signed()

    def primary(self):
        tok = self.take()
        if tok[0] in "0123456789.":
            if self.countdown:
                if not tok.isdigit():
                    raise ValueError(f"countdown uses whole numbers, got {tok!r}")
                self.numbers.append(int(tok))
                return Fraction(int(tok))
            if tok.isdigit():
                return Value({ONE: int(tok)} if int(tok) else {}, budget=self.budget)
            x = Fraction(tok)  # exact: 0.333 is 333/1000, never 1/3
            return Value({ONE: x.numerator} if x else {}, {ONE: x.denominator}, True, self.budget)
        if tok == "(" or (tok == "{" and not self.countdown):
            value = self.expr()
            self.take(")" if tok == "(" else "}")
            return value
        if self.countdown:
            raise ValueError(f"unexpected {tok!r}")
        if tok == "\\frac":
            return self.primary() / self.primary()
        if tok == "\\sqrt":
            return self.primary().sqrt()
        if tok == "i":
            return Value({(1, 1, ()): 1}, budget=self.budget)
        if (tok.isascii() and tok.isalpha() and len(tok) == 1) or tok in _GREEK:
            return Value({(1, 0, ((tok, 1),)): 1}, budget=self.budget)
        raise ValueError(f"unexpected {tok!r}")

_MIXED_FRAC = re.compile(r"^(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}$")

def _value(s):
    """Exact Value of a normalised answer, or None (text, functions, too large, division by zero)."""
    if _PLAIN.fullmatch(s):  # the common case, without the parser
        x = Fraction(s)
        return Value({ONE: x.numerator} if x else {}, {ONE: x.denominator}, "." in s)
    s = _MIXED_FRAC.sub(r"\1(\2+\3/\4)", s)  # 1\frac{4}{5} is one and four fifths
    try:
        return Arith(s).parse()
    except (ValueError, ArithmeticError, TypeError):  # OverflowError and ZeroDivisionError are ArithmeticErrors
        return None

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
    try:
        from math_verify import verify
    except ImportError:
        raise ImportError("answer checker 'math-verify' needs the math-verify package: pip install math-verify, "
                          "or use the builtin checker") from None
    if not isinstance(pred, str) or not isinstance(gold, str) or len(pred) > MAX_ANSWER_CHARS or not pred.strip():
        return False
    timeout = MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    p, g = _math_verify_parse(pred, timeout), _math_verify_parse(gold, timeout)
    return bool(p) and bool(g) and verify(g, p, timeout_seconds=timeout)

CHECKERS = {"builtin": answers_match, "math-verify": math_verify_match}  # --answer-checker
