"""Make a CUDA-built torchvision importable next to a CPU-only torch (setup step, idempotent).

The registry has no CPU build of torchvision: its ``_C`` extension needs libtorch_cuda, so with
CPU torch ``import torchvision`` (and therefore ``import timm``) fails with
``operator torchvision::nms does not exist`` (pytorch/vision#9085). The two fake-kernel
registrations for ``nms``/``qnms`` are then made conditional on the compiled ops being present,
as torchvision already does for its other meta kernels. Classification needs none of those ops.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

UNGUARDED = '@torch.library.register_fake("torchvision::{op}")'
GUARDED = '@(torch.library.register_fake("torchvision::{op}") if torchvision.extension._has_ops() else (lambda fn: fn))'


def main() -> int:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        print("torchvision is not installed: nothing to fix")
        return 0
    path = Path(spec.origin).parent / "_meta_registrations.py"
    source = path.read_text()
    patched = source
    for op in ("nms", "qnms"):
        patched = patched.replace(UNGUARDED.format(op=op), GUARDED.format(op=op))
    if patched == source:
        print(f"{path}: already patched or not affected")
        return 0
    tmp = path.with_suffix(".py.tmp")
    tmp.write_text(patched)
    tmp.replace(path)
    print(f"{path}: guarded the nms/qnms fake registrations (CPU torch without torchvision ops)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
