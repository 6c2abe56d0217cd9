"""Checkpoint folder layout: naming, tracker, resolution and atomic writes."""

import pytest

from sft_bridge_port.utils import ckpt_layout as L


def _fake_iter(root, step):
    d = root / L.iter_dir_name(step)
    d.mkdir(parents=True)
    (d / ".metadata").write_text("x")
    return d


def test_iter_dir_name_is_bridge_format():
    assert L.iter_dir_name(50) == "iter_0000050"


def test_resolve_prefers_tracker_then_highest_iteration(tmp_path):
    _fake_iter(tmp_path, 10)
    _fake_iter(tmp_path, 20)
    assert L.resolve_checkpoint(tmp_path) == (tmp_path / "iter_0000020", 20)
    L.write_tracker(tmp_path, 10)
    assert (tmp_path / L.TRACKER_FILE).read_text() == "10\n"
    assert L.resolve_checkpoint(tmp_path) == (tmp_path / "iter_0000010", 10)
    assert L.resolve_checkpoint(tmp_path / "iter_0000020") == (tmp_path / "iter_0000020", 20)


def test_resolve_errors_name_the_problem(tmp_path):
    with pytest.raises(L.CheckpointNotFoundError, match="does not exist"):
        L.resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(L.CheckpointNotFoundError, match="not a Megatron checkpoint"):
        L.resolve_checkpoint(tmp_path)
    L.write_tracker(tmp_path, 7)
    with pytest.raises(L.CheckpointNotFoundError, match="iter_0000007/ is missing"):
        L.resolve_checkpoint(tmp_path)
    (tmp_path / L.TRACKER_FILE).write_text("garbage")
    with pytest.raises(L.CheckpointNotFoundError, match="expected an iteration number"):
        L.resolve_checkpoint(tmp_path)


def test_incomplete_iteration_folder_is_rejected(tmp_path):
    (tmp_path / "iter_0000003").mkdir()
    with pytest.raises(L.CheckpointNotFoundError, match="incomplete"):
        L.resolve_checkpoint(tmp_path / "iter_0000003")


def test_atomic_directory_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "iter_0000005"
    with pytest.raises(RuntimeError):
        with L.atomic_directory(target) as tmp:
            (tmp / "half_written").write_text("x")
            raise RuntimeError("killed mid-save")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with L.atomic_directory(target) as tmp:
        (tmp / "done").write_text("x")
    assert (target / "done").exists()
    assert L.list_iterations(tmp_path) == [5]


def test_dist_checkpoint_files_follow_the_installed_megatron_core():
    import megatron.core

    files = L.dist_checkpoint_files()
    assert {".metadata", "metadata.json"} <= files
    version = tuple(int(x) for x in megatron.core.__version__.split(".")[:2])
    if version <= (0, 16):
        assert "common.pt" in files  # 0.16 writes the legacy common file
    if version >= (0, 19):
        assert "common.pt" not in files  # 0.19 keeps the common state inside the DCP files
