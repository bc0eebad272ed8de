"""Export a store's vectors, ids and counts to NumPy and text files.

Files written into the output directory (rows in store row order, so line
``k`` of ``users.txt`` names row ``k`` of ``users.npy``):

=====================  =============================================
``users.npy``          float32 ``(n_users, dim)`` user vectors
``items.npy``          float32 ``(n_items, dim)`` item (context) vectors
``item_inputs.npy``    float32 ``(n_items, dim)``, only when ``window > 0``
``users.txt``          one user id per line
``items.txt``          one item id per line
``user_counts.npy``    int64 ``(n_users,)`` events per user
``item_counts.npy``    int64 ``(n_items,)`` events per item
``export.json``        events_seen, commit sequence, offsets, params
=====================  =============================================

The store is read through a RocksDB secondary instance, so an export runs
while the daemon writes; it reflects one commit (the one the secondary
caught up to when the export started). Ids are written as text: an integer
id and a string of the same digits look alike in the ``.txt`` files
(``export.json`` says nothing per id); use the store itself where the type
matters. An id containing a newline is refused rather than written
ambiguously.

Each file is written to a temporary name and renamed, so a reader of the
output directory never sees a half-written file.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from i2v_stream.store import StoreError, StoreView

logger = logging.getLogger(__name__)


class ExportError(StoreError):
    """The store could not be exported."""


def _write_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
    os.replace(tmp, path)


def _write_ids(path: Path, ids: list) -> None:
    lines = []
    for value in ids:
        text = str(value)
        if "\n" in text or "\r" in text:
            raise ExportError(
                f"id {value!r} contains a line break and cannot be written one per line; "
                "read the store with i2v_stream.reader instead"
            )
        lines.append(text)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)


def export_store(store_path: str | os.PathLike, out_dir: str | os.PathLike) -> dict:
    """Write the export files of the store at ``store_path`` into ``out_dir``.

    Returns
    -------
    dict
        What ``export.json`` holds: ``n_users``, ``n_items``, ``dim``,
        ``events_seen``, ``commit_seq``, ``offsets``, ``params``, ``files``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with StoreView.open_secondary(store_path) as view:
        view.catch_up()
        meta = view.metadata()
        if not meta:
            raise ExportError(f"store {store_path} holds no model yet; nothing to export")
        users, items = view.read_users(), view.read_items()
        user_ids, item_ids = view.read_user_ids(), view.read_item_ids()
        offsets = view.offsets()

    files = {
        "users.npy": np.ascontiguousarray(users["vector"], dtype=np.float32),
        "items.npy": np.ascontiguousarray(items["vector"], dtype=np.float32),
        "user_counts.npy": np.ascontiguousarray(users["count"], dtype=np.int64),
        "item_counts.npy": np.ascontiguousarray(items["count"], dtype=np.int64),
    }
    if "input" in items.dtype.names:
        files["item_inputs.npy"] = np.ascontiguousarray(items["input"], dtype=np.float32)
    for name, array in files.items():
        _write_npy(out / name, array)
    _write_ids(out / "users.txt", user_ids)
    _write_ids(out / "items.txt", item_ids)

    summary = {
        "n_users": len(user_ids), "n_items": len(item_ids), "dim": meta["dim"],
        "events_seen": meta.get("events_seen", 0), "commit_seq": meta.get("commit_seq", 0),
        "offsets": {f"{t}:{p}": o for (t, p), o in sorted(offsets.items())},
        "params": meta.get("params", {}),
        "files": sorted([*files, "users.txt", "items.txt"]),
    }
    tmp = out / "export.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, sort_keys=True))
    os.replace(tmp, out / "export.json")
    logger.info("export written store=%s out=%s n_users=%d n_items=%d events_seen=%d",
                store_path, out, summary["n_users"], summary["n_items"],
                summary["events_seen"])
    return summary
