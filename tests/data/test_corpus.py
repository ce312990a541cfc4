"""Embedded Bach corpus: BWV grouping, cached atomic conversion (3 chorales here; all 409 is slow)."""

from __future__ import annotations

import pytest

from aurl.data import midi_io
from aurl.data.corpus import bach_midi_dir, bach_sources, group_key


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("bwv112.5.mid", "bwv112"),
        ("bwv112.5-sc.mid", "bwv112"),
        ("bwv18.5-lz.mxl", "bwv18"),
        ("bwv18.5-w.mxl", "bwv18"),
        ("some/dir/bwv0846.mid", "bwv846"),
        ("pop909/001/001.mid", "001"),
        ("Song Name.MID", "song name"),
    ],
)
def test_group_key_puts_bwv_variants_together(name, group):
    assert group_key(name) == group


def test_sources_are_the_music21_chorales():
    sources = bach_sources()
    assert len(sources) >= 400  # 410 with music21 10.5.1 (FACTS.md counts 409 .mxl/.xml)
    assert {p.suffix for p in sources} <= {".mxl", ".xml"}
    assert bach_sources(limit=3) == sources[:3]


def test_conversion_is_cached_and_atomic(tmp_path):
    out = bach_midi_dir(tmp_path, limit=3, workers=1)
    files = sorted(out.glob("*.mid"))
    assert [f.stem for f in files] == [p.stem for p in bach_sources(limit=3)]
    score, _ = midi_io.load_score(files[0])
    assert score.note_num() > 100  # a chorale has ~300 notes
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert bach_midi_dir(tmp_path, limit=3) == out  # second call: no reconversion
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary directory left


def test_cache_root_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AURL_CACHE", str(tmp_path))
    out = bach_midi_dir(limit=1, workers=1)
    assert out.parent == tmp_path and len(list(out.glob("*.mid"))) == 1
