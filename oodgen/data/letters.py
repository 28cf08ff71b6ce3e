"""notMNIST-like letters A–J rendered from fonts: uint8 [10 * fonts, H, W, C], white on black, font-major.

Which fonts are rendered:

- `letters` (= `letters:test`), the benchmark set: exactly the MANIFEST, 72 font files installed by the Debian
  packages fonts-urw-base35, fonts-texgyre and fonts-dejavu-core (what scripts/setup.sh installs), regardless
  of what else is installed. 720 images; at image_shape (28, 28, 1) their bytes hash to LETTERS_SHA256_28x28x1
  (Pillow 13.0 with its bundled FreeType 2.14.3; other FreeType builds may round pixels differently). A
  missing or unusable manifest file is a DatasetNotFoundError, never a smaller set.
- $OODGEN_FONT_DIRS (colon-separated folders; unset or empty means unset) is the explicit opt-in for other
  fonts: it replaces the manifest with every usable font under those folders, for `letters` and `letters:all`.
- `letters:all`: every usable font under $OODGEN_FONT_DIRS, else under SYSTEM_FONT_DIRS; depends on the machine.

Usable fonts (the MANIFEST is these rules applied to the three packages): .ttf/.otf/.t1/.pfb files, sorted by
path, that load, are not a symbol/dingbat family (they map A–J to Greek letters or ornaments), have no blank
glyph and 10 distinct glyphs, and are the first file of their (family, style), as the same URW font ships as
.pfb, .t1 and .otf. Dataset.source says which fonts were used: the manifest or the folders.
"""

import functools
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from oodgen.data.dataset import Dataset
from oodgen.errors import DatasetNotFoundError

SYSTEM_FONT_DIRS = ("/usr/share/fonts", "/usr/share/texmf/fonts/opentype")
MANIFEST_PACKAGES = ("fonts-urw-base35", "fonts-texgyre", "fonts-dejavu-core")
LETTERS = "ABCDEFGHIJ"
FONT_SUFFIXES = (".ttf", ".otf", ".t1", ".pfb")
LETTERS_SHA256_28x28x1 = "2a5240819171ba413df30d9a04dd325abffc58c4e8ce608bb82b3cf6dde8cf76"
# The usable font files of MANIFEST_PACKAGES (`dpkg -L`, Debian 12 versions 20200910-7, 20180621-6, 2.37-6).
MANIFEST: tuple[str, ...] = (
    "/usr/share/fonts/X11/Type1/C059-BdIta.pfb",
    "/usr/share/fonts/X11/Type1/C059-Bold.pfb",
    "/usr/share/fonts/X11/Type1/C059-Italic.pfb",
    "/usr/share/fonts/X11/Type1/C059-Roman.pfb",
    "/usr/share/fonts/X11/Type1/NimbusMonoPS-Bold.pfb",
    "/usr/share/fonts/X11/Type1/NimbusMonoPS-BoldItalic.pfb",
    "/usr/share/fonts/X11/Type1/NimbusMonoPS-Italic.pfb",
    "/usr/share/fonts/X11/Type1/NimbusMonoPS-Regular.pfb",
    "/usr/share/fonts/X11/Type1/NimbusRoman-Bold.pfb",
    "/usr/share/fonts/X11/Type1/NimbusRoman-BoldItalic.pfb",
    "/usr/share/fonts/X11/Type1/NimbusRoman-Italic.pfb",
    "/usr/share/fonts/X11/Type1/NimbusRoman-Regular.pfb",
    "/usr/share/fonts/X11/Type1/NimbusSans-Bold.pfb",
    "/usr/share/fonts/X11/Type1/NimbusSans-BoldItalic.pfb",
    "/usr/share/fonts/X11/Type1/NimbusSans-Italic.pfb",
    "/usr/share/fonts/X11/Type1/NimbusSans-Regular.pfb",
    "/usr/share/fonts/X11/Type1/NimbusSansNarrow-Bold.pfb",
    "/usr/share/fonts/X11/Type1/NimbusSansNarrow-BoldOblique.pfb",
    "/usr/share/fonts/X11/Type1/NimbusSansNarrow-Oblique.pfb",
    "/usr/share/fonts/X11/Type1/NimbusSansNarrow-Regular.pfb",
    "/usr/share/fonts/X11/Type1/P052-Bold.pfb",
    "/usr/share/fonts/X11/Type1/P052-BoldItalic.pfb",
    "/usr/share/fonts/X11/Type1/P052-Italic.pfb",
    "/usr/share/fonts/X11/Type1/P052-Roman.pfb",
    "/usr/share/fonts/X11/Type1/URWBookman-Demi.pfb",
    "/usr/share/fonts/X11/Type1/URWBookman-DemiItalic.pfb",
    "/usr/share/fonts/X11/Type1/URWBookman-Light.pfb",
    "/usr/share/fonts/X11/Type1/URWBookman-LightItalic.pfb",
    "/usr/share/fonts/X11/Type1/URWGothic-Book.pfb",
    "/usr/share/fonts/X11/Type1/URWGothic-BookOblique.pfb",
    "/usr/share/fonts/X11/Type1/URWGothic-Demi.pfb",
    "/usr/share/fonts/X11/Type1/URWGothic-DemiOblique.pfb",
    "/usr/share/fonts/X11/Type1/Z003-MediumItalic.pfb",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyreadventor-bold.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyreadventor-bolditalic.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyreadventor-italic.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyreadventor-regular.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyrebonum-bold.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyrebonum-bolditalic.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyrebonum-italic.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyrebonum-regular.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyrechorus-mediumitalic.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyrecursor-bold.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyrecursor-bolditalic.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyrecursor-italic.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyrecursor-regular.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyreheros-bold.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyreheros-bolditalic.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyreheros-italic.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyreheros-regular.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyreheroscn-bold.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyreheroscn-bolditalic.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyreheroscn-italic.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyreheroscn-regular.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyrepagella-bold.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyrepagella-bolditalic.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyrepagella-italic.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyrepagella-regular.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyreschola-bold.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyreschola-bolditalic.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyreschola-italic.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyreschola-regular.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyretermes-bold.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyretermes-bolditalic.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyretermes-italic.otf",
    "/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyretermes-regular.otf",
)

