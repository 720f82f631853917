"""Atomic writes leave normal permissions (not mkstemp's 0600 / mkdtemp's 0700) and nothing half-written."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from fer_core.io import FILE_MODE, atomic_dir, atomic_write_bytes


def test_files_and_folders_get_the_umask_modes(tmp_path):
    # a fresh interpreter under umask 022 (the module reads the umask once, at import)
    script = (
        "import os, stat, sys; os.umask(0o022)\n"
        "from pathlib import Path\n"
        "from fer_core.io import atomic_dir, atomic_write_bytes\n"
        "root = Path(sys.argv[1])\n"
        "atomic_write_bytes(root / 'a.bin', b'x')\n"
        "with atomic_dir(root / 'd') as tmp:\n"
        "    (tmp / 'f').write_text('y')\n"
        "print(oct(stat.S_IMODE(os.stat(root / 'a.bin').st_mode)), oct(stat.S_IMODE(os.stat(root / 'd').st_mode)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["0o644", "0o755"]  # not mkstemp's 0o600 / mkdtemp's 0o700
    # in this process: whatever the umask, the same rule
    atomic_write_bytes(tmp_path / "b.bin", b"x")
    assert stat.S_IMODE(os.stat(tmp_path / "b.bin").st_mode) == FILE_MODE


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
