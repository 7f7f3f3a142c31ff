"""Filter criteria: per-unit scores of a group's weights, lowest pruned first.

A criterion takes a group's unit weight matrix (one row per unit, see :func:`unit_weights`) and
returns one score per unit; a search removes the units with the *lowest* scores first. The
registry holds the four criteria of LAASP and any a user adds with :func:`register_criterion`.

Defaults (which units go first):

- ``l1``: smallest L1 norm (weak filters).
- ``l2``: smallest L2 norm.
- ``fpgm``: smallest sum of Euclidean distances to the other units of the group, i.e. the units
  nearest the geometric median, whose function the others can best replace (FPGM).
- ``cosine``: smallest sum of cosine *distances* (1 - cosine similarity) to the other units,
  i.e. the most redundant units, pointing where many others point. (The code behind the LAASP
  paper's logs ranked by summed similarity ascending, the opposite; we keep the meaning its
  name says.) An all-zero row has similarity 0 to everything, so it scores high and stays.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hf_prune.structure import ChannelGroup

Criterion = Callable[[torch.Tensor], torch.Tensor]
"""(num_units, features) float32 weights -> (num_units,) scores; the lowest are pruned first."""


def l1_norm(weights: torch.Tensor) -> torch.Tensor:
    """L1 norm of each unit's weights: the smallest filters go first."""
    return weights.abs().sum(dim=1)


def l2_norm(weights: torch.Tensor) -> torch.Tensor:
    """L2 norm of each unit's weights: the smallest filters go first."""
    return weights.norm(dim=1)


def geometric_median_distance(weights: torch.Tensor) -> torch.Tensor:
    """Sum of Euclidean distances to all other units: the units nearest the geometric median go first."""
    return torch.cdist(weights.double(), weights.double()).sum(dim=1).float()


def cosine_distance(weights: torch.Tensor) -> torch.Tensor:
    """Sum of (1 - cosine similarity) to all other units: the most redundant units go first."""
    unit = nn.functional.normalize(weights.double(), dim=1)
    similarity = unit @ unit.T
    # The diagonal contributes 1 - 1 = 0 for non-zero rows; exclude it so zero rows score like the rest.
    return ((1.0 - similarity).sum(dim=1) - (1.0 - similarity.diagonal())).float()


CRITERIA: dict[str, Criterion] = {
    "l1": l1_norm,
    "l2": l2_norm,
    "fpgm": geometric_median_distance,
    "cosine": cosine_distance,
}
DEFAULT_CRITERIA = ("l1", "l2", "fpgm", "cosine")


def register_criterion(name: str, fn: Criterion, *, overwrite: bool = False) -> None:
    """Add a criterion under ``name`` (usable in ``laasp_criteria``).

    Args:
        name: the registry key.
        fn: maps a ``(num_units, features)`` float32 weight matrix to ``(num_units,)`` scores;
            the lowest-scored units are pruned first. It must be deterministic.
        overwrite: replace an existing criterion of that name instead of refusing.
    """
    if name in CRITERIA and not overwrite:
        raise ValueError(f"criterion '{name}' is already registered: pick another name or pass overwrite=True")
    CRITERIA[name] = fn


def get_criterion(name: str) -> Criterion:
    """The criterion registered under ``name``."""
    if name not in CRITERIA:
        raise ValueError(
            f"unknown criterion '{name}': choose from {sorted(CRITERIA)} or add it with "
            "hf_prune.methods.register_criterion(name, fn)"
        )
    return CRITERIA[name]


def unit_weights(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """The group's weights as one row per unit: shape ``(num_units, features)``, float32, on CPU.

    Each row concatenates, unscaled, the unit's output rows of every conv/linear weight that
    *produces* the group's channels (for a residual group: all the convs that add into the
    stream; for a head: its query/key/value rows). Input columns of consumers, norm parameters
    and biases are left out. So a coupled group is scored as one long filter, where each layer
    weighs in by its number of weights, instead of by one arbitrarily chosen conv as in the
    reference.
    """
    params = dict(model.named_parameters())
    rows, seen = [], set()
    for piece in group.slices:
        weight = params[piece.param_name]
        # A depthwise conv is listed as producer and consumer of the same dimension: count it once.
        if not piece.produces or weight.dim() < 2 or (piece.param_name, piece.dim) in seen:
            continue
        seen.add((piece.param_name, piece.dim))
        moved = weight.detach().float().movedim(piece.dim, 0)
        rows.append(moved[piece.index.flatten().to(weight.device)].reshape(group.num_units, -1).cpu())
    if not rows:
        raise ValueError(f"group '{group.name}' has no conv or linear weight producing its units: nothing to score")
    return torch.cat(rows, dim=1)