_PACKAGE_DIRS = (
    ("/usr/share/fonts/X11/Type1/", "fonts-urw-base35"),
    ("/usr/share/fonts/truetype/dejavu/", "fonts-dejavu-core"),
    ("/usr/share/texmf/fonts/opentype/public/tex-gyre/", "fonts-texgyre"),
)
_SYMBOL_FAMILIES = ("symbol", "dingbat", "d050000l", "wingding", "webding")
_BOX = 24 / 28
_PACKAGES = " ".join(MANIFEST_PACKAGES)
_INSTALL = f"run `apt-get install {_PACKAGES}` (scripts/setup.sh does)"
_FONT_DIRS_ENV = "OODGEN_FONT_DIRS"


def user_font_dirs() -> tuple[str, ...] | None:
    """Folders in $OODGEN_FONT_DIRS (colon-separated), or None when it is unset or empty."""
    dirs = tuple(d for d in os.environ.get(_FONT_DIRS_ENV, "").split(":") if d.strip())
    return dirs or None


def font_files(dirs: tuple[str, ...]) -> tuple[str, ...]:
    """Font files under `dirs`, sorted by path."""
    found = {
        os.path.join(root, f)
        for d in dirs
        for root, _, files in os.walk(d)
        for f in files
        if f.lower().endswith(FONT_SUFFIXES)
    }
    return tuple(sorted(found))


