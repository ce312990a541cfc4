"""prepare: accounting of every file, manifest, cache reuse/rebuild, resume, group splits, slices+merge, BPE."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from aurl.config import TokenizerConfig
from aurl.data import prepare as prep
from aurl.data.dataset import PreparedData
from aurl.data.merge import merge
from aurl.data.roundtrip import note_tuples

MIDI = Path(__file__).resolve().parent / "midi"
GOOD = ["pop909_008.mid", "etude_no4.mid", "multitrack_drums.mid", "maestro_1.mid"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for name in GOOD[:3]:
        shutil.copy(MIDI / name, src / name)
    shutil.copy(MIDI / GOOD[3], src / "sub" / GOOD[3])  # folders are searched recursively
    shutil.copy(MIDI / "empty.mid", src / "empty.mid")
    shutil.copy(MIDI / "corrupt_control168.mid", src / "corrupt.mid")
    (src / "zero.mid").write_bytes(b"")
    return src


def test_every_file_is_accounted_for_and_manifest_is_complete(folder, tmp_path):
    out = tmp_path / "out"
    summary = prep.prepare(str(folder), out, TokenizerConfig())
    m = json.loads((out / "manifest.json").read_text())
    assert summary.files_ok == m["files_ok"] == 4
    assert sorted(f["path"] for f in m["files_failed"]) == ["corrupt.mid", "empty.mid", "zero.mid"]
    assert m["files_ok"] + len(m["files_failed"]) == m["files_total"] == 7
    assert m["tokenizer_hash"] == TokenizerConfig().hash() and m["dtype"] == "uint16"
    assert sum(s["pieces"] for s in m["splits"].values()) == 4
    assert all(
        m["splits"][s]["pieces"] >= 1 for s in prep.SPLITS
    )  # small-corpus rule fills val/test
    assert 10 < m["tokens_per_beat"] < 60
    text = summary.render()
    assert "4 ok / 7" in text and "zero.mid: empty file" in text
    assert not list(out.glob(".parts-*")) and not list(out.glob(".build-*"))


def test_prepared_tokens_equal_direct_encoding(folder, tmp_path):
    out = tmp_path / "out"
    prep.prepare(str(folder), out, TokenizerConfig(kind="remi"))
    data = PreparedData(out)
    from aurl.data import midi_io

    for split in prep.SPLITS:
        sd = data.split(split)
        for i, rel in enumerate(sd.names):
            score, _ = midi_io.load_score(folder / rel)
            assert sd.piece(i).tolist() == data.tokenizer.encode(score)
            assert sd.index[i, 3] == data.tokenizer.count_notes(sd.piece(i))


def test_same_config_reuses_and_changed_config_rebuilds(folder, tmp_path, caplog):
    out = tmp_path / "out"
    first = prep.prepare(str(folder), out, TokenizerConfig())
    with caplog.at_level("INFO"):
        again = prep.prepare(str(folder), out, TokenizerConfig())
    assert again.reused and not first.reused and "reusing" in caplog.text
    assert "reused cached data" in again.render()
    changed = prep.prepare(str(folder), out, TokenizerConfig(kind="tsd"))
    assert not changed.reused
    assert PreparedData(out).manifest["tokenizer"]["kind"] == "tsd"
    forced = prep.prepare(str(folder), out, TokenizerConfig(kind="tsd"), force=True)
    assert not forced.reused


def test_interrupted_run_resumes_without_redoing_chunks(folder, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(prep, "CHUNK_FILES", 2)  # 7 files -> 4 chunks of 2, 2, 2, 1
    real_write, real_tok = prep._write_part, prep._tokenize_file
    writes: list[int] = []

    def crash_on_third(path, metas, arrays):
        writes.append(1)
        if len(writes) == 3:
            raise KeyboardInterrupt
        return real_write(path, metas, arrays)

    monkeypatch.setattr(prep, "_write_part", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(str(folder), out, TokenizerConfig(), timeout=0)  # in-process: calls counted
    assert len(list(out.glob(".parts-*/part-*.npz"))) == 2
    assert not (out / "manifest.json").exists()
    files: list[str] = []
    monkeypatch.setattr(prep, "_write_part", real_write)
    monkeypatch.setattr(
        prep, "_tokenize_file", lambda item: (files.append(item[0]), real_tok(item))[1]
    )
    summary = prep.prepare(str(folder), out, TokenizerConfig(), timeout=0)
    assert len(files) == 3 and summary.files_ok == 4  # only the last two chunks' files


def test_splits_follow_groups_and_do_not_reshuffle():
    groups = [f"bwv{i}" for i in range(400)]
    a = prep.assign_splits(groups, (0.9, 0.05, 0.05), seed=0)
    b = prep.assign_splits([*groups, *(f"new{i}" for i in range(100))], (0.9, 0.05, 0.05), seed=0)
    assert all(b[g] == a[g] for g in groups)  # adding files never moves existing pieces
    counts = {s: list(a.values()).count(s) for s in prep.SPLITS}
    assert 320 < counts["train"] < 390 and counts["val"] > 5 and counts["test"] > 5
    assert prep.assign_splits(groups, (0.9, 0.05, 0.05), seed=1) != a
    with pytest.raises(ValueError, match="summing to 1"):
        prep.assign_splits(groups, (0.9, 0.2, 0.05), seed=0)


def test_bach_variants_land_in_the_same_split(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    names = ["bwv112.5.mid", "bwv112.5-sc.mid", "bwv18.5-lz.mid", "bwv18.5-w.mid", "other.mid"]
    for name in names:
        shutil.copy(MIDI / "etude_no4.mid", src / name)
    prep.prepare(str(src), tmp_path / "out", TokenizerConfig(), splits=(0.34, 0.33, 0.33))
    pieces = json.loads((tmp_path / "out" / "pieces.json").read_text())
    where = {n: s for s, ns in pieces.items() for n in ns}
    assert where["bwv112.5.mid"] == where["bwv112.5-sc.mid"]
    assert where["bwv18.5-lz.mid"] == where["bwv18.5-w.mid"]


def test_slices_merge_into_the_full_run(folder, tmp_path):
    # seed 5 fills all three splits without the small-corpus rule, which slices cannot apply
    cfg, splits, seed = TokenizerConfig(kind="tsd"), (0.5, 0.25, 0.25), 5
    parts = []
    for i in range(2):
        parts.append(tmp_path / f"slice{i}")
        prep.prepare(
            str(folder), parts[-1], cfg, num_shards=2, shard_index=i, splits=splits, seed=seed
        )
    sizes = [PreparedData(p).manifest["files_total"] for p in parts]
    assert sum(sizes) == 7 and min(sizes) > 0
    merged = merge(parts, tmp_path / "merged")
    full = prep.prepare(str(folder), tmp_path / "full", cfg, splits=splits, seed=seed)
    assert merged.files_ok == full.files_ok and len(merged.files_failed) == len(full.files_failed)
    a, b = PreparedData(tmp_path / "merged"), PreparedData(tmp_path / "full")
    for split in prep.SPLITS:
        assert a.split(split).names == b.split(split).names and len(a.split(split)) > 0
        for i in range(len(a.split(split))):
            np.testing.assert_array_equal(a.split(split).piece(i), b.split(split).piece(i))
    with pytest.raises(ValueError, match="shard-index"):
        prep.prepare(str(folder), tmp_path / "x", cfg, num_shards=2, shard_index=2)


def test_bpe_is_trained_on_train_split_and_decodes_like_base(folder, tmp_path):
    out = tmp_path / "out"
    summary = prep.prepare(str(folder), out, TokenizerConfig(kind="tsd", bpe_vocab_size=600))
    data = PreparedData(out)
    tok = data.tokenizer
    assert tok.is_trained and tok.vocab_size == summary.vocab_size == 600
    sd = data.split("test")
    ids = sd.piece(0)
    assert tok.expand(ids)[0] == tok.bos_id and tok.expand(ids)[-1] == tok.eos_id
    assert note_tuples(tok.decode(ids)) == note_tuples(tok.decode(tok.expand(ids)))
    assert sd.index[0, 3] == tok.count_notes(tok.expand(ids))


def test_no_loadable_file_is_an_error(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "zero.mid").write_bytes(b"")
    with pytest.raises(ValueError, match="none of 1 files"):
        prep.prepare(str(src), tmp_path / "out", TokenizerConfig())
    with pytest.raises(FileNotFoundError, match="not a folder"):
        prep.prepare(str(tmp_path / "missing"), tmp_path / "out", TokenizerConfig())


def _stalling_loader(path):
    """Stub reader: a file named ``hang*`` never finishes loading, ``die*`` kills its worker."""
    import os
    import signal
    import time

    from aurl.data import midi_io

    name = Path(path).name
    if name.startswith("hang"):
        time.sleep(120)
    if name.startswith("die"):
        os.kill(os.getpid(), signal.SIGKILL)
    return midi_io.load_score(path)


def test_a_file_that_never_loads_and_one_that_kills_its_worker_are_reported(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ["a.mid", "hang.mid", "b.mid", "die.mid", "c.mid", "d.mid"]:
        shutil.copy(MIDI / "etude_no4.mid", src / name)
    (src / "notes.txt").write_text("not music")
    out = tmp_path / "out"
    summary = prep.prepare(
        str(src), out, TokenizerConfig(), workers=2, timeout=1.5, loader=_stalling_loader
    )
    m = json.loads((out / "manifest.json").read_text())
    reasons = {f["path"]: f["reason"] for f in m["files_failed"]}
    assert reasons["hang.mid"] == "timeout after 1.5 s"
    assert reasons["die.mid"].startswith("worker died (killed by SIGKILL")
    assert m["files_ok"] == 4 and m["files_total"] == 6 and m["files_ignored"] == {".txt": 1}
    assert m["timings"]["tokenize"] < 60  # the 120 s sleep was cut short
    assert m["slowest"][0]["path"] == "hang.mid" and m["slowest"][0]["seconds"] >= 1.5
    text = summary.render()
    assert "4 ok / 6" in text and "hang.mid: timeout after 1.5 s" in text
    assert "slowest: hang.mid" in text and "ignored 1 file(s) with unsupported suffixes" in text
    assert sorted(
        n for ns in json.loads((out / "pieces.json").read_text()).values() for n in ns
    ) == [
        "a.mid",
        "b.mid",
        "c.mid",
        "d.mid",
    ]


def test_music21_collection_groups_movements_of_one_work():
    pytest.importorskip("music21")
    from aurl.data.corpus import COLLECTIONS, collection_files

    root, files = collection_files("quartets")
    assert len(files) == 47 and all(f.suffix == ".mxl" for f in files)  # no .krn duplicates
    group = COLLECTIONS["quartets"].group
    assert group(root, "beethoven/opus59no1/movement2.mxl") == "beethoven/opus59no1"
    assert group(root, "beethoven/opus132.mxl") == "beethoven/opus132"
    root, files = collection_files("palestrina")
    assert len(files) == 1318
    group = COLLECTIONS["palestrina"].group
    same_mass = {group(root, f"palestrina/{n}.krn") for n in ("Sanctus_rpt_a", "Sanctus_rpt_b")}
    assert len(same_mass) == 1 and next(iter(same_mass)).startswith("opr:missa")
    with pytest.raises(ValueError, match="music21:quartets"):
        collection_files("nope")


def test_cli_prepares_a_notation_folder_with_a_timeout_and_music21_names_are_checked(
    tmp_path, capsys
):
    pytest.importorskip("partitura")
    from aurl.cli import main

    sys.path.insert(0, str(Path(__file__).parent))
    from test_notation import XML

    src = tmp_path / "in"
    src.mkdir()
    (src / "tiny.musicxml").write_text(XML)
    shutil.copy(MIDI / "etude_no4.mid", src / "etude.mid")
    (src / "score.musx").write_bytes(b"PK\x03\x04")  # Finale's own format: ignored, and said so
    out = tmp_path / "out"
    assert main(["prepare", str(src), "--out", str(out), "--timeout", "60"]) == 0
    text = capsys.readouterr().out
    assert "2 ok / 2" in text and "ignored 1 file(s) with unsupported suffixes (.musx 1)" in text
    m = json.loads((out / "manifest.json").read_text())
    assert m["timeout_s"] == 60 and m["files_ignored"] == {".musx": 1}
    data = PreparedData(out)
    notes = {
        name: int(data.split(split).index[i, 3])
        for split in prep.SPLITS
        for i, name in enumerate(data.split(split).names)
    }
    assert notes["tiny.musicxml"] == 14  # the hand-written score of test_notation, unfolded
    assert main(["prepare", "music21:nope", "--out", str(tmp_path / "x")]) == 2
    assert "use one of music21:quartets" in capsys.readouterr().err


def test_progress_bar_moves_once_per_file(folder, tmp_path, monkeypatch):
    updates: list[int] = []

    class Bar:  # records what prepare tells tqdm
        def __init__(self, *args, total=None, initial=0, **kwargs):
            updates.append(initial)

        def update(self, n):
            updates.append(n)

        def close(self):
            pass

    monkeypatch.setattr(prep, "tqdm", Bar)
    monkeypatch.setattr(prep, "CHUNK_FILES", 4)  # 7 files in 2 chunks: still 7 steps of 1
    prep.prepare(str(folder), tmp_path / "out", TokenizerConfig(), workers=2, timeout=60)
    assert updates == [0] + [1] * 7
