import json

import pytest
import symusic

from aurl.data.midi_io import load_score
from aurl.generation import constraints as C
from aurl.generation import pipeline
from aurl.generation.infill import infill

FAST = {"wav": False, "musicxml": False, "png": False}


def notes_q(path_or_score) -> list[tuple[float, int, float]]:
    score = (
        symusic.Score(str(path_or_score))
        if not isinstance(path_or_score, symusic.Score)
        else path_or_score
    )
    q = score.to("quarter")
    return sorted(
        (round(n.time, 3), n.pitch, round(n.duration, 3)) for t in q.tracks for n in t.notes
    )


def test_key_strict_puts_every_note_in_scale_and_bars_set_the_length(tiny_bundle, tmp_path):
    summary = pipeline.generate(
        tiny_bundle, out=tmp_path, num=3, bars=2, key="E:min", batch_size=3, **FAST
    )
    scale = C.parse_key("E:min")
    total = 0
    for piece in summary.pieces:
        notes = notes_q(piece.files["midi"])
        total += len(notes)
        assert all(p % 12 in scale for _, p, _ in notes)
        assert piece.beats == 8.0
        assert max(t + d for t, _, d in notes) <= 8.0 + 1 / 8  # one closing grid step at most
    assert total > 0
    meta = json.loads((tmp_path / "samples.json").read_text())
    assert meta["settings"]["key"] == "E:min" and meta["settings"]["bars"] == 2
    assert [p["seed"] for p in meta["pieces"]] == [0, 1, 2]
    assert (
        "--seed 2" in meta["pieces"][2]["reproduce"]
        and "--key E:min" in meta["pieces"][2]["reproduce"]
    )
    assert "piece_02" in summary.render()


def test_a_piece_is_reproduced_alone_from_its_recorded_seed(tiny_bundle, tmp_path):
    batch = pipeline.generate(
        tiny_bundle, out=tmp_path / "a", num=3, tokens=60, seed=7, batch_size=3, **FAST
    )
    alone = pipeline.generate(tiny_bundle, out=tmp_path / "b", num=1, tokens=60, seed=9, **FAST)
    assert batch.pieces[2].seed == 9
    assert notes_q(batch.pieces[2].files["midi"]) == notes_q(alone.pieces[0].files["midi"])


def test_continuation_keeps_the_prompt_verbatim(tiny_bundle, tmp_path, etude):
    tok = tiny_bundle.tokenizer
    summary = pipeline.generate(tiny_bundle, out=tmp_path, num=1, tokens=80, prompt=etude, **FAST)
    prompt_notes = notes_q(tok.decode(tok.encode(load_score(etude)[0])))
    end = max(t for t, _, _ in prompt_notes)
    out_notes = notes_q(summary.pieces[0].files["midi"])
    assert [n for n in out_notes if n[0] <= end] == prompt_notes
    assert len(out_notes) > len(prompt_notes)  # and something new came after it
    # the output keeps the prompt's tempo (69 BPM in this file), not the default
    assert round(symusic.Score(summary.pieces[0].files["midi"]).tempos[0].qpm) == 69


def test_seconds_follow_the_default_tempo(tiny_bundle, tmp_path):
    summary = pipeline.generate(tiny_bundle, out=tmp_path, num=1, seconds=5.0, **FAST)
    assert summary.pieces[0].beats == pytest.approx(5.0 * pipeline.DEFAULT_BPM / 60, abs=1 / 8)


def test_remi_model_generates_whole_bars(remi_bundle, tmp_path):
    summary = pipeline.generate(
        remi_bundle, out=tmp_path, num=2, bars=2, batch_size=2, key="C:maj", **FAST
    )
    for piece in summary.pieces:
        notes = notes_q(piece.files["midi"])
        assert notes and all(p % 12 in C.parse_key("C:maj") for _, p, _ in notes)
        assert max(t for t, _, _ in notes) < 8.0


def test_beam_search_pipeline_writes_one_piece_per_request(tiny_bundle, tmp_path):
    summary = pipeline.generate(tiny_bundle, out=tmp_path, num=1, bars=1, beam=2, **FAST)
    assert len(summary.pieces) == 1
    for piece in summary.pieces:  # beams may use up the token budget before the bar ends
        assert 0 < piece.beats <= 4.0 and piece.notes > 0


def test_infill_keeps_everything_outside_the_bars(tiny_bundle, tmp_path, etude):
    original = notes_q(etude)  # 8/4 throughout the first bars: bar 2 = quarters 8-16
    summary = infill(tiny_bundle, etude, bars=(2, 2), out=tmp_path, **FAST)
    result = notes_q(summary.pieces[0].files["midi"])

    def outside(notes):
        return [(t, p, min(d, 8 - t) if t < 8 else d) for t, p, d in notes if t < 8 or t >= 16]

    assert outside(result) == outside(original)
    inside = [n for n in result if 8 <= n[0] < 16]
    programs = {t.program for t in symusic.Score(summary.pieces[0].files["midi"]).tracks}
    assert programs == {t.program for t in symusic.Score(str(etude)).tracks}  # its own instruments
    assert summary.pieces[0].notes == len(inside)
    meta = json.loads((tmp_path / "samples.json").read_text())
    assert meta["command"] == "infill" and "left context" in meta["settings"]["conditioned_on"]


def test_missing_model_says_how_to_get_one(tmp_path):
    with pytest.raises(ValueError, match=r"no model at .*nope: train one with .*or pass --model"):
        pipeline.load_model(tmp_path / "nope")
    with pytest.raises(ValueError, match="LOW-HIGH"):
        pipeline.parse_range("84-36", "--pitch-range")


def test_time_signature_sets_the_bar_length_and_the_meter(tiny_bundle, remi_bundle, tmp_path):
    summary = pipeline.generate(
        tiny_bundle, out=tmp_path, num=2, bars=2, time_signature="3/4", batch_size=2, **FAST
    )
    assert [p.beats for p in summary.pieces] == [6.0, 6.0]
    for piece in summary.pieces:
        score = symusic.Score(piece.files["midi"])
        assert {(t.numerator, t.denominator) for t in score.time_signatures} <= {(3, 4)}
        assert max((t for t, _, _ in notes_q(score)), default=0.0) < 6.0
    with pytest.raises(ValueError, match="4/4 bar"):  # REMI without TimeSig tokens: bars are 4/4
        pipeline.generate(remi_bundle, out=tmp_path, num=1, bars=1, time_signature="3/4", **FAST)
