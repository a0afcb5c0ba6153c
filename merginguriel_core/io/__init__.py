"""Streaming safetensors IO: read one tensor (or a few rows) at a time, write shards incrementally."""

from merginguriel_core.io.reader import DTYPES, TensorInfo, TensorSource, read_header
from merginguriel_core.io.writer import ShardedSafetensorsWriter, parse_size

__all__ = ["DTYPES", "ShardedSafetensorsWriter", "TensorInfo", "TensorSource", "parse_size", "read_header"]
