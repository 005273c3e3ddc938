"""Encryption at rest of the offline tables: Parquet modular encryption (pyarrow.parquet.encryption).

With ``ECHOTUNE_TABLE_ENCRYPTION_KEY`` set (a base64 master key of 32 bytes, e.g. ``openssl rand -base64
32``), every parquet file of the offline store (``core.tables``: feedback events, interactions, user-item
logs, rejects, the erasure log, the catalog) is written encrypted: AES-GCM over every column and the
footer, with data keys that pyarrow makes per file and wraps (twice: data key -> key-encryption key ->
master key) through :class:`MasterKeyKms`, an in-process KMS holding the master key. Without the key a
file reads as noise (pyarrow: "Could not read encrypted metadata"). Unset (the default): plain files.

One code path: the store's writers (:func:`core.parquet_files.write_parquet_atomic` and the event
appender in :mod:`core.event_files`) ask :func:`process_cipher` for encryption properties, and the
readers in :mod:`core.storage` for decryption properties; a plain file written before the key was set
still reads (pyarrow ignores decryption properties on a plaintext file) and is encrypted the next time
it is rewritten.

The key is a secret: it is read from this process's settings when a table is opened (the environment
at run time, like ``dg.EnvVar``), never passed in Dagster's resource config, so no run snapshot or UI
page holds it. Every process that reads or writes the tables (the code location and its runs, the CLI,
the API for the erasure log) needs the same key; losing it loses the tables. What stays the
infrastructure's job is in docs/operations.md (Security): Redis's RDB/AOF files, disks, backups, the
object store's own encryption, MLflow's artifacts.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import os
from dataclasses import dataclass

import pyarrow.dataset as ds
import pyarrow.parquet.encryption as pe
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MASTER_KEY_ID = "echotune-tables"  # the footer key's identifier: the one master key
KEY_BYTES = 32
_NONCE_BYTES = 12
# how long pyarrow keeps unwrapped keys (one KMS round per file otherwise)
_CACHE = dt.timedelta(minutes=10)


def parse_master_key(text: str) -> bytes:
    """The master key ``text`` encodes (base64 of exactly 32 bytes). Raises ValueError naming
    ECHOTUNE_TABLE_ENCRYPTION_KEY and what to do."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "ECHOTUNE_TABLE_ENCRYPTION_KEY must be base64 (e.g. the output of `openssl rand -base64 32`)"
        ) from None
    if len(key) != KEY_BYTES:
        raise ValueError(
            f"ECHOTUNE_TABLE_ENCRYPTION_KEY must encode {KEY_BYTES} bytes (`openssl rand -base64 32`); it encodes {len(key)}"
        )
    return key


class MasterKeyKms(pe.KmsClient):
    """A KMS in this process: wraps pyarrow's keys with AES-256-GCM under the master key, the key's
    identifier as associated data (a key wrapped for one identifier does not unwrap as another)."""

    def __init__(self, master_key: bytes) -> None:
        super().__init__()
        self._aead = AESGCM(master_key)

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, key_bytes, master_key_identifier.encode())
        return base64.b64encode(nonce + sealed).decode()

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        raw = base64.b64decode(wrapped_key)
        try:
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], master_key_identifier.encode())
        except InvalidTag:
            raise ValueError(
                "a table's key does not unwrap under ECHOTUNE_TABLE_ENCRYPTION_KEY: the file was written under "
                "another master key (set the key it was written with)"
            ) from None


@dataclass(frozen=True)
class TableCipher:
    """What pyarrow needs to write and read the tables encrypted under one master key."""

    factory: pe.CryptoFactory
    kms: pe.KmsConnectionConfig
    encryption: pe.EncryptionConfiguration
    decryption: pe.DecryptionConfiguration

    @classmethod
    def from_key(cls, master_key: bytes) -> TableCipher:
        return cls(
            pe.CryptoFactory(lambda _config: MasterKeyKms(master_key)),
            pe.KmsConnectionConfig(),
            # every column and the footer (schema, statistics) under the footer key: nothing readable without it
            pe.EncryptionConfiguration(
                footer_key=MASTER_KEY_ID, uniform_encryption=True, plaintext_footer=False, cache_lifetime=_CACHE
            ),
            pe.DecryptionConfiguration(cache_lifetime=_CACHE),
        )

    def encryption_properties(self) -> pe.FileEncryptionProperties:
        """For one file being written (fresh data keys each time)."""
        return self.factory.file_encryption_properties(self.kms, self.encryption)

    def decryption_properties(self) -> pe.FileDecryptionProperties:
        return self.factory.file_decryption_properties(self.kms, self.decryption)

    def dataset_format(self) -> ds.ParquetFileFormat:
        """A parquet format for ``pyarrow.dataset`` that decrypts the files it scans."""
        config = ds.ParquetDecryptionConfig(self.factory, self.kms, self.decryption)
        return ds.ParquetFileFormat(
            default_fragment_scan_options=ds.ParquetFragmentScanOptions(decryption_config=config)
        )


@functools.lru_cache(maxsize=4)
def _cipher(encoded_key: str) -> TableCipher:
    return TableCipher.from_key(parse_master_key(encoded_key))


def process_cipher() -> TableCipher | None:
    """The cipher of this process's ``ECHOTUNE_TABLE_ENCRYPTION_KEY``, or None when it is unset."""
    from core.settings import get_settings  # settings import the storage helpers that call this

    key = get_settings().table_encryption_key
    return _cipher(key.get_secret_value()) if key else None


def encryption_properties() -> pe.FileEncryptionProperties | None:
    cipher = process_cipher()
    return cipher.encryption_properties() if cipher else None


def decryption_properties() -> pe.FileDecryptionProperties | None:
    cipher = process_cipher()
    return cipher.decryption_properties() if cipher else None
