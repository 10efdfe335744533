"""Exact values of answer expressions: a small parser and a canonical form, so that equal values compare equal.

answers.py asks `parse_value(text)` whether two final answers are the same value; rewards.py's countdown verifier
uses the same parser in its whole-number mode. Our own and not sympy's: the project stays dependency-free, every
step is exact (Python ints, no floats) and every input is bounded in time (sympy's simplify can run for seconds on a
short hostile string). Nothing is ever evaluated as code: the parser reads a fixed token set and raises ValueError
on anything else.

The canonical form: a Value is num / den, two polynomials with integer coefficients over
- variables (single letters, Greek letters) and \\pi (transcendental, so as good as a variable),
- i, with i^2 = -1, and square roots of square-free integers, sqrt(20) = 2 sqrt(5), sqrt(2) sqrt(3) = sqrt(6).
Square roots of distinct square-free integers are linearly independent over the rationals and i is not real, so two
polynomials are the same value exactly when they are the same dict, and two Values exactly when num1 den2 and
num2 den1 are. So b - a = -a + b, 2(x+1) = 2x+2, (1+sqrt 2)^2 = 3+2 sqrt 2, 1/(1+sqrt 2) = sqrt 2 - 1, and
9876543211 != 9876543210. Left out: roots of expressions, exponents other than whole and half numbers of
constants, functions (sin, log): those raise ValueError and answers.py compares their strings instead.

Budgets (hostile text): MAX_DEPTH nesting, MAX_TERMS terms per polynomial, MAX_BITS per coefficient, MAX_POWER for the
exponent of a non-constant, and MAX_WORK term products per parse, so one parse costs at most a few milliseconds.
"""
import math
import re
from fractions import Fraction

MAX_DEPTH = 50  # nesting (parentheses, braces, exponents) the parser accepts
MAX_TERMS, MAX_POWER, MAX_BITS, MAX_WORK = 32, 64, 4096, 256  # terms, exponent, coefficient bits, term products

# ---------------------------------------------------------------------------------- canonical form
# A monomial is (r, j, vars): sqrt(r) * i^j * x1^e1 * ..., r square-free >= 1, j in {0, 1}, vars a sorted tuple of
# (name, exponent >= 1). A polynomial is {monomial: int coefficient}, zero coefficients never stored.

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
_PLAIN = re.compile(r"-?\d+(?:\.\d+)?", re.ASCII)
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

def parse_value(text):
    """The exact Value of an expression, or None (text, functions, too large, division by zero)."""
    if _PLAIN.fullmatch(text):  # the common case, without the parser
        x = Fraction(text)
        return Value({ONE: x.numerator} if x else {}, {ONE: x.denominator}, "." in text)
    try:
        return Arith(text).parse()
    except (ValueError, ArithmeticError, TypeError):  # OverflowError and ZeroDivisionError are ArithmeticErrors
        return None

