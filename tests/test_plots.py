import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from oodgen.evaluation import plots
from oodgen.errors import OodgenError


def _scores(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "cifar10": rng.normal(0.0, 1.0, 400),
        "svhn": rng.normal(1.5, 1.0, 300),
        "celeba": np.r_[rng.normal(0.5, 2.0, 250), [1e6, -1e6]],
    }


def _assert_png(path) -> None:
    assert path.stat().st_size > 0
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 0 and img.size[1] > 0


def test_plot_roc_writes_png(tmp_path):
    s = _scores()
    curves = {"svhn": (s["cifar10"], s["svhn"]), "celeba": (s["cifar10"], s["celeba"])}
    out = plots.plot_roc(curves, tmp_path / "sub" / "roc.png", "CIFAR-10 vs OOD")
    assert out == tmp_path / "sub" / "roc.png"
    _assert_png(out)


def test_plot_histograms_writes_png(tmp_path):
    out = plots.plot_histograms(_scores(), tmp_path / "hist.png", "scores", "bits/dim", in_dist_name="cifar10")
    _assert_png(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hist.png"]


def test_plot_histograms_constant_scores(tmp_path):
    out = plots.plot_histograms({"a": np.ones(10), "b": np.ones(5)}, tmp_path / "h.png", "t", "x", "a")
    _assert_png(out)


def test_shared_bins_clip_outliers_into_edge_bins():
    arrays = list(_scores().values())
    edges = plots._shared_bins(arrays, 10, 0.5, 99.5)
    pooled = np.concatenate(arrays)
    assert edges[0] == pytest.approx(np.percentile(pooled, 0.5))
    assert edges[-1] == pytest.approx(np.percentile(pooled, 99.5))
    counts, _ = np.histogram(np.clip(pooled, edges[0], edges[-1]), bins=edges)
    assert counts.sum() == pooled.size


def test_unknown_in_dist_name_raises(tmp_path):
    with pytest.raises(OodgenError, match="in_dist_name"):
        plots.plot_histograms(_scores(), tmp_path / "h.png", "t", "x", in_dist_name="mnist")
    assert not list(tmp_path.iterdir())


def test_overwrite_replaces_existing_png(tmp_path):
    path = tmp_path / "roc.png"
    path.write_bytes(b"old")
    s = _scores()
    plots.plot_roc({"svhn": (s["cifar10"], s["svhn"])}, path, "t")
    _assert_png(path)


@pytest.mark.parametrize("which", ["roc", "hist"])
def test_failed_save_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch, which):
    path = tmp_path / "plot.png"
    s = _scores()
    plots.plot_roc({"svhn": (s["cifar10"], s["svhn"])}, path, "original")
    original = path.read_bytes()

    def broken_savefig(self, fname, *args, **kwargs):
        partial = b"\x89PNG\r\n\x1a\n partial"
        if hasattr(fname, "write"):
            fname.write(partial)
        else:
            with open(fname, "wb") as f:
                f.write(partial)
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        if which == "roc":
            plots.plot_roc({"svhn": (s["cifar10"], s["svhn"])}, path, "new")
        else:
            plots.plot_histograms(s, path, "new", "x", "cifar10")
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]
    _assert_png(path)


def test_written_png_honours_umask(tmp_path):
    out = plots.plot_histograms(_scores(), tmp_path / "h.png", "t", "x", "cifar10")
    reference = tmp_path / "reference"
    reference.write_bytes(b"")
    assert out.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777


def test_nan_scores_raise(tmp_path):
    s = _scores()
    s["svhn"][3] = np.nan
    with pytest.raises(OodgenError, match="svhn scores has 1 non-finite"):
        plots.plot_histograms(s, tmp_path / "h.png", "t", "x", "cifar10")


def test_pyplot_state_untouched(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plots.plot_histograms(_scores(), tmp_path / "h.png", "t", "x", "cifar10")
    assert plt.get_fignums() == before


def test_plot_histogram_grid_has_one_panel_per_ood_set(tmp_path):
    scores = _scores()
    out = plots.plot_histogram_grid(scores, tmp_path / "grid.png", "t", "bits/dim", in_dist_name="cifar10")
    with Image.open(out) as image:
        width, height = image.size
    assert width > height  # panels laid out in a row for up to three OOD sets
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]
    with pytest.raises(OodgenError, match="in_dist_name"):
        plots.plot_histogram_grid(scores, tmp_path / "g2.png", "t", "x", in_dist_name="nope")


def test_plot_pixel_maps_puts_each_image_beside_its_map(tmp_path):
    rng = np.random.default_rng(0)
    images = {"fmnist": rng.integers(0, 256, (3, 8, 8, 1), dtype=np.uint8),
              "mnist": rng.integers(0, 256, (2, 8, 8, 1), dtype=np.uint8)}
    maps = {name: rng.normal(size=x.shape[:3]) for name, x in images.items()}
    out = plots.plot_pixel_maps(images, maps, tmp_path / "maps.png", title="ratio per pixel")
    _assert_png(out)
    with Image.open(out) as img:
        wide, high = img.size
    assert wide > 2 * high  # 3 image/map pairs side by side, 2 rows
    with pytest.raises(OodgenError):
        plots.plot_pixel_maps({}, {}, tmp_path / "empty.png", title="none")
