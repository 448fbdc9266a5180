"""Metrics: what ``gendiff run`` measures when training ends (the recipe's ``[eval] metrics``)
and what ``gendiff eval NAME RUN`` measures on a finished run, each writing ``RUN/eval/NAME.json``.

Interface: :class:`Metric`, registered through ``gendiff_register_metrics`` like every other
family (gendiff's own metrics too). A metric

- ``check(model, dataset)``: raises ``ValueError`` (why) if it cannot evaluate this recipe; called
  before training starts, so a run never trains for hours to fail at its last step;
- ``evaluate(context) -> dict``: the result, JSON-serialisable, from an :class:`EvalContext`;
- ``summary(result) -> [(label, value)]``: rows for the run's report (default: its top-level numbers);
- ``headline(result) -> float | None`` and ``higher_is_better``: the one number a recipe's
  ``[eval] targets`` compares (``targets = {fid = 3.17}``); ``verdict(result, target)`` says pass
  or fail, which the run's report shows for every evaluated metric.

Built-ins: ``classifier`` (digits: a classifier trained on the real digits scores the samples),
``fid`` (FID / KID / IS through torch-fidelity), ``nll`` (the bound of eq. 5 in bits/dim with
every term) and ``rd`` (the rate-distortion curve of Sec. 4.3).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from ..component import Component


@dataclass
class EvalContext:
    """What a metric may use: the run's EMA model (eval mode, on its device), its dataset and
    recipe, where it lives, its samples and reference images.

    ``final_samples`` are the samples ``gendiff run`` drew at the end of training, as data levels
    (N, C, H, W) in {0..K-1}; :meth:`samples` draws as many as a metric needs, as uint8 pictures
    (N, H, W, C) (``gendiff`` keeps them in ``RUN/eval/samples/``); :meth:`reference` gives the
    images of ``train``, ``test``, ``DATASET:SPLIT`` or a path. The two are supplied by whoever
    makes the context (:func:`gendiff.evaluation.inputs.eval_context`)."""

    model: Any
    dataset: Any
    recipe: Any  #: the parsed recipe (:class:`gendiff.recipe.Recipe`): ``recipe.eval`` holds [eval]
    run_dir: Path
    checkpoint: Path
    draw: Callable[[int, int], np.ndarray]  #: (n, seed) -> n uint8 samples (N, H, W, C)
    references: Callable[[str], tuple[np.ndarray, str | None]]  #: ref -> (uint8 images, cache key)
    precision: str = "fp32"
    console: Any = None
    progress: bool = True
    final_samples: torch.Tensor | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def samples(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` samples of the model as uint8 pictures (N, H, W, C), drawn once per (n, seed)."""
        if (n, seed) not in self._cache:
            self._cache[(n, seed)] = self.draw(n, seed)
        return self._cache[(n, seed)]

    def reference(self, ref: str) -> tuple[np.ndarray, str | None]:
        """Reference images (uint8 N x H x W x C) and a cache key (None for a path)."""
        return self.references(ref)

    def sample_levels(self, n: int) -> torch.Tensor:
        """n samples as data levels (N, C, H, W): the run's final samples if there are enough."""
        if self.final_samples is not None and len(self.final_samples) >= n:
            return self.final_samples[:n]
        pictures = torch.from_numpy(self.samples(n)).permute(0, 3, 1, 2).double()
        return torch.round(pictures * (self.model.levels - 1) / 255).long()


class Metric(Component):
    """An evaluation of a trained model (see the module docstring)."""

    family: ClassVar[str] = "metric"
    #: the direction of :meth:`headline`: a target is a floor (True) or a ceiling (False)
    higher_is_better: ClassVar[bool] = False

    def check(self, model, dataset) -> None:
        """Raise ``ValueError`` saying why this metric cannot evaluate this model and data."""

    @abstractmethod
    def evaluate(self, context: EvalContext) -> dict[str, Any]:
        """The result, a JSON-serialisable dict (written to ``RUN/eval/<name>.json``)."""

    def summary(self, result: dict[str, Any]) -> list[tuple[str, str]]:
        """Rows (label, value) for the run's report: by default every top-level number."""
        return [(f"{self.name}: {key}", f"{value:.4g}") for key, value in result.items()
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)]

    def headline(self, result: dict[str, Any]) -> float | None:
        """The number a target compares (None: this metric has none)."""
        return None

    def verdict(self, result: dict[str, Any], target: float | None) -> tuple[bool | None, str]:
        """(passed, how): the headline against the recipe's target; (None, why) without one."""
        if target is None:
            return None, "no target (set [eval] targets)"
        value = self.headline(result)
        if value is None or not math.isfinite(value):
            return False, f"no number to compare with the target {target:g}"
        passed = value >= target if self.higher_is_better else value <= target
        sign = (">=" if passed else "<") if self.higher_is_better else ("<=" if passed else ">")
        return passed, f"{value:.4g} {sign} {target:g}"


