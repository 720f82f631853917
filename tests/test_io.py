"""Atomic writes leave normal permissions (not mkstemp's 0600 / mkdtemp's 0700) and nothing half-written."""

from __future__ import annotations

import os
import stat

import pytest

from fer_core.io import DIR_MODE, FILE_MODE, atomic_dir, atomic_write_bytes


def test_files_and_folders_get_the_umask_modes(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("y")
    assert stat.S_IMODE(os.stat(tmp_path / "a.bin").st_mode) == FILE_MODE
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == DIR_MODE


def test_a_failed_atomic_dir_leaves_the_old_folder(tmp_path):
    tmp_path = tmp_path / "work"
    tmp_path.mkdir()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old").write_text("keep")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "d") as tmp:
        (tmp / "new").write_text("half")
        raise RuntimeError("killed")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
