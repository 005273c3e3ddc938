"""Prometheus metrics and structured JSON logs.

With several uvicorn workers, ``PROMETHEUS_MULTIPROC_DIR`` (set by ``echotune serve``) makes every
worker write its samples to files that ``/metrics`` aggregates, so a scrape sees the whole server.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

REQUESTS = Counter("echotune_http_requests_total", "HTTP requests by route, method and status.", ["route", "method", "status"])
ERRORS = Counter("echotune_http_errors_total", "Responses with status >= 500, by route.", ["route"])
LATENCY = Histogram(
    "echotune_http_request_duration_seconds",
    "Time to answer, by route.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5),
)
IN_FLIGHT = Gauge("echotune_http_requests_in_flight", "Requests being answered right now.", multiprocess_mode="livesum")
RECOMMENDATIONS = Counter(
    "echotune_recommendations_served_total", "Recommendation lists served, by algorithm and experiment variant.", ["algorithm", "variant"]
)
DEGRADED = Counter("echotune_recommendations_degraded_total", "Lists served in a fallback mode, by reason.", ["reason"])
RATE_LIMITED = Counter("echotune_rate_limited_total", "Requests refused with 429, by API key id.", ["key_id"])


def metrics_payload() -> tuple[bytes, str]:
    """The exposition of this process, or of every worker in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(DEFAULT_REGISTRY), CONTENT_TYPE_LATEST


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra=`` fields."""

    _STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in self._STANDARD})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
