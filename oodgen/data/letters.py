"""notMNIST-like letters A–J rendered from installed fonts: uint8 [10 * fonts, H, W, C], white on black.

Fonts: .ttf/.otf/.t1/.pfb files under $OODGEN_FONT_DIRS (colon-separated) or DEFAULT_FONT_DIRS, sorted by path.
Skipped: fonts that fail to load, symbol/dingbat families (they map A–J to Greek letters or ornaments), fonts
with a blank glyph or fewer than 10 distinct glyphs, and later files of an already used (family, style), such
as the same URW font shipped as .pfb, .t1 and .otf.
"""

import functools
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from oodgen.data.dataset import Dataset
from oodgen.errors import DatasetNotFoundError

DEFAULT_FONT_DIRS = ("/usr/share/fonts", "/usr/share/texmf/fonts/opentype")
LETTERS = "ABCDEFGHIJ"
FONT_SUFFIXES = (".ttf", ".otf", ".t1", ".pfb")
_SYMBOL_FAMILIES = ("symbol", "dingbat", "d050000l", "wingding", "webding")
_BOX = 24 / 28
_INSTALL = (
    "run `apt-get install fonts-urw-base35 fonts-texgyre fonts-dejavu-core` "
    "or set OODGEN_FONT_DIRS (colon-separated) to folders of .ttf/.otf/.t1/.pfb fonts"
)


def font_dirs() -> tuple[str, ...]:
    """Folders searched for fonts: $OODGEN_FONT_DIRS (colon-separated) or DEFAULT_FONT_DIRS."""
    value = os.environ.get("OODGEN_FONT_DIRS")
    return tuple(d for d in value.split(":") if d) if value is not None else DEFAULT_FONT_DIRS


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


def load(image_shape: tuple[int, int, int]) -> Dataset:
    """Letters at image_shape: uint8 [10 * fonts, H, W, C], font-major (A..J per font); labels int32 0–9."""
    dirs = font_dirs()
    files = font_files(dirs)
    height, width, channels = image_shape
    glyphs, fonts = render_letters(files, height, width)
    if not fonts:
        where = ":".join(dirs) or "(no folders)"
        raise DatasetNotFoundError(f"letters: none of the {len(files)} font files in {where} renders A–J; {_INSTALL}")
    images = np.repeat(glyphs[..., None], channels, axis=-1)
    labels = np.tile(np.arange(len(LETTERS), dtype=np.int32), len(fonts))
    return Dataset(images, labels, "letters:test", f"fonts:{len(fonts)} fonts under {':'.join(dirs)}")


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