def load(image_shape: tuple[int, int, int], all_fonts: bool = False) -> Dataset:
    """Letters at image_shape: uint8 [10 * fonts, H, W, C], font-major (A..J per font); labels int32 0–9.

    The MANIFEST unless $OODGEN_FONT_DIRS is set or `all_fonts` (`letters:all`) asks for every installed font.
    """
    height, width, channels = image_shape
    dirs = user_font_dirs()
    if dirs is not None:
        glyphs, source = _folder_glyphs(dirs, f"{_FONT_DIRS_ENV}, not the manifest", height, width)
    elif all_fonts:
        glyphs, source = _folder_glyphs(SYSTEM_FONT_DIRS, "letters:all, not the manifest", height, width)
    else:
        glyphs, source = manifest_glyphs(height, width), f"fonts:manifest of {len(MANIFEST)} files ({_PACKAGES})"
    images = np.repeat(glyphs[..., None], channels, axis=-1)
    labels = np.tile(np.arange(len(LETTERS), dtype=np.int32), len(glyphs) // len(LETTERS))
    return Dataset(images, labels, "letters:all" if all_fonts else "letters:test", source)


def manifest_glyphs(height: int, width: int) -> np.ndarray:
    """uint8 [10 * len(MANIFEST), H, W] in MANIFEST order; DatasetNotFoundError if any file is missing or unusable."""
    missing = [f for f in MANIFEST if not os.path.isfile(f)]
    if missing:
        packages = sorted({p for f in missing for d, p in _PACKAGE_DIRS if f.startswith(d)})
        owners = f" (from {', '.join(packages)})" if packages else ""
        raise DatasetNotFoundError(
            f"letters: {len(missing)} of the {len(MANIFEST)} manifest fonts are missing: {_some(missing)}{owners}; "
            f"{_INSTALL}, or set {_FONT_DIRS_ENV} to render your own fonts instead (a different set)"
        )
    glyphs, used = render_letters(MANIFEST, height, width)
    if used != MANIFEST:
        bad = [f for f in MANIFEST if f not in used]
        raise DatasetNotFoundError(
            f"letters: manifest fonts {_some(bad)} do not render 10 distinct A–J glyphs (damaged file?); "
            f"run `apt-get install --reinstall {_PACKAGES}`"
        )
    return glyphs


def _folder_glyphs(dirs: tuple[str, ...], why: str, height: int, width: int) -> tuple[np.ndarray, str]:
    """uint8 [10 * fonts, H, W] of the usable fonts under `dirs`, and the source string naming them."""
    files = font_files(dirs)
    glyphs, used = render_letters(files, height, width)
    where = ":".join(dirs)
    if not used:
        raise DatasetNotFoundError(
            f"letters: none of the {len(files)} font files under {where} ({why}) renders A–J; put .ttf/.otf/.t1/"
            f".pfb fonts there or point {_FONT_DIRS_ENV} at folders that have some; `letters` without "
            f"{_FONT_DIRS_ENV} renders the fixed manifest ({_INSTALL})"
        )
    return glyphs, f"fonts:{len(used)} fonts under {where} ({why})"


def _some(paths: list[str], shown: int = 3) -> str:
    """The first `shown` paths, comma-separated, and how many more."""
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return ", ".join(paths[:shown]) + more


@functools.lru_cache(maxsize=8)
def render_letters(files: tuple[str, ...], height: int, width: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """Glyphs uint8 [10 * fonts, H, W] of the usable fonts in `files` (one per family and style), and their paths."""
    glyphs, used, seen = [], [], set()
    for path in files:
        rendered = _render_font(path, height, width)
        if rendered is not None and rendered[0] not in seen:
            seen.add(rendered[0])
            glyphs.append(rendered[1])
            used.append(path)
    stacked = np.concatenate(glyphs) if glyphs else np.zeros((0, height, width), np.uint8)
    stacked.flags.writeable = False
    return stacked, tuple(used)


def _render_font(path: str, height: int, width: int) -> tuple[tuple[str, str], np.ndarray] | None:
    """(family, style) and uint8 [10, H, W] for A–J; None for unloadable, symbol, blank or repetitive fonts."""
    try:
        font = ImageFont.truetype(path, size=4 * max(height, width))
        name = font.getname()
        if any(s in (name[0] or "").lower() for s in _SYMBOL_FAMILIES):
            return None
        glyphs = [_render_glyph(font, letter, height, width) for letter in LETTERS]
    except (OSError, ValueError):
        return None
    if any(g is None for g in glyphs) or len({g.tobytes() for g in glyphs}) < len(LETTERS):
        return None
    return (name[0] or path, name[1] or ""), np.stack(glyphs)


def _render_glyph(font: ImageFont.FreeTypeFont, letter: str, height: int, width: int) -> np.ndarray | None:
    """uint8 [H, W]: the glyph scaled to fill the central 24/28 box (aspect kept), centred by its bounding box."""
    size = int(font.size)
    canvas = Image.new("L", (3 * size, 3 * size), 0)
    ImageDraw.Draw(canvas).text((size, size), letter, fill=255, font=font)
    bbox = canvas.getbbox()
    if bbox is None:
        return None
    glyph = canvas.crop(bbox)
    scale = min(_BOX * height / glyph.height, _BOX * width / glyph.width)
    new_w, new_h = max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))
    glyph = glyph.resize((new_w, new_h), Image.Resampling.LANCZOS)
    out = Image.new("L", (width, height), 0)
    out.paste(glyph, ((width - new_w) // 2, (height - new_h) // 2))
    array = np.asarray(out, dtype=np.uint8)
    return array if array.any() else None
