"""Counts of what happened to every row, so nothing disappears silently (reported at the end of preparation)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class DataStats:
    """Per-split counters. ``skipped`` maps a reason (``roles_out_of_order``, ...) to a count and
    ``examples`` keeps the first message seen for each reason (file:line and field)."""

    rows_read: int = 0
    samples: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    truncated: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    packs: int = 0
    pack_slots: int = 0

    def skip(self, reason: str, message: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, message)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    @property
    def packing_efficiency(self) -> float | None:
        """Real (shifted) tokens / slots of the packed sequences; None when not packed."""
        return (self.tokens - self.samples) / self.pack_slots if self.pack_slots else None

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("rows_read", "samples", "tokens", "trained_tokens", "truncated")}
        out.update(skipped=dict(self.skipped), skip_examples=dict(self.examples), packs=self.packs,
                   packing_efficiency=self.packing_efficiency)
        return out

    def report(self, name: str = "data") -> str:
        """One human line per fact, e.g. ``training: 300 rows -> 298 samples; skipped 2 (no_assistant_turn: 2) ...``."""
        lines = [f"{name}: {self.rows_read} rows -> {self.samples} samples, {self.tokens} tokens "
                 f"({self.trained_tokens} trained), {self.truncated} truncated, {self.num_skipped} skipped"]
        for reason, count in sorted(self.skipped.items()):
            lines.append(f"  skipped {count} x {reason}, e.g. {self.examples[reason]}")
        if self.pack_slots:
            lines.append(f"  packed into {self.packs} sequences, efficiency {self.packing_efficiency:.3f} "
                         "(real tokens / slots)")
        return "\n".join(lines)

    def merge(self, other: DataStats) -> None:
        for k in ("rows_read", "samples", "tokens", "trained_tokens", "truncated", "packs", "pack_slots"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.skipped.update(other.skipped)
        for k, v in other.examples.items():
            self.examples.setdefault(k, v)
