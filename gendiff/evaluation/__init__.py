"""Evaluations that ``gendiff run`` performs at the end of training (the recipe's
``[eval] metrics``), each writing ``RUN/eval/<name>.json``.

Available now:

- ``classifier``: for the digits dataset, a support-vector classifier trained on the real
  training digits scores the samples: mean top-class probability, the classes present, and
  near-copies of training images (:mod:`gendiff.evaluation.digits`).
- ``nll``: the bound of eq. 5 in bits/dim on the first ``eval.nll_examples`` test images, with
  its breakdown L_T, sum of L_1..L_{T-1}, and L_0 (:mod:`gendiff.evaluation.likelihood`).

Names reserved for the evaluation commands still to come (``fid``, ``kid``, ``is``, ``rd``) are
accepted in recipes and reported as not available yet.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import RecipeError

AVAILABLE = ("classifier", "nll")
PLANNED = ("fid", "kid", "is", "rd")


def check_metrics(spec, dataset) -> None:
    """Refuse unknown metric names, and metrics that do not apply to the recipe's data."""
    problems = []
    for i, name in enumerate(spec.eval.metrics):
        if name not in AVAILABLE + PLANNED:
            problems.append(f"eval.metrics[{i}]: unknown evaluation {name!r}; available: {', '.join(AVAILABLE + PLANNED)}")
        elif name == "classifier" and getattr(dataset, "name", None) != "digits":
            problems.append(f"eval.metrics[{i}]: 'classifier' scores digits samples; the data is {getattr(dataset, 'name', None)!r}")
    if problems:
        raise RecipeError(problems, spec.source)


def run_evaluations(model, spec, samples_levels, dataset) -> dict[str, Any]:
    """Each requested evaluation's result (a dict), or {"available": False} for planned ones."""
    results: dict[str, Any] = {}
    for name in spec.eval.metrics:
        if name in PLANNED:
            results[name] = {"available": False, "note": f"`gendiff eval {name}` is not part of gendiff yet"}
            continue
        results[name] = _RUNNERS[name](model, spec, samples_levels, dataset)
    return results


def _classifier(model, spec, samples_levels, dataset):
    from .digits import DigitsClassifier

    return DigitsClassifier(dataset).report(samples_levels)


def _nll(model, spec, samples_levels, dataset):
    from .likelihood import bits_per_dim

    return bits_per_dim(model, dataset, "test", spec.eval.nll_examples)


_RUNNERS: dict[str, Callable] = {"classifier": _classifier, "nll": _nll}
