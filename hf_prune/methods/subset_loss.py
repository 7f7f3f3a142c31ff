"""The loss subset of a search and the masked loss of candidate prunes on it.

The subset is stratified (equal share per class), drawn and augmented once under a fixed seed,
and kept as tensors: every candidate of every step sees the same images. Candidate losses are
sums of cross-entropy (in fp32: the trainer runs method hooks with mixed precision off) that can
be all-reduced, so ranks that split the subset reach the same decisions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from hf_prune.structure import PrefixCache, mask_units
from hf_prune.models.forward import logits_of

Batch = dict[str, torch.Tensor]


def dataset_labels(dataset: Any) -> list[int]:
    """The class label of every item, without decoding images where the dataset allows it.

    A ``datasets.Dataset`` (with or without ``with_transform``) is read from its label column;
    anything else is iterated (``item["labels"]``).
    """
    features = getattr(dataset, "features", None)
    if features is not None and hasattr(dataset, "select_columns"):
        column = next((c for c in ("labels", "label") if c in features), None)
        if column is None:
            class_labels = [c for c, f in features.items() if type(f).__name__ == "ClassLabel"]
            column = class_labels[0] if len(class_labels) == 1 else None
        if column is not None:
            # No format: the raw column, without the transform that decodes images.
            return [int(v) for v in dataset.select_columns([column]).with_format(None)[column]]
    return [int(dataset[i]["labels"]) for i in range(len(dataset))]


def stratified_indices(labels: Sequence[int], size: int, seed: int) -> list[int]:
    """``size`` indices with an equal share per class (as far as classes have items), seeded.

    Classes are shuffled separately and interleaved, so every prefix of the result is itself
    stratified (the screening pass uses a prefix).
    """
    generator = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    queues = []
    for label in sorted(by_class):
        members = by_class[label]
        order = torch.randperm(len(members), generator=generator).tolist()
        queues.append([members[i] for i in order])
    chosen: list[int] = []
    for round_ in range(max(map(len, queues), default=0)):
        chosen += [queue[round_] for queue in queues if round_ < len(queue)]
    return chosen[:size]


def build_loss_subset(
    dataset: Any,
    collate: Callable[[list[Any]], dict[str, Any]],
    size: int,
    batch_size: int,
    seed: int,
    device: torch.device,
) -> list[Batch]:
    """This rank's share of the stratified subset, transformed once (augmentation frozen), in batches."""
    if dataset is None:
        raise ValueError("LAASP evaluates candidates on training images: give the PruningTrainer a train_dataset")
    indices = stratified_indices(dataset_labels(dataset), size, seed)
    rank, world = _rank_and_world()
    if len(indices) < world:
        raise ValueError(f"the LAASP subset has {len(indices)} images for {world} processes: raise laasp_subset_size")
    # Equal shares: every rank then runs the same number of batches, and of all-reduces.
    indices = indices[: len(indices) - len(indices) % world][rank::world]
    items = []
    with torch.random.fork_rng(devices=[]):
        for index in indices:
            # Seeded per image: the same random crop and flip in every run, whichever process draws it
            # and however many share the subset.
            torch.manual_seed(seed + index)
            items.append(dataset[index])
    batches = []
    for start in range(0, len(items), batch_size):
        batch = collate(items[start:start + batch_size])
        batches.append({k: batch[k].to(device) for k in ("pixel_values", "labels")})
    return batches


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass(frozen=True)
class MaskedCandidate:
    """A candidate prune as output masks (see :func:`~hf_prune.structure.unit_output_masks`)."""

    masks: dict[str, tuple[int, torch.Tensor]]


