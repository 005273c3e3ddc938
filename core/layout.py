"""Where things live. Every folder and file of the project is derived here, from the two roots the
settings name (``ECHOTUNE_DATA_DIR`` or ``ECHOTUNE_STORAGE_URL``, and ``ECHOTUNE_VAR_DIR``), and
nowhere else.

Data (``data/``, or shared object storage that every host reads, see :mod:`core.storage`; what the
pipeline produces and a backup keeps): ``tables/`` the offline parquet store (:mod:`core.tables`,
with the erasure log and its key), ``models/`` saved model folders, ``reports/<experiment id>/``
experiment reports. In object storage it also holds ``serving_cache/``, so an API host that starts
while Redis is down finds the last served model even on a fresh disk.

Runtime state (``var/``, always on this host: it is per host by nature):
``redis/`` the embedded Redis's data, ``spool/`` feedback accepted while Redis was down (fsync'd
before the API answers), ``serving_cache/`` the API's copy of the last served model (unless shared),
``logs/`` the demo's process logs, ``prometheus/`` multi-process metrics, ``api_keys`` the demo keys,
``pseudonym.key`` the listener pseudonym key, ``token.key`` the key that signs request tokens (set
``ECHOTUNE_PSEUDONYM_KEY`` and ``ECHOTUNE_TOKEN_KEY`` so several hosts agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.storage import StoragePath, is_remote


@dataclass(frozen=True)
class Layout:
    data_dir: StoragePath
    var_dir: Path

    # --- data -------------------------------------------------------------------------------
    @property
    def tables(self) -> StoragePath:
        return self.data_dir / "tables"

    @property
    def models(self) -> StoragePath:
        return self.data_dir / "models"

    @property
    def reports(self) -> StoragePath:
        return self.data_dir / "reports"

    def report(self, experiment_id: str) -> StoragePath:
        return self.reports / experiment_id

    # --- runtime state ----------------------------------------------------------------------
    @property
    def redis(self) -> Path:
        return self.var_dir / "redis"

    def spool(self, redis_prefix: str) -> Path:
        return self.var_dir / "spool" / redis_prefix

    def serving_cache(self, redis_prefix: str) -> StoragePath:
        return (self.data_dir if is_remote(self.data_dir) else self.var_dir) / "serving_cache" / redis_prefix

    @property
    def logs(self) -> Path:
        return self.var_dir / "logs"

    @property
    def prometheus(self) -> Path:
        return self.var_dir / "prometheus"

    @property
    def api_keys(self) -> Path:
        return self.var_dir / "api_keys"

    @property
    def token_key(self) -> Path:
        return self.var_dir / "token.key"

    @property
    def pseudonym_key(self) -> Path:
        return self.var_dir / "pseudonym.key"
