"""Argument types for the ``statelog`` command line: a bad value is a usage error.

Each function is an argparse ``type=``: it returns the parsed value or raises
``argparse.ArgumentTypeError`` with what was expected and what came in, so
argparse reports ``argument --from: expected ..., got '...'`` (one line, exit 2)
before any file is opened.

Numbers that reach SQLite are bounded by its INTEGER (a signed 64-bit int).
"""

from __future__ import annotations

import argparse
import math
from urllib.parse import urlsplit

__all__ = [
    "INT64_MAX",
    "app_id",
    "nonnegative_int",
    "positive_int",
    "seconds",
    "source_uri",
]

#: The largest value of a SQLite INTEGER.
INT64_MAX = 2**63 - 1


def _int(text: str, low: int, what: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not low <= value <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r} (out of range)")
    return value


def nonnegative_int(text: str) -> int:
    """An integer from 0 to ``INT64_MAX`` (a sequence id, a position)."""
    return _int(text, 0, f"an integer from 0 to {INT64_MAX}")


def positive_int(text: str) -> int:
    """An integer from 1 to ``INT64_MAX`` (a count, a size, a limit)."""
    return _int(text, 1, f"an integer from 1 to {INT64_MAX}")


def seconds(text: str) -> float:
    """A finite number of seconds greater than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds greater than 0, got {text!r}"
        )
    return value


def app_id(text: str) -> str:
    """A non-empty app id (an empty one would not name an app)."""
    if not text:
        raise argparse.ArgumentTypeError("expected an app id, got an empty string")
    return text


def source_uri(text: str) -> str:
    """``sqlite:PATH``, ``file:PATH`` or ``kafka://HOST:PORT/TOPIC``, checked for shape only."""
    expected = "sqlite:PATH, file:PATH or kafka://HOST:PORT/TOPIC"
    for scheme in ("sqlite:", "file:"):
        if text.startswith(scheme):
            path = text.removeprefix(scheme)
            if path in ("", "//"):
                raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r} (no path)")
            return text
    if text.startswith("kafka://"):
        parts = urlsplit(text)
        if not parts.netloc or not parts.path.lstrip("/"):
            raise argparse.ArgumentTypeError(
                f"expected kafka://HOST:PORT/TOPIC, got {text!r} (no host or topic)"
            )
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected kafka://HOST:PORT/TOPIC, got {text!r} (bad port)"
            ) from None
        return text
    hint = f" (a log file is sqlite:{text})" if ":" not in text else ""
    raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}{hint}")
