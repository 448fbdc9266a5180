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
from typing import Any, ClassVar, Mapping

from .errors import ComponentConfigError

FAMILIES = (
    "schedule",
    "parameterization",
    "variance",
    "weighting",
    "backbone",
    "sampler",
    "dataset",
)


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

    def config(self) -> dict[str, Any]:
        """The constructor arguments this instance was built with (recorded in recipes)."""
        return dict(getattr(self, "_config", {}))


def construct(cls: type, family: str, args: Mapping[str, Any], **context: Any) -> Any:
    """Instantiate ``cls(**context, **args)``, turning argument mistakes into one clear message.

    ``args`` come from the user's recipe; ``context`` are arguments that gendiff itself supplies
    (for a backbone: ``in_channels``, ``out_channels``, ``image_size``). Unknown or missing
    arguments and ``ValueError``/``TypeError`` raised by the constructor's own validation become
    a :class:`ComponentConfigError` naming the family, the component and the problem.
    """
    label = f"{family} '{getattr(cls, 'name', cls.__name__)}'"
    sig = inspect.signature(cls)
    user_params = [
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in context
    ]
    has_var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    clash = [k for k in args if k in context]
    if clash:
        raise ComponentConfigError(
            f"{label}: argument(s) {', '.join(map(repr, clash))} are set by gendiff, not by the recipe."
        )
    unknown = [k for k in args if k not in user_params and not has_var_kw]
    if unknown:
        accepted = ", ".join(user_params) or "no arguments"
        raise ComponentConfigError(
            f"{label}: unknown argument(s) {', '.join(map(repr, unknown))}; it accepts {accepted}."
        )
    try:
        sig.bind(**context, **args)
    except TypeError as exc:
        raise ComponentConfigError(f"{label}: {exc}.") from None
    for key, value in args.items():  # a recipe value must have the type of the default it replaces
        default = sig.parameters[key].default if key in sig.parameters else inspect.Parameter.empty
        if default not in (inspect.Parameter.empty, None) and not _compatible(default, value):
            raise ComponentConfigError(
                f"{label}: argument '{key}' expects {_kind(default)} (default {default!r}), got {value!r}."
            )
    try:
        obj = cls(**context, **args)
    except (ValueError, TypeError) as exc:
        raise ComponentConfigError(f"{label}: {exc}") from None
    try:
        obj._config = dict(args)
    except AttributeError:  # objects with __slots__ simply do not record their config
        pass
    return obj


def constructor_defaults(cls: type) -> dict[str, Any]:
    """The default value of every recipe-settable constructor argument (TOML-friendly)."""
    out = {}
    for p in inspect.signature(cls).parameters.values():
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty and p.default is not None:
            out[p.name] = list(p.default) if isinstance(p.default, tuple) else p.default
    return out


def _compatible(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and (isinstance(default, float) or isinstance(value, int))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def _kind(value: Any) -> str:
    for tp, label in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                      ((list, tuple), "an array")):
        if isinstance(value, tp):
            return label
    return type(value).__name__
