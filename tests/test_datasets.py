"""Datasets: digits (offline), CIFAR-10 (download, checksum, offline message) and image folders."""

import warnings

import numpy as np
import pytest
import torch

from gendiff.datasets import CIFAR10, DatasetUnavailableError, Digits, ImageFolder
from gendiff.testing import check_dataset

from fakes import make_fake_cifar, make_image_folder


def test_digits_split_is_fixed_disjoint_and_complete():
    d = Digits()
    train, test = d.load("train"), d.load("test")
    assert len(train) + len(test) == 1797 and len(test) == 297
    assert int(train.max()) == 16 and d.levels == 17
    assert torch.equal(d.load("test"), test)  # the same split every time
    from sklearn.datasets import load_digits

    every = {bytes(img.astype(np.uint8)) for img in load_digits().images}
    both = {bytes(x.numpy()) for x in torch.cat([train, test])[:, 0]}
    assert both <= every
    assert Digits(seed=1).load("test").shape == test.shape and not torch.equal(Digits(seed=1).load("test"), test)
    assert d.labels("train").shape == (len(train),)


def test_cifar10_loads_a_local_archive_after_checking_its_md5(tmp_path, monkeypatch):
    path, md5, train = make_fake_cifar(tmp_path)
    monkeypatch.setattr(CIFAR10, "md5", md5)
    ds = CIFAR10(root=str(tmp_path), download=False)
    got = ds.load("train")
    assert got.dtype == torch.uint8 and got.shape == (20, 3, 32, 32)
    assert np.array_equal(got.numpy(), train)
    assert ds.load("test").shape == (4, 3, 32, 32)
    check_dataset(ds)
    # the labels, read independently from the archive's pickled batches, in load()'s order
    import io, pickle, tarfile

    with tarfile.open(path) as tar:
        expect = [label for name in [f"data_batch_{i}" for i in range(1, 6)]
                  for label in pickle.load(io.BytesIO(tar.extractfile(f"cifar-10-batches-py/{name}").read()),
                                           encoding="bytes")[b"labels"]]
    assert ds.labels("train").tolist() == [int(v) for v in expect] and ds.num_classes == 10


def test_cifar10_refuses_an_archive_with_the_wrong_checksum_before_unpickling(tmp_path, monkeypatch):
    make_fake_cifar(tmp_path)  # the real MD5 stays in place: this archive does not match it
    unpickled = []
    monkeypatch.setattr("pickle.load", lambda *a, **k: unpickled.append(1))
    with pytest.raises(DatasetUnavailableError, match="MD5 .* not the official c58f30108f718f92721af3b95e74349a"):
        CIFAR10(root=str(tmp_path)).load("train")
    assert not unpickled
    assert (tmp_path / "cifar-10-python.tar.gz").exists()  # nothing deleted


def test_cifar10_downloads_with_progress_and_verifies(tmp_path, monkeypatch):
    src, md5, train = make_fake_cifar(tmp_path / "server")
    monkeypatch.setattr(CIFAR10, "md5", md5)
    monkeypatch.setattr(CIFAR10, "url", src.resolve().as_uri())
    root = tmp_path / "data"
    ds = CIFAR10(root=str(root))
    assert np.array_equal(ds.load("train").numpy(), train)
    assert (root / "cifar-10-python.tar.gz").is_file() and not list(root.glob("*.part"))


def test_cifar10_offline_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")  # nothing listens there
    with pytest.raises(DatasetUnavailableError) as err:
        CIFAR10(root=str(tmp_path)).load("train")
    msg = str(err.value)
    assert "download failed" in msg and str(tmp_path / "cifar-10-python.tar.gz") in msg
    assert not list(tmp_path.iterdir())  # no partial file left behind
    with pytest.raises(DatasetUnavailableError, match="download = false"):
        CIFAR10(root=str(tmp_path), download=False).load("test")


def test_cifar10_uses_the_data_root_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("GENDIFF_DATA", str(tmp_path))
    assert CIFAR10().root == tmp_path


def test_image_folder_crops_resizes_converts_and_counts_unreadable_files(tmp_path):
    folder = make_image_folder(tmp_path / "imgs", n=6, bad=2)
    with pytest.warns(UserWarning, match="skipped 2 file.*2 unreadable"):
        rgb = ImageFolder(path=str(folder), image_size=16, channels=3).load("train")
    assert rgb.shape == (6, 3, 16, 16) and rgb.dtype == torch.uint8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grey = ImageFolder(path=str(folder), image_size=8, channels=1, test_fraction=0.5)
        assert grey.load("train").shape == (3, 1, 8, 8) and grey.load("test").shape == (3, 1, 8, 8)
        check_dataset(grey)


def test_image_folder_centre_crop_keeps_the_middle(tmp_path):
    from PIL import Image

    arr = np.zeros((10, 30), dtype=np.uint8)
    arr[:, 10:20] = 255  # a white square in the middle of a wide image
    (tmp_path / "x").mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(arr, "L").save(tmp_path / "x" / name)
    out = ImageFolder(path=str(tmp_path / "x"), image_size=10, channels=1).load("train")
    assert int(out.min()) == 255


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="does not exist"):
        ImageFolder(path=str(tmp_path / "absent")).load("train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetUnavailableError, match="holds 0 usable"):
        ImageFolder(path=str(tmp_path / "empty")).load("train")
    with pytest.raises(ValueError, match="channels"):
        ImageFolder(path="x", channels=2)
