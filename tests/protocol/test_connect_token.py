"""Connect tokens: each failure has its code."""

from __future__ import annotations

import pytest

from sotto.protocol import connect_token, errors
from sotto.protocol.keys import SigningKey

from .helpers import drbg

KEY = SigningKey.generate(drbg("token")).key
AUD = "api1/prod"


def _token(now: int = 1000) -> str:
    return connect_token.issue("dev-1", KEY, AUD, now=now, nonce=bytes(16))


def test_token_verifies_and_names_its_device():
    assert connect_token.peek_device_id(_token()) == "dev-1"
    assert (
        connect_token.verify(_token(), KEY.public_key(), audience=AUD, now=1000).nonce == "0" * 32
    )


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda t: t[:-3] + ("A" if t[-3] != "A" else "B") + t[-2:], "bad_signature"),
        (lambda t: t + ".x", "bad_token"),
        (lambda t: "x" * (connect_token.MAX_TOKEN_LENGTH + 1), "bad_token"),
    ],
)
def test_token_tampering_is_named(mutate, code):
    with pytest.raises(errors.TokenError) as caught:
        connect_token.verify(mutate(_token()), KEY.public_key(), audience=AUD, now=1000)
    assert caught.value.code == code


def test_stale_and_misaddressed_tokens_are_refused():
    with pytest.raises(errors.TokenError, match="stale_token"):
        connect_token.verify(_token(), KEY.public_key(), audience=AUD, now=1000 + 301)
    with pytest.raises(errors.TokenError, match="wrong_audience"):
        connect_token.verify(_token(), KEY.public_key(), audience="api1/dev", now=1000)
