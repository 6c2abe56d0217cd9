"""Accept every forward-step form Bridge accepts and give megatron-core the ``(data_iterator, model)`` form.

Bridge users write any of::

    def step(data_iterator, model): ...                                   # 2 args
    def step(data_iterator, model, return_schedule_plan=False): ...       # 3 args, no state
    def step(state, data_iterator, model): ...                            # 3 args, state first
    def step(state, data_iterator, model, return_schedule_plan=False): ... # 4 args (gpt_step.forward_step)

and functors / ``functools.partial`` objects of these. A first parameter named ``state`` (or ``global_state``),
or annotated with ``GlobalState``, receives the run's state.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

_STATE_NAMES = ("state", "global_state")


def _positional_params(func: Callable) -> list[inspect.Parameter]:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot inspect the signature of forward_step_func {func!r}") from exc
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p for p in sig.parameters.values() if p.kind in kinds]


def wants_state(func: Callable) -> bool:
    """True when the step's first positional parameter is the global state (by name or type hint)."""
    params = _positional_params(func)
    if not params:
        return False
    first = params[0]
    annotation = first.annotation
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return first.name in _STATE_NAMES or name.endswith("GlobalState")


def adapt_forward_step(func: Callable, state: Any) -> Callable[..., tuple[Any, Callable]]:
    """Return ``step(data_iterator, model, *rest)`` calling ``func`` with ``state`` injected when it wants it.

    Raises:
        TypeError: ``func`` is not callable, or takes fewer than two positional arguments.
    """
    if not callable(func):
        raise TypeError(f"forward_step_func must be callable; got {type(func).__name__}")
    params = _positional_params(func)
    has_varargs = any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in inspect.signature(func).parameters.values())
    if len(params) < 2 and not has_varargs:
        raise TypeError(
            f"forward_step_func {getattr(func, '__name__', func)!r} takes {len(params)} positional argument(s); "
            f"expected (data_iterator, model) or (state, data_iterator, model[, return_schedule_plan])"
        )
    if wants_state(func):

        @functools.wraps(func)
        def with_state(data_iterator, model, *rest):
            return func(state, data_iterator, model)

        return with_state

    @functools.wraps(func)
    def without_state(data_iterator, model, *rest):
        return func(data_iterator, model)

    return without_state
