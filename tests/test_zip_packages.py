"""Zip packages: load and run, clean up their extraction folder, and refuse
unsafe archives."""

import gc
import os
import stat
import tempfile
import zipfile

import numpy as np
import pytest

import neuropods_native
from helpers import load, neuropod_tempdirs, run_add


pytestmark = pytest.mark.usefixtures("private_tempdir")


def test_zip_package_is_a_zip(addition_zip_package):
    assert os.path.isfile(addition_zip_package)
    names = zipfile.ZipFile(addition_zip_package).namelist()
    assert {"config.json", "manifest.json", "0/data/model.pt"} <= set(names)


def test_zip_package_loads_and_runs(addition_zip_package):
    with load(addition_zip_package) as model:
        assert model.name == "addition_model_zip"
        assert model.platform == "torchscript"
        run_add(model)


def test_zip_extraction_folder_removed_on_close(addition_zip_package):
    before = neuropod_tempdirs()
    model = load(addition_zip_package)
    during = neuropod_tempdirs()
    assert len(during) == len(before) + 1
    new = (set(during) - set(before)).pop()
    # Extracted into the temp dir (here the test's private one), beside the
    # owner's lock file.
    assert os.path.isfile(os.path.join(tempfile.gettempdir(), new, "package", "config.json"))
    assert os.path.isfile(os.path.join(tempfile.gettempdir(), new, "owner.lock"))
    run_add(model)
    model.close()
    assert neuropod_tempdirs() == before


def test_zip_extraction_folder_removed_on_del(addition_zip_package):
    before = neuropod_tempdirs()
    model = load(addition_zip_package)
    run_add(model)
    assert len(neuropod_tempdirs()) == len(before) + 1
    del model
    gc.collect()
    assert neuropod_tempdirs() == before


def test_zip_extraction_folder_removed_after_with(addition_zip_package):
    before = neuropod_tempdirs()
    with load(addition_zip_package) as model:
        run_add(model)
    assert neuropod_tempdirs() == before


def test_two_loads_of_one_zip_are_independent(addition_zip_package):
    before = neuropod_tempdirs()
    first = load(addition_zip_package)
    second = load(addition_zip_package)
    assert len(neuropod_tempdirs()) == len(before) + 2
    first.close()
    run_add(second)
    second.close()
    assert neuropod_tempdirs() == before


def test_verify_manifest_on_zip(addition_zip_package):
    with load(addition_zip_package, verify_manifest=True) as model:
        run_add(model)


def _rezip(src_zip, dst_zip, prefix="", extra=()):
    with zipfile.ZipFile(src_zip) as src, zipfile.ZipFile(dst_zip, "w") as dst:
        for name in src.namelist():
            dst.writestr(prefix + name, src.read(name))
        for item in extra:
            if isinstance(item, zipfile.ZipInfo):
                dst.writestr(item, b"target")
            else:
                dst.writestr(item[0], item[1])
    return str(dst_zip)


def test_zip_of_the_package_folder_itself(addition_zip_package, tmp_path):
    # Zips made of the folder (entries under one top folder) load too.
    nested = _rezip(addition_zip_package, tmp_path / "nested.zip", prefix="my_model/")
    with load(nested) as model:
        run_add(model)


def test_zip_slip_is_refused(addition_zip_package, tmp_path):
    before = neuropod_tempdirs()
    temp = tempfile.gettempdir()  # zips are extracted into temp/neuropod-XXXX/package
    evil = _rezip(addition_zip_package, tmp_path / "evil.zip", extra=[("../evil", b"pwned")])
    with pytest.raises(neuropods_native.PackageError, match=r"'\.\./evil'.*escapes") as info:
        load(evil)
    assert isinstance(info.value, ValueError)
    assert not os.path.exists(os.path.join(temp, "evil"))
    assert not any(os.path.exists(os.path.join(temp, d, "evil")) for d in os.listdir(temp))
    assert not os.path.exists(os.path.join(os.path.dirname(temp), "evil"))
    assert not os.path.exists(tmp_path / "evil")
    assert neuropod_tempdirs() == before


@pytest.mark.parametrize("name", ["a/../../evil2", "/abs_evil"])
def test_other_escaping_entries_are_refused(addition_zip_package, tmp_path, name):
    before = neuropod_tempdirs()
    evil = _rezip(addition_zip_package, tmp_path / "evil.zip", extra=[(name, b"pwned")])
    with pytest.raises(neuropods_native.PackageError, match="escapes the package folder"):
        load(evil)
    assert not os.path.exists(os.path.join(tempfile.gettempdir(), "evil2"))
    assert not os.path.exists("/abs_evil")
    assert neuropod_tempdirs() == before


def test_symlink_entry_is_refused(addition_zip_package, tmp_path):
    link = zipfile.ZipInfo("0/data/link")
    link.create_system = 3  # unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    evil = _rezip(addition_zip_package, tmp_path / "link.zip", extra=[link])
    with pytest.raises(neuropods_native.PackageError, match="symlink"):
        load(evil)


def test_zip_bomb_is_refused(tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("config.json", "{}")
        z.writestr("0/data/zeros.bin", bytes(64 << 20))
    info = zipfile.ZipFile(bomb).getinfo("0/data/zeros.bin")
    assert info.file_size / info.compress_size > 1000  # what the limit is about
    with pytest.raises(neuropods_native.PackageError, match="zip bomb"):
        load(str(bomb))


def test_not_a_zip_is_package_error(tmp_path):
    path = tmp_path / "garbage.neuropod"
    path.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(neuropods_native.PackageError, match="neither a directory nor a readable zip"):
        load(str(path))


def test_zip_without_config_is_package_error(tmp_path):
    path = tmp_path / "noconfig.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("0/data/model.pt", b"x")
        z.writestr("other/readme.txt", b"x")
    with pytest.raises(neuropods_native.PackageError, match="config.json"):
        load(str(path))


@pytest.mark.parametrize("nested", [False, True])
def test_zip_made_by_shutil_make_archive(addition_package, tmp_path, nested):
    # make_archive adds directory entries ("0/", "0/data/") too.
    import shutil

    if nested:
        archive = shutil.make_archive(
            str(tmp_path / "made"), "zip", root_dir=os.path.dirname(addition_package), base_dir=os.path.basename(addition_package)
        )
    else:
        archive = shutil.make_archive(str(tmp_path / "made"), "zip", root_dir=addition_package)
    assert any(n.endswith("/") for n in zipfile.ZipFile(archive).namelist())
    with load(archive, verify_manifest=True) as model:
        run_add(model)


def test_failed_zip_load_removes_extraction_folder(addition_zip_package, tmp_path):
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(addition_zip_package) as src, zipfile.ZipFile(broken, "w") as dst:
        for name in src.namelist():
            data = b"not a torchscript archive" if name == "0/data/model.pt" else src.read(name)
            dst.writestr(name, data)
    before = neuropod_tempdirs()
    with pytest.raises(neuropods_native.BackendError, match="cannot load 0/data/model.pt"):
        load(str(broken))
    with pytest.raises(neuropods_native.PackageError, match="sha256"):
        load(str(broken), verify_manifest=True)
    assert neuropod_tempdirs() == before
