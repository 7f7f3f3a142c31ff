"""The registry of pruning methods: a new method is one file with ``@register_method``.

As timm's ``register_model``, registration happens when the defining module is imported; the
built-in methods are imported by ``hf_prune.methods``.
"""

from __future__ import annotations

from collections.abc import KeysView
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hf_prune.methods.base import PruningMethod

_METHODS: dict[str, type[PruningMethod]] = {}


def register_method(cls: type[PruningMethod]) -> type[PruningMethod]:
    """Class decorator: make ``cls`` available as ``pruning_method=cls.name``.

    The class may declare ``arguments``, a dataclass of its flat settings (``PruningArguments``
    inherits the built-in methods' ones), and validate them in ``validate_arguments``.
    """
    name = getattr(cls, "name", "")
    if not name:
        raise ValueError(f"{cls.__name__} needs a non-empty class attribute `name` to be registered")
    if name in _METHODS and _METHODS[name] is not cls:
        raise ValueError(f"a pruning method named '{name}' is already registered ({_METHODS[name].__name__})")
    _METHODS[name] = cls
    return cls


def registered_method_names() -> KeysView[str]:
    """A live view of the registered names (for argparse ``choices`` that see later registrations)."""
    return _METHODS.keys()


def list_methods() -> list[str]:
    """Names of the registered methods, in registration order."""
    return list(_METHODS)


def method_class(name: str) -> type[PruningMethod]:
    """The class registered under ``name``; a clear error names the choices."""
    if name not in _METHODS:
        raise ValueError(f"unknown pruning_method '{name}': choose one of {list_methods()}")
    return _METHODS[name]


def create_method(name: str, **kwargs: Any) -> PruningMethod:
    """Instantiate the method registered under ``name``."""
    return method_class(name)(**kwargs)


def validate_method_arguments(args: Any) -> None:
    """Every registered method checks its own settings on ``args`` (a ``PruningArguments``)."""
    for cls in _METHODS.values():
        cls.validate_arguments(args)
