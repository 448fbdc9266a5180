"""Small stand-ins in the real formats, for datasets that cannot be downloaded here."""

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from gendiff.datasets import md5sum


def make_fake_cifar(root: Path, per_batch: int = 4, seed: int = 0) -> tuple[Path, str, np.ndarray]:
    """A cifar-10-python.tar.gz with the official layout (5 training batches and a test batch of
    pickled dicts with b'data' (N, 3072) uint8 and b'labels'). Returns (path, md5, train data)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "cifar-10-python.tar.gz"
    train = []
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            if name != "test_batch":
                train.append(data)
            payload = pickle.dumps({b"data": data, b"labels": list(rng.integers(0, 10, per_batch))})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path, md5sum(path), np.concatenate(train).reshape(-1, 3, 32, 32)


def make_image_folder(path: Path, n: int = 6, bad: int = 2) -> Path:
    """n readable images of mixed sizes and modes (PNG and JPEG, in a subfolder too), plus
    ``bad`` unreadable files with image suffixes."""
    rng = np.random.default_rng(0)
    (path / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        w, h = (40, 24) if i % 2 else (20, 30)
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img = Image.fromarray(arr, "RGB") if i % 3 else Image.fromarray(arr[..., 0], "L")
        target = path / ("sub" if i % 2 else ".") / f"img{i}.{'png' if i % 2 else 'jpg'}"
        img.save(target)
    for i in range(bad):
        (path / f"broken{i}.png").write_bytes(b"not an image")
    (path / "notes.txt").write_text("ignored")
    return path


def digits_recipe(timesteps: int = 50, channels: int = 16, dropout: float = 0.0, samples: int = 2, **train) -> dict:
    """A complete, tiny training recipe on the embedded digits (CPU, fp32, no sample grids, a
    metrics line every step); ``train`` overrides [train] keys."""
    return {
        "schedule": {"name": "linear", "timesteps": timesteps}, "parameterization": {"name": "eps"},
        "variance": {"name": "fixed-large"}, "weighting": {"name": "simple"}, "sampler": {"name": "ancestral"},
        "backbone": {"name": "unet", "channels": channels, "channel_mult": [1, 2], "num_res_blocks": 1,
                     "attn_resolutions": [4], "dropout": dropout, "norm_groups": 8},
        "data": {"name": "digits", "flip": True},
        "train": {"lr": 1e-3, "ema_decay": 0.9, "precision": "fp32", "device": "cpu", "sample_every": 0,
                  "log_every": 1, "keep_checkpoints": 0, **train},
        "eval": {"samples": samples},
    }


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of uint8 data: magic 0x08 0x(ndim), the dimensions big-endian, the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def make_fake_idx(root: Path, train: int = 20, test: int = 10, seed: int = 0, gz: bool = True,
                  learnable: bool = False) -> dict:
    """The four IDX files of an MNIST-style dataset (28x28 images, labels 0..9), gzipped or not;
    ``learnable``: each class is a bright bar at its own place over dim noise (a classifier can
    learn it from a few hundred images). Returns {"md5": {file: MD5 of the uncompressed content},
    "train": (images, labels), "test": (images, labels)}."""
    import gzip
    import hashlib

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {"md5": {}}
    for split, n, prefix in (("train", train, "train"), ("test", test, "t10k")):
        labels = (np.arange(n) % 10).astype(np.uint8)
        if learnable:
            images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
            for i, c in enumerate(labels):
                images[i, 2 + 2 * c:4 + 2 * c, 4:24] = 220
        else:
            images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        out[split] = (images, labels)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            data = idx_bytes(array)
            out["md5"][name] = hashlib.md5(data).hexdigest()
            (root / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return out
