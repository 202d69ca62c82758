"""platform/atomic.py, the one place that writes files: temp file beside the target,
fsync, one rename; a failure leaves the old content and no temp file. (The result
writers on top of it and the SIGKILL test: tests/results_tests/test_atomic.py.)"""

import os

import pytest

from sfprompt.platform import atomic
from sfprompt.platform.atomic import atomic_open, atomic_write_bytes, atomic_write_text
from sfprompt.results import atomic as results_atomic


def test_writes_replace_content_and_leave_no_temp_files(tmp_path):
    atomic_write_bytes(tmp_path / "f.bin", b"first")
    atomic_write_bytes(tmp_path / "f.bin", b"second, longer")
    atomic_write_text(tmp_path / "t.txt", "héllo\r\n")
    assert (tmp_path / "f.bin").read_bytes() == b"second, longer"
    assert (tmp_path / "t.txt").read_bytes() == "héllo\r\n".encode("utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin", "t.txt"]


def test_written_file_gets_umask_mode_not_private_temp_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


def test_a_block_that_raises_keeps_the_old_file_and_removes_the_temp(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(target) as f:
            f.write(b"half of the new")
            assert len(list(tmp_path.iterdir())) == 2  # the temp file exists meanwhile
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_temp_names_are_unique_and_beside_target(tmp_path):
    target = tmp_path / "a.parquet"
    names = {atomic._temp_path(target) for _ in range(100)}
    assert len(names) == 100
    assert all(p.parent == tmp_path and p.name.startswith(".a.parquet.") for p in names)


def test_results_writes_through_the_same_functions():
    assert results_atomic.atomic_open is atomic_open
    assert results_atomic.atomic_write_bytes is atomic_write_bytes
    assert results_atomic.atomic_write_text is atomic_write_text
