"""biva_core.data: every format on tiny files written here, the cache, the errors, and the real
data sets at $BIVA_DATA (skipped when unset)."""
from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import biva_core.data as data
from biva_core.data import DATASETS, celeba, cifar, folder, image_shape, load_labels, load_split, mnist

SPLITS = ("train", "valid", "test")
RNG = np.random.default_rng(0)


def load(dataset, split, root, cache, **kw):
    return load_split(dataset, split, root, cache_dir=cache, progress=False, **kw)


# ---------------------------------------------------------------- CelebA

# one id on each side of each partition edge (train <= 162770 < valid <= 182637 < test)
CELEBA_IDS = {1: 0, 162770: 0, 162771: 1, 182637: 1, 182638: 2, 202599: 2}


def write_celeba_jpegs(folder_: Path) -> dict[str, bytes]:
    folder_.mkdir(parents=True, exist_ok=True)
    files = {}
    for i in CELEBA_IDS:
        buf = io.BytesIO()
        Image.fromarray(RNG.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
        files[f"{i:06d}.jpg"] = buf.getvalue()
        (folder_ / f"{i:06d}.jpg").write_bytes(buf.getvalue())
    return files


def celeba_reference(jpeg: bytes, size: int = 64) -> np.ndarray:
    """The spec written out: decode, crop (15, 40, 163, 188), Lanczos resize; (3, size, size)."""
    image = Image.open(io.BytesIO(jpeg)).convert("RGB").crop((15, 40, 163, 188))
    return np.asarray(image.resize((size, size), Image.LANCZOS)).transpose(2, 0, 1)


@pytest.fixture
def celeba_files(tmp_path):
    return write_celeba_jpegs(tmp_path / "jpegs")


def make_celeba_layout(tmp_path: Path, layout: str, files: dict[str, bytes]) -> Path:
    root = tmp_path / "celeba_root"
    if layout == "folder":
        (root / "img_align_celeba").mkdir(parents=True)
        for name, b in files.items():
            (root / "img_align_celeba" / name).write_bytes(b)
    elif layout == "flat":
        root.mkdir()
        for name, b in files.items():
            (root / name).write_bytes(b)
    else:  # the official img_align_celeba.zip: stored, members img_align_celeba/NNNNNN.jpg
        root.mkdir()
        with zipfile.ZipFile(root / "img_align_celeba.zip", "w", zipfile.ZIP_STORED) as z:
            for name, b in files.items():
                z.writestr(f"img_align_celeba/{name}", b)
    return root


@pytest.mark.parametrize("layout", ["folder", "zip", "flat"])
def test_celeba_official_split_and_pixels(tmp_path, celeba_files, layout):
    root = make_celeba_layout(tmp_path, layout, celeba_files)
    for code, split in enumerate(SPLITS):
        names = sorted(n for n in celeba_files if CELEBA_IDS[int(n[:6])] == code)
        images = load("celeba", split, root, tmp_path / "cache")
        assert images.dtype == np.uint8 and images.shape == (len(names), 3, 64, 64)
        expected = np.stack([celeba_reference(celeba_files[n]) for n in names])
        np.testing.assert_array_equal(images, expected)


@pytest.mark.parametrize("where", [".", "Eval"])
def test_celeba_partition_file_overrides_ids(tmp_path, celeba_files, where):
    root = make_celeba_layout(tmp_path, "zip", celeba_files)
    names = sorted(celeba_files)
    (root / where).mkdir(exist_ok=True)
    # all but the last in test, the last in valid; plus a listed image that is not present
    lines = [f"{n} 2" for n in names[:-1]] + [f"{names[-1]} 1", "999999.jpg 0"]
    (root / where / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    assert len(load("celeba", "train", root, tmp_path / "c")) == 0
    np.testing.assert_array_equal(load("celeba", "valid", root, tmp_path / "c"),
                                  celeba_reference(celeba_files[names[-1]])[None])
    assert len(load("celeba", "test", root, tmp_path / "c")) == len(names) - 1


def test_celeba_partition_file_must_list_every_image(tmp_path, celeba_files):
    root = make_celeba_layout(tmp_path, "folder", celeba_files)
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    with pytest.raises(ValueError, match="not listed in list_eval_partition.txt"):
        load("celeba", "train", root, tmp_path / "c")


def test_celeba_image_size_and_limit(tmp_path, celeba_files):
    root = make_celeba_layout(tmp_path, "zip", celeba_files)
    images = load("celeba", "train", root, tmp_path / "c", image_size=32)
    assert images.shape == (2, 3, 32, 32) == (2, *image_shape("celeba", 32))
    first = celeba.decode(root / "img_align_celeba.zip", True, "train", 32, None, progress=False, limit=1)
    np.testing.assert_array_equal(first, images[:1])


def test_celeba_errors(tmp_path):
    (tmp_path / "celeba").mkdir()
    with pytest.raises(FileNotFoundError, match="img_align_celeba"):
        load("celeba", "train", tmp_path, tmp_path / "c")
    (tmp_path / "celeba" / "img_align_celeba.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="img_align_celeba.zip"):
        load("celeba", "train", tmp_path, tmp_path / "c")
    (tmp_path / "celeba" / "img_align_celeba.zip").unlink()
    (tmp_path / "celeba" / "000001.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match="000001.jpg: cannot decode"):
        load("celeba", "train", tmp_path, tmp_path / "c")


# ---------------------------------------------------------------- binarized MNIST

def binary_rows(n: int) -> np.ndarray:
    return RNG.integers(0, 2, (n, 784), dtype=np.uint8)


@pytest.fixture
def binarized(tmp_path):
    arrays = {"train": binary_rows(5), "valid": binary_rows(3), "test": binary_rows(2)}
    amat, npz = tmp_path / "amat", tmp_path / "npz"
    amat.mkdir(), npz.mkdir()
    for split, rows in arrays.items():
        (amat / f"binarized_mnist_{split}.amat").write_text(
            "".join(" ".join(map(str, row)) + " \n" for row in rows))
    np.savez(npz / "binarized_mnist_uint8.npz", **arrays)
    return arrays, amat, npz


def test_binarized_mnist_amat_and_npz(tmp_path, binarized):
    arrays, amat, npz = binarized
    for split in SPLITS:
        expected = arrays[split].reshape(-1, 1, 28, 28)
        np.testing.assert_array_equal(load("binarized_mnist", split, amat, tmp_path / "c"), expected)
        np.testing.assert_array_equal(load("binarized_mnist", split, npz, tmp_path / "c"), expected)


def test_binarized_amat_general_spelling(tmp_path):
    rows = binary_rows(2)
    path = tmp_path / "binarized_mnist_test.amat"
    path.write_text("".join("\t".join(f"{v:.1f}" for v in row) + "\n" for row in rows))
    np.testing.assert_array_equal(mnist.read_amat(path), rows.reshape(-1, 1, 28, 28))


@pytest.mark.parametrize("text, message", [
    ("0 1\n", "expected 784 values a line"),
    (" ".join(["2"] * 784) + "\n", "only 0 and 1"),
    ("0 x\n", "not a whitespace-separated table"),
])
def test_binarized_amat_malformed(tmp_path, text, message):
    path = tmp_path / "binarized_mnist_train.amat"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load("binarized_mnist", "train", tmp_path, tmp_path / "c")


def test_binarized_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="binarized_mnist_valid.amat"):
        load("binarized_mnist", "valid", tmp_path, tmp_path / "c")
    np.savez(tmp_path / "binarized_mnist.npz", training=binary_rows(1))
    with pytest.raises(ValueError, match="found training"):
        load("binarized_mnist", "train", tmp_path, tmp_path / "c")


# ---------------------------------------------------------------- MNIST / Fashion-MNIST idx

def idx_bytes(images: np.ndarray) -> bytes:
    header = b"\0\0\x08" + bytes([images.ndim]) + struct.pack(f">{images.ndim}I", *images.shape)
    return header + images.tobytes()


def write_idx(root: Path, gz: bool, n_train: int = 12, n_test: int = 4) -> tuple[np.ndarray, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    train = RNG.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    test = RNG.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    for stem, images in (("train-images-idx3-ubyte", train), ("t10k-images-idx3-ubyte", test)):
        raw = idx_bytes(images)
        if gz:
            (root / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (root / stem).write_bytes(raw)
    return train, test


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_splits(tmp_path, dataset, gz):
    train, test = write_idx(tmp_path / dataset, gz)
    # valid is the last sixth of the training file (10,000 of 60,000), train the rest
    got = {s: load(dataset, s, tmp_path, tmp_path / "c") for s in SPLITS}
    np.testing.assert_array_equal(got["train"], train[:10, None])
    np.testing.assert_array_equal(got["valid"], train[10:, None])
    np.testing.assert_array_equal(got["test"], test[:, None])
    assert got["train"].flags.writeable and got["train"].flags.c_contiguous


@pytest.mark.parametrize("dataset", ["mnist_binary", "fashion_mnist_binary"])
def test_binary_idx_sets_are_one_seeded_bernoulli_draw(tmp_path, dataset):
    """*_binary: the 8-bit split of the same files, each pixel 1 with probability intensity / 255,
    the same draw on every load and another for every split."""
    train, test = write_idx(tmp_path / dataset.removesuffix("_binary"), True)
    got = {s: load(dataset, s, tmp_path, tmp_path / "c") for s in SPLITS}
    again = load(dataset, "test", tmp_path, tmp_path / "c2")  # decoded afresh: the same draw
    np.testing.assert_array_equal(got["test"], again)
    assert set(np.unique(got["test"])) <= {0, 1} and got["test"].shape == test[:, None].shape
    assert not np.array_equal(got["train"][:len(got["valid"])], got["valid"])
    from biva_core.data.mnist import binarize
    for v in (0, 64, 191, 255):  # P(1) = v / 255 over 200k pixels: within 5 standard deviations
        p = v / 255
        rate = binarize(np.full((200_000,), v, np.uint8), seed=v).mean()
        assert abs(rate - p) <= 5 * np.sqrt(p * (1 - p) / 200_000) + 1e-12


def test_idx_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load("mnist", "test", tmp_path, tmp_path / "c")
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(b"\0\0\x0d\x03" + bytes(20))  # float magic
    with pytest.raises(ValueError, match="not an idx file of unsigned bytes"):
        load("mnist", "test", tmp_path, tmp_path / "c")
    path.write_bytes(idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-5])  # truncated
    with pytest.raises(ValueError, match="header promises"):
        load("mnist", "test", tmp_path, tmp_path / "c")


# ---------------------------------------------------------------- CIFAR-10

class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 str (SHORT_BINSTRING / BINSTRING), as the original
    cifar-10-batches-py files (Python 2, protocol 2) do."""
    dispatch = pickle._Pickler.dispatch.copy()

    def save_str8(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)
    dispatch[bytes] = save_str8


def python_batch(batch: dict, protocol: int | str) -> bytes:
    if protocol != "py2":
        return pickle.dumps(batch, protocol=protocol)
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(batch)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_cifar(root: Path, kind: str, per_batch: int = 4) -> dict[str, np.ndarray]:
    """Six batches of `per_batch` images; returns the expected images of each split."""
    images = RNG.integers(0, 256, (6 * per_batch, 3, 32, 32), dtype=np.uint8)
    labels = RNG.integers(0, 10, 6 * per_batch, dtype=np.uint8)
    folder_ = root / ("cifar-10-batches-bin" if kind == "bin" else "cifar-10-batches-py")
    folder_.mkdir(parents=True)
    for b, name in enumerate([*cifar.TRAIN_BATCHES, "test_batch"]):
        part = slice(b * per_batch, (b + 1) * per_batch)
        if kind == "bin":
            records = np.concatenate([labels[part, None], images[part].reshape(per_batch, -1)], axis=1)
            (folder_ / f"{name}.bin").write_bytes(records.tobytes())
        else:
            batch = {b"batch_label": f"batch {b}".encode(), b"labels": labels[part].tolist(),
                     b"data": images[part].reshape(per_batch, -1), b"filenames": [b"x.png"] * per_batch}
            (folder_ / name).write_bytes(python_batch(batch, "py2" if kind == "py2" else int(kind[-1])))
    train = images[:5 * per_batch]
    n_valid = len(train) // 10
    return {"train": train[:-n_valid], "valid": train[-n_valid:], "test": images[5 * per_batch:]}


@pytest.mark.parametrize("kind", ["bin", "py2", "protocol2", "protocol4", "protocol5"])
def test_cifar_formats(tmp_path, kind):
    """Binary batches; python batches as Python 2 wrote them, and as Python 3 pickles them."""
    expected = write_cifar(tmp_path / "cifar10", kind)
    for split in SPLITS:
        np.testing.assert_array_equal(load("cifar10", split, tmp_path, tmp_path / "c"), expected[split])


class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval"])
def test_cifar_refuses_malicious_pickle(tmp_path, payload):
    marker = tmp_path / "pwned"
    folder_ = tmp_path / "cifar-10-batches-py"
    folder_.mkdir()
    evil = Evil(marker) if payload == "os.system" else {b"data": eval}
    (folder_ / "test_batch").write_bytes(pickle.dumps({b"data": evil}, protocol=2))
    with pytest.raises(ValueError, match="refused to load the global"):
        load("cifar10", "test", tmp_path, tmp_path / "c")
    assert not marker.exists()


def test_cifar_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-bin/test_batch.bin"):
        load("cifar10", "test", tmp_path, tmp_path / "c")
    (tmp_path / "test_batch.bin").write_bytes(bytes(3073 * 2 + 7))
    with pytest.raises(ValueError, match="3073-byte records"):
        load("cifar10", "test", tmp_path, tmp_path / "c")
    (tmp_path / "test_batch.bin").unlink()
    (tmp_path / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((2, 10), np.uint8)}))
    with pytest.raises(ValueError, match=r"uint8 array \(N, 3072\)"):
        load("cifar10", "test", tmp_path, tmp_path / "c")


# ---------------------------------------------------------------- any folder of images

def write_folder(root: Path) -> dict[str, np.ndarray]:
    """Images in several modes and formats; returns relative path -> expected (3, 8, 8)."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    expected = {}

    def save(rel, image, rgb):
        image.save(root / rel, **({"lossless": True} if rel.endswith(".webp") else {}))
        expected[rel] = np.broadcast_to(np.array(rgb, np.uint8)[:, None, None], (3, 8, 8))
    save("gray.png", Image.new("L", (20, 12), 100), (100, 100, 100))
    save("sub/rgba.png", Image.new("RGBA", (10, 10), (10, 20, 30, 0)), (255, 255, 255))  # transparent -> white
    save("sub/opaque.webp", Image.new("RGBA", (9, 9), (200, 0, 0, 255)), (200, 0, 0))
    save("sub/deeper/palette.gif", Image.new("P", (16, 16), 0), (0, 0, 0))
    save("photo.bmp", Image.new("RGB", (30, 16), (0, 90, 180)), (0, 90, 180))
    save("deep16.png", Image.fromarray(np.full((8, 8), 65535, np.uint16)), (255, 255, 255))
    # centre crop: a 24 x 8 image whose outer thirds are red and centre third blue -> all blue
    wide = np.zeros((8, 24, 3), np.uint8)
    wide[:, :8, 0] = wide[:, 16:, 0] = 255
    wide[:, 8:16, 2] = 255
    save("wide.PNG", Image.fromarray(wide), (0, 0, 255))
    for i in range(30):  # enough images that every split gets some
        rel = f"sub/many{i:02d}.{'jpg' if i % 3 == 0 else 'png'}"
        save(rel, Image.new("RGB", (8, 8), (i * 8, 0, 0)), (i * 8, 0, 0))
    (root / ".hidden" / "skip.png").write_bytes(b"not an image")
    (root / "._appledouble.jpg").write_bytes(b"not an image")
    (root / "notes.txt").write_text("not an image")
    return expected


def test_folder_modes_crops_and_hash_split(tmp_path):
    root = tmp_path / "photos"
    expected = write_folder(root)
    got = {s: load("folder", s, root, tmp_path / "c", image_size=8) for s in SPLITS}
    assert all(len(got[s]) > 0 for s in SPLITS)
    assert sum(len(a) for a in got.values()) == len(expected)
    for split in SPLITS:
        rels = sorted(r for r in expected if folder.split_of(r) == split)
        for rel, image in zip(rels, got[split]):
            tolerance = 4 if rel.endswith(".jpg") else 0  # lossy JPEG: a few levels off
            assert np.abs(image.astype(int) - expected[rel]).max() <= tolerance, rel
    assert got["train"].shape[1:] == image_shape("folder", 8)


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images in"):
        load("folder", "train", tmp_path / "empty", tmp_path / "c")
    (tmp_path / "bad").mkdir()
    for i in range(40):
        (tmp_path / "bad" / f"{i}.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="cannot decode image"):
        load("folder", "train", tmp_path / "bad", tmp_path / "c")


# ---------------------------------------------------------------- cache

def test_second_load_reads_cache(tmp_path, monkeypatch):
    train, _ = write_idx(tmp_path / "mnist", gz=True)
    first = load("mnist", "train", tmp_path, tmp_path / "c")
    assert [p.suffix for p in (tmp_path / "c").iterdir()] == [".npy"]  # no temporary file left
    monkeypatch.setattr(mnist, "read_idx", lambda path: pytest.fail("decoded again"))
    np.testing.assert_array_equal(load("mnist", "train", tmp_path, tmp_path / "c"), first)
    # changed source files make a new cache entry
    gz = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    os.utime(gz, ns=(time.time_ns(), time.time_ns() + 10 ** 9))
    with pytest.raises(pytest.fail.Exception, match="decoded again"):
        load("mnist", "train", tmp_path, tmp_path / "c")


def test_cache_folder_from_env_and_corrupt_entry(tmp_path, monkeypatch):
    write_idx(tmp_path / "mnist", gz=False)
    monkeypatch.setenv("BIVA_CACHE", str(tmp_path / "env_cache"))
    monkeypatch.setenv("BIVA_DATA", str(tmp_path))
    first = load_split("mnist", "test", progress=False)
    (entry,) = (tmp_path / "env_cache").iterdir()
    entry.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable data cache"):
        np.testing.assert_array_equal(load_split("mnist", "test", progress=False), first)
    np.testing.assert_array_equal(np.load(entry), first)  # rewritten


def test_unwritable_cache_still_loads(tmp_path):
    write_idx(tmp_path / "mnist", gz=False)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="could not write the data cache"):
        assert load("mnist", "test", tmp_path, blocker / "cache").shape == (4, 1, 28, 28)


# ---------------------------------------------------------------- names and folders

def test_bad_names_and_folders(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        load("svhn", "train", tmp_path, tmp_path / "c")
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        load("mnist", "validation", tmp_path, tmp_path / "c")
    with pytest.raises(ValueError, match="image_size"):
        load("celeba", "train", tmp_path, tmp_path / "c", image_size=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load("mnist", "train", tmp_path / "nowhere", tmp_path / "c")
    monkeypatch.delenv("BIVA_DATA", raising=False)
    with pytest.raises(ValueError, match=r"BIVA_DATA"):
        load_split("mnist", "train", progress=False)


def test_dataset_subfolder_or_folder_itself(tmp_path):
    write_idx(tmp_path / "fashion_mnist", gz=True)
    a = load("fashion_mnist", "test", tmp_path, tmp_path / "c")
    b = load("fashion_mnist", "test", tmp_path / "fashion_mnist", tmp_path / "c")
    np.testing.assert_array_equal(a, b)
    assert data.dataset_root("fashion_mnist", tmp_path) == tmp_path / "fashion_mnist"
    assert [image_shape(d) for d in DATASETS] == [(3, 64, 64), (1, 28, 28), (1, 28, 28), (1, 28, 28),
                                                  (1, 28, 28), (1, 28, 28), (3, 32, 32), (3, 64, 64)]


# ---------------------------------------------------------------- the real data at $BIVA_DATA

REAL = os.environ.get("BIVA_DATA")
needs_real = pytest.mark.skipif(not REAL, reason="set BIVA_DATA to the shared data folder")


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("real_cache")


@needs_real
@pytest.mark.parametrize("dataset, counts, top", [
    ("binarized_mnist", (50000, 10000, 10000), 1),
    ("mnist", (50000, 10000, 10000), 255),
    ("fashion_mnist", (50000, 10000, 10000), 255),
])
def test_real_mnists(real_cache, dataset, counts, top):
    for split, n in zip(SPLITS, counts):
        images = load(dataset, split, REAL, real_cache)
        assert images.shape == (n, 1, 28, 28) and images.dtype == np.uint8
        assert images.min() == 0 and images.max() == top


@needs_real
def test_real_celeba(real_cache):
    """The whole 20k subset decoded once (about 25 s on 2 cores) into a temporary cache."""
    root = Path(REAL) / "celeba"
    manifest = [line.split("\t") for line in (root / "manifest.tsv").read_text().splitlines()[1:]]
    by_manifest = {name.rsplit("/", 1)[1]: int(code) for name, _, _, code in manifest}
    assert all(celeba.partition_by_id(n) == c for n, c in by_manifest.items())
    zpath = root / "img_align_celeba_subset20k.zip"
    for code, (split, n) in enumerate(zip(SPLITS, (15979, 2044, 1977))):
        images = load("celeba", split, REAL, real_cache)
        assert images.shape == (n, 3, 64, 64) and images.dtype == np.uint8
        assert images.min() == 0 and images.max() == 255
        names = sorted(name for name, c in by_manifest.items() if c == code)
        with zipfile.ZipFile(zpath) as z:
            for i in (0, n // 2, n - 1):
                ref = celeba_reference(z.read(f"img_align_celeba/{names[i]}"))
                np.testing.assert_array_equal(images[i], ref)
    start = time.perf_counter()
    again = load("celeba", "train", root, real_cache)  # the celeba folder itself: same cache entry
    assert time.perf_counter() - start < 5 and again.shape == (15979, 3, 64, 64)


def test_labels_follow_the_image_split(tmp_path):
    """train / valid are the first 5/6 and the last 1/6 of the training labels, test the t10k file."""
    labels = {"train-labels-idx1-ubyte": np.arange(12, dtype=np.uint8) % 10,
              "t10k-labels-idx1-ubyte": np.array([7, 2, 1, 0], np.uint8)}
    for stem, y in labels.items():
        with gzip.open(tmp_path / f"{stem}.gz", "wb") as f:
            f.write(b"\0\0\x08\x01" + struct.pack(">I", len(y)) + y.tobytes())
    assert load_labels("mnist", "train", tmp_path).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert load_labels("fashion_mnist_binary", "valid", tmp_path).tolist() == [0, 1]
    assert load_labels("mnist", "test", tmp_path).tolist() == [7, 2, 1, 0]
    with pytest.raises(ValueError, match="no class labels"):
        load_labels("celeba", "train", tmp_path)


@needs_real
def test_real_mnist_labels():
    """The test set's class counts are MNIST's published ones; each split has a label per image."""
    y = {split: load_labels("mnist", split, REAL) for split in SPLITS}
    assert [len(y[s]) for s in SPLITS] == [50000, 10000, 10000]
    assert np.bincount(y["test"]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
