"""API keys.

Keys are configured as ``key:scope`` pairs (``ECHOTUNE_API_KEYS``; scopes ``client`` and ``admin``) and
held only as SHA-256 digests, so a memory dump or a log line never shows one. Without configured keys
the API reads (or creates once) ``var/api_keys``: one client and one admin key for the demo. What a
key may send a minute is :mod:`serving.rate_limit`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Scope = Literal["client", "admin"]
SCOPES: tuple[Scope, ...] = ("client", "admin")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    key_id: str  # first characters of the digest: safe to log and to use in Redis keys
    scope: Scope

    def allows(self, needed: Scope) -> bool:
        return self.scope == "admin" or needed == "client"


def parse_keys(spec: str) -> dict[str, ApiKey]:
    """``key:scope`` pairs (comma-separated) -> {sha256(key): ApiKey}. Raises ValueError naming the
    bad pair."""
    keys: dict[str, ApiKey] = {}
    for pair in (p.strip() for p in spec.split(",") if p.strip()):
        key, _, scope = pair.rpartition(":")
        if not key or scope not in SCOPES:
            raise ValueError(f"ECHOTUNE_API_KEYS: {pair[:4]}... must be key:scope with scope client or admin")
        if len(key) < 16:
            raise ValueError("ECHOTUNE_API_KEYS: keys must be at least 16 characters")
        keys[digest(key)] = ApiKey(digest(key)[:12], scope)  # type: ignore[arg-type]
    return keys


def demo_keys(path: Path) -> str:
    """The demo's key file (``client_key:client,admin_key:admin``), created once with random keys."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        spec = f"et_client_{secrets.token_urlsafe(24)}:client,et_admin_{secrets.token_urlsafe(24)}:admin"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(spec)
    return path.read_text().strip()


def key_for_scope(spec: str, scope: Scope) -> str | None:
    """The first key of ``scope`` in a key spec (the demo prints it)."""
    for pair in spec.split(","):
        key, _, found = pair.strip().rpartition(":")
        if found == scope:
            return key
    return None


class ApiKeys:
    def __init__(self, spec: str) -> None:
        self._by_digest = parse_keys(spec)
        if not self._by_digest:
            raise ValueError("no API keys configured")

    def identify(self, presented: str | None) -> ApiKey | None:
        return self._by_digest.get(digest(presented)) if presented else None
