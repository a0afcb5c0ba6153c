"""Incremental, sharded safetensors output for a tensor layout known in advance.

Because every name, dtype and shape is known before the first byte is written, each
shard's header can be written first and tensor bytes appended as the merge produces
them, whole or a few rows at a time. Only the chunk being written is ever in memory.
Several shards get the ``model-0000i-of-0000n.safetensors`` names and a
``model.safetensors.index.json``, exactly as transformers writes and expects them.
"""

from __future__ import annotations

import json
import math
import re
from contextlib import contextmanager, suppress
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

from merginguriel_core.errors import ConfigError, TensorFileError
from merginguriel_core.io.reader import DTYPE_NAMES, INDEX_FILE, SINGLE_FILE
from merginguriel_core.outputs import SPACE_ERRORS

if TYPE_CHECKING:
    import torch
else:
    from merginguriel_core.lazy import torch

Layout = Sequence[tuple[str, "torch.dtype", tuple[int, ...]]]

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes in a size such as ``"2GB"``, ``"500MB"``, ``"1.5GiB"``, ``"1000000"`` or ``1000000``.

    KB/MB/GB/TB are powers of 1000 (as in ``max_shard_size`` of transformers),
    KiB/MiB/GiB/TiB powers of 1024; units are case-insensitive. The result must be a
    positive whole number of bytes, else :class:`ConfigError`.
    """
    accepted = (
        "expected a positive byte count with an optional unit B, KB, MB, GB, TB, KiB, MiB, GiB or TiB "
        "(e.g. 2GB, 500MB, 1.5GiB, 1000000)"
    )
    if isinstance(text, int) and not isinstance(text, bool):
        if text <= 0:
            raise ConfigError(f"invalid size {text}: {accepted}")
        return text
    match = _SIZE.match(text) if isinstance(text, str) else None
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ConfigError(f"invalid size {text!r}: {accepted}")
    try:
        value = Decimal(match.group(1)) * unit
    except InvalidOperation:  # pragma: no cover - the regex only admits valid decimals
        raise ConfigError(f"invalid size {text!r}: {accepted}") from None
    if value <= 0 or value != value.to_integral_value():
        raise ConfigError(f"invalid size {text!r}: {accepted}")
    return int(value)


@dataclass(frozen=True)
class _Entry:
    """One tensor of the layout and where it goes."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    nbytes: int
    shard: int
    begin: int  # offset in its shard's data section


def _describe(shape: tuple[int, ...], dtype: torch.dtype) -> str:
    """``shape [2, 3] F32``: a shape and dtype as error messages show them."""
    return f"shape {list(shape)} {DTYPE_NAMES.get(dtype, str(dtype))}"


