"""Bits/dim on a data split: the bound of eq. 5 with its breakdown (Table 1, Sec. 4.3)."""

from __future__ import annotations

from typing import Any

import torch

from ..distributions import levels_to_unit


@torch.no_grad()
def bits_per_dim(model, dataset, split: str = "test", examples: int = 256, batch_size: int = 256, seed: int = 0) -> dict[str, Any]:
    """The mean bound over the first ``examples`` images of ``split``, in bits/dim: total, L_T,
    sum of L_{t-1} for t = 2..T (L_1..L_{T-1}), and the decoder term L_0."""
    data = dataset.load(split)[:examples]
    g = torch.Generator(device=model.device).manual_seed(seed)
    totals = {"total": 0.0, "prior_L_T": 0.0, "sum_L_1_to_L_T_minus_1": 0.0, "decoder_L_0": 0.0}
    for start in range(0, len(data), batch_size):
        x0 = levels_to_unit(data[start:start + batch_size].float(), model.levels).to(model.device)
        nll = model.nll_bpd(x0, generator=g)
        totals["total"] += nll.total.sum().item()
        totals["prior_L_T"] += nll.prior.sum().item()
        totals["sum_L_1_to_L_T_minus_1"] += nll.terms[:, 1:].sum().item()
        totals["decoder_L_0"] += nll.decoder.sum().item()
    return {"examples": len(data), "split": split, "bits_per_dim": {k: v / len(data) for k, v in totals.items()}}
