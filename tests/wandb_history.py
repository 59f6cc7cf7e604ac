"""Read the history rows of an offline W&B run file (``run-<id>.wandb``) without W&B's API.

The file is W&B's record log: a 7-byte header (``:W&B``, magic, version), then 32 KiB
blocks of LevelDB-style chunks (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle,
4 last), each record a ``wandb_internal_pb2.Record`` protobuf.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK, HEADER, CHUNK = 32768, 7, 7


def records(path: Path) -> list[Any]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    out, pending, pos = [], b"", HEADER
    while pos + CHUNK <= len(data):
        if BLOCK - pos % BLOCK < CHUNK:  # block trailer too short for a chunk header: padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK])
        chunk = data[pos + CHUNK : pos + CHUNK + length]
        pos += CHUNK + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            out.append(pending + chunk)
    parsed = []
    for raw in out:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        parsed.append(record)
    return parsed


def history(path: Path) -> list[dict[str, Any]]:
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows


def config(path: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "config":
            for item in record.config.update:
                merged[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return merged
