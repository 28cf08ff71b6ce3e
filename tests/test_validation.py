import numpy as np
import pytest

from oodgen.errors import OodgenError
from oodgen.validation import check_images


def _one_line_error(fn, match):
    with pytest.raises(OodgenError, match=match) as info:
        fn()
    assert "\n" not in str(info.value)


def test_valid_uint8_images_pass_through_unchanged():
    x = np.random.default_rng(0).integers(0, 256, (3, 4, 4, 1), dtype=np.uint8)
    assert check_images(x, (4, 4, 1)) is x


def test_integer_and_whole_float_images_are_converted():
    x = np.arange(48).reshape(3, 4, 4, 1)
    np.testing.assert_array_equal(check_images(x.astype(np.int64)), x.astype(np.uint8))
    np.testing.assert_array_equal(check_images(x.astype(np.float32)), x.astype(np.uint8))


@pytest.mark.parametrize("images,shape,match", [
    (np.zeros((4, 4, 1), np.uint8), None, r"shape \(4, 4, 1\).*channel axis"),
    (np.zeros((0, 4, 4, 1), np.uint8), None, "empty"),
    (np.zeros((2, 4, 4, 3), np.uint8), (4, 4, 1), r"\(4, 4, 3\).*expects \(4, 4, 1\)"),
    (np.zeros((2, 5, 4, 1), np.uint8), (4, 4, 1), "expects"),
    (np.full((2, 4, 4, 1), 300), None, "outside 0..255"),
    (np.full((2, 4, 4, 1), -1), None, "outside 0..255"),
    (np.full((2, 4, 4, 1), np.nan), None, "NaN"),
    (np.full((2, 4, 4, 1), 0.5), None, "scaled to"),
    (np.full((2, 4, 4, 1), 100.5), None, "whole numbers"),
    (np.full((2, 4, 4, 1), "a"), None, "not numeric"),
])
def test_bad_images_give_one_line_errors(images, shape, match):
    _one_line_error(lambda: check_images(images, shape), match)
