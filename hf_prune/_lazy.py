"""PEP 562 lazy exports: a package names what it offers, the defining module loads on first use.

``import hf_prune`` then costs torch and timm (the CIFAR models register in timm's registry) and
nothing else: transformers' model code, the Trainer, datasets and matplotlib load when used.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``exports`` maps a public name to its submodule.

    A name that maps to itself is a submodule (``hf_prune.data``). The first access imports the
    module and stores the value on the package, so later accesses are plain attribute lookups.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}.{exports[name]}")
        value = module if exports[name] == name else getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
