"""RFC 8785 canonical JSON: the reference and the fast path against the rfc8785 package."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from statelog.eventstore import EncodingError
from statelog.eventstore._canonical import (
    MAX_SAFE_INTEGER,
    canonical_json,
    canonical_json_fast,
)

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "canonical-vectors.json"

safe_ints = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
# Every code point but the surrogates, weighted towards the ones that matter here.
text = st.text(
    st.one_of(
        st.characters(max_codepoint=0x7F),
        st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010, blacklist_categories=("Cs",)),
        st.characters(min_codepoint=0xFFF0, max_codepoint=0x1F64F, blacklist_categories=("Cs",)),
        st.characters(blacklist_categories=("Cs",)),
    ),
    max_size=8,
)
json_values = st.recursive(
    st.none() | st.booleans() | safe_ints | finite_floats | text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(text, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=1500, deadline=None)
@given(json_values)
def test_reference_and_fast_path_equal_rfc8785(value: Any) -> None:
    expected = rfc8785.dumps(value)
    assert canonical_json(value) == expected
    assert canonical_json_fast(value) == expected


@settings(max_examples=3000, deadline=None)
@given(finite_floats)
def test_every_finite_double_is_written_as_ecmascript_does(value: float) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)
    assert float(canonical_json(value)) == value  # and it reads back exactly


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (-0.0, "0"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (1e-6, "0.000001"),
        (0.1, "0.1"),
        (123.456, "123.456"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (MAX_SAFE_INTEGER, "9007199254740991"),
        (-MAX_SAFE_INTEGER, "-9007199254740991"),
        ("\x00\x1f\x7f\u2028/<>&", '"\\u0000\\u001f\x7f\u2028/<>&"'),
        ({"b": 1, "a": 2, "\ue000": 3, "\U0001f600": 4}, '{"a":2,"b":1,"\U0001f600":4,"\ue000":3}'),
        ({}, "{}"),
        ([], "[]"),
        ("", '""'),
    ],
)
def test_vectors(value: Any, text: str) -> None:
    assert canonical_json(value) == text.encode("utf-8")
    assert canonical_json_fast(value) == text.encode("utf-8")


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (math.nan, "$"),
        ({"x": [math.inf]}, "$.x[0]"),
        ({"n": MAX_SAFE_INTEGER + 1}, "$.n"),
        ({"n": {"m": -(2**64)}}, "$.n.m"),
        ({1: "a"}, "$"),
        ({"s": {1, 2}}, "$.s"),
        ({"b": b"x"}, "$.b"),
    ],
)
def test_values_without_a_canonical_form_are_refused_with_their_path(value: Any, path: str) -> None:
    for encode in (canonical_json, canonical_json_fast):
        with pytest.raises(EncodingError) as info:
            encode(value)
        assert info.value.path == path


def test_lone_surrogate_is_refused() -> None:
    for encode in (canonical_json, canonical_json_fast):
        with pytest.raises(EncodingError):
            encode({"k": "\ud800"})


def test_checked_in_vectors_hold() -> None:
    """docs/canonical-vectors.json: what another language's implementation checks itself on."""
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert len(vectors) >= 10
    for vector in vectors:
        value = json.loads(vector["json"])
        assert canonical_json(value).decode("utf-8") == vector["canonical"], vector["name"]
        assert rfc8785.dumps(value).decode("utf-8") == vector["canonical"], vector["name"]
