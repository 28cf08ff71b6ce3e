import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from oodgen.features.compression import compressed_bits, compressed_bits_per_dim, jpeg2000_data_bytes, png_data_bytes
from oodgen.errors import OodgenError


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    smooth = np.repeat(np.repeat(rng.integers(0, 256, (4, 7, 7, 1)), 4, axis=1), 4, axis=2).astype(np.uint8)
    noise = rng.integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    return np.concatenate([smooth, noise])


def _png_chunks(encoded: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 8
    while pos < len(encoded):
        (length,) = struct.unpack(">I", encoded[pos:pos + 4])
        chunks.append((encoded[pos + 4:pos + 8], encoded[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return chunks


def test_png_length_is_the_idat_payload_only(images):
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0]).save(buffer, format="PNG", compress_level=9)
        encoded = buffer.getvalue()
        chunks = _png_chunks(encoded)
        idat = b"".join(data for kind, data in chunks if kind == b"IDAT")
        # the payload is the zlib stream of the filtered scanlines: one filter byte per row
        assert len(zlib.decompress(idat)) == 28 * (28 + 1)
        # everything else is container: signature, 12 bytes per chunk, IHDR's 13 bytes, ...
        headers = 8 + 12 * len(chunks) + sum(len(data) for kind, data in chunks if kind != b"IDAT")
        assert png_data_bytes(encoded) == len(idat) == len(encoded) - headers
        assert compressed_bits(image, "png") == 8 * len(idat)


def test_jpeg2000_is_lossless_and_counts_less_than_the_codestream(images):
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0]).save(buffer, format="JPEG2000", no_jp2=True, irreversible=False)
        codestream = buffer.getvalue()
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(codestream))), image[..., 0])
        body = jpeg2000_data_bytes(codestream)
        assert 0 < body < len(codestream) - 40   # the main header alone (SIZ, COD, QCD) is > 40 bytes
        assert compressed_bits(image, "jpeg2000") == 8 * body


def test_deflate_is_the_zlib_stream_without_header_and_checksum(images):
    for image in images:
        assert compressed_bits(image, "deflate") == 8 * (len(zlib.compress(image.tobytes(), 9)) - 6)


def test_bits_per_dim_order_simple_below_noise(images):
    for codec in ("png", "jpeg2000", "deflate"):
        bpd = compressed_bits_per_dim(images, codec)
        assert bpd.shape == (8,)
        assert bpd[:4].max() < bpd[4:].min()          # piecewise-constant images compress far better
        assert 7.0 < bpd[4:].mean() < 10.0            # uniform noise: about 8 bits per dimension


def test_bad_codec_and_images():
    with pytest.raises(OodgenError, match="unknown codec 'gif'"):
        compressed_bits_per_dim(np.zeros((1, 4, 4, 1), np.uint8), "gif")
    with pytest.raises(OodgenError, match="uint8 images"):
        compressed_bits_per_dim(np.zeros((1, 4, 4, 1), np.float32), "png")
