import numpy as np
import pytest

from ftuseg.errors import RLEError
from ftuseg.rle import decode_rle, encode_rle


def reference_encode(mask: np.ndarray) -> str:
    """The competition's reference encoder (Kaggle notebook), loop-free but written independently."""
    pixels = mask.T.flatten()
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def test_known_small_example_is_column_major_and_one_based():
    mask = np.array([[1, 0, 0],
                     [1, 0, 1]], dtype=np.uint8)
    # column-major numbering: (0,0)=1, (1,0)=2, (0,1)=3, (1,1)=4, (0,2)=5, (1,2)=6
    assert encode_rle(mask) == "1 2 6 1"
    np.testing.assert_array_equal(decode_rle("1 2 6 1", (2, 3)), mask)


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (64, 65), (300, 200)])
def test_matches_reference_and_round_trips(shape):
    rng = np.random.default_rng(sum(shape))
    mask = (rng.random(shape) < 0.3).astype(np.uint8)
    rle = encode_rle(mask)
    assert rle == reference_encode(mask)
    np.testing.assert_array_equal(decode_rle(rle, shape), mask)


def test_empty_and_full_masks():
    assert encode_rle(np.zeros((5, 4), np.uint8)) == ""
    assert encode_rle(np.ones((5, 4), np.uint8)) == "1 20"
    assert decode_rle("", (5, 4)).sum() == 0
    assert decode_rle(float("nan"), (5, 4)).sum() == 0
    np.testing.assert_array_equal(decode_rle(None, (5, 4)), np.zeros((5, 4), np.uint8))


def test_nonzero_values_count_as_foreground():
    mask = np.array([[0, 255], [3, 0]], dtype=np.uint8)
    assert encode_rle(mask) == "2 2"


@pytest.mark.parametrize(
    "rle, fragment",
    [
        ("1 2 3", "odd number"),
        ("1 x", "non-integer"),
        ("1.5 2", "non-integer"),
        ("0 2", "start 0"),
        ("-3 2", "start -3"),
        ("1 0", "length 0"),
        ("15 10", "past the end"),
        ("10 2 1 2", "unsorted"),
        ("1 5 3 2", "overlapping"),
    ],
)
def test_malformed_rle_is_rejected_with_a_clear_message(rle, fragment):
    with pytest.raises(RLEError, match=fragment):
        decode_rle(rle, (4, 5))


def test_decode_output_is_contiguous_uint8():
    out = decode_rle("1 3", (3, 3))
    assert out.dtype == np.uint8 and out.flags.c_contiguous
