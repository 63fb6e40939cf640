"""Float tensors of a TensorFlow checkpoint ("tensor bundle"), read with numpy alone.

Why not TensorFlow: the YAMNet weights (``yamnet.py``) ship as a TensorFlow SavedModel,
and installing TensorFlow (~600 MB, its own numpy pins) only to copy 3.7 M floats out
of one file would be the heaviest dependency of the project. The format is small and
stable: ``<prefix>.index`` is a LevelDB table (uncompressed blocks) whose keys are the
variable names and whose values are ``BundleEntryProto`` messages (dtype, shape, shard,
offset, size); ``<prefix>.data-SSSSS-of-NNNNN`` holds the raw little-endian bytes.
The reader is checked against TensorFlow's own (``tests/detectors/test_yamnet.py``: the
network built from these tensors gives TensorFlow's YAMNet scores to ~1e-5).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

_TABLE_MAGIC = 0xDB4775248B80FB57
_DT_FLOAT = 1


class CheckpointError(ValueError):
    """The files are not a readable tensor bundle (says which file and what is wrong)."""


def read_float_tensors(prefix: Path) -> dict[str, np.ndarray]:
    """Every float32 tensor of the bundle at ``prefix`` (``variables/variables``), by variable name.

    Other dtypes (step counters, strings) are skipped: a network's weights are float32.
    """
    index_path = Path(f"{prefix}.index")
    try:
        index = index_path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {index_path}: {exc}") from exc
    if len(index) < 48 or struct.unpack_from("<Q", index, len(index) - 8)[0] != _TABLE_MAGIC:
        raise CheckpointError(f"{index_path} is not a tensor bundle index (no LevelDB table footer)")
    footer = index[-48:]
    _, pos = _varint(footer, 0)  # metaindex handle: unused
    _, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    shards: dict[int, bytes] = {}
    tensors: dict[str, np.ndarray] = {}
    for _, handle in _block_entries(index, index_offset, index_size, index_path):
        offset, pos = _varint(handle, 0)
        size, _ = _varint(handle, pos)
        for key, value in _block_entries(index, offset, size, index_path):
            if not key:
                continue  # the bundle header
            entry = _bundle_entry(value)
            if entry["dtype"] != _DT_FLOAT:
                continue
            name = key.decode()
            data = shards.get(entry["shard"])
            if data is None:
                data = shards[entry["shard"]] = _read_shard(prefix, entry["shard"], index_path)
            count = int(np.prod(entry["shape"], dtype=np.int64))
            if entry["size"] != 4 * count or entry["offset"] + entry["size"] > len(data):
                raise CheckpointError(f"{name}: {entry['size']} bytes at {entry['offset']} do not hold shape {entry['shape']}")
            tensors[name] = np.frombuffer(data, "<f4", count, entry["offset"]).reshape(entry["shape"]).copy()
    return tensors


def _read_shard(prefix: Path, shard: int, index_path: Path) -> bytes:
    matches = sorted(Path(prefix).parent.glob(f"{Path(prefix).name}.data-{shard:05d}-of-*"))
    if len(matches) != 1:
        raise CheckpointError(f"{index_path} names data shard {shard}, found {len(matches)} files for it")
    return matches[0].read_bytes()


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _block_entries(table: bytes, offset: int, size: int, path: Path) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of one LevelDB block: prefix-compressed keys, then restart points."""
    if offset + size + 5 > len(table):
        raise CheckpointError(f"{path}: block at {offset} (+{size}) runs past the end of the file")
    if table[offset + size] != 0:
        raise CheckpointError(f"{path}: block at {offset} is compressed (type {table[offset + size]}); not supported")
    block = table[offset : offset + size]
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * restarts
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_size, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + value_size]
        pos += value_size


def _bundle_entry(message: bytes) -> dict:
    """The fields of a ``BundleEntryProto`` the reader needs: dtype, shape, shard_id, offset, size."""
    entry = {"dtype": 0, "shape": [], "shard": 0, "offset": 0, "size": 0}
    for field, value in _fields(message):
        if field == 1:
            entry["dtype"] = value
        elif field == 2:  # TensorShapeProto: repeated Dim (field 2) of {size: field 1}
            entry["shape"] = [dict(_fields(dim)).get(1, 0) for f, dim in _fields(value) if f == 2]
        elif field in (3, 4, 5):
            entry[{3: "shard", 4: "offset", 5: "size"}[field]] = value
    return entry


def _fields(message: bytes) -> list[tuple[int, object]]:
    """(field number, value) of a protobuf message: varints as int, length-delimited as bytes."""
    pos, out = 0, []
    while pos < len(message):
        tag, pos = _varint(message, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(message, pos)
        elif wire == 2:
            length, pos = _varint(message, pos)
            value, pos = message[pos : pos + length], pos + length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, pos = message[pos : pos + width], pos + width
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire}")
        out.append((field, value))
    return out
