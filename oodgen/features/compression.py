"""Lossless compressed lengths of images, counting only the image data (no container headers).

Input complexity (Serrà et al. 2020) subtracts L(x), the length of x under a lossless codec, from the
model's NLL. Headers are the same size for every image of a shape but inflate L (MNIST PNG: 2.80 instead
of 2.22 bits/dim), so only the compressed payload is counted:

  png       Pillow at zlib level 9; the summed data of the IDAT chunks (no signature, IHDR, IEND, CRCs)
  jpeg2000  Pillow/OpenJPEG, reversible 5/3 wavelet (lossless), raw codestream; the bytes after each SOD
            marker (tile-part bodies, no main or tile-part headers)
  deflate   zlib level 9 on the raw pixel bytes in raster order, raw deflate stream (no zlib header)
"""

import io
import struct
import zlib

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from oodgen.errors import OodgenError

CODECS = ("png", "jpeg2000", "deflate")


def _pil_image(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def png_data_bytes(encoded: bytes) -> int:
    """Summed payload length of the IDAT chunks of a PNG file."""
    if encoded[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG stream")
    total, pos = 0, 8
    while pos < len(encoded):
        length, kind = struct.unpack(">I4s", encoded[pos:pos + 8])
        if kind == b"IDAT":
            total += length
        pos += 12 + length  # length, type, data, CRC
    return total


def jpeg2000_data_bytes(codestream: bytes) -> int:
    """Summed tile-part bodies (after each SOD marker) of a raw JPEG-2000 codestream."""
    if codestream[:2] != b"\xff\x4f":
        raise ValueError("not a raw JPEG-2000 codestream (no SOC marker)")
    total, pos = 0, 2
    while pos < len(codestream):
        marker = codestream[pos:pos + 2]
        if marker == b"\xff\xd9":                                   # EOC
            break
        if marker == b"\xff\x90":                                   # SOT: Lsot, Isot, Psot, ...
            psot = struct.unpack(">I", codestream[pos + 6:pos + 10])[0]
            end = pos + psot if psot else codestream.rindex(b"\xff\xd9")
            sod = pos + 2 + struct.unpack(">H", codestream[pos + 2:pos + 4])[0]
            while codestream[sod:sod + 2] != b"\xff\x93":           # tile-part header markers
                sod += 2 + struct.unpack(">H", codestream[sod + 2:sod + 4])[0]
            total += end - (sod + 2)
            pos = end
        else:                                                       # main-header marker segment
            pos += 2 + struct.unpack(">H", codestream[pos + 2:pos + 4])[0]
    return total


def compressed_bits(image: np.ndarray, codec: str) -> int:
    """Length in bits of one uint8 image [H, W, C] (C = 1 or 3) under `codec`, image data only."""
    if codec == "png":
        buffer = io.BytesIO()
        _pil_image(image).save(buffer, format="PNG", compress_level=9)
        return 8 * png_data_bytes(buffer.getvalue())
    if codec == "jpeg2000":
        buffer = io.BytesIO()
        _pil_image(image).save(buffer, format="JPEG2000", no_jp2=True, irreversible=False)
        return 8 * jpeg2000_data_bytes(buffer.getvalue())
    if codec == "deflate":
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        return 8 * len(compressor.compress(np.ascontiguousarray(image).tobytes()) + compressor.flush())
    raise OodgenError(f"unknown codec {codec!r}; choose from {CODECS}")


def compressed_bits_per_dim(images: np.ndarray, codec: str, desc: str | None = None) -> np.ndarray:
    """L(x) / D for uint8 images [N, H, W, C]: f64[N], bits per dimension (D = H·W·C)."""
    if codec not in CODECS:
        raise OodgenError(f"unknown codec {codec!r}; choose from {CODECS}")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise OodgenError(f"compression needs uint8 images [N, H, W, 1 or 3]; got {images.dtype} {images.shape}")
    dims = images[0].size
    iterator = tqdm(images, desc=desc or f"compress ({codec})", unit="img", leave=False)
    return np.array([compressed_bits(image, codec) / dims for image in iterator])
