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
import tempfile

from core.storage import StoragePath, is_remote

KEY_BYTES = 32  # what a key file is created with
MIN_KEY_BYTES = (
    16  # what one must hold to be used: shorter (an empty file above all) makes every HMAC under it guessable
)


def load_or_create_key(path: StoragePath) -> bytes:
    """The hex key in ``path``, created (owner-only) when missing. Creation is atomic: on this host the key
    is written and fsync'd to a temporary file, then linked into place (``link`` fails when another process
    got there first, and everyone reads back the one key that won); in object storage creation is exclusive
    (``IfNoneMatch``). So no crash or race leaves an empty or half-written key. Raises ValueError naming the
    file when what it holds is not a hex key of at least 16 bytes."""
    if not path.exists():
        _create_key(path)
    return _read_key(path)


def _create_key(path: StoragePath) -> None:
    key = secrets.token_bytes(KEY_BYTES).hex().encode()
    if is_remote(path):
        try:
            with path.open("xb") as handle:
                handle.write(key)
        except OSError:  # 412 Precondition Failed (s3fs raises EINVAL): another host created it first
            pass
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)
    except FileExistsError:
        pass  # another process created it first: its key is the one
    finally:
        os.unlink(temporary)


def _read_key(path: StoragePath) -> bytes:
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = None
    if key is None or len(key) < MIN_KEY_BYTES:
        problem = "is empty" if not text else "is not a hex key" if key is None else f"holds {len(key)} bytes"
        raise ValueError(
            f"key file {path} {problem}: a key must be at least {MIN_KEY_BYTES} bytes of hex. Restore it from a backup, or delete it "
            "to create a new one (what the old key signed or named no longer matches)"
        )
    return key


class Pseudonymizer:
    def __init__(self, key: bytes, prefix: str = "p_") -> None:
        self._key = key
        self.prefix = prefix

    def __call__(self, identity: str) -> str:
        digest = hmac.new(self._key, identity.strip().lower().encode(), hashlib.sha256).hexdigest()
        return f"{self.prefix}{digest[:20]}"
