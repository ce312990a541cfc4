"""PreparedData reader, deterministic training windows (curriculum, augmentation), eval windows, loader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aurl.config import TokenizerConfig
from aurl.data import dataset as D
from aurl.data.prepare import prepare

MIDI = Path(__file__).resolve().parent / "midi"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> D.PreparedData:
    out = tmp_path_factory.mktemp("prepared")
    prepare(str(MIDI), out, TokenizerConfig(), splits=(0.5, 0.25, 0.25))
    return D.PreparedData(out)


def test_reader_matches_manifest(data):
    m = data.manifest
    for name in D.SPLIT_NAMES:
        sd = data.split(name)
        assert len(sd) == m["splits"][name]["pieces"]
        assert sd.num_tokens == m["splits"][name]["tokens"] == int(sd.lengths.sum())
        assert sd.num_notes == m["splits"][name]["notes"]
        for i in range(len(sd)):
            piece = sd.piece(i)
            assert piece[0] == data.tokenizer.bos_id and piece[-1] == data.tokenizer.eos_id
            assert len(piece) == sd.lengths[i] and piece.dtype == np.int64
    with pytest.raises(ValueError, match="split"):
        data.split("dev")
    with pytest.raises(IndexError):
        data.split("train").piece(99)


def test_missing_directory_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="aurl prepare"):
        D.PreparedData(tmp_path)


def test_windows_are_pure_functions_of_seed_and_index(data):
    split = data.split("train")
    a = D.WindowDataset(split, 64, seed=3)
    b = D.WindowDataset(split, 64, seed=3)
    c = D.WindowDataset(split, 64, seed=4)
    assert all(torch.equal(a[i], b[i]) for i in (0, 5, 10_000_000))
    assert not all(torch.equal(a[i], c[i]) for i in range(8))
    assert a[1].shape == (65,) and a[1].dtype == torch.int64
    assert len(a) > 10**9  # the trainer draws global_step * batch_size + i
    # every window is a contiguous slice of some piece
    pieces = [split.piece(i) for i in range(len(split))]
    for i in range(20):
        w = a[i].numpy()
        assert any(
            any(np.array_equal(p[s : s + 65], w) for s in range(len(p) - 64)) for p in pieces
        )


def test_start_probability_and_padding_after_eos(data):
    split = data.split("test")  # one short piece (~3k tokens)
    starts = D.WindowDataset(split, 32, start_prob=1.0)
    assert all(starts[i][0].item() == data.tokenizer.bos_id for i in range(10))
    long = D.WindowDataset(split, int(split.lengths.max()) + 10)
    w = long[0].numpy()
    n = int(split.lengths[0])
    assert w[n - 1] == data.tokenizer.eos_id and (w[n:] == D.PAD_ID).all()


def test_curriculum_grows_window_length_per_step():
    length = D.linear_curriculum(64, 512, steps=100)
    assert [length(s) for s in (0, 50, 100, 1000)] == [64, 288, 512, 512]
    assert D.linear_curriculum(0, 512, 100)(0) == 512


def test_curriculum_length_is_shared_within_a_batch(data):
    ds = D.WindowDataset(
        data.split("train"), 128, batch_size=4, curriculum=D.linear_curriculum(16, 128, 10)
    )
    assert {len(ds[i]) for i in range(4)} == {17}  # step 0
    assert {len(ds[i]) for i in range(40, 44)} == {129}  # step 10


def test_transposition_shifts_only_pitch_tokens(data):
    tok = data.tokenizer
    split = data.split("train")
    plain = D.WindowDataset(split, 256, seed=7)
    aug = D.WindowDataset(split, 256, seed=7, tokenizer=tok, augment=D.Augment(transpose=5))
    v = tok.base_vocab
    shifted = 0
    for i in range(12):
        a, b = plain[i].numpy(), aug[i].numpy()
        pitched = np.asarray([v[t].split("_")[0] in ("NoteOn", "NoteOff") for t in a])
        np.testing.assert_array_equal(a[~pitched], b[~pitched])  # time, velocity, drums untouched
        deltas = {
            int(v[y].split("_")[1]) - int(v[x].split("_")[1])
            for x, y in zip(a[pitched], b[pitched], strict=True)
        }
        assert len(deltas) <= 1 and (not deltas or abs(deltas.pop()) <= 5)
        shifted += not np.array_equal(a, b)
    assert shifted >= 6  # most windows actually move (0 is one of 11 draws)


def test_velocity_shift_stays_in_velocity_range(data):
    tok = data.tokenizer
    ds = D.WindowDataset(
        data.split("train"), 256, tokenizer=tok, augment=D.Augment(velocity_bins=3)
    )
    vel = [i for i, t in enumerate(tok.base_vocab) if t.startswith("Velocity_")]
    for i in range(5):
        w = ds[i].numpy()
        is_vel = np.isin(w, vel)
        assert is_vel.any() and (w[is_vel] >= vel[0]).all() and (w[is_vel] <= vel[-1]).all()
    with pytest.raises(ValueError, match="tokenizer"):
        D.WindowDataset(data.split("train"), 8, augment=D.Augment(transpose=2))


def test_eval_windows_cover_every_target_exactly_once(data):
    split = data.split("val")
    seq_len = 100
    covered = {p: np.zeros(int(n), dtype=int) for p, n in enumerate(split.lengths)}
    for w in D.eval_windows(split, seq_len):
        assert len(w.tokens) <= seq_len + 1
        np.testing.assert_array_equal(
            w.tokens, split.piece(w.piece)[w.start : w.start + len(w.tokens)]
        )
        covered[w.piece][w.start + 1 : w.start + len(w.tokens)] += 1
    for counts in covered.values():
        assert counts[0] == 0 and (counts[1:] == 1).all()  # BOS is never a target
    batches = list(D.eval_batches(split, seq_len, batch_size=8))
    assert sum(b.shape[0] for b in batches) == len(list(D.eval_windows(split, seq_len)))
    assert all(b.shape[1] <= seq_len + 1 for b in batches)


def test_length_buckets_group_similar_lengths():
    buckets = D.length_buckets(np.array([5, 100, 7, 98, 6, 99]), 3)
    assert buckets == [[1, 5, 3], [2, 4, 0]]


def test_dataloader_with_workers_resumes_at_a_step(data):
    ds = D.WindowDataset(data.split("train"), 32, seed=1, batch_size=4)
    loader = D.make_dataloader(ds, 4, start_step=5, num_workers=2)
    it = iter(loader)
    first, second = next(it), next(it)
    assert first.shape == (4, 33)
    assert torch.equal(first, torch.stack([ds[i] for i in range(20, 24)]))
    assert torch.equal(second, torch.stack([ds[i] for i in range(24, 28)]))
    del it, loader


def test_pieces_json_names_every_piece(data):
    names = json.loads((data.root / "pieces.json").read_text())
    assert sum(len(v) for v in names.values()) == data.manifest["files_ok"]
