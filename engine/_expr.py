"""A small, safe expression language for transition conditions.

``expr("score >= 0.8 and status in ['new', 'open']")`` is parsed with Python's
own parser (``ast.parse``), then every node is checked against a whitelist and
compiled into a tree of closures. Nothing is ever passed to ``eval`` or
``exec``, and no attribute of any object is ever looked up, so an expression
cannot reach Python's internals.

Grammar (a subset of Python expressions)::

    expr     := expr ("or" | "and") expr | "not" expr | compare
    compare  := arith (cmp_op arith)*          chained, as in Python: 0 < x < 9
    cmp_op   := "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in" | "is" | "is not"
    arith    := arith ("+" | "-" | "*" | "/" | "//" | "%") arith | ("-" | "+") arith | atom
    atom     := NAME | literal | atom "[" expr "]" | "len(" expr ")" | "(" expr ")"
                | "[" [expr ("," expr)*] "]" | "(" expr "," ... ")"
    literal  := int | float | str | True | False | None

A ``NAME`` is a state key (names starting with ``__`` are refused). Reading a
key the state does not hold, or an operation that fails (``1 / 0``,
``"a" < 1``, ``x["missing"]``), raises ``TransitionError`` when the condition
is evaluated; syntax errors and forbidden constructs (attribute access, calls
other than ``len``, lambdas, comprehensions, slices, ``:=``, f-strings, ...)
raise ``TransitionError`` naming the column when the expression is made.
A string or list built by ``+`` or ``*`` is capped at 1,000,000 items and
``%`` formatting of strings is refused, so an expression cannot exhaust memory.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import TransitionError

__all__ = ["Expression"]

Evaluator = Callable[[Mapping[str, Any]], Any]

MAX_SOURCE = 10_000
MAX_DEPTH = 100
MAX_SEQUENCE = 1_000_000


class _MissingName(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


class _Refused(Exception):
    """An operation the language refuses at run time (huge repeat, % formatting)."""


def _contains(a: Any, b: Any) -> bool:
    return a in b


def _not_contains(a: Any, b: Any) -> bool:
    return a not in b


def _mul(a: Any, b: Any) -> Any:
    for seq, n in ((a, b), (b, a)):
        if not (isinstance(seq, str | list | tuple) and isinstance(n, int)):
            continue
        if len(seq) * n > MAX_SEQUENCE:
            raise _Refused(f"building a sequence over {MAX_SEQUENCE:,} items")
    return a * b


def _add(a: Any, b: Any) -> Any:
    result = a + b
    if isinstance(result, str | list | tuple) and len(result) > MAX_SEQUENCE:
        raise _Refused(f"building a sequence over {MAX_SEQUENCE:,} items")
    return result


def _mod(a: Any, b: Any) -> Any:
    if isinstance(a, str):
        raise _Refused("% formatting of strings")
    return a % b


_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: _contains,
    ast.NotIn: _not_contains,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: _add,
    ast.Sub: operator.sub,
    ast.Mult: _mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: _mod,
}

_FORBIDDEN: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access",
    ast.Lambda: "lambda",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "generator expressions",
    ast.NamedExpr: "assignment expressions (:=)",
    ast.IfExp: "conditional expressions (a if b else c)",
    ast.JoinedStr: "f-strings",
    ast.FormattedValue: "f-strings",
    ast.Starred: "starred expressions",
    ast.Slice: "slices",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Dict: "dict literals",
    ast.Set: "set literals",
}


class Expression:
    """A compiled, safe expression over the keys of a state mapping."""

    __slots__ = ("_fn", "reads", "source")

    def __init__(self, source: str) -> None:
        if not isinstance(source, str):
            raise TransitionError(f"an expression must be a str, got {type(source).__name__}")
        if len(source) > MAX_SOURCE:
            raise TransitionError(
                f"expression is {len(source)} characters long; the limit is {MAX_SOURCE}"
            )
        self.source = source
        reads: set[str] = set()
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise self._error(exc.msg, exc.lineno, exc.offset) from None
        except (RecursionError, MemoryError, ValueError) as exc:
            raise TransitionError(
                f"invalid condition expression {source!r}: {type(exc).__name__}: {exc}"
            ) from None
        self._fn = _Compiler(self, reads).compile(tree.body, 0)
        self.reads = frozenset(reads)

    def _error(self, what: str, line: int | None, column: int | None) -> TransitionError:
        text = self.source.strip()
        where = ""
        pointer = ""
        if column is not None:
            lines = text.splitlines() or [""]
            lineno = line or 1
            where = (
                f" at column {column}" if len(lines) == 1 else f" at line {lineno}, col {column}"
            )
            if 1 <= lineno <= len(lines):
                pointer = f"\n    {lines[lineno - 1]}\n    {' ' * max(column - 1, 0)}^"
        return TransitionError(f"invalid condition expression {text!r}: {what}{where}{pointer}")

    def __call__(self, state: Mapping[str, Any]) -> Any:
        """Evaluate on ``state``; TransitionError if a key is missing or an operation fails."""
        try:
            return self._fn(state)
        except _MissingName as missing:
            raise TransitionError(
                f"condition {self.source!r} reads {missing.name!r}, which is not in the state"
            ) from None
        except _Refused as refused:
            raise TransitionError(f"condition {self.source!r}: {refused} is not allowed") from None
        except Exception as exc:
            raise TransitionError(
                f"condition {self.source!r} failed on this state: {type(exc).__name__}: {exc}"
            ) from exc

    def check(self, state: Mapping[str, Any], label: str | None = None) -> Any:
        """Like calling the expression (the signature a Condition check takes)."""
        try:
            return self._fn(state)
        except Exception:
            return self(state)  # evaluation is pure: run again to raise the translated error

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


class _Compiler:
    def __init__(self, owner: Expression, reads: set[str]) -> None:
        self.owner = owner
        self.reads = reads

    def refuse(self, node: ast.AST, what: str) -> TransitionError:
        col = getattr(node, "col_offset", None)
        return self.owner._error(
            f"{what} not allowed",
            getattr(node, "lineno", None),
            None if col is None else col + 1,
        )

    def compile(self, node: ast.expr, depth: int) -> Evaluator:
        if depth > MAX_DEPTH:
            raise self.refuse(node, f"nesting deeper than {MAX_DEPTH} levels is")
        depth += 1
        if isinstance(node, ast.Constant):
            return self._constant(node)
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.BoolOp):
            return self._boolop(node, depth)
        if isinstance(node, ast.UnaryOp):
            return self._unary(node, depth)
        if isinstance(node, ast.BinOp):
            return self._binary(node, depth)
        if isinstance(node, ast.Compare):
            return self._compare(node, depth)
        if isinstance(node, ast.Subscript):
            return self._subscript(node, depth)
        if isinstance(node, ast.Call):
            return self._call(node, depth)
        if isinstance(node, ast.List | ast.Tuple):
            return self._sequence(node, depth)
        what = _FORBIDDEN.get(type(node), type(node).__name__)
        raise self.refuse(node, what + " is")

    def _constant(self, node: ast.Constant) -> Evaluator:
        value = node.value
        if value is not None and type(value) not in (bool, int, float, str):
            raise self.refuse(node, f"a {type(value).__name__} literal is")
        return lambda state: value

    def _name(self, node: ast.Name) -> Evaluator:
        name = node.id
        if name.startswith("__"):
            raise self.refuse(node, f"the name {name!r} (names starting with __) is")
        if name == "len":
            raise self.refuse(node, "`len` other than as a call len(x) is")
        self.reads.add(name)

        def lookup(state: Mapping[str, Any]) -> Any:
            try:
                return state[name]
            except KeyError:
                raise _MissingName(name) from None

        return lookup

    def _boolop(self, node: ast.BoolOp, depth: int) -> Evaluator:
        parts = [self.compile(v, depth) for v in node.values]
        if isinstance(node.op, ast.And):

            def all_of(state: Mapping[str, Any]) -> Any:
                value: Any = True
                for part in parts:
                    value = part(state)
                    if not value:
                        return value
                return value

            return all_of

        def any_of(state: Mapping[str, Any]) -> Any:
            value: Any = False
            for part in parts:
                value = part(state)
                if value:
                    return value
            return value

        return any_of

    def _unary(self, node: ast.UnaryOp, depth: int) -> Evaluator:
        inner = self.compile(node.operand, depth)
        if isinstance(node.op, ast.Not):
            return lambda state: not inner(state)
        if isinstance(node.op, ast.USub):
            return lambda state: -inner(state)
        if isinstance(node.op, ast.UAdd):
            return lambda state: +inner(state)
        raise self.refuse(node, "the ~ operator is")

    def _binary(self, node: ast.BinOp, depth: int) -> Evaluator:
        op = _BINARY.get(type(node.op))
        if op is None:
            raise self.refuse(node, f"the {type(node.op).__name__} operator is")
        left = self.compile(node.left, depth)
        right = self.compile(node.right, depth)
        return lambda state: op(left(state), right(state))

    def _compare(self, node: ast.Compare, depth: int) -> Evaluator:
        left = self.compile(node.left, depth)
        ops = [_COMPARE[type(op)] for op in node.ops]
        rights = [self.compile(c, depth) for c in node.comparators]
        if len(ops) == 1:
            op, right = ops[0], rights[0]
            a, b = node.left, node.comparators[0]
            if isinstance(a, ast.Name) and isinstance(b, ast.Constant):
                # the common `key <op> literal`: one closure instead of three
                name, value = a.id, b.value

                def key_vs_literal(state: Mapping[str, Any]) -> Any:
                    try:
                        got = state[name]
                    except KeyError:
                        raise _MissingName(name) from None
                    return op(got, value)

                return key_vs_literal
            return lambda state: op(left(state), right(state))
        pairs = list(zip(ops, rights, strict=True))

        def chain(state: Mapping[str, Any]) -> Any:
            a = left(state)
            result: Any = True
            for op, right in pairs:
                b = right(state)
                result = op(a, b)
                if not result:
                    return result
                a = b
            return result

        return chain

    def _subscript(self, node: ast.Subscript, depth: int) -> Evaluator:
        value = self.compile(node.value, depth)
        key = self.compile(node.slice, depth)
        return lambda state: value(state)[key(state)]

    def _call(self, node: ast.Call, depth: int) -> Evaluator:
        func = node.func
        if isinstance(func, ast.Attribute):
            raise self.refuse(func, "attribute access is")
        if not (isinstance(func, ast.Name) and func.id == "len"):
            raise self.refuse(node, "function calls (only len(x)) are")
        if node.keywords or len(node.args) != 1:
            raise self.refuse(node, "len() takes exactly one argument; anything else is")
        arg = self.compile(node.args[0], depth)
        return lambda state: len(arg(state))

    def _sequence(self, node: ast.List | ast.Tuple, depth: int) -> Evaluator:
        items = [self.compile(e, depth) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return lambda state: tuple(item(state) for item in items)
        return lambda state: [item(state) for item in items]
