"""storage.files: atomic_write never flips the process umask (another thread's new files would get mode 0666)."""

from __future__ import annotations

import os
import stat

import pytest

from adaptiveclick.storage import files


def test_atomic_write_reads_the_umask_once_at_import(tmp_path, monkeypatch):
    def no_umask(mask):
        raise AssertionError("atomic_write changed the process umask")

    monkeypatch.setattr(os, "umask", no_umask)
    path = files.atomic_write(tmp_path / "a" / "out.bin", lambda f: f.write(b"data"))
    assert path.read_bytes() == b"data"
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~files.UMASK
    with pytest.raises(ValueError):
        files.atomic_write(tmp_path / "b.bin", lambda f: (_ for _ in ()).throw(ValueError("boom")))
    assert list(tmp_path.glob(".b.bin*")) == []
