"""Seeded subsets: the one way the lab takes "at most k items of these, the same ones every run"."""

from __future__ import annotations

import torch


def seeded_subset(total: int, limit: int, seed: int) -> torch.Tensor:
    """Sorted positions of a seeded random subset of ``limit`` of ``total`` items (all of them when ``limit``
    is 0 or at least ``total``).

    The same (total, limit, seed) always gives the same positions, and the subset mixes every class of a
    split (a random draw, not the first ``limit`` items).
    """
    if limit <= 0 or limit >= total:
        return torch.arange(total)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(int(seed)))[:limit]
    return order.sort().values