class ShardedSafetensorsWriter:
    """Writes tensors of a layout known in advance, in that order, straight to disk.

    The layout is split, in order, into shards whose data is at most ``max_shard_bytes``
    (a single bigger tensor gets its own shard). Each shard file is opened, given its
    header and filled as its tensors arrive, then closed before the next one opens.
    ``files`` lists the safetensors files and ``index_file`` the index (or ``None``)
    once :meth:`close` has succeeded. The folder must not already hold safetensors
    weights, so stale shards can never be mixed with new ones.
    """

    def __init__(
        self,
        folder: Path,
        layout: Layout,
        *,
        max_shard_bytes: int = 2 * 1024**3,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.folder = Path(folder)
        if isinstance(max_shard_bytes, bool) or not isinstance(max_shard_bytes, int) or max_shard_bytes <= 0:
            raise ConfigError(f"invalid max_shard_bytes {max_shard_bytes!r}: expected a positive integer")
        meta = dict(metadata or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            raise ConfigError(f"invalid metadata for {self.folder}: safetensors metadata maps strings to strings")
        meta.setdefault("format", "pt")
        self._metadata = meta
        self._entries = self._plan(layout, max_shard_bytes)
        self._shard_count = max((e.shard for e in self._entries), default=0) + 1
        self._names = frozenset(entry.name for entry in self._entries)

        if self.folder.exists():
            stale = sorted(p.name for p in self.folder.glob("*.safetensors")) + (
                [INDEX_FILE] if (self.folder / INDEX_FILE).exists() else []
            )
            if stale:
                raise ConfigError(
                    f"output folder {self.folder} already holds safetensors weights ({', '.join(stale)}); "
                    "expected a folder without them"
                )
        self.folder.mkdir(parents=True, exist_ok=True)

        self.files: list[Path] = []
        self.index_file: Path | None = None
        self._next = 0  # index of the tensor being written
        self._rows_done = 0  # rows of that tensor already written
        self._handle: BinaryIO | None = None
        self._open_shard = -1
        self._closed = False
        #: Bytes of all shards (headers included) and how many are written so far.
        self.total_bytes = sum(e.nbytes for e in self._entries)
        self.bytes_written = 0

    def _plan(self, layout: Layout, max_shard_bytes: int) -> list[_Entry]:
        """Validate the layout and assign each tensor its shard and offset."""
        entries: list[_Entry] = []
        seen: set[str] = set()
        shard, used = 0, 0
        for name, dtype, shape in layout:
            shape = tuple(shape)
            if not isinstance(name, str) or name == "__metadata__" or name in seen:
                raise ConfigError(f"invalid layout for {self.folder}: tensor name {name!r} is reserved or repeated")
            if dtype not in DTYPE_NAMES:
                raise ConfigError(
                    f"invalid layout for {self.folder}: tensor '{name}' has dtype {dtype}, "
                    f"expected one of {', '.join(str(d) for d in DTYPE_NAMES)}"
                )
            if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
                raise ConfigError(f"invalid layout for {self.folder}: tensor '{name}' has shape {shape!r}")
            seen.add(name)
            nbytes = math.prod(shape) * dtype.itemsize
            if used and used + nbytes > max_shard_bytes:
                shard, used = shard + 1, 0
            entries.append(_Entry(name, dtype, shape, nbytes, shard, used))
            used += nbytes
        return entries

    def shard_name(self, shard: int) -> str:
        """File name of shard ``shard`` (0-based)."""
        if self._shard_count == 1:
            return SINGLE_FILE
        return f"model-{shard + 1:05d}-of-{self._shard_count:05d}.safetensors"

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write the whole of tensor ``name``, which must be next in the layout."""
        entry = self._expect(name, whole=True)
        if tensor.dtype != entry.dtype or tuple(tensor.shape) != entry.shape:
            raise TensorFileError(
                f"tensor '{name}' for {self.folder} has {_describe(tuple(tensor.shape), tensor.dtype)}, "
                f"expected {_describe(entry.shape, entry.dtype)} as in the layout"
            )
        self._emit(entry, tensor)
        self._advance()

    def write_rows(self, name: str, tensor_chunk: torch.Tensor) -> None:
        """Write the next rows (along dim 0) of tensor ``name``; a 0-d tensor is one chunk."""
        entry = self._expect(name, whole=False)
        chunk_shape = tuple(tensor_chunk.shape)
        if entry.shape:
            fits = (
                len(chunk_shape) == len(entry.shape)
                and chunk_shape[1:] == entry.shape[1:]
                and self._rows_done + chunk_shape[0] <= entry.shape[0]
            )
        else:
            fits = chunk_shape == ()
        if tensor_chunk.dtype != entry.dtype or not fits:
            raise TensorFileError(
                f"rows of tensor '{name}' for {self.folder} have {_describe(chunk_shape, tensor_chunk.dtype)} "
                f"after {self._rows_done} rows written, expected rows of {_describe(entry.shape, entry.dtype)}"
            )
        self._emit(entry, tensor_chunk)
        self._rows_done += chunk_shape[0] if entry.shape else 1
        if self._rows_done == (entry.shape[0] if entry.shape else 1):
            self._advance()

    def _expect(self, name: str, *, whole: bool) -> _Entry:
        """The layout entry for ``name``, which must be the one being written."""
        if self._closed:
            raise TensorFileError(f"cannot write tensor '{name}': the writer for {self.folder} is closed")
        if name not in self._names:
            raise TensorFileError(f"tensor '{name}' is not in the layout of {self.folder}")
        if self._next >= len(self._entries) or self._entries[self._next].name != name:
            expected = self._entries[self._next].name if self._next < len(self._entries) else "nothing (all written)"
            raise TensorFileError(
                f"tensor '{name}' written out of order to {self.folder}: expected '{expected}' next "
                f"(tensor {self._next + 1} of {len(self._entries)} in the layout)"
            )
        if whole and self._rows_done:
            raise TensorFileError(
                f"tensor '{name}' for {self.folder} written whole after {self._rows_done} of its rows; use write_rows"
            )
        return self._entries[self._next]

    def _emit(self, entry: _Entry, tensor: torch.Tensor) -> None:
        """Append the bytes of ``tensor`` to ``entry``'s shard, opening it if needed."""
        if self._open_shard != entry.shard:
            self._start_shard(entry.shard)
        assert self._handle is not None
        data = tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()
        with self._space_checked(entry.shard):
            self._handle.write(data)
        self.bytes_written += data.nbytes

    def _start_shard(self, shard: int) -> None:
        """Open shard ``shard`` and write its header."""
        path = self.folder / self.shard_name(shard)
        with self._space_checked(shard):
            self._handle = open(path, "wb")
            self._open_shard = shard
            header = self._header(shard)
            self._handle.write(header)
        self.bytes_written += len(header)

    @contextmanager
    def _space_checked(self, shard: int):
        """Turn a full disk or a file-size limit into an :class:`OSError` naming the shard's
        file, with ``needed`` and ``written`` byte counts for the message the caller shows."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in SPACE_ERRORS:
                raise
            error = OSError(exc.errno, exc.strerror, self.shard_name(shard))
            error.needed, error.written = self.total_bytes, self.bytes_written  # type: ignore[attr-defined]
            raise error from None

    def _header(self, shard: int) -> bytes:
        """Length prefix + JSON header of a shard, padded with spaces to a multiple of 8."""
        header: dict[str, object] = {"__metadata__": self._metadata}
        for entry in self._entries:
            if entry.shard == shard:
                header[entry.name] = {
                    "dtype": DTYPE_NAMES[entry.dtype],
                    "shape": list(entry.shape),
                    "data_offsets": [entry.begin, entry.begin + entry.nbytes],
                }
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)
        return len(raw).to_bytes(8, "little") + raw

    def _advance(self) -> None:
        """Move to the next tensor; close the shard file when its last tensor is done."""
        done = self._entries[self._next]
        self._next += 1
        self._rows_done = 0
        if self._next == len(self._entries) or self._entries[self._next].shard != done.shard:
            self._finish_shard()

    def _finish_shard(self) -> None:
        assert self._handle is not None
        handle, self._handle = self._handle, None
        with self._space_checked(self._open_shard):
            handle.close()  # buffered bytes reach the disk here
        self.files.append(self.folder / self.shard_name(self._open_shard))

    def close(self) -> None:
        """Check every tensor was fully written, then write the index of a sharded output."""
        if self._closed:
            return
        self._closed = True
        if self._next < len(self._entries):
            self._abort()
            entry = self._entries[self._next]
            rows = f" ({self._rows_done} of {entry.shape[0]} rows written)" if self._rows_done else ""
            raise TensorFileError(
                f"writer for {self.folder} closed before tensor '{entry.name}' was written{rows}; "
                f"{self._next} of {len(self._entries)} tensors complete"
            )
        if not self._entries:  # an empty model is still a valid, empty model.safetensors
            self._start_shard(0)
            self._finish_shard()
        if self._shard_count > 1:
            self.index_file = self.folder / INDEX_FILE
            index = {
                "metadata": {"total_size": sum(e.nbytes for e in self._entries)},
                "weight_map": {e.name: self.shard_name(e.shard) for e in self._entries},
            }
            self.index_file.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")

    def _abort(self) -> None:
        """Close any open file without validating; the caller cleans up the folder."""
        self._closed = True
        if self._handle is not None:
            handle, self._handle = self._handle, None
            with suppress(OSError):  # a full disk fails the flush again; the error is already raised
                handle.close()

    def __enter__(self) -> ShardedSafetensorsWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self._abort()
        else:
            self.close()