class SubsetLoss:
    """Mean cross-entropy of masked candidates on the loss subset, sharing the dense prefix.

    Per batch, one dense forward records the outputs of every module that finishes before some
    candidate's first masked module; each candidate then replays them and computes only the
    rest of the network.

    Args:
        model: the model (evaluated in eval mode, under no_grad).
        batches: this rank's part of the subset.
        prefix: the model's call order (:class:`~hf_prune.structure.PrefixCache`); None
            recomputes every forward from the input.
        disable_tqdm: hide the progress bar.
    """

    def __init__(
        self, model: nn.Module, batches: Sequence[Batch], prefix: PrefixCache | None, disable_tqdm: bool = True
    ) -> None:
        self.model = model
        self.batches = batches
        self.prefix = prefix
        self.disable_tqdm = disable_tqdm
        self.dense_loss: float | None = None
        self._outputs: dict[str, Any] = {}  # the prefix outputs recorded on the current batch

    def mean_losses(
        self,
        candidates: Sequence[MaskedCandidate],
        screen_fraction: float = 0.0,
        screen_keep: int = 0,
        race: float = 0.0,
    ) -> list[float]:
        """Mean loss of every candidate still in the running at the end; ``inf`` for the others.

        With ``screen_fraction > 0`` all candidates are first scored on that leading fraction of
        the subset (at least one batch), and only the best ``screen_keep`` (ties: lower index
        first) go on. With ``race > 0`` the rest is scored batch by batch, and from the third batch
        on a candidate is dropped once its mean per-batch loss exceeds the leader's by more than
        ``race`` standard errors of their paired differences; the race ends when one is left.
        The losses that remain, and ``dense_loss``, cover the same batches.
        """
        num_batches = len(self.batches)
        sums = torch.zeros(len(candidates), num_batches, dtype=torch.float64)
        dense, counts = torch.zeros(num_batches, dtype=torch.float64), torch.zeros(num_batches, dtype=torch.float64)
        alive, seen = list(range(len(candidates))), 0
        split = self._screen_split(len(candidates), screen_fraction, screen_keep)
        while seen < num_batches and not (race and len(alive) == 1):
            if seen == 0 and split:
                end = split  # the screening pass
            else:
                end = seen + 1 if race else num_batches
            sums[alive, seen:end], dense[seen:end], counts[seen:end] = self.batch_sums(
                [candidates[i] for i in alive], self.batches[seen:end]
            )
            seen = end
            if seen == split:
                alive = sorted(alive, key=lambda i: (float(sums[i].sum()), i))[:screen_keep]
            if race and seen >= 3:
                alive = _race(alive, sums[:, :seen] / counts[:seen].clamp(min=1), race)
        count = float(counts.sum().clamp(min=1))
        self.dense_loss = float(dense.sum()) / count
        losses = [math.inf] * len(candidates)
        for i in alive:
            losses[i] = float(sums[i].sum()) / count
        return losses

    def candidate_images(self, num_candidates: int, screen_fraction: float = 0.0, screen_keep: int = 0) -> int:
        """Images :meth:`mean_losses` forwards for ``num_candidates`` candidates (this rank's, besides the dense
        forwards; a race may stop earlier): the measure of a search step's cost."""
        sizes = [len(batch["labels"]) for batch in self.batches]
        split = self._screen_split(num_candidates, screen_fraction, screen_keep)
        if split is None:
            return num_candidates * sum(sizes)
        return num_candidates * sum(sizes[:split]) + screen_keep * sum(sizes[split:])

    def _screen_split(self, num_candidates: int, screen_fraction: float, screen_keep: int) -> int | None:
        """Batches of the screening pass (at least one), or None when it would not screen anything out."""
        split = max(1, math.ceil(screen_fraction * len(self.batches)))
        if screen_fraction <= 0.0 or screen_keep >= num_candidates or split >= len(self.batches):
            return None
        return split

    def batch_sums(
        self, candidates: Sequence[MaskedCandidate], batches: Sequence[Batch]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Summed loss per candidate and batch ``(candidates, batches)``, of the dense model and the number
        of images per batch ``(batches,)``, over all ranks (float64, on CPU)."""
        device = next(self.model.parameters()).device
        totals = torch.zeros(len(candidates) + 2, len(batches), dtype=torch.float64, device=device)  # ..., dense, count
        frontiers = [self.prefix.frontier(c.masks) if self.prefix else [] for c in candidates]
        recorded = sorted(set().union(*frontiers)) if frontiers else []
        was_training = self.model.training
        self.model.eval()
        bar = tqdm(total=len(candidates) * len(batches), desc="laasp candidates", leave=False, disable=self.disable_tqdm)
        try:
            with torch.no_grad():
                for b, batch in enumerate(batches):
                    totals[-2:, b] = torch.tensor([self._dense_sum(batch, recorded), len(batch["labels"])])
                    for i, (candidate, frontier) in enumerate(zip(candidates, frontiers)):
                        totals[i, b] = self._candidate_sum(batch, candidate, frontier)
                        bar.update()
        finally:
            bar.close()
            self.model.train(was_training)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(totals)
        totals = totals.cpu()
        return totals[:-2], totals[-2], totals[-1]

    def _dense_sum(self, batch: Batch, recorded: Sequence[str]) -> float:
        if self.prefix is None:
            return _loss_sum(self.model, batch)
        with self.prefix.recording(recorded) as outputs:
            loss = _loss_sum(self.model, batch)
        self._outputs = outputs
        return loss

    def _candidate_sum(self, batch: Batch, candidate: MaskedCandidate, frontier: Sequence[str]) -> float:
        if self.prefix is None:
            with mask_units(self.model, candidate.masks):
                return _loss_sum(self.model, batch)
        with self.prefix.replaying({n: self._outputs[n] for n in frontier}), mask_units(self.model, candidate.masks):
            return _loss_sum(self.model, batch)


def _race(alive: list[int], batch_means: torch.Tensor, margin: float) -> list[int]:
    """The candidates whose mean per-batch loss is within ``margin`` standard errors of the leader's."""
    leader = min(alive, key=lambda i: (float(batch_means[i].sum()), i))
    differences = batch_means[alive] - batch_means[leader]
    bound = margin * differences.std(dim=1) / math.sqrt(batch_means.shape[1])
    return [i for i, mean, limit in zip(alive, differences.mean(dim=1).tolist(), bound.tolist()) if mean <= limit]


def _loss_sum(model: nn.Module, batch: Batch) -> float:
    logits = logits_of(model(batch["pixel_values"]))
    return float(F.cross_entropy(logits.float(), batch["labels"], reduction="sum"))
