"""Time, injected. Behaviour that depends on the time of day or on a cooldown reads a :class:`Clock`
passed to it, so a test sets the time instead of sleeping past a cooldown or racing a minute boundary."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


class Clock:
    """The real clocks: ``now()`` is epoch seconds (windows, dates), ``monotonic()`` measures intervals."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass
class ManualClock(Clock):
    """A clock that moves only when told to (tests, simulations)."""

    at: float = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    ticks: float = field(default=0.0)

    def now(self) -> float:
        return self.at + self.ticks

    def monotonic(self) -> float:
        return self.ticks

    def advance(self, seconds: float) -> None:
        self.ticks += seconds


SYSTEM_CLOCK = Clock()
