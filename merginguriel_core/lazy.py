"""Heavy dependencies imported on first use, so that importing MergingUriel's modules (every
``mu`` call imports the CLI, its commands and every plugin) does not import torch: ``mu
--help``, ``mu plugins`` and ``mu similarity`` never touch a tensor.

A module that works on tensors writes::

    if TYPE_CHECKING:
        import torch
    else:
        from merginguriel_core.lazy import torch

and uses ``torch`` as usual: the stand-in imports the real module on its first attribute
access (``torch.zeros``, ``torch.Tensor``, ``torch.float32``) and forwards everything to it,
setting attributes included. Annotations are strings (``from __future__ import
annotations``) and import nothing. A module-level value built from torch (a dtype table, a
dataclass default) is built on first use: :class:`LazyMapping`, or
``field(default_factory=...)``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

__all__ = ["LazyModule", "LazyMapping", "numpy", "torch", "tqdm"]

K = TypeVar("K")
V = TypeVar("V")


class LazyModule:
    """Stands for the module ``name``, imported on first attribute access."""

    __slots__ = ("_lazy_name", "_lazy_module")

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_lazy_name", name)
        object.__setattr__(self, "_lazy_module", None)

    def _load(self) -> Any:
        module = self._lazy_module
        if module is None:
            __import__(self._lazy_name)  # not importlib.import_module: -X importtime reports this one
            module = sys.modules[self._lazy_name]
            object.__setattr__(self, "_lazy_module", module)
        return module

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._load(), attribute)

    def __setattr__(self, attribute: str, value: Any) -> None:
        setattr(self._load(), attribute, value)

    def __delattr__(self, attribute: str) -> None:
        delattr(self._load(), attribute)

    def __dir__(self) -> list[str]:
        return dir(self._load())

    def __repr__(self) -> str:
        state = "imported" if self._lazy_module is not None else "not imported yet"
        return f"<lazy module {self._lazy_name!r} ({state})>"


class LazyMapping(Mapping[K, V]):
    """A read-only mapping built by ``build()`` on first use (a table of torch dtypes)."""

    def __init__(self, build: Callable[[], Mapping[K, V]]) -> None:
        self._build = build
        self._data: Mapping[K, V] | None = None

    def _mapping(self) -> Mapping[K, V]:
        if self._data is None:
            self._data = dict(self._build())
        return self._data

    def __getitem__(self, key: K) -> V:
        return self._mapping()[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())

    def __contains__(self, key: object) -> bool:
        return key in self._mapping()

    def __repr__(self) -> str:
        return repr(self._mapping())


def tqdm(*args: Any, **kwargs: Any) -> Any:
    """``tqdm.auto.tqdm(*args, **kwargs)``; importing ``tqdm.auto`` costs ~0.1 s (asyncio)."""
    from tqdm.auto import tqdm as progress_bar

    return progress_bar(*args, **kwargs)


numpy = LazyModule("numpy")
torch = LazyModule("torch")
