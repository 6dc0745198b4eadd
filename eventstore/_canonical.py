"""RFC 8785 canonical JSON (JCS): the bytes a hash covers, reproducible in any language.

``canonical_json(value)`` is the reference: a direct transcription of RFC 8785
for the JSON values statelog stores (``dict`` with ``str`` keys, ``list``,
``str``, ``int``, ``float``, ``bool``, ``None``):

- objects: members sorted by their names as UTF-16 code units, no whitespace;
- strings: UTF-8; only ``"``, ``\\`` and the control characters U+0000-U+001F
  are escaped (``\\b \\t \\n \\f \\r`` short, the rest ``\\u00xx`` in lower-case
  hex); a lone surrogate cannot be encoded;
- numbers: the ECMAScript ``Number.prototype.toString`` form of the IEEE 754
  double (``1``, not ``1.0``; ``1e+21``; ``1e-7``; ``-0`` is ``0``). JSON
  numbers are doubles, so an integer must lie within +-(2**53 - 1), where every
  integer is exact; NaN and the infinities have no JSON form.

``canonical_json_fast(value)`` gives the same bytes (proven against the
``rfc8785`` package by ``tests/eventstore/test_canonical.py``) and takes msgspec's
sorted encoder when the value has no float and no member name with a character
at or above U+E000 (the only names whose code-point order differs from their
UTF-16 order); other values go through the reference.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from ._errors import EncodingError

__all__ = ["MAX_SAFE_INTEGER", "canonical_json", "canonical_json_fast"]

#: The largest integer a JSON number (an IEEE 754 double) holds exactly.
MAX_SAFE_INTEGER = 2**53 - 1

_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n"}
_SHORT_ESCAPES |= {"\f": "\\f", "\r": "\\r"}
_ESCAPES = {chr(c): _SHORT_ESCAPES.get(chr(c), f"\\u{c:04x}") for c in range(0x20)}
_ESCAPES |= {'"': '\\"', "\\": "\\\\"}
_sorted_encode = msgspec.json.Encoder(order="sorted").encode


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 bytes of ``value``; ``EncodingError`` (with the path) if it has none."""
    out: list[str] = []
    _write(value, out, "$")
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodingError(
            "a string holds a lone surrogate, which has no UTF-8 form", path="$"
        ) from exc


def canonical_json_fast(value: Any) -> bytes:
    """``canonical_json(value)``, through msgspec when that gives the same bytes."""
    if _msgspec_agrees(value, "$", 0):
        try:
            return _sorted_encode(value)
        except UnicodeEncodeError as exc:
            raise EncodingError(
                "a string holds a lone surrogate, which has no UTF-8 form", path="$"
            ) from exc
    return canonical_json(value)


def _msgspec_agrees(value: Any, path: str, depth: int) -> bool:
    """True if msgspec's sorted JSON of ``value`` is its RFC 8785 form.

    Raises ``EncodingError`` for what has no canonical form at all (an unsafe
    integer, a non-str key, a type JSON lacks), so both paths refuse alike.
    """
    if value is None or value is True or value is False or isinstance(value, str):
        return True
    if isinstance(value, int):
        _check_int(value, path)
        return True
    if isinstance(value, float):
        return False
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise EncodingError(
                    f"object member names must be str, got {type(key).__name__}", path=path
                )
            if key and max(key) >= "\ue000":
                return False
            if not _msgspec_agrees(item, f"{path}.{key}", depth + 1):
                return False
        return True
    if isinstance(value, list | tuple):
        return all(_msgspec_agrees(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
    raise EncodingError(f"{type(value).__name__} has no JSON form", path=path)


def _check_int(value: int, path: str) -> None:
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise EncodingError(
            f"integer {value} is outside +-(2**53 - 1), the range a JSON number holds exactly",
            path=path,
        )


def _write(value: Any, out: list[str], path: str) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int):
        _check_int(value, path)
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_number(value, path))
    elif isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise EncodingError(
                    f"object member names must be str, got {type(key).__name__}", path=path
                )
        out.append("{")
        for i, key in enumerate(sorted(value, key=_utf16)):
            if i:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _write(value[key], out, f"{path}.{key}")
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out, f"{path}[{i}]")
        out.append("]")
    else:
        raise EncodingError(f"{type(value).__name__} has no JSON form", path=path)


def _utf16(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _string(text: str) -> str:
    escaped = "".join(_ESCAPES.get(ch, ch) for ch in text)
    return f'"{escaped}"'


def _number(value: float, path: str) -> str:
    """ECMAScript's ``Number.prototype.toString(value)`` (ECMA-262, Number::toString)."""
    if not math.isfinite(value):
        raise EncodingError(f"{value!r} has no JSON form (JSON has no NaN or Infinity)", path=path)
    if value == 0:
        return "0"  # also -0.0
    sign = "-" if value < 0 else ""
    # repr gives the shortest digits that round-trip, as ECMAScript requires.
    text = repr(abs(value))
    mantissa, _, exponent = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + (int(exponent) if exponent else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k, n = len(digits), point
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        body = "0." + "0" * -n + digits
    else:
        e = n - 1
        exp = f"e{'+' if e >= 0 else '-'}{abs(e)}"
        body = (digits if k == 1 else f"{digits[0]}.{digits[1:]}") + exp
    return sign + body
