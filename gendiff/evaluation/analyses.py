"""The paper's analyses of a trained model along the reverse chain (Sec. 4.3, 4.4).

- :func:`progressive`: Fig. 6, x0_hat = predicted x0 (eq. 15) at chosen steps of Algorithm 2;
- :func:`shared_completions`: Fig. 7, several completions x0 ~ p_theta(x0 | x_t) that share one
  frozen x_t, for several t;
- :func:`interpolate`: Fig. 8, two images encoded with the same forward noise,
  x_t ~ q(x_t | x0) and x'_t ~ q(x_t | x0'), the mix (1 - lambda) x_t + lambda x'_t decoded with
  the same reverse noise for every lambda.

All of them run the ancestral sampler's own loop (:meth:`gendiff.samplers.Ancestral.run`).
Time convention: grid steps t in {1..T} (the paper's t for a discrete schedule).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import GendiffError
from ..samplers import Ancestral


def check_time(model, t: int, what: str = "t") -> int:
    if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= model.timesteps:
        raise GendiffError(f"{what} = {t!r} is outside 1..{model.timesteps} (this model's T).")
    return t


def snapshot_times(T: int, count: int) -> list[int]:
    """``count`` paper times from T down to 1, evenly spaced, always including T and 1."""
    count = max(2, min(count, T))
    return sorted({round(T - i * (T - 1) / (count - 1)) for i in range(count)}, reverse=True)


@torch.no_grad()
def progressive(model, n: int, snapshots: int = 10, seed: int = 0, clip_x0: bool = True,
                progress=None) -> tuple[Tensor, list[int]]:
    """Fig. 6: (n, len(times) + 1, C, H, W) with x0_hat at each time of ``times`` and, last, the
    sample itself; and the times. ``progress(step, total)`` is called after each of the T reverse steps."""
    times = snapshot_times(model.timesteps, snapshots)
    wanted, seen = set(times), {}

    def trace(t, x_t, prediction):
        if t in wanted:
            seen[t] = prediction.x0.clamp(-1, 1).cpu()

    g = torch.Generator(device=model.device).manual_seed(seed)
    x = model.prior_sample((n, *model.data_shape), generator=g)
    final = Ancestral(clip_x0=clip_x0).run(model, x, model.timesteps, g, progress, trace=trace).cpu()
    return torch.stack([seen[t] for t in times] + [final], dim=1), times


@torch.no_grad()
def shared_completions(model, times: list[int], completions: int = 8, seed: int = 0,
                       clip_x0: bool = True, progress=None) -> Tensor:
    """Fig. 7: one reverse chain is frozen at each t in ``times``; from each frozen x_t,
    ``completions`` independent completions. Returns (len(times), completions, C, H, W).
    ``progress(step, total)`` is called after every reverse step (T + sum(times) in all)."""
    for t in times:
        check_time(model, t, "--share-from")
    sampler = Ancestral(clip_x0=clip_x0)
    frozen = {}

    def trace(t, x_t, prediction):
        if t in times:
            frozen[t] = x_t.clone()

    g = torch.Generator(device=model.device).manual_seed(seed)
    sampler.run(model, model.prior_sample((1, *model.data_shape), generator=g), model.timesteps, g, progress,
                trace=trace)
    rows = []
    for t in times:
        x = frozen[t].expand(completions, *model.data_shape).clone()
        rows.append(sampler.run(model, x, t, g, progress).cpu())
    return torch.stack(rows)


@torch.no_grad()
def interpolate(model, x0a: Tensor, x0b: Tensor, t: int, steps: int = 9, seed: int = 0,
                clip_x0: bool = True, progress=None) -> Tensor:
    """Fig. 8: (B, steps, C, H, W) decodings of (1 - lambda) x_t + lambda x'_t for ``steps`` values
    of lambda evenly spaced in [0, 1], with x_t and x'_t from the same forward noise and every
    lambda decoded with the same reverse noise. ``progress(step, total)`` is called after every
    reverse step (steps * t in all)."""
    check_time(model, t, "--t")
    if steps < 2:
        raise GendiffError(f"--lambdas must be at least 2 (the two ends), got {steps}")
    device = model.device
    g = torch.Generator(device=device).manual_seed(seed)
    tt = model.time(t, len(x0a), device)
    noise = model.schedule.noise_like(x0a.to(device), g)  # one forward noise for both images
    xa, xb = model.q_sample(x0a.to(device), tt, noise), model.q_sample(x0b.to(device), tt, noise)
    out = []
    for lam in torch.linspace(0, 1, steps).tolist():
        mixed = (1 - lam) * xa + lam * xb
        out.append(decode(model, mixed, t, seed + 1, clip_x0, progress))  # the same reverse noise for every lambda
    return torch.stack(out, dim=1)


@torch.no_grad()
def decode(model, x_t: Tensor, t: int, seed: int, clip_x0: bool = True, progress=None) -> Tensor:
    """Algorithm 2 from x_t at time t, with reverse noise from a generator seeded by ``seed``."""
    g = torch.Generator(device=model.device).manual_seed(seed)
    return Ancestral(clip_x0=clip_x0).run(model, x_t, t, g, progress).cpu()


@torch.no_grad()
def reconstruct(model, x0: Tensor, t: int, seed: int = 0, clip_x0: bool = True) -> Tensor:
    """Encode x0 to x_t with the forward noise of :func:`interpolate` and decode it back."""
    check_time(model, t, "--t")
    g = torch.Generator(device=model.device).manual_seed(seed)
    x0 = x0.to(model.device)
    x_t = model.q_sample(x0, model.time(t, len(x0), model.device), model.schedule.noise_like(x0, g))
    return decode(model, x_t, t, seed + 1, clip_x0)
