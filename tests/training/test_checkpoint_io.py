"""Checkpoints: plain contents only, loadable with weights_only=True, never half-written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aurl.config import RunConfig
from aurl.training import checkpoint_io
from aurl.training.checkpoint_io import AtomicCheckpointIO, check_plain, load_plain


def test_check_plain_names_the_key_holding_a_dataclass_or_path():
    check_plain({"a": [1, 2.0, "x", None, torch.zeros(2)], "b": {"c": (True,)}})
    with pytest.raises(ValueError, match=r"\['cfg'\].*RunConfig"):
        check_plain({"cfg": RunConfig()})
    with pytest.raises(ValueError, match=r"\['p'\]\[0\].*Path"):
        check_plain({"p": [Path("x")]})


def test_saved_checkpoint_loads_with_weights_only(tmp_path):
    io = AtomicCheckpointIO()
    state = {"state_dict": {"w": torch.arange(3.0)}, "global_step": 7, "name": "run"}
    io.save_checkpoint(state, tmp_path / "c.ckpt")
    back = torch.load(tmp_path / "c.ckpt", weights_only=True)
    assert back["global_step"] == 7
    assert torch.equal(back["state_dict"]["w"], torch.arange(3.0))
    assert io.load_checkpoint(tmp_path / "c.ckpt")["name"] == "run"


def test_pickled_object_is_refused_at_save_and_at_load(tmp_path):
    with pytest.raises(ValueError, match="RunConfig"):
        AtomicCheckpointIO().save_checkpoint({"cfg": RunConfig()}, tmp_path / "bad.ckpt")
    assert not (tmp_path / "bad.ckpt").exists()
    torch.save({"cfg": RunConfig()}, tmp_path / "evil.ckpt")  # written by someone else
    with pytest.raises(ValueError, match=r"evil\.ckpt: cannot be loaded as a plain checkpoint"):
        load_plain(tmp_path / "evil.ckpt")


def test_failure_mid_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, target)

    def crash(obj, fh):  # writes half a file, then dies like a full disk would
        fh.write(b"PK\x03\x04partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint_io.torch, "save", crash)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"global_step": 2}, target)
    assert load_plain(target)["global_step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_truncated_checkpoint_gives_an_actionable_error(tmp_path):
    AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(1000)}, tmp_path / "c.ckpt")
    data = (tmp_path / "c.ckpt").read_bytes()
    (tmp_path / "c.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_plain(tmp_path / "c.ckpt")
