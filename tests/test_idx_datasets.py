"""MNIST and Fashion-MNIST from IDX files: found in root or the Debian folder, downloaded through a
temporary file, checked by the official checksums of their content, refused when malformed."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

import gendiff
from gendiff.datasets import MNIST, DatasetUnavailableError, FashionMNIST, IDXError, parse_idx
from gendiff.errors import RecipeError
from gendiff.testing import check_dataset

from fakes import idx_bytes, make_fake_idx

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Fake Fashion-MNIST files in tmp_path/root, their checksums in place of the official ones,
    and no system folder."""
    made = make_fake_idx(tmp_path / "root")
    monkeypatch.setattr(FashionMNIST, "raw_md5", made["md5"])
    monkeypatch.setattr(FashionMNIST, "system_dirs", ())
    return tmp_path / "root", made


@pytest.mark.parametrize("size", [28, 32])
def test_loads_the_splits_and_labels_as_published(fake, size):
    root, made = fake
    ds = FashionMNIST(root=str(root), image_size=size, download=False)
    check_dataset(ds)
    for split in ("train", "test"):
        images, labels = made[split]
        x = ds.load(split)
        assert x.shape == (len(images), 1, size, size) and x.dtype == torch.uint8
        pad = (size - 28) // 2
        assert torch.equal(x[:, 0, pad:pad + 28, pad:pad + 28], torch.from_numpy(images))
        if pad:  # zero-padding around the 28x28 image
            assert int(x[:, :, :pad].max()) == 0 and int(x[:, :, :, -pad:].max()) == 0
        assert ds.labels(split).tolist() == labels.tolist()
    assert ds.num_classes == 10 and len(ds.class_names) == 10 and ds.levels == 256


def test_uncompressed_files_and_the_system_folder_are_found(tmp_path, monkeypatch):
    made = make_fake_idx(tmp_path / "debian", gz=False)
    monkeypatch.setattr(MNIST, "raw_md5", made["md5"])
    monkeypatch.setattr(MNIST, "system_dirs", (str(tmp_path / "debian"),))
    ds = MNIST(root=str(tmp_path / "empty"), download=False)
    assert ds.load("test").shape == (10, 1, 28, 28)
    assert not (tmp_path / "empty").exists()  # nothing written where nothing was needed


def test_download_goes_through_a_temporary_file_and_is_checked(tmp_path, monkeypatch):
    made = make_fake_idx(tmp_path / "server")
    monkeypatch.setattr(FashionMNIST, "raw_md5", made["md5"])
    monkeypatch.setattr(FashionMNIST, "system_dirs", ())
    monkeypatch.setattr(FashionMNIST, "mirrors", ("http://127.0.0.1:9/", (tmp_path / "server").as_uri() + "/"))
    root = tmp_path / "cache"
    ds = FashionMNIST(root=str(root))  # the first mirror is down: the second serves
    assert torch.equal(ds.load("train")[:, 0], torch.from_numpy(made["train"][0]))
    assert sorted(p.name for p in root.iterdir()) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    # a server that serves something else: refused, and nothing is left in the cache
    (tmp_path / "server" / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"not the data"))
    with pytest.raises(DatasetUnavailableError, match="not the official"):
        ds.load("test")
    assert not (root / "t10k-images-idx3-ubyte.gz").exists() and not list(root.glob("*.part"))


def test_offline_says_exactly_what_to_do_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(FashionMNIST, "system_dirs", ())
    monkeypatch.setattr(FashionMNIST, "mirrors", ("http://127.0.0.1:9/",))
    with pytest.raises(DatasetUnavailableError) as err:
        FashionMNIST(root=str(tmp_path / "cache")).load("train")
    msg = " ".join(str(err.value).split())
    assert "download failed" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert str(tmp_path / "cache") in msg
    assert not list((tmp_path / "cache").glob("*"))
    with pytest.raises(DatasetUnavailableError, match="download = false"):
        FashionMNIST(root=str(tmp_path / "cache"), download=False).load("test")


