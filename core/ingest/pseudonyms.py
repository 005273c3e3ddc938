"""Stable pseudonyms for user identities found in imported data (usernames, export owners).

A keyed hash (HMAC-SHA256) maps the same identity to the same pseudonym on every import, while the
identity itself is never stored. The key comes from the settings, else from a file created once under
``var/`` with owner-only permissions; losing it only means future imports get new pseudonyms.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from core.storage import StoragePath, is_remote


def load_or_create_key(path: StoragePath) -> bytes:
    """The hex key in ``path``, created (owner-only) when missing. In object storage the first writer
    wins: creation is exclusive (``IfNoneMatch``) and everyone reads back what is stored."""
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    if is_remote(path):
        try:
            with path.open("xb") as handle:
                handle.write(secrets.token_bytes(32).hex().encode())
        except OSError:  # 412 Precondition Failed (s3fs raises EINVAL): another host created it first
            pass
        return bytes.fromhex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex())
    return key


class Pseudonymizer:
    def __init__(self, key: bytes, prefix: str = "p_") -> None:
        self._key = key
        self.prefix = prefix

    def __call__(self, identity: str) -> str:
        digest = hmac.new(self._key, identity.strip().lower().encode(), hashlib.sha256).hexdigest()
        return f"{self.prefix}{digest[:20]}"
