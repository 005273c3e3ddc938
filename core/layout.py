"""Where things live on disk. Every folder and file of the project is derived here, from the two roots
the settings name (``ECHOTUNE_DATA_DIR``, ``ECHOTUNE_VAR_DIR``), and nowhere else.

Data (``data/``, what the pipeline produces and a backup keeps):
``tables/`` the offline parquet store (:mod:`core.tables`), ``models/`` saved model folders,
``reports/<experiment id>/`` experiment reports.

Runtime state (``var/``, what a running platform keeps for itself):
``redis/`` the embedded Redis's data, ``spool/`` feedback accepted while Redis was down,
``serving_cache/`` the API's copy of the last served model, ``logs/`` the demo's process logs,
``prometheus/`` multi-process metrics, ``api_keys`` the demo keys, ``pseudonym.key`` the listener
pseudonym key, ``token.key`` the key that signs request tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    data_dir: Path
    var_dir: Path

    # --- data -------------------------------------------------------------------------------
    @property
    def tables(self) -> Path:
        return self.data_dir / "tables"

    @property
    def models(self) -> Path:
        return self.data_dir / "models"

    @property
    def reports(self) -> Path:
        return self.data_dir / "reports"

    def report(self, experiment_id: str) -> Path:
        return self.reports / experiment_id

    # --- runtime state ----------------------------------------------------------------------
    @property
    def redis(self) -> Path:
        return self.var_dir / "redis"

    def spool(self, redis_prefix: str) -> Path:
        return self.var_dir / "spool" / redis_prefix

    def serving_cache(self, redis_prefix: str) -> Path:
        return self.var_dir / "serving_cache" / redis_prefix

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
