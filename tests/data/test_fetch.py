"""sparse_engine.data.download: every file checked against its SHA-256 before it is kept; sources
replaced by local file:// URLs (no network here), the shared data folder where it exists."""
import hashlib
import importlib
import io
import zipfile
from pathlib import Path

import pytest

from sparse_engine.data import DATASETS, download
from sparse_engine.data.sources import ABOUT, SHA256, source

fetch = importlib.import_module("sparse_engine.data.fetch")


def test_every_dataset_has_a_description_and_a_source_for_each_file():
    assert set(ABOUT) == set(SHA256) == set(DATASETS)
    for name, files in SHA256.items():
        assert files, name
        for file, digest in files.items():
            url, member = source(name, file)
            assert url.startswith("https://") and len(digest) == 64, (name, file)
            assert member in (None, Path(file).name)


def _local_sources(monkeypatch, tmp_path, folder_of):
    """Serves each dataset from files on disk: a zip archive (the member one folder down, as in an
    archive that keeps its folder) for the archive sources, else the file itself."""
    calls = []

    def local(name, file):
        url, member = source(name, file)
        path = folder_of(name) / file
        if member is None:
            return path.as_uri(), None
        archive = tmp_path / f"{name}.zip"
        if not archive.exists():
            with zipfile.ZipFile(archive, "w") as z:
                z.writestr("readme.txt", "not this one")
                for f in SHA256[name]:
                    z.write(folder_of(name) / f, f"{name}/{f}")
        return archive.as_uri(), member

    real_fetch = fetch._fetch
    monkeypatch.setattr(fetch, "source", local)
    monkeypatch.setattr(fetch, "_fetch", lambda url, timeout: calls.append(url) or real_fetch(url, timeout))
    return calls


@pytest.mark.parametrize("name", DATASETS)
def test_the_table_holds_the_checksums_of_the_real_files_and_download_keeps_them(name, monkeypatch, tmp_path,
                                                                                   shared_data):
    DATA = shared_data(name).parent
    for file, digest in SHA256[name].items():
        assert hashlib.sha256((DATA / name / file).read_bytes()).hexdigest() == digest, file
    calls = _local_sources(monkeypatch, tmp_path, lambda n: DATA / n)
    folder = download(name, tmp_path / "root", quiet=True)
    assert folder == tmp_path / "root" / name
    for file in SHA256[name]:
        assert (folder / file).read_bytes() == (DATA / name / file).read_bytes()
    n_sources = len({source(name, f)[0] for f in SHA256[name]})
    assert len(calls) == n_sources  # an archive with several files is fetched once
    download(name, tmp_path / "root", quiet=True)  # everything in place: nothing fetched again
    assert len(calls) == n_sources


def _fake_dataset(monkeypatch, tmp_path, content=b"1.0\n2.0\n"):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "series.txt").write_bytes(content)
    monkeypatch.setitem(SHA256, "mackey_glass", {"series.txt": hashlib.sha256(b"1.0\n2.0\n").hexdigest()})
    return _local_sources(monkeypatch, tmp_path, lambda n: src)


def test_a_file_that_does_not_match_its_checksum_is_an_error_and_is_not_written(monkeypatch, tmp_path):
    _fake_dataset(monkeypatch, tmp_path, content=b"1.0\n2.5\n")
    with pytest.raises(ValueError, match="SHA-256 .* differs from the expected"):
        download("mackey_glass", tmp_path / "root", quiet=True)
    assert not (tmp_path / "root" / "mackey_glass" / "series.txt").exists()
    assert not list((tmp_path / "root").rglob("*.part"))


def test_a_damaged_file_in_place_is_fetched_again(monkeypatch, tmp_path):
    calls = _fake_dataset(monkeypatch, tmp_path)
    target = tmp_path / "root" / "mackey_glass" / "series.txt"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"garbage")
    download("mackey_glass", tmp_path / "root", quiet=True)
    assert target.read_bytes() == b"1.0\n2.0\n" and len(calls) == 1


def test_an_unreachable_source_names_its_url(monkeypatch, tmp_path):
    monkeypatch.setattr(fetch, "source", lambda name, file: ((tmp_path / "missing.txt").as_uri(), None))
    with pytest.raises(ConnectionError, match="could not download file://.*missing.txt"):
        download("mackey_glass", tmp_path / "root", quiet=True)


def test_an_archive_without_the_member_or_not_a_zip_is_an_error():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("other.csv", "x")
    with pytest.raises(ValueError, match="holds no a1_va3.csv"):
        fetch._member(buf.getvalue(), "a1_va3.csv", "u")
    with pytest.raises(ValueError, match="not a zip archive"):
        fetch._member(b"<html>", "a1_va3.csv", "u")


def test_bad_name_and_the_command_line(capsys, monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="name must be one of mnist_test"):
        download("mnist", tmp_path)
    _fake_dataset(monkeypatch, tmp_path, content=b"bad")
    assert fetch.main(["mackey_glass", "--root", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "differs from the expected" in err[-1]


def test_a_missing_data_set_skips_naming_its_download(shared_data):
    """A test that needs a data set this checkout lacks is skipped with the command that downloads it
    (not a path beside the project's checkout, which users do not have)."""
    with pytest.raises(pytest.skip.Exception) as skipped:
        shared_data("no_such_data_set", "file.csv")
    message = str(skipped.value)
    assert "python -m sparse_engine.data.fetch no_such_data_set --root DIR" in message
    assert "SPARSE_ENGINE_DATA=DIR" in message and "shared" not in message
