"""The plain path of ``POST /v1/runs`` reads its body with msgspec into ``_DecodedStartRun``,
the route's model without its walk for lone surrogates: that walk is left out because
msgspec refuses every lone surrogate (such a body goes to the route, which refuses it)."""

from __future__ import annotations

import msgspec
import pytest
from pydantic import ValidationError

from statelog.service._app import _decode, _DecodedStartRun
from statelog.service._models import StartRunRequest


@pytest.mark.parametrize(
    "body",
    [
        rb'{"graph": "g", "inputs": {"x": "\ud800"}}',
        rb'{"graph": "g", "inputs": {"\udfff": 1}}',
        rb'{"graph": "g", "inputs": {"x": [1, ["ok", "a\ud800b"]]}}',
        rb'{"graph": "g", "inputs": {"x": "\ud800\u0041"}}',  # high, then not a low one
        rb'{"graph": "g", "inputs": {"x": "\udc00\ud800"}}',  # low first
        rb'{"graph": "g", "actor": "\ud83d"}',
    ],
)
def test_the_plain_decoder_refuses_a_lone_surrogate(body: bytes) -> None:
    # DecodeError: a ValueError in newer msgspec, not in 0.18.6 (the lowest set); the
    # plain path catches any error
    with pytest.raises(msgspec.DecodeError):
        _decode(body)


def test_a_surrogate_pair_is_read_as_its_character() -> None:
    run = _DecodedStartRun.model_validate(_decode(rb'{"graph": "g", "actor": "\ud83d\ude00"}'))
    assert run.actor == "\U0001f600"


@pytest.mark.parametrize(
    "body",
    [
        {"graph": ""},
        {"graph": "g" * 201},
        {"graph": "g", "app_id": "a/b"},
        {"graph": "g", "max_steps": 0},
        {"graph": "g", "unknown": 1},
    ],
)
def test_the_decoded_model_keeps_the_route_models_limits(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        StartRunRequest.model_validate(body)
    with pytest.raises(ValidationError):
        _DecodedStartRun.model_validate(body)


def test_the_decoded_model_is_the_route_model() -> None:
    body = {"graph": "g", "app_id": "a", "inputs": {"n": [1, {"x": None}]}, "max_steps": 3}
    run = _DecodedStartRun.model_validate(body)
    assert isinstance(run, StartRunRequest)
    assert run.model_dump() == StartRunRequest.model_validate(body).model_dump()