class Classifier(Metric):
    """Digits only: a support-vector classifier trained on the real training digits scores
    ``eval.samples`` samples: mean top-class probability, classes present, near-copies of
    training images, and whether the quickstart's bar is met (:mod:`gendiff.evaluation.digits`)."""

    name = "classifier"

    def check(self, model, dataset):
        if getattr(dataset, "name", None) != "digits":
            raise ValueError(f"'classifier' scores digits samples; the data is {getattr(dataset, 'name', None)!r}")

    def evaluate(self, context):
        from .digits import DigitsClassifier

        return DigitsClassifier(context.dataset).report(context.sample_levels(context.recipe.eval.samples))

    def summary(self, result):
        return [("classifier: mean top-class probability", f"{result['mean_top_class_probability']:.3f}"),
                ("classifier: classes present", f"{result['classes_present']} / 10"),
                ("classifier: copies of training images", str(result["copies"]))]

    higher_is_better = True

    def headline(self, result):
        return result["mean_top_class_probability"]

    def verdict(self, result, target):
        """Its own bar (the quickstart's): mean top-class probability >= 0.85 (or the recipe's
        target), all 10 classes present, no copies of training images."""
        if target is None:
            passed = bool(result["passes"])
            return passed, "the quickstart's bar: >= 0.85, 10 classes, 0 copies"
        passed, how = super().verdict(result, target)
        passed = passed and result["classes_present"] == 10 and result["copies"] == 0
        return passed, f"{how}, 10 classes, 0 copies"


class FID(Metric):
    """FID and KID (and the Inception Score) of ``eval.fid_samples`` samples against the
    ``eval.fid_reference`` split, through torch-fidelity (:mod:`gendiff.evaluation.fidelity`)."""

    name = "fid"

    def check(self, model, dataset):
        from .fidelity import fidelity_missing

        problem = fidelity_missing()
        if problem:
            raise ValueError(problem)

    def evaluate(self, context):
        from .fidelity import choose_features, fidelity

        reference, key = context.reference(context.recipe.eval.fid_reference)
        samples = context.samples(context.recipe.eval.fid_samples)
        name = getattr(context.dataset, "name", None)
        return fidelity(samples, reference, key, choose_features(samples, name), dataset=context.dataset,
                        device=context.model.device, progress=context.progress)

    def summary(self, result):
        return [(f"FID / KID ({result['features']})", f"{result['fid']:.3f} / {result['kid_mean']:.4f}")]

    def headline(self, result):
        return result["fid"]


class NLL(Metric):
    """The bound of eq. 5 in bits/dim on the first ``eval.nll_examples`` test images, with L_T,
    the sum of L_1..L_{T-1}, L_0 and every term L_{t-1} (:mod:`gendiff.evaluation.likelihood`)."""

    name = "nll"

    def evaluate(self, context):
        from .likelihood import bits_per_dim

        return bits_per_dim(context.model, context.dataset, "test", context.recipe.eval.nll_examples)

    def summary(self, result):
        bpd = result["bits_per_dim"]
        if "decoder_L_0" in bpd:
            parts = f"L_1..L_T-1 {bpd['sum_L_1_to_L_T_minus_1']:.4f}, L_0 {bpd['decoder_L_0']:.4f}"
        else:  # a noisy z_0 (VDM): the T KL terms and the reconstruction term
            parts = f"KL terms {bpd['sum_of_the_T_KL_terms']:.4f}, reconstruction {bpd['reconstruction_L_0']:.4f}"
        rows = [("bits/dim (test bound)", f"{bpd['total']:.4f} (L_T {bpd['prior_L_T']:.2e}, {parts})")]
        if "continuous_bits_per_dim" in result:
            c = result["continuous_bits_per_dim"]
            rows.append(("bits/dim (continuous-time bound)", f"{c['total']:.4f} +- {c['stderr']:.4f}"))
        return rows

    def headline(self, result):
        return result["bits_per_dim"]["total"]


class RateDistortion(Metric):
    """The rate-distortion curve of Sec. 4.3 on the same test images (``RUN/eval/rd-test/``)."""

    name = "rd"

    def evaluate(self, context):
        from .likelihood import bound_pass, split_labels, write_rate_distortion

        n = context.recipe.eval.nll_examples
        labels = split_labels(context.model, context.dataset, "test", n)
        bp = bound_pass(context.model, context.dataset.load("test")[:n], labels=labels)
        csv_path, png_path = write_rate_distortion(bp, Path(context.run_dir) / "eval" / "rd-test")
        rate = bp.rate()
        return {"csv": str(csv_path), "png": str(png_path), "rate_at_t1": float(rate[1]),
                "distortion_at_t1": float(bp.distortion[0]), "bound": bp.total}

    def summary(self, result):
        return [("rate-distortion at t = 1", f"{result['rate_at_t1']:.4f} bits/dim, RMSE "
                 f"{result['distortion_at_t1']:.3f} ({result['png']})")]

    def headline(self, result):
        return result["bound"]


BUILTIN = [Classifier, FID, NLL, RateDistortion]
