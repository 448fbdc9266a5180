"""Evaluations: the ``gendiff eval`` commands and what ``gendiff run`` measures at the end of
training (the recipe's ``[eval] metrics``), each writing ``RUN/eval/<name>.json``.

- ``classifier``: for the digits dataset, a support-vector classifier trained on the real
  training digits scores the final samples: mean top-class probability, the classes present,
  and near-copies of training images (:mod:`gendiff.evaluation.digits`).
- ``fid``: FID, KID and the Inception Score of ``eval.fid_samples`` samples against the
  ``eval.fid_reference`` split, through torch-fidelity (:mod:`gendiff.evaluation.fidelity`).
- ``nll``: the bound of eq. 5 in bits/dim on the first ``eval.nll_examples`` test images, with its
  breakdown L_T, sum of L_1..L_{T-1}, and L_0 (:mod:`gendiff.evaluation.likelihood`).
- ``rd``: the rate-distortion curve of Sec. 4.3 on the same test images (``eval/rd-test/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..errors import GendiffError, RecipeError

AVAILABLE = ("classifier", "fid", "nll", "rd")


def check_metrics(spec, dataset, system=None) -> None:
    """Refuse unknown metric names, and metrics that do not apply to the recipe's data."""
    problems = []
    for i, name in enumerate(spec.eval.metrics):
        if name not in AVAILABLE:
            problems.append(f"eval.metrics[{i}]: unknown evaluation {name!r}; available: {', '.join(AVAILABLE)} "
                            f"(fid also reports KID and the Inception Score)")
        elif name == "classifier" and getattr(dataset, "name", None) != "digits":
            problems.append(f"eval.metrics[{i}]: 'classifier' scores digits samples; the data is {getattr(dataset, 'name', None)!r}")
    if problems:
        raise RecipeError(problems, spec.source)


def run_evaluations(model, spec, samples_levels, dataset, run_dir: Path, checkpoint: Path, precision: str = "fp32",
                    console=None, progress: bool = True) -> dict[str, Any]:
    """Each requested evaluation's result; a failing one is recorded as {"error": message}."""
    context = dict(model=model, spec=spec, samples_levels=samples_levels, dataset=dataset, run_dir=run_dir,
                   checkpoint=checkpoint, precision=precision, console=console, progress=progress)
    results: dict[str, Any] = {}
    for name in spec.eval.metrics:
        try:
            results[name] = _RUNNERS[name](**context)
        except GendiffError as exc:
            results[name] = {"error": str(exc)}
    return results


def _classifier(model, spec, samples_levels, dataset, **_):
    from .digits import DigitsClassifier

    return DigitsClassifier(dataset).report(samples_levels)


def _fid(model, spec, dataset, run_dir, checkpoint, precision, console, progress, **_):
    from .fidelity import choose_features, fidelity
    from .inputs import reference_images, run_samples

    reference, key = reference_images(spec.eval.fid_reference, model)
    samples, _, _ = run_samples(run_dir, spec.eval.fid_samples, 0, 256, console, progress, precision,
                                model=model, checkpoint=checkpoint)
    return fidelity(samples, reference, key, choose_features(samples))


def _nll(model, spec, dataset, **_):
    from .likelihood import bits_per_dim

    return bits_per_dim(model, dataset, "test", spec.eval.nll_examples)


def _rd(model, spec, dataset, run_dir, **_):
    from .likelihood import bound_pass, write_rate_distortion

    bp = bound_pass(model, dataset.load("test")[: spec.eval.nll_examples])
    csv_path, png_path = write_rate_distortion(bp, Path(run_dir) / "eval" / "rd-test")
    rate = bp.rate()
    return {"csv": str(csv_path), "png": str(png_path), "rate_at_t1": float(rate[1]),
            "distortion_at_t1": float(bp.distortion[0]), "bound": bp.total}


_RUNNERS: dict[str, Callable] = {"classifier": _classifier, "fid": _fid, "nll": _nll, "rd": _rd}
