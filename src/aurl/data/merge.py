"""``aurl prepare merge``: join prepared slices of one ``--num-shards`` run into one directory.

Each slice is a prepared directory (``aurl.data.prepare``) made with the same tokenizer; the merge
streams every split's pieces in relpath order into a new dataset and sums the slices' manifests.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from aurl.data.prepare import PrepareSummary, sum_counts, write_dataset


def merge(parts: list[Path], out: Path) -> PrepareSummary:
    """Join prepared slices (same tokenizer) into one prepared directory ``out``."""
    from aurl.data.dataset import PreparedData

    if not parts:
        raise ValueError("merge needs at least one prepared directory")
    started = time.perf_counter()
    datas = [PreparedData(p) for p in parts]
    hashes = {d.manifest["tokenizer_hash"] for d in datas}
    if len(hashes) != 1:
        raise ValueError(
            f"cannot merge slices prepared with different tokenizers ({', '.join(sorted(hashes))}); "
            "prepare BPE slices without --bpe, merge, then train BPE on the merged data"
        )
    tok = datas[0].tokenizer

    def pieces(split: str) -> Iterator[tuple[str, np.ndarray]]:
        refs = sorted(
            ((rel, d.split(split), i) for d in datas for i, rel in enumerate(d.split(split).names)),
            key=lambda r: r[0],
        )
        seen = set()
        for rel, sd, i in refs:
            if rel in seen:
                raise ValueError(
                    f"{rel} appears in more than one slice; merge slices of one --num-shards run"
                )
            seen.add(rel)
            yield rel, sd.piece(i)

    ms = [d.manifest for d in datas]
    key = hashlib.sha256("".join(sorted(m["cache_key"] for m in ms)).encode()).hexdigest()[:16]
    Path(out).mkdir(parents=True, exist_ok=True)
    manifest = {
        "cache_key": key,
        "input": "merge",
        "merged_from": [str(p) for p in parts],
        "files_total": sum(m["files_total"] for m in ms),
        "files_ok": sum(m["files_ok"] for m in ms),
        "files_failed": [f for m in ms for f in m["files_failed"]],
        "files_repaired": sum(m["files_repaired"] for m in ms),
        "repairs": sum_counts(m["repairs"] for m in ms),
        "beats": sum(m["beats"] for m in ms),
        "split_rule": ms[0]["split_rule"],
    }
    manifest = write_dataset(Path(out), tok, pieces, manifest, started)
    return PrepareSummary.from_manifest(Path(out), manifest, reused=False)
