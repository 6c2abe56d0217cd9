"""tqdm progress bars that can be switched off (tests, ``--no-progress``)."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, TypeVar

X = TypeVar("X")


def progress_bar(enabled: bool, desc: str, unit: str = "tensor") -> Callable[[Iterable[X]], Iterator[X]]:
    """A function wrapping an iterable in a tqdm bar (or passing it through when ``enabled`` is False)."""

    def wrap(items: Iterable[X]) -> Iterator[X]:
        if not enabled:
            return iter(items)
        from tqdm import tqdm

        return iter(tqdm(items, desc=desc, unit=unit, leave=False))

    return wrap
