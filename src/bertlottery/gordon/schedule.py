"""Zhu & Gupta's (2017) gradual pruning schedule (G§3.2, docs/algorithms.md#compressing-bert).

The sparsity rises from ``initial`` to ``target`` over ``n`` mask updates ``every`` steps apart::

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3      for t in {t0, t0 + dt, ..., t0 + n dt}

and holds between updates. ``end = t0 + n dt`` is where the target is reached; an ``end`` that is
not a whole number of updates away gets a last update at ``end`` itself, so the target is always
reached exactly. ``end == begin`` is one-shot pruning: the target at ``begin``.

Example:
    >>> schedule = CubicSchedule(target=0.9, begin=0, end=100, every=10)
    >>> [round(schedule.sparsity(t), 4) for t in (0, 9, 10, 50, 100, 5000)]
    [0.0, 0.0, 0.2439, 0.7875, 0.9, 0.9]
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CubicSchedule"]


@dataclass(frozen=True)
class CubicSchedule:
    target: float
    begin: int = 0
    end: int = 10_000
    every: int = 10
    initial: float = 0.0
    exponent: int = 3

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"the mask is updated every {self.every} steps; it must be at least 1")
        if self.end < self.begin:
            raise ValueError(f"the schedule ends (step {self.end}) before it begins (step {self.begin})")

    def formula(self, step: int) -> float:
        """The cubic at ``step`` (clamped to [begin, end])."""
        if self.end == self.begin:
            return self.target if step >= self.begin else self.initial
        progress = min(1.0, max(0.0, (step - self.begin) / (self.end - self.begin)))
        return self.target + (self.initial - self.target) * (1.0 - progress) ** self.exponent

    def is_update(self, step: int) -> bool:
        """Whether the mask is recomputed before training step ``step``."""
        if step < self.begin or step > self.end:
            return False
        return step == self.end or (step - self.begin) % self.every == 0

    def last_update(self, step: int) -> int | None:
        """The latest update step at or before ``step`` (None before the schedule begins)."""
        if step < self.begin:
            return None
        if step >= self.end:
            return self.end
        return self.begin + (step - self.begin) // self.every * self.every

    def sparsity(self, step: int) -> float:
        """The sparsity in force at ``step``: the cubic at the last update, exactly ``target`` from ``end`` on."""
        update = self.last_update(step)
        if update is None:
            return self.initial
        if update >= self.end:
            return self.target
        return self.formula(update)

    def update_steps(self) -> list[int]:
        steps = list(range(self.begin, self.end, self.every))
        return steps + [self.end]