def test_a_file_with_other_content_is_refused_and_kept(fake):
    root, _ = fake
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(10, np.uint8))))
    with pytest.raises(DatasetUnavailableError, match="t10k-labels-idx1-ubyte.gz holds content with MD5"):
        FashionMNIST(root=str(root), download=False).labels("test")
    assert (root / "t10k-labels-idx1-ubyte.gz").exists()  # the user's file is not deleted


@pytest.mark.parametrize("data, message", [
    (b"\x00\x00\x08\x01\x00", "too short for an IDX header"),
    (idx_bytes(np.zeros((2, 28, 28), np.uint8)), "magic number 0x00000803, not 0x00000801"),
    (idx_bytes(np.zeros(5, np.uint8))[:-1], "truncated: its header promises 5 = 5 bytes of data, it holds 4"),
    (idx_bytes(np.zeros(5, np.uint8)) + b"\x00", "longer than its header says"),
])
def test_malformed_idx_headers_are_clear_errors(data, message):
    with pytest.raises(IDXError, match=message):
        parse_idx(data, "labels", 0x00000801)


def test_counts_that_disagree_and_damaged_gzip_are_clear_errors(fake, monkeypatch):
    import hashlib

    root, made = fake
    labels = idx_bytes(np.zeros(7, np.uint8))  # 7 labels for 10 images, with a valid checksum
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    monkeypatch.setitem(FashionMNIST.raw_md5, "t10k-labels-idx1-ubyte", hashlib.md5(labels).hexdigest())
    with pytest.raises(IDXError, match="10 images but 7 labels"):
        FashionMNIST(root=str(root), download=False).load("test")
    (root / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b" + b"garbage, not deflate data")
    with pytest.raises(IDXError, match="cannot be read as a \\(gzipped\\) IDX file"):
        FashionMNIST(root=str(root), download=False).load("train")


def test_bad_arguments_are_reported_by_path(fake):
    recipe = {"schedule": {"name": "linear", "timesteps": 10}, "parameterization": {"name": "eps"},
              "variance": {"name": "fixed-large"}, "weighting": {"name": "simple"}, "sampler": {"name": "ancestral"},
              "backbone": {"name": "unet", "channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
                           "attn_resolutions": [16], "dropout": 0.0},
              "data": {"name": "fashion-mnist", "image_size": 30}}
    with pytest.raises(RecipeError, match="image_size must be 28 .* or 32"):
        gendiff.build(recipe)
    recipe["data"] = {"name": "fashion-mnist", "image_size": 32, "root": str(fake[0]), "download": False}
    model = gendiff.build(recipe)
    assert model.data_shape == (1, 32, 32) and model.levels == 256


@pytest.mark.skipif(not (DEBIAN / "train-images-idx3-ubyte.gz").is_file(),
                    reason="the real Fashion-MNIST files are not installed (apt-get install dataset-fashion-mnist)")
def test_the_real_fashion_mnist_files(tmp_path):
    ds = FashionMNIST(root=str(tmp_path / "empty"), image_size=32, download=False)  # found in the Debian folder
    check_dataset(ds)
    assert ds.load("train").shape == (60_000, 1, 32, 32) and ds.load("test").shape == (10_000, 1, 32, 32)
    assert torch.equal(ds.labels("train").bincount(), torch.full((10,), 6000))
    assert torch.equal(ds.labels("test").bincount(), torch.full((10,), 1000))


def test_a_classifier_of_the_dataset_is_its_fid_feature_space(tmp_path, monkeypatch):
    """Trained once on the training split, cached, registered with torch-fidelity: real test
    images are close to the training images in its space, noise is far."""
    from gendiff.evaluation.classifier_features import Space, load_classifier
    from gendiff.evaluation.fidelity import EvaluationError, choose_features, fidelity
    from gendiff.evaluation.inputs import levels_to_pixels

    monkeypatch.setenv("GENDIFF_CACHE", str(tmp_path / "cache"))
    made = make_fake_idx(tmp_path / "root", train=256, test=100, learnable=True)
    monkeypatch.setattr(FashionMNIST, "raw_md5", made["md5"])
    monkeypatch.setattr(FashionMNIST, "system_dirs", ())
    ds = FashionMNIST(root=str(tmp_path / "root"), image_size=32, download=False)
    space = Space("fashion-mnist", 32, min_accuracy=0.9, epochs=12)
    net, path, accuracy = load_classifier(space, ds)
    assert accuracy >= 0.9 and path.is_file() and path.with_suffix(".json").is_file()
    again, _, same = load_classifier(space, ds)  # from the cache
    assert same == accuracy and all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                                       again.state_dict().values()))
    train, test = (levels_to_pixels(ds.load(s), 256) for s in ("train", "test"))
    assert choose_features(test, "fashion-mnist") == "gendiff-fashion-mnist-32" == space.name
    assert choose_features(test, "cifar10") == "inception-v3-compat"
    real = fidelity(test, train, None, space.name, dataset=ds)
    noise = fidelity(np.random.default_rng(0).integers(0, 256, test.shape, dtype=np.uint8), train, None, space.name,
                     dataset=ds)
    assert real["features"] == space.name and real["fid"] < 0.1 * noise["fid"]
    with pytest.raises(EvaluationError, match="take 32x32 grey images"):
        fidelity(test[:, :28, :28], train[:, :28, :28], None, space.name, dataset=ds)


