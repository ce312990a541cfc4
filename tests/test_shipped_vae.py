"""The shipped VAE (models/bach_vae): `aurl interpolate | vary | sample` use it without --model,
and on two held-out chorales (data/bach's test split: never trained on) it does what they promise.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import symusic
from scipy.stats import spearmanr

from aurl.bundle import load_bundle
from aurl.cli import DEFAULT_VAE, main
from aurl.models.grid_vae import GridVAE

BACH = Path(__file__).resolve().parent / "data" / "bach"
A, B = BACH / "bwv319.mid", BACH / "bwv425.mid"  # both in `aurl prepare bach`'s test split


def onsets(path: Path, beats: int) -> set[tuple[int, int]]:
    """{(16th-note onset, pitch)} of the notes starting in the first ``beats`` beats."""
    score = symusic.Score(str(path))
    tpq = score.ticks_per_quarter
    return {
        (round(4 * n.time / tpq), int(n.pitch))
        for track in score.tracks
        for n in track.notes
        if n.time < beats * tpq
    }


def notes(path: Path) -> set[tuple[int, int, int]]:
    """{(start tick, duration, pitch)}: the whole of a piece's notes."""
    score = symusic.Score(str(path))
    return {(int(n.time), int(n.duration), int(n.pitch)) for t in score.tracks for n in t.notes}


def f1(a: set, b: set) -> float:
    return 2 * len(a & b) / max(1, len(a) + len(b))


def pieces(out: Path) -> list[Path]:
    return sorted(out.glob("*.mid"))


def test_the_shipped_vae_loads_within_budget_with_its_card():
    weights = DEFAULT_VAE / "model.safetensors"
    assert weights.stat().st_size <= 20 * 1024 * 1024
    bundle = load_bundle(DEFAULT_VAE)
    assert isinstance(bundle.model, GridVAE) and bundle.config.model.mode == "vae"
    assert bundle.model.sampler is not None  # aurl sample draws from the fitted posteriors
    card = (DEFAULT_VAE / "MODEL_CARD.md").read_text()
    assert "recon_note_f1" in card and "Reproduce" in card


def test_interpolate_without_model_turns_a_into_b(tmp_path):
    out = tmp_path / "interp"
    argv = ["interpolate", str(A), str(B), "--steps", "8", "--bars", "4", "--out", str(out),
            "--no-wav"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((out / "samples.json").read_text())["model"] == str(DEFAULT_VAE)
    steps = pieces(out)
    assert len(steps) == 8
    a, b = onsets(A, 16), onsets(B, 16)
    vs_a = [f1(onsets(p, 16), a) for p in steps]
    vs_b = [f1(onsets(p, 16), b) for p in steps]
    # the ends are reconstructions of held-out music; the middle moves from one to the other
    assert vs_a[0] >= 0.6 and vs_b[-1] >= 0.6, (vs_a, vs_b)
    assert spearmanr(range(8), vs_a)[0] <= -0.8 and spearmanr(range(8), vs_b)[0] >= 0.8, (
        vs_a,
        vs_b,
    )


def test_vary_moves_further_from_the_source_as_the_amount_grows(tmp_path):
    source = onsets(A, 8)  # the first 2-bar segment
    means = []
    for amount in (0.1, 0.6):
        out = tmp_path / f"vary_{amount}"
        argv = ["vary", str(A), "--amount", str(amount), "--num", "4", "--out", str(out),
                "--no-wav"]  # fmt: skip
        assert main(argv) == 0
        got = [onsets(p, 8) for p in pieces(out)]
        assert len(got) == 4
        whole = [notes(p) for p in pieces(out)]
        assert all(x != y for x, y in itertools.combinations(whole, 2)), "identical variations"
        means.append(np.mean([f1(g, source) for g in got]))
    assert means[0] > means[1], means


def test_sample_without_model_writes_chorale_like_segments(tmp_path):
    out = tmp_path / "sample"
    assert main(["sample", "--num", "2", "--bars", "4", "--out", str(out), "--no-wav"]) == 0
    for path in pieces(out):
        notes = [n for t in symusic.Score(str(path)).tracks for n in t.notes]
        assert len(notes) >= 16  # four bars of four-part writing, not silence
        assert all(36 <= n.pitch <= 84 for n in notes)  # the chorales' range


def test_the_shipped_vae_interpolates_over_http():
    """`aurl serve --model models/bach_vae`: POST /v1/interpolate answers with one MIDI per step."""
    import base64

    from fastapi.testclient import TestClient

    from aurl.serving.app import create_app

    data = {k: base64.b64encode(p.read_bytes()).decode() for k, p in (("a", A), ("b", B))}
    with TestClient(create_app(load_bundle(DEFAULT_VAE))) as client:
        assert client.get("/health").json()["mode"] == "vae"
        r = client.post("/v1/interpolate", json={**data, "steps": 4})
        assert r.status_code == 200, r.text
        pieces = r.json()["pieces"]
        assert len(pieces) == 4
        assert all(base64.b64decode(p["midi"])[:4] == b"MThd" for p in pieces)
