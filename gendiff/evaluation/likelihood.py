"""Likelihood analyses: bits/dim with its breakdown (Table 1) and the rate-distortion curve of
progressive lossy compression (Sec. 4.3, Fig. 5, Table 4).

Both read one pass of :meth:`Diffusion.bound_terms` over a data split: for every paper time t,
one draw x_t ~ q(x_t | x0), the closed-form term L_{t-1} and the prediction x0_hat at x_t
(eq. 15). With the same seed the two analyses see the same draws, so the rate at t = 0 (all of
x_T .. x_1 and x0 sent) equals the bound reported by ``eval nll``.

Rate at time t (a receiver holding x_T .. x_t): L_T + sum_{s=t}^{T-1} L_s, in bits/dim; at t = 0
the decoder term L_0 is added and the code is lossless. Distortion at time t: the RMSE on the
[0, 255] scale between x0 and x0_hat(x_t), averaged over images.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..distributions import levels_to_unit
from ..files import write_with, write_text


@dataclass
class BoundPass:
    """Means over a split: ``prior`` L_T and ``terms[t - 1]`` = L_{t-1} in bits/dim, and
    ``distortion[t - 1]`` the RMSE on [0, 255] of x0_hat(x_t)."""

    examples: int
    prior: float
    terms: np.ndarray
    distortion: np.ndarray
    clip_x0: bool = False  #: the official clipped convention (x0_hat clipped before each mean)
    #: -log p(x0 | z_0) in bits/dim for a schedule with a noisy z_0 (VDM), else None
    reconstruction: float | None = None

    @property
    def total(self) -> float:
        return float(self.prior + self.terms.sum() + (self.reconstruction or 0.0))

    def rate(self) -> np.ndarray:
        """rate[t] for t = 0..T: L_T + sum_{s >= t} L_s (with L_0 at t = 0), in bits/dim."""
        tail = np.concatenate([np.cumsum(self.terms[::-1])[::-1], [0.0]])  # tail[t] = sum of terms[t:]
        return self.prior + tail


@torch.no_grad()
def bound_pass(model, data: torch.Tensor, batch_size: int = 256, seed: int = 0,
               progress: Callable[[int], None] | None = None, labels: torch.Tensor | None = None,
               clip_x0: bool = False) -> BoundPass:
    """One pass of the bound over uint8 data (N, C, H, W) in {0..K-1}, with the class ``labels``
    (N,) of a conditional model; ``clip_x0`` gives the official clipped convention (x0_hat clipped
    to [-1, 1] before each reverse mean, as ``calc_bpd_loop``'s ``clip_denoised=True``)."""
    if len(data) == 0:
        raise ValueError("no examples to evaluate")
    device = model.device
    g = torch.Generator(device=device).manual_seed(seed)
    T, D = model.timesteps, model.dims
    bits = 1.0 / (D * math.log(2.0))
    prior, terms, dist, reconstruction = 0.0, np.zeros(T), np.zeros(T), 0.0
    for start in range(0, len(data), batch_size):
        x0 = levels_to_unit(data[start:start + batch_size].float(), model.levels).to(device)
        cond = None if labels is None else labels[start:start + batch_size].to(device)
        prior += (model.schedule.prior_kl(x0).reshape(len(x0), -1).sum(1) * bits).sum().item()
        target = (x0 + 1) * 127.5
        for term in model.bound_terms(x0, g, cond, clip_x0):
            terms[term.t - 1] += (term.nats * bits).sum().item()
            guess = (term.prediction.x0.clamp(-1, 1) + 1) * 127.5
            dist[term.t - 1] += ((guess - target) ** 2).reshape(len(x0), -1).mean(1).sqrt().sum().item()
            if progress is not None:
                progress(len(x0))
        if model.schedule.noisy_start:  # VDM: the reconstruction term from a noisy z_0
            rec = model.schedule.reconstruction(x0, model.schedule.noise_like(x0, g), model.levels)
            reconstruction += (rec.reshape(len(x0), -1).sum(1) * bits).sum().item()
    n = len(data)
    return BoundPass(n, prior / n, terms / n, dist / n, clip_x0,
                     reconstruction / n if model.schedule.noisy_start else None)


@torch.no_grad()
def continuous_pass(model, data: torch.Tensor, draws: int = 16, batch_size: int = 256, seed: int = 0,
                    labels: torch.Tensor | None = None) -> dict[str, Any]:
    """The continuous-time bound (VDM eq. 17) over uint8 data in bits/dim: the mean over the
    examples of each one's estimate (``draws`` antithetic times t each), its standard error over the
    examples, and the part of that error that comes from the Monte Carlo over t alone."""
    device = model.device
    g = torch.Generator(device=device).manual_seed(seed + 1)
    totals, within, parts = [], [], {"prior_L_T": 0.0, "reconstruction_L_0": 0.0, "diffusion": 0.0}
    for start in range(0, len(data), batch_size):
        x0 = levels_to_unit(data[start:start + batch_size].float(), model.levels).to(device)
        cond = None if labels is None else labels[start:start + batch_size].to(device)
        b = model.continuous_bound(x0, g, cond, draws)
        totals.append(b.total.double().cpu())
        within.append(b.diffusion.double().var(dim=1).cpu() / draws if draws > 1 else torch.zeros(len(x0)))
        parts["prior_L_T"] += float(b.prior.sum())
        parts["reconstruction_L_0"] += float(b.reconstruction.sum())
        parts["diffusion"] += float(b.diffusion.mean(1).sum())
    total, within = torch.cat(totals), torch.cat(within)
    n = len(total)
    return {"total": float(total.mean()), "stderr": float(total.std() / math.sqrt(n)) if n > 1 else float("nan"),
            "stderr_from_t": float(within.mean().sqrt() / math.sqrt(n)), "draws_per_example": draws,
            **{k: v / n for k, v in parts.items()}}


def nll_report(bp: BoundPass, split: str) -> dict[str, Any]:
    """The bound and its breakdown as written to ``eval/nll-<split>.json``: the total, L_T, the sum
    of L_1..L_{T-1}, L_0, and every term: ``terms_bits_per_dim[i]`` is L_i (i = 0..T-1, that of
    grid step t = i + 1), so sum(terms) + L_T = total. ``clip_x0`` names the convention."""
    bits = {"total": bp.total, "prior_L_T": bp.prior, "sum_L_1_to_L_T_minus_1": float(bp.terms[1:].sum()),
            "decoder_L_0": float(bp.terms[0])}
    if bp.reconstruction is not None:  # a noisy z_0 (VDM): every grid step is a KL, and -log p(x0 | z_0) is added
        bits = {"total": bp.total, "prior_L_T": bp.prior, "sum_of_the_T_KL_terms": float(bp.terms.sum()),
                "reconstruction_L_0": bp.reconstruction}
    return {
        "split": split,
        "examples": bp.examples,
        "clip_x0": bp.clip_x0,
        "bits_per_dim": bits,
        "terms_bits_per_dim": [float(v) for v in bp.terms],
    }


def split_labels(model, dataset, split: str, n: int) -> torch.Tensor | None:
    """The first n labels of a split for a conditional model (None for an unconditional one)."""
    return dataset.labels(split)[:n] if model.conditioning.active else None


def bits_per_dim(model, dataset, split: str = "test", examples: int = 256, batch_size: int = 256,
                 seed: int = 0, clip_x0: bool = False) -> dict[str, Any]:
    """The mean bound over the first ``examples`` images of ``split`` in bits/dim, with L_T, the
    sum of L_1..L_{T-1}, L_0 and every term."""
    data = dataset.load(split)[:examples]
    labels = split_labels(model, dataset, split, examples)
    report = nll_report(bound_pass(model, data, batch_size, seed, labels=labels, clip_x0=clip_x0), split)
    if model.schedule.continuous and model.schedule.noisy_start:  # VDM: the bound as T -> infinity too
        report["continuous_bits_per_dim"] = continuous_pass(model, data, batch_size=batch_size, seed=seed,
                                                            labels=labels)
    return report


def write_rate_distortion(bp: BoundPass, out: Path) -> tuple[Path, Path]:
    """``rd.csv`` (t, reverse time T - t + 1, rate bits/dim, distortion RMSE [0, 255]) and ``rd.png``."""
    out.mkdir(parents=True, exist_ok=True)
    T = len(bp.terms)
    rate = bp.rate()
    distortion = np.concatenate([[0.0], bp.distortion])  # t = 0: x0 itself, lossless
    csv_path = out / "rd.csv"
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(["t", "reverse_time", "rate_bits_per_dim", "distortion_rmse"])
    for t in range(T, -1, -1):
        w.writerow([t, T - t + 1, f"{rate[t]:.8g}", f"{distortion[t]:.8g}"])
    write_text(csv_path, text.getvalue())  # atomic: the whole table or the one before
    png_path = out / "rd.png"
    _plot(rate, distortion, png_path)
    return csv_path, png_path


def _plot(rate: np.ndarray, distortion: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = len(rate) - 1
    steps = T - np.arange(1, T + 1) + 1  # reverse process steps (T - t + 1) for t = 1..T
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    axes[0].plot(steps, distortion[1:])
    axes[0].set(xlabel="reverse process steps (T - t + 1)", ylabel="distortion (RMSE, [0, 255])")
    axes[1].plot(steps, rate[1:])
    axes[1].set(xlabel="reverse process steps (T - t + 1)", ylabel="rate (bits/dim)")
    axes[2].plot(rate[1:], distortion[1:])
    axes[2].set(xlabel="rate (bits/dim)", ylabel="distortion (RMSE, [0, 255])")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("Progressive lossy compression (Fig. 5 of Ho et al. 2020)")
    fig.tight_layout()
    try:
        write_with(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)
