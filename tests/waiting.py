"""Waiting for something another thread or process does: the one poll loop of the tests.

A test that waits on a server, a worker thread or a subprocess asks :func:`wait_until` instead of writing
its own loop, so every wait has a bound, says what it waited for when it gives up, and looks at least
once (a hand-written ``while not done() and time < deadline`` passes without looking when it starts
late, and hides a timeout unless an assert follows it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Call ``predicate`` until it returns something truthy, and return that; at least once, then every
    ``interval`` seconds for up to ``timeout`` seconds (monotonic: no wall clock). Raises AssertionError
    naming ``what`` (and the last value seen) when the time is up. An exception from ``predicate``
    propagates at once: catch the expected ones inside it (a server not listening yet)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s (last seen: {value!r})")
        time.sleep(interval)
