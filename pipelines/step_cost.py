"""What a step cost: its seconds and the peak resident memory of the process running it, added to the
metadata of the asset it materialized (the Dagster UI shows them per run; bench/pipeline_scale.py reads
the whole tree's). Memory is sampled on a thread every ``EVERY`` seconds: a peak shorter than that can
be missed, one of the size that matters (a model's factors, a catalog) cannot."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

import dagster as dg
import psutil

EVERY = 0.05
MIB = 2**20


class StepCost:
    """``with StepCost() as cost: ...``; then ``cost.metadata()``."""

    def __enter__(self) -> StepCost:
        self._process = psutil.Process()
        self.start_rss = self.peak_rss = self._process.memory_info().rss
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name="step-cost", daemon=True)
        self._started = time.perf_counter()
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(EVERY):
            self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)

    def __exit__(self, *_) -> None:
        self.seconds = time.perf_counter() - self._started
        self._done.set()
        self._sampler.join()
        self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)

    def metadata(self) -> dict[str, object]:
        return {
            "step_seconds": dg.MetadataValue.float(round(self.seconds, 2)),
            "step_peak_rss_mib": dg.MetadataValue.int(int(self.peak_rss / MIB)),
            "step_rss_growth_mib": dg.MetadataValue.int(int((self.peak_rss - self.start_rss) / MIB)),
        }


def measured(compute: Callable) -> Callable:
    """An asset's compute function whose MaterializeResult also carries :class:`StepCost`'s metadata
    (put it under ``@dg.asset``; the signature Dagster reads is the function's own)."""

    @functools.wraps(compute)
    def run(*args, **kwargs):
        with StepCost() as cost:
            result = compute(*args, **kwargs)
        if isinstance(result, dg.MaterializeResult):
            return result._replace(metadata={**(result.metadata or {}), **cost.metadata()})
        return result

    return run
