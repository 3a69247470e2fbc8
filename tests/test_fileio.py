"""Atomic files and staged folders: a failure leaves nothing behind, success replaces in one rename."""

from __future__ import annotations

from pathlib import Path

import pytest

from resshift_cli.fileio import atomic_write, remove_stale_staging, staged_folder


class Boom(Exception):
    pass


def test_atomic_write_replaces_the_target(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_write(target) as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".out.bin.")
        assert temporary.is_file() and temporary.read_bytes() == b""
        temporary.write_bytes(b"new")
        assert target.read_bytes() == b"old", "the target changes only when the block ends"
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_atomic_write_error_leaves_nothing_behind(tmp_path: Path, error: type[BaseException]) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(error), atomic_write(target) as temporary:
        temporary.write_bytes(b"half")
        raise error
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_write_creates_a_new_file(tmp_path: Path) -> None:
    with atomic_write(tmp_path / "new.txt") as temporary:
        temporary.write_text("hello", encoding="utf-8")
    assert (tmp_path / "new.txt").read_text(encoding="utf-8") == "hello"


def test_atomic_write_into_a_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), atomic_write(tmp_path / "absent" / "x"):
        pass


def test_staged_folder_appears_complete(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    with staged_folder(dest) as staging:
        (staging / "a").write_text("1")
        (staging / "b").write_text("2")
        assert not dest.exists()
    assert sorted(p.name for p in dest.iterdir()) == ["a", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_staged_folder_replaces_an_empty_folder(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    dest.mkdir()
    with staged_folder(dest) as staging:
        (staging / "a").write_text("1")
    assert [p.name for p in dest.iterdir()] == ["a"]


def test_staged_folder_error_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(Boom), staged_folder(tmp_path / "model") as staging:
        (staging / "a").write_text("1")
        raise Boom
    assert list(tmp_path.iterdir()) == []


def test_remove_stale_staging_clears_only_that_folders_leftovers(tmp_path: Path) -> None:
    for name in (".model.1234abcd.tmp", ".model.ffff0000.tmp", ".other.1234abcd.tmp"):
        (tmp_path / name).mkdir()
    (tmp_path / "model").mkdir()
    remove_stale_staging(tmp_path / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.1234abcd.tmp", "model"]