def test_a_classifier_below_its_bar_is_refused(tmp_path, monkeypatch):
    from gendiff.errors import GendiffError
    from gendiff.evaluation.classifier_features import Space, load_classifier

    monkeypatch.setenv("GENDIFF_CACHE", str(tmp_path / "cache"))
    made = make_fake_idx(tmp_path / "root", train=100, test=50)  # pure noise: nothing to learn
    monkeypatch.setattr(MNIST, "raw_md5", made["md5"])
    monkeypatch.setattr(MNIST, "system_dirs", ())
    ds = MNIST(root=str(tmp_path / "root"), download=False)
    with pytest.raises(GendiffError, match="reached only .* test accuracy"):
        load_classifier(Space("mnist", 28, min_accuracy=0.9, epochs=1), ds)
    assert not list((tmp_path / "cache").glob("classifier-*"))  # nothing half-written cached


def gzip_bomb(path: Path, size: int) -> None:
    """A valid gzip file of ``size`` zero bytes, written in pieces (a few kB on disk)."""
    import zlib

    packer, piece = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS), b"\0" * 1_000_000
    path.write_bytes(b"".join([*(packer.compress(piece) for _ in range(size // len(piece))), packer.flush()]))


@pytest.mark.parametrize("kind, message", [
    ("zero-byte", "holds content with MD5 d41d8cd98f00b204e9800998ecf8427e, not the official"),
    ("truncated gzip", "cannot be read as a \\(gzipped\\) IDX file: the compressed stream is truncated"),
    ("gzip bomb", "decompresses to more than the official train-labels-idx1-ubyte's 60,008 bytes"),
    ("huge file", "is 10,000,000,000 bytes, larger than the official train-labels-idx1-ubyte \\(60,008 bytes"),
    ("a folder", "train-labels-idx1-ubyte is not there and download = false"),
    ("a symlink loop", "train-labels-idx1-ubyte is not there and download = false"),
])
def test_hostile_idx_files_are_refused_without_reading_them_whole(fake, kind, message):
    root, _ = fake
    target = root / "train-labels-idx1-ubyte.gz"
    whole = target.read_bytes()
    target.unlink()
    if kind == "zero-byte":
        target.write_bytes(b"")
    elif kind == "truncated gzip":
        target.write_bytes(whole[: len(whole) // 2])
    elif kind == "gzip bomb":
        gzip_bomb(target, 50_000_000)  # 50 MB inside (49 kB on disk), refused after 60,009 bytes
    elif kind == "huge file":
        with open(root / "train-labels-idx1-ubyte", "wb") as f:  # sparse: no disk used, never read
            f.truncate(10_000_000_000)
    elif kind == "a folder":
        target.mkdir()
    else:
        target.symlink_to(root / "loop")
        (root / "loop").symlink_to(target)
    with pytest.raises(DatasetUnavailableError, match=message):
        FashionMNIST(root=str(root), download=False).load("train")
