"""Melody, sections and motifs on hand-made pieces with planted answers."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest
import torch
from analysis_scores import make_score, progression

from aurl.analysis.beats import track_beats
from aurl.analysis.chords import recognize_chords
from aurl.analysis.melody import (
    N_CONTEXT,
    MelodyModel,
    context_features,
    extract_melody,
    melody_notes,
    melody_probability,
    note_features,
    onset_groups,
    skyline,
    stage_probabilities,
    velocity_separates_voices,
)
from aurl.analysis.melody import default_model as default_melody_model
from aurl.analysis.melody_sequence import HOP, WINDOW, SequenceScorer, default_scorer
from aurl.analysis.motifs import MotifConfig, find_motifs
from aurl.analysis.notes import score_notes
from aurl.analysis.structure import (
    N_BAR_FEATURES,
    bar_features,
    find_sections,
    segment_bars,
    similarity,
)

# A 4-bar tune (start beat, duration, pitch), repeated to build A A B A.
TUNE_A = [
    (0, 1, 72),
    (1, 1, 74),
    (2, 1, 76),
    (3, 1, 72),
    (4, 2, 77),
    (6, 2, 76),
    (8, 1, 74),
    (9, 1, 72),
    (10, 1, 71),
    (11, 1, 74),
    (12, 3, 72),
]
TUNE_B = [
    (0, 2, 79),
    (2, 1, 77),
    (3, 1, 76),
    (4, 2, 74),
    (6, 2, 77),
    (8, 1, 76),
    (9, 1, 74),
    (10, 2, 72),
    (12, 3, 71),
]
CHORDS_A = [(0, "maj", 0), (5, "maj", 0), (7, "maj", 0), (0, "maj", 0)]
CHORDS_B = [(9, "min", 0), (2, "min", 0), (5, "maj", 0), (7, "maj", 0)]


def aaba() -> tuple[list, list]:
    notes, melody = [], []
    for k, (tune, chords) in enumerate(
        [(TUNE_A, CHORDS_A), (TUNE_A, CHORDS_A), (TUNE_B, CHORDS_B), (TUNE_A, CHORDS_A)]
    ):
        start = 16 * k
        melody += [(start + s, d, p, 100) for s, d, p in tune]
        notes += progression(chords, start=start, arpeggio=48)
    return notes, melody


def test_melody_over_accompaniment_beats_the_skyline():
    acc, melody = aaba()
    # The accompaniment also plays soft short high notes above the tune: the skyline takes them.
    rng = np.random.default_rng(0)
    sparkle = [(b + 0.5, 0.25, 88 + int(rng.integers(0, 4)), 45) for b in range(0, 64, 2)]
    score = make_score(acc + melody + sparkle)
    notes = score_notes(score)
    truth = {(round(s * 0.5, 3), p) for s, _, p, _ in melody}

    def f1(idx):
        got = {(round(float(notes.onset[i]), 3), int(notes.pitch[i])) for i in idx}
        hit = len(got & truth)
        return 2 * hit / (len(got) + len(truth))

    ours, sky = f1(extract_melody(notes=notes)), f1(skyline(notes))
    assert ours >= 0.8  # measured 0.87 with the shipped model; the skyline 0.61
    assert ours > sky + 0.2


def test_sequence_network_rescores_the_stacked_scorer():
    acc, melody = aaba()
    notes = score_notes(make_score(acc + melody))
    truth = {(round(s * 0.5, 3), p) for s, _, p, _ in melody}
    is_mel = np.array(
        [
            (round(float(t), 3), int(p)) in truth
            for t, p in zip(notes.onset, notes.pitch, strict=True)
        ]
    )
    stacked = stage_probabilities(notes, default_melody_model())[-1]
    # a model passed in is used alone (that is how the fit scripts score candidates)
    np.testing.assert_allclose(melody_probability(notes, default_melody_model()), stacked)
    final = melody_probability(notes)  # the shipped models: stacked, then the sequence network
    assert final.shape == stacked.shape and ((final > 0) & (final < 1)).all()
    assert not np.allclose(final, stacked)
    assert final[is_mel].mean() > final[~is_mel].mean() + 0.3


def test_a_file_without_dynamics_takes_its_top_voice():
    # A four-voice hymn at one velocity (as music21 writes the Bach chorales): the soprano holds a
    # half note while the alto moves in quarters under it; the tune is the soprano.
    soprano = [(0, 1, 72), (1, 1, 74), (2, 2, 76), (4, 1, 74), (5, 1, 72), (6, 2, 71)]
    alto = [(0, 1, 67), (1, 1, 67), (2, 1, 67), (3, 1, 69), (4, 2, 67), (6, 2, 67)]
    lower = [(b, 2, p) for b, p in ((0, 60), (2, 60), (4, 55), (6, 55))]
    lower += [(b, 2, p) for b, p in ((0, 48), (2, 52), (4, 53), (6, 43))]
    notes = score_notes(make_score([(b, d, p, 90) for b, d, p in soprano + alto + lower]))
    line = melody_notes(notes, extract_melody(notes=notes))
    assert [(round(m.start * 2), m.pitch) for m in line] == [(b, p) for b, _, p in soprano]
    # dynamics that move the whole texture (p, then f) still strike each chord at one loudness
    voices = soprano + alto + lower
    notes = score_notes(make_score([(b, d, p, 50 if b < 4 else 95) for b, d, p in voices]))
    assert not velocity_separates_voices(notes)
    line = melody_notes(notes, extract_melody(notes=notes))
    assert [(round(m.start * 2), m.pitch) for m in line] == [(b, p) for b, _, p in soprano]
    # a soprano played out over the other voices is the networks' case
    played_out = [(b, d, p, 100 if (b, d, p) in soprano else 60) for b, d, p in voices]
    assert velocity_separates_voices(score_notes(make_score(played_out)))


def test_melody_line_is_monophonic():
    acc, melody = aaba()
    notes = score_notes(make_score(acc + melody))
    line = melody_notes(notes, extract_melody(notes=notes))
    assert all(a.end <= b.start + 1e-9 for a, b in itertools.pairwise(line))


def test_sections_of_an_aaba_song():
    acc, melody = aaba()
    score = make_score(acc + melody)
    notes = score_notes(score)
    bt = track_beats(score, notes)
    chords = recognize_chords(notes=notes, beats=bt.beats, downbeats=bt.downbeats)
    line = melody_notes(notes, extract_melody(notes=notes))
    sections = find_sections(line, chords, bt.beats, bt.downbeats, notes.end)
    starts = {round(s.start, 3): s.label for s in sections}
    # The four 4-bar phrases start at 0, 8, 16 and 24 s. Tune A is itself 2 + 2 bars (its second
    # bar ends on two half notes), and at this pace (2 s a bar, a chorale's) the boundary networks,
    # fitted on pop songs and chorales, may also split an A in halves: only on the 2-bar grid.
    assert {0.0, 8.0, 16.0, 24.0} <= set(starts)
    assert all(t % 4.0 == 0.0 for t in starts)
    assert starts[0.0] == starts[8.0] == starts[24.0] != starts[16.0]


def test_planted_motif_is_found_at_every_transposition():
    rng = np.random.default_rng(1)
    motif = [(0, 0.5), (2, 0.5), (4, 0.5), (-1, 1.0), (0, 2.0)]  # (pitch offset, duration in beats)
    onsets, pitches, planted = [], [], []
    t = 0.0
    for base in (60, 65, 67, 62):
        for _ in range(6):  # random filler between occurrences
            onsets.append(t)
            pitches.append(int(rng.integers(55, 80)))
            t += float(rng.choice([0.25, 0.75, 1.5]))
        planted.append(t)
        for off, d in motif:
            onsets.append(t)
            pitches.append(base + off)
            t += d
    on = np.array(onsets) * 0.5
    motifs = find_motifs(
        on, np.r_[on[1:], on[-1] + 1.0], np.array(pitches), MotifConfig(min_notes=4)
    )
    assert motifs, "no motif found"
    best = motifs[0]
    assert best.pattern[:3] == [2, 2, -5]
    starts = [round(o.start, 3) for o in best.occurrences]
    assert starts == [round(p * 0.5, 3) for p in planted]


def test_motif_config_is_validated():
    with pytest.raises(ValueError, match="min_notes"):
        MotifConfig(min_notes=1)


def test_context_features_place_each_note_against_the_provisional_line():
    # A rising line C D E (P = 0.9) with a high C two octaves up struck with the D (P = 0.2).
    notes = score_notes(
        make_score([(0, 1, 60, 90), (1, 1, 62, 90), (1, 1, 84, 60), (2, 1, 64, 90)])
    )
    prob = np.where(notes.pitch == 84, 0.2, 0.9)
    f = context_features(notes, prob)
    assert f.shape == (4, N_CONTEXT)
    hi, d = int(np.flatnonzero(notes.pitch == 84)[0]), int(np.flatnonzero(notes.pitch == 62)[0])
    # columns: 3 = P - best other of the group, 4 = is best, 5/6 = leap from/to the line (octaves)
    assert f[hi, 3] == pytest.approx(-0.7) and f[hi, 4] == 0.0
    assert f[d, 3] == pytest.approx(0.7) and f[d, 4] == 1.0
    assert f[hi, 5] == pytest.approx(2.0) and f[hi, 6] == pytest.approx(20 / 12)
    assert f[d, 5] == pytest.approx(2 / 12) and f[d, 6] == pytest.approx(-2 / 12)


def test_melody_model_layouts():
    model = default_melody_model()
    assert len(model.stages) >= 2  # the shipped scorer is stacked
    first = model.stages[0]
    flat = {
        "w1": first.w1.tolist(),
        "b1": first.b1.tolist(),
        "w2": first.w2.tolist(),
        "b2": first.b2,
        "mean": first.mean.tolist(),
        "std": first.std.tolist(),
        "threshold": 0.4,
    }
    one = MelodyModel.from_dict(flat)  # the one-stage file layout still loads
    assert len(one.stages) == 1
    with pytest.raises(ValueError, match="stage 2 takes 14 features"):
        MelodyModel(stages=(first, first), threshold=0.4)


def test_bar_features_mark_a_repeat_after_a_rest():
    # 8 bars of 8 slots: bars 4-7 repeat bars 0-3; the melody rests through the end of bar 3.
    rng = np.random.default_rng(3)
    tune = rng.integers(60, 72, size=(4, 8))
    tune[3, 4:] = -1
    mel = np.concatenate([tune, tune])
    harm = np.tile(np.arange(4)[:, None], (2, 4))
    sim = similarity(mel, harm)
    f = bar_features(mel, harm, sim, 0.6, 2.0)
    assert f.shape == (8, N_BAR_FEATURES)
    assert f[4, 0] == 1.0 and f[4, 1] == pytest.approx(4 / 32)  # rest before bar 4: 4 slots
    assert f[4, 5] == 1.0 and f[4, 6] == 1.0  # a repeated block starts at bar 4 (lag 4)
    assert f[4, 10] == 1.0 and f[2, 10] == 0.0  # 4 bars after the first melody bar
    assert f[4, 8] == pytest.approx(0.0)  # no novelty where a block repeats exactly
    # columns 16-18: repeated blocks (4 bars long: weight 4/16) start at bars 0 and 4, and the
    # first copy ends at bar 4; 22-26: similarity to the bars 1, 2, 4, 8, 16 before; 27: best earlier
    assert f[0, 16] == f[4, 16] == pytest.approx(0.25) and f[2, 16] == 0.0
    assert f[4, 17] == pytest.approx(0.25) and f[5, 17] == 0.0
    np.testing.assert_allclose(f[:, 18], 0.25)
    assert f[4, 24] == pytest.approx(1.0) and f[4, 22] < 0.6
    assert f[6, 27] == pytest.approx(1.0) and f[2, 27] < 0.6  # bar 2 is new material
    np.testing.assert_allclose(f[:, 29], np.log(2.0))  # the pace: log seconds per bar


def test_structure_model_round_trips_through_its_files(tmp_path):
    from aurl.analysis.structure_network import BoundaryGRU, StructureModel, default_model

    torch.manual_seed(0)
    model = StructureModel(
        nets=(BoundaryGRU().eval(), BoundaryGRU().eval()),
        mean=np.zeros(N_BAR_FEATURES),
        std=np.ones(N_BAR_FEATURES),
        length_logp=np.log(np.full(8, 1 / 8)),
        length_weight=0.5,
        offset=1.0,
    )
    model.to_files(tmp_path / "m", "test")
    meta = json.loads((tmp_path / "m.json").read_text())
    back = StructureModel.from_bytes(meta, (tmp_path / "m.safetensors").read_bytes())
    feats = np.random.default_rng(0).normal(size=(12, N_BAR_FEATURES))
    np.testing.assert_allclose(back.logits(feats), model.logits(feats), rtol=1e-6)
    x = torch.tensor(feats, dtype=torch.float32)[None]
    with torch.no_grad():  # the merged network is exactly the mean of the networks
        mean = (model.nets[0](x) + model.nets[1](x))[0].numpy() / 2
    np.testing.assert_allclose(model.logits(feats), mean, rtol=1e-5, atol=1e-6)
    one = dataclasses.replace(model, nets=model.nets[:1])
    assert not np.allclose(one.logits(feats), model.logits(feats))
    assert len(default_model().nets) >= 1
    with pytest.raises(ValueError, match="features"):
        dataclasses.replace(model, mean=np.zeros(16))


def test_segment_bars_follows_the_logits_and_the_length_prior():
    logp = np.log(np.r_[[0.02] * 3, 0.5, [0.02] * 3, 0.4])  # 4 and 8 bars likely
    flat = np.full(16, -1.0)
    assert segment_bars(flat, logp, 1.0) == [0, 8]  # 16 bars: two 8-bar phrases
    strong = flat.copy()
    strong[[4, 8, 12]] = 3.0
    assert segment_bars(strong, logp, 1.0) == [0, 4, 8, 12]


class _Pointwise(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # logit = first column, no context
        return x[..., 0]


@pytest.mark.parametrize("n", [1, 100, WINDOW, WINDOW + 1, 3 * HOP + 7, 2000])
def test_windowed_scoring_gives_every_note_exactly_one_answer(n):
    # With a network that ignores context, the windows must reproduce the per-note answer for
    # every note: a gap or an overlap in the windows' middle parts would show here.
    x = np.random.default_rng(n).normal(size=(n, 4)).astype(np.float32)
    scorer = SequenceScorer(_Pointwise(), np.zeros(1), np.ones(1), 0.5)
    np.testing.assert_allclose(scorer.window_probability(x), 1 / (1 + np.exp(-x[:, 0])), rtol=1e-6)


def test_int8_melody_network_agrees_with_the_float32_reference():
    acc, melody = aaba()
    notes = score_notes(make_score(acc + melody))
    x = note_features(notes)
    stacked = stage_probabilities(notes, default_melody_model(), x)[-1]
    groups = onset_groups(notes)
    p8 = default_scorer().probability(notes, x, groups, stacked)
    p32 = default_scorer(quantized=False).probability(notes, x, groups, stacked)
    # int8 moves a probability by a few hundredths at most (0.02-0.06 seen), on average far less
    assert np.abs(p8 - p32).max() < 0.1 and np.abs(p8 - p32).mean() < 0.01
    thr = default_scorer().threshold
    assert ((p8 > thr) == (p32 > thr)).mean() > 0.98
