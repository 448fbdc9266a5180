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
    try:
        obj = cls(**context, **args)
    except (ValueError, TypeError) as exc:
        raise ComponentConfigError(f"{label}: {exc}") from None
    try:
        obj._config = dict(args)
    except AttributeError:  # objects with __slots__ simply do not record their config
        pass
    return obj
