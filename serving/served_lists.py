"""The request token that lets feedback name the list a response served without being able to forge it.

Every response carries a token: the served list (request id, user, surface, algorithm, model version,
experiment, variant, the tracks in order and, for interleaving, which ranker gave each) and an
HMAC-SHA256 of it under a key only the API holds. Feedback that names a token takes its context from
the token; whatever context the client sends is kept for audit and never counted. The same list is
recorded once on the feedback stream (one entry per response, field ``l``) as the exposure of its
tracks, so click-through rates never depend on clients reporting what they were shown.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import orjson

from core.contracts.served_lists import ServedList
from core.ingest.pseudonyms import load_or_create_key

TOKEN_MAX = 4096
_SIGNATURE_BYTES = 16  # 128 bits: forging one takes 2^128 tries


class TokenSigner:
    """Signs served lists into request tokens and checks tokens feedback names."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def from_file(cls, path) -> "TokenSigner":
        return cls(load_or_create_key(path))

    def sign(self, served: ServedList) -> str:
        payload = served.payload()
        return _b64(payload) + "." + _b64(self._mac(payload))

    def verify(self, token: str) -> ServedList:
        """The served list a token names; ValueError saying what is wrong when it is not one this API issued."""
        body, dot, signature = token.partition(".")
        if not dot:
            raise ValueError("not a request token (it has no signature)")
        try:
            payload, given = _unb64(body), _unb64(signature)
        except ValueError:
            raise ValueError("not a request token (not base64url)") from None
        if not hmac.compare_digest(given, self._mac(payload)):
            raise ValueError("the signature does not match: this token was not issued by this API, or was altered")
        try:
            return ServedList.from_payload(payload)
        except (KeyError, ValueError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"a signed token of another shape ({exc})") from None

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, base64.binascii.Error) as exc:
        raise ValueError(str(exc)) from None
