"""What every component of every family shares: a registry name and declared compatibility.

A component declares what it *provides* (capability tags) and what it *requires* of the other
families, as ``{family: {tag, ...}}``. :func:`gendiff.build` checks every requirement before any
work starts and refuses an incompatible recipe with a message that names both components. The
composed model never asks a component what kind it is: compatibility is declared, not guessed.

Tags used by the built-ins:

- schedules provide the kind of forward process: ``"gaussian"`` (eq. 2/4 of the paper);
- parameterizations provide what their prediction carries: ``"mean"`` (a Gaussian reverse mean),
  ``"eps"`` (a noise estimate, needed by e.g. deterministic samplers);
- variances (the reverse-transition family) provide the kind of reverse distribution:
  ``"gaussian"``.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Iterable, Mapping

from .errors import ComponentConfigError

FAMILIES = (
    "schedule",
    "parameterization",
    "variance",
    "weighting",
    "backbone",
    "sampler",
    "time_sampler",
    "dataset",
    "metric",
    "logger",
)
#: where each family's interface lives (for messages)
INTERFACES = {
    "schedule": "gendiff.schedules.NoiseSchedule",
    "parameterization": "gendiff.parameterizations.Parameterization",
    "variance": "gendiff.variances.ReverseFamily",
    "weighting": "gendiff.weightings.LossWeighting",
    "backbone": "gendiff.backbones.Backbone",
    "sampler": "gendiff.samplers.Sampler",
    "time_sampler": "gendiff.time_samplers.TimeSampler",
    "dataset": "gendiff.datasets.Dataset",
    "metric": "gendiff.evaluation.Metric",
    "logger": "gendiff.loggers.Logger",
}


class Component:
    """Base of every registered component.

    Class attributes a component sets:

    - ``name``: the registry name used in recipes (``[schedule] name = "linear"``);
    - ``provides``: capability tags this component offers to the others;
    - ``requires``: ``{family: frozenset(tags)}`` that the recipe's component of that family
      must provide;
    - ``example_args`` (optional): arguments of a small instance, used by :mod:`gendiff.testing`.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    provides: ClassVar[frozenset[str]] = frozenset()
    requires: ClassVar[Mapping[str, frozenset[str]]] = {}
    #: constructor arguments of a small working instance (for the conformance suites)
    example_args: ClassVar[Mapping[str, Any]] = {}

    def bind(self, data_shape: tuple[int, int, int], levels: int) -> None:
        """Called by :func:`gendiff.build` with the data's (C, H, W) and K once they are known
        (a masking schedule sets T = D here). Raise ``ValueError`` for data it cannot serve."""


def check_arguments(cls: type, family: str, args: Mapping[str, Any], context: Iterable[str] = ()) -> None:
    """Check a recipe's arguments for ``cls`` without constructing it: no unknown names, none of
    the ``context`` names that gendiff supplies itself, nothing required missing, and every value
    of the type of the default it replaces. Raises :class:`ComponentConfigError`."""
    label = f"{family} '{getattr(cls, 'name', cls.__name__)}'"
    context = set(context)
    sig = inspect.signature(cls)
    settable = [
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in context
    ]
    clash = [k for k in args if k in context]
    if clash:
        raise ComponentConfigError(
            f"{label}: argument(s) {', '.join(map(repr, clash))} are set by gendiff, not by the recipe."
        )
    open_ended = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    unknown = [k for k in args if k not in settable and not open_ended]
    if unknown:
        accepted = ", ".join(settable) or "no arguments"
        raise ComponentConfigError(
            f"{label}: unknown argument(s) {', '.join(map(repr, unknown))}; it accepts {accepted}."
        )
    try:
        sig.bind(**dict.fromkeys(context), **args)
    except TypeError as exc:
        raise ComponentConfigError(f"{label}: {exc}.") from None
    for key, value in args.items():  # a recipe value must have the type of the default it replaces
        default = sig.parameters[key].default if key in sig.parameters else inspect.Parameter.empty
        if default is not inspect.Parameter.empty and default is not None and not same_kind(default, value):
            raise ComponentConfigError(
                f"{label}: argument '{key}' expects {type_name(default)} (default {default!r}), got {value!r}."
            )


def construct(cls: type, family: str, args: Mapping[str, Any], **context: Any) -> Any:
    """Instantiate ``cls(**context, **args)``, turning argument mistakes into one clear message.

    ``args`` come from the user's recipe; ``context`` are arguments that gendiff itself supplies
    (for a backbone: ``in_channels``, ``out_channels``, ``image_size``). The checks of
    :func:`check_arguments` and any ``ValueError``/``TypeError`` raised by the constructor's own
    validation become a :class:`ComponentConfigError` naming the family, the component and the
    problem.
    """
    check_arguments(cls, family, args, context)
    try:
        return cls(**context, **args)
    except (ValueError, TypeError) as exc:
        raise ComponentConfigError(f"{family} '{getattr(cls, 'name', cls.__name__)}': {exc}") from None
    except (MemoryError, KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's constructor failing in any other way
        raise ComponentConfigError(
            f"{family} '{getattr(cls, 'name', cls.__name__)}' (from {cls.__module__}) could not be created: "
            f"{type(exc).__name__}: {exc}") from None


def constructor_defaults(cls: type, context: Iterable[str] = ()) -> dict[str, Any]:
    """The default value of every recipe-settable constructor argument (TOML-friendly); the
    ``context`` arguments, which gendiff supplies, are left out."""
    out = {}
    for p in inspect.signature(cls).parameters.values():
        if p.name in context:
            continue
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty and p.default is not None:
            out[p.name] = list(p.default) if isinstance(p.default, tuple) else p.default
    return out


def same_kind(reference: Any, value: Any) -> bool:
    """Can ``value`` stand where ``reference`` stood? The same TOML type, except that an integer
    may replace a float (booleans are never numbers, lists and tuples are both arrays)."""
    if isinstance(reference, bool) or isinstance(value, bool):
        return isinstance(reference, bool) and isinstance(value, bool)
    if isinstance(reference, (int, float)):
        return isinstance(value, (int, float)) and (isinstance(reference, float) or isinstance(value, int))
    if isinstance(reference, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(reference))


def type_name(value: Any) -> str:
    """How a message names a value's TOML type ("a float", "a table", ...)."""
    for tp, label in ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
                      ((list, tuple), "an array"), (dict, "a table")):
        if isinstance(value, tp):
            return label
    return type(value).__name__
