"""The request token that lets feedback name the list a response served without being able to forge it.

Every response carries a token: the served list (request id, user, surface, algorithm, model version,
experiment, variant, the tracks in order and, for interleaving, which ranker gave each) and an
HMAC-SHA256 of it under a key only the API holds, named by its key id. Feedback that names a token takes
its context from the token; whatever context the client sends is kept for audit and never counted. A
token is valid for a day (``ECHOTUNE_TOKEN_TTL_SECONDS``) and counts once per track and event type (the
feedback stream's idempotency mark, :func:`core.feedback_stream.mark_id`); one that does not hold is
ignored, and its event counted as if it had none (the user's experiment assignment). The same list is
recorded once on the feedback stream (one entry per response, field ``l``) as the exposure of its
tracks, so click-through rates never depend on clients reporting what they were shown.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import orjson

from core.clock import SYSTEM_CLOCK, Clock
from core.contracts.served_lists import ServedList
from core.ingest.pseudonyms import load_or_create_key
from core.settings import Settings

TOKEN_MAX = 4096
_SIGNATURE_BYTES = 16  # 128 bits: forging one takes 2^128 tries


class InvalidToken(ValueError):
    """A token that does not hold; ``reason`` is a short label for metrics (expired, unknown_key, signature,
    shape, other_user, track_not_in_list), the message says what is wrong."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def key_id(key: bytes) -> str:
    """The id a token names its signing key by: 8 hex digits of the key's SHA-256 (says nothing of the key)."""
    return hashlib.sha256(key).hexdigest()[:8]


class TokenSigner:
    """Signs served lists into request tokens and checks tokens feedback names.

    A token is ``<key id>.<list>.<signature>`` (base64url list and HMAC-SHA256 of key id and list). The key
    id lets a rotation keep the previous key: tokens it signed still verify until they expire,
    ``ttl_seconds`` after their list was served (the served time is in the signed list). A token of the
    older two-part shape (``<list>.<signature>``, before key ids) is checked against the same keys."""

    def __init__(
        self, key: bytes, previous: bytes | None = None, ttl_seconds: float = 86_400, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._current = key_id(key)
        self._keys = {self._current: key, **({key_id(previous): previous} if previous else {})}
        self.ttl_seconds = ttl_seconds
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock = SYSTEM_CLOCK) -> TokenSigner:
        """The signer of ``settings``: ECHOTUNE_TOKEN_KEY (else the key file in var/, created once), the
        previous key if one is set, and the tokens' lifetime."""
        key = (
            bytes.fromhex(settings.token_key.get_secret_value())
            if settings.token_key
            else load_or_create_key(settings.layout.token_key)
        )
        previous = (
            bytes.fromhex(settings.token_previous_key.get_secret_value()) if settings.token_previous_key else None
        )
        return cls(key, previous, settings.token_ttl_seconds, clock)

    def sign(self, served: ServedList) -> str:
        body = self._current + "." + _b64(served.payload())
        return body + "." + _b64(self._mac(self._keys[self._current], body.encode()))

    def verify(self, token: str) -> ServedList:
        """The served list a token names; InvalidToken saying what is wrong when it is not one this API
        issued, or it has expired."""
        parts = token.split(".")
        if len(parts) not in (2, 3):
            raise InvalidToken("shape", "not a request token (it has no signature)")
        if len(parts) == 3 and parts[0] not in self._keys:
            raise InvalidToken(
                "unknown_key",
                f"the token was signed with a key this API no longer holds (key id {parts[0][:8]!r}): it is older than a key rotation",
            )
        try:
            payload, given = _unb64(parts[-2]), _unb64(parts[-1])
        except ValueError:
            raise InvalidToken("shape", "not a request token (not base64url)") from None
        if len(parts) == 3:
            keys, message = [self._keys[parts[0]]], f"{parts[0]}.{parts[1]}".encode()
        else:  # a token from before key ids: the list and its signature, under any key held
            keys, message = list(self._keys.values()), payload
        if not any(hmac.compare_digest(given, self._mac(key, message)) for key in keys):
            raise InvalidToken(
                "signature", "the signature does not match: this token was not issued by this API, or was altered"
            )
        try:
            served = ServedList.from_payload(payload)
        except (KeyError, ValueError, orjson.JSONDecodeError) as exc:
            raise InvalidToken("shape", f"a signed token of another shape ({exc})") from None
        age = self.clock.now() - served.served_ms / 1000
        if age > self.ttl_seconds:
            raise InvalidToken(
                "expired",
                f"the token expired: its list was served {age / 3600:.1f} h ago, and tokens are valid for {self.ttl_seconds / 3600:g} h",
            )
        return served

    @staticmethod
    def _mac(key: bytes, signed: bytes) -> bytes:
        return hmac.new(key, signed, hashlib.sha256).digest()[:_SIGNATURE_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, base64.binascii.Error) as exc:
        raise ValueError(str(exc)) from None
