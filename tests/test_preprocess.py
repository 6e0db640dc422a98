"""Image preprocessing: the pixel-table paths give exactly the float path's tensor; the resize filters."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_runtime.engines.base import quantize
from edge_runtime.manifest import ImagePreprocessing, Quantization
from edge_runtime.preprocess import PixelTable, image_to_input, image_to_table_input, resize

IMAGE = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "spec, scale, zero_point, dtype, kind",
    [
        (ImagePreprocessing(size=[32, 32], mean=[0.0] * 3, std=[1.0] * 3), 1.0, 0, "uint8", "identity"),
        # the shipped vision model: (p - 127) / 128 at scale 1/128, zero point -1 is p - 128
        (ImagePreprocessing(size=[32, 32], mean=[127.0] * 3, std=[128.0] * 3), 1 / 128, -1, "int8", "flip_top_bit"),
        (ImagePreprocessing(size=[32, 32], mean=[0.0] * 3, std=[255.0] * 3), 1 / 255, -128, "int8", "flip_top_bit"),
        (ImagePreprocessing(size=[32, 32]), 0.0078, 3, "int8", "shared"),
        (
            ImagePreprocessing(size=[24, 32], mean=[123.7, 116.3, 103.5], std=[58.4, 57.1, 57.4], layout="nchw"),
            0.0186,
            -14,
            "int8",
            "per_channel",
        ),
        (ImagePreprocessing(size=[28, 28], color="gray", mean=[0.0], std=[255.0]), 1 / 255, 0, "uint8", "identity"),
        (ImagePreprocessing(size=[20, 20], channel_order="BGR", resize="crop"), 1 / 128, 0, "int8", "shared"),
        # float inputs (ONNX artifacts with QDQ inside): the table holds the normalised float32 values
        (ImagePreprocessing(size=[32, 32], mean=[127.0] * 3, std=[128.0] * 3), None, None, "float32", "shared"),
        (
            ImagePreprocessing(size=[24, 32], mean=[123.7, 116.3, 103.5], std=[58.4, 57.1, 57.4], layout="nchw"),
            None,
            None,
            "float32",
            "per_channel",
        ),
        (ImagePreprocessing(size=[28, 28], color="gray", mean=[0.0], std=[1.0]), None, None, "float32", "shared"),
    ],
)
def test_pixel_table_gives_exactly_the_float_paths_tensor(spec, scale, zero_point, dtype, kind):
    q = None if scale is None else Quantization([scale], [zero_point])
    table = PixelTable(spec, q, dtype)
    assert table.kind == kind
    want = quantize(image_to_input(IMAGE, spec), q, dtype)
    got = image_to_table_input(IMAGE, spec, table)
    assert got.dtype == want.dtype and got.shape == want.shape == tuple(spec.input_shape()[1:])
    assert np.array_equal(got, want)


@pytest.mark.parametrize("mode", ["squash", "crop", "letterbox"])
def test_bilinear_filter_resamples_with_opencvs_bilinear_and_area_averages_by_default(mode):
    frame = cv2.resize(IMAGE, (640, 480), interpolation=cv2.INTER_NEAREST)
    bilinear = resize(frame, (100, 100), mode, "bilinear")
    area = resize(frame, (100, 100), mode)
    assert bilinear.shape == area.shape == (100, 100, 3)
    if mode == "squash":
        assert np.array_equal(bilinear, cv2.resize(frame, (100, 100), interpolation=cv2.INTER_LINEAR))
    # the two filters differ on a noisy image (area averages what bilinear skips), by a few levels on average
    assert 1.0 < np.abs(bilinear.astype(int) - area.astype(int)).mean() < 60.0
    enlarged = [resize(IMAGE[:10, :10], (40, 40), mode, f) for f in ("area", "bilinear")]
    assert np.array_equal(*enlarged)  # enlarging is bilinear either way
    with pytest.raises(ValueError, match="resize filter"):
        resize(frame, (100, 100), mode, "lanczos")


def test_the_manifests_filter_drives_the_model_input():
    spec = ImagePreprocessing(size=[50, 50], resize_filter="bilinear")
    want = (cv2.resize(IMAGE, (50, 50), interpolation=cv2.INTER_LINEAR).astype(np.float32) - 127.5) / 127.5
    assert np.allclose(image_to_input(IMAGE, spec), want)
