"""Small utilities: atomic writes."""

from __future__ import annotations


def test_atomic_writes_replace_whole_files_with_normal_permissions(tmp_path):
    from imgcls.utils import atomic_write_text, write_json_atomic

    target = tmp_path / "out" / "metrics.json"
    write_json_atomic(target, {"a": 1})
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert (target.stat().st_mode & 0o777) == 0o666 & ~_umask()
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]  # no temp files left


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
