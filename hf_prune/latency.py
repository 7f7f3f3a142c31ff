"""Forward latency of a model, measured with ``torch.utils.benchmark`` (warm-up, median of runs), and the
inference graph a deployment would time (BatchNorm folded into the layer before it)."""

from __future__ import annotations

import copy
import statistics
from collections.abc import Sequence

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse
from torch.utils.benchmark import Timer


def memory_format_named(name: str) -> torch.memory_format:
    """``torch.contiguous_format`` or ``torch.channels_last`` (etc.) from its name.

    Raises:
        ValueError: ``name`` is not a torch memory format.
    """
    memory_format = getattr(torch, name, None)
    if not isinstance(memory_format, torch.memory_format):
        raise ValueError(f"'{name}' is not a torch memory format: e.g. contiguous_format or channels_last")
    return memory_format


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm that follows a convolution or linear layer folded
    into that layer's weights (``torch.fx``'s ``fuse``), as exporters and inference runtimes do.

    BatchNorm is elementwise work that scales with a layer's width while the convolution's MACs scale with
    its square, so timing the unfolded graph understates what a pruned model gains where it is deployed.

    Raises:
        ValueError: ``model`` cannot be traced by ``torch.fx`` (data-dependent control flow).
    """
    try:
        return fuse(copy.deepcopy(model).eval(), inplace=True)  # the caller's model keeps its mode
    except Exception as error:  # fx raises several types (TraceError, TypeError, ...) for untraceable code
        raise ValueError(
            f"{type(model).__name__} cannot be traced by torch.fx to fold its BatchNorm layers ({error}); "
            "time it as it is instead"
        ) from error


def measure_latency_ms(
    model: nn.Module,
    input_size: tuple[int, ...],
    batch_size: int,
    *,
    num_threads: int | None = None,
    min_run_time: float = 0.5,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> float:
    """Median eval-mode forward time in milliseconds on random inputs of ``(batch_size, *input_size)``.

    Args:
        model: any module; it is put in eval mode and runs on its own device, with inputs in the dtype of
            its first parameter (cast it with ``model.to(torch.bfloat16)`` etc. to time another precision).
        input_size: one input's shape, e.g. ``(3, 224, 224)``.
        batch_size: images per forward.
        num_threads: intra-op threads during the measurement (default: torch's current setting).
        min_run_time: seconds of repeated runs the median is taken over (after one warm-up run).
        memory_format: layout of the inputs, e.g. ``torch.channels_last`` for image batches (convert the
            model's weights with ``model.to(memory_format=...)`` first).
    """
    parameter = next(model.parameters())
    inputs = torch.randn(batch_size, *input_size, device=parameter.device, dtype=parameter.dtype)
    inputs = inputs.contiguous(memory_format=memory_format)
    model.eval()
    with torch.inference_mode():
        model(inputs)  # warm-up: allocator, kernels selection, lazy init
    timer = Timer(
        "with torch.inference_mode(): model(inputs)",
        globals={"torch": torch, "model": model, "inputs": inputs},
        num_threads=num_threads or torch.get_num_threads(),
    )
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def median_latencies_in_turns(
    models: Sequence[nn.Module],
    input_size: tuple[int, ...],
    batch_size: int,
    rounds: int,
    *,
    num_threads: int | None = None,
    min_run_time: float = 0.5,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> list[float]:
    """Median :func:`measure_latency_ms` of each model over ``rounds`` rounds that time every model in turn,
    so that a change of machine load hits all of them alike."""
    times: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for model, model_times in zip(models, times):
            model_times.append(
                measure_latency_ms(model, input_size, batch_size, num_threads=num_threads, min_run_time=min_run_time,
                                   memory_format=memory_format)
            )
    return [statistics.median(t) for t in times]
