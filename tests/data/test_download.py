"""download_file / download_archive with local archives served through file:// URLs."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from mapd.data.download import download_archive, download_file
from mapd.data.files import md5sum
from mapd.errors import DataError


def make_tree(folder: Path) -> None:
    (folder / "pkg" / "sub").mkdir(parents=True)
    (folder / "pkg" / "a.bin").write_bytes(bytes(range(256)))
    (folder / "pkg" / "sub" / "b.txt").write_text("hello\n")


def make_tar(tmp_path: Path, name: str = "pkg.tar.gz", mode: str = "w:gz") -> Path:
    src = tmp_path / "src"
    make_tree(src)
    archive = tmp_path / "served" / name
    archive.parent.mkdir(exist_ok=True)
    with tarfile.open(archive, mode) as tar:
        tar.add(src / "pkg", arcname="pkg")
    return archive


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".tmp"))


@pytest.mark.parametrize(("name", "mode"), [("pkg.tar.gz", "w:gz"), ("pkg.tar", "w")])
def test_tar_download_and_extract(tmp_path: Path, name: str, mode: str) -> None:
    archive = make_tar(tmp_path, name, mode)
    root = tmp_path / "root"
    out = download_archive(archive.as_uri(), root=root, md5=md5sum(archive))
    assert out == root
    assert (root / "pkg" / "a.bin").read_bytes() == bytes(range(256))
    assert (root / "pkg" / "sub" / "b.txt").read_text() == "hello\n"
    assert md5sum(root / name) == md5sum(archive)  # the archive is kept next to the data
    assert leftovers(root) == []


def test_zip_and_custom_filename(tmp_path: Path) -> None:
    archive = tmp_path / "served.bin"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pkg/readme.txt", "zip content")
    root = tmp_path / "root"
    download_archive(archive.as_uri(), root=root, md5=md5sum(archive), filename="pkg.zip")
    assert (root / "pkg" / "readme.txt").read_text() == "zip content"
    assert (root / "pkg.zip").is_file()


def test_md5_mismatch_names_both_and_writes_nothing(tmp_path: Path) -> None:
    archive = make_tar(tmp_path)
    actual = md5sum(archive)
    root = tmp_path / "root"
    with pytest.raises(DataError, match=rf"expected md5 {'0' * 32}, got {actual}"):
        download_archive(archive.as_uri(), root=root, md5="0" * 32)
    assert sorted(p.name for p in root.iterdir()) == []


def test_network_failure_says_what_to_do(tmp_path: Path) -> None:
    url = (tmp_path / "nothing-here.tar.gz").as_uri()
    root = tmp_path / "root"
    with pytest.raises(
        DataError, match=r"could not download .*by hand.*root/nothing-here\.tar\.gz \(md5 ab"
    ):
        download_archive(url, root=root, md5="ab" * 16)
    assert not (root / "nothing-here.tar.gz").exists()


def test_archive_put_by_hand_is_used_offline(tmp_path: Path) -> None:
    archive = make_tar(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    (root / archive.name).write_bytes(archive.read_bytes())
    unreachable = (tmp_path / "gone" / archive.name).as_uri()
    download_archive(unreachable, root=root, md5=md5sum(archive))
    assert (root / "pkg" / "sub" / "b.txt").is_file()


def test_redownload_replaces_stale_file(tmp_path: Path) -> None:
    served = tmp_path / "x.bin"
    served.write_bytes(b"new content")
    dest = tmp_path / "out" / "x.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"old, wrong")
    assert download_file(served.as_uri(), dest=dest, md5=md5sum(served)) == dest
    assert dest.read_bytes() == b"new content"


def test_extraction_replaces_existing_folder(tmp_path: Path) -> None:
    archive = make_tar(tmp_path)
    root = tmp_path / "root"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "stale.txt").write_text("from an earlier, partial copy")
    download_archive(archive.as_uri(), root=root, md5=md5sum(archive))
    assert not (root / "pkg" / "stale.txt").exists()
    assert (root / "pkg" / "a.bin").is_file()
    assert leftovers(root) == []


def test_corrupt_archive_leaves_root_untouched(tmp_path: Path) -> None:
    good = make_tar(tmp_path)
    bad = tmp_path / "served" / "bad.tar.gz"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])  # truncated gzip
    root = tmp_path / "root"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "keep.txt").write_text("still here")
    with pytest.raises(DataError, match=r"(cannot extract|neither a tar nor a zip).*bad\.tar\.gz"):
        download_archive(bad.as_uri(), root=root, md5=md5sum(bad))
    assert (root / "pkg" / "keep.txt").read_text() == "still here"
    assert not (root / "pkg" / "a.bin").exists()
    assert leftovers(root) == []


def test_not_an_archive(tmp_path: Path) -> None:
    served = tmp_path / "plain.tar.gz"
    served.write_bytes(b"just text, not an archive")
    with pytest.raises(DataError, match="neither a tar nor a zip"):
        download_archive(served.as_uri(), root=tmp_path / "root", md5=md5sum(served))


def test_tar_member_escaping_root_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    root = tmp_path / "root"
    with pytest.raises(DataError, match="cannot extract"):
        download_archive(archive.as_uri(), root=root, md5=md5sum(archive))
    assert not (tmp_path / "escaped.txt").exists()


def test_zip_member_escaping_root_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../escaped.txt", "bad")
    with pytest.raises(DataError, match="outside"):
        download_archive(archive.as_uri(), root=tmp_path / "root", md5=md5sum(archive))
    assert not (tmp_path / "escaped.txt").exists()
