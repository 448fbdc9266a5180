"""Evaluations: the ``gendiff eval`` commands and what ``gendiff run`` measures at the end of
training (the recipe's ``[eval] metrics``), each writing ``RUN/eval/<name>.json``.

Every metric, gendiff's own and a plugin's, is a :class:`~gendiff.evaluation.metrics.Metric`
registered in the ``metric`` family (:mod:`gendiff.evaluation.metrics`): ``classifier``, ``fid``,
``nll``, ``rd``. The analyses of the paper (progressive generation, shared completions,
interpolation) are :mod:`gendiff.evaluation.analyses`.
"""

from __future__ import annotations

from typing import Any

from ..errors import GendiffError, RecipeError
from .metrics import EvalContext, Metric


def metric(name: str, system=None) -> Metric:
    """The registered metric ``name``, constructed (an unknown name lists the available ones)."""
    from ..plugins import registry

    return registry("metric", system).get(name)()


def check_metrics(spec, model, system=None) -> None:
    """Refuse unknown metric names, and metrics that do not apply to the recipe's data."""
    from ..plugins import registry

    problems = []
    available = registry("metric", system)
    for i, name in enumerate(spec.eval.metrics):
        if name not in available:
            problems.append(f"eval.metrics[{i}]: unknown evaluation {name!r}; available: "
                            f"{', '.join(available.names())} (fid also reports KID and the Inception Score)")
            continue
        try:
            available.get(name)().check(model, model.dataset)
        except ValueError as exc:
            problems.append(f"eval.metrics[{i}]: {exc}")
    for name in spec.eval.targets:  # a target of a metric left out (eval.metrics = []) waits unused
        if name not in available:
            problems.append(f"eval.targets.{name}: unknown metric {name!r}; available: {', '.join(available.names())}")
    if problems:
        raise RecipeError(problems, spec.source)


def run_evaluations(context: EvalContext, names, system=None) -> dict[str, Any]:
    """Each named metric's result; a failing one is recorded as {"error": message}."""
    results: dict[str, Any] = {}
    for name in names:
        try:
            results[name] = metric(name, system).evaluate(context)
        except GendiffError as exc:
            results[name] = {"error": str(exc)}
    return results


def verdicts(results: dict[str, Any], targets: dict[str, float], system=None) -> dict[str, tuple[bool | None, str]]:
    """Each evaluated metric's (passed, how) against ``[eval] targets`` (a failed evaluation fails)."""
    out = {}
    for name, result in results.items():
        if "error" in result:
            out[name] = (False, f"the evaluation failed: {result['error']}")
        else:
            out[name] = metric(name, system).verdict(result, targets.get(name))
    return out


__all__ = ["EvalContext", "Metric", "check_metrics", "metric", "run_evaluations", "verdicts"]
