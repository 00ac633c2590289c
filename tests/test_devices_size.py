"""measure_size on real files and real ONNX graphs with external data."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgegolf.devices.size import external_data_files, measure_size
from edgegolf.errors import BundleError, RecipeError


def _matmul_model(path, *, external: bool, rows: int = 64) -> None:
    weight = np.random.default_rng(0).standard_normal((rows, 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph)
    onnx.save_model(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=0)


def test_compressible_file_shrinks_under_zstd(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"the quick brown fox\n" * 20_000)
    report = measure_size([path])
    assert report.raw_bytes == path.stat().st_size == 400_000
    assert report.files == {"vocab.txt": 400_000}
    assert 0 < report.zstd_bytes < report.raw_bytes / 50


def test_random_bytes_do_not_shrink(tmp_path):
    path = tmp_path / "noise.bin"
    path.write_bytes(np.random.default_rng(0).bytes(100_000))
    report = measure_size([path], level=3)
    assert report.zstd_bytes > 0.99 * report.raw_bytes


def test_external_data_is_counted(tmp_path):
    model = tmp_path / "model.onnx"
    _matmul_model(model, external=True)
    data = tmp_path / "model.onnx.data"
    assert external_data_files(model) == [data]
    report = measure_size([model])
    assert report.files == {"model.onnx": model.stat().st_size, "model.onnx.data": data.stat().st_size}
    assert report.raw_bytes == model.stat().st_size + data.stat().st_size
    assert data.stat().st_size >= 64 * 16 * 4
    # naming the data file too (as a bundle's file list does) must not count it twice
    assert measure_size([model, data]).raw_bytes == report.raw_bytes


def test_inline_weights_have_no_external_files(tmp_path):
    model = tmp_path / "model.onnx"
    _matmul_model(model, external=False)
    assert external_data_files(model) == []
    assert measure_size([model]).files == {"model.onnx": model.stat().st_size}


def test_missing_external_data_is_named(tmp_path):
    model = tmp_path / "model.onnx"
    _matmul_model(model, external=True)
    (tmp_path / "model.onnx.data").unlink()
    with pytest.raises(BundleError, match="'model.onnx.data', which is missing"):
        measure_size([model])


def test_missing_file_and_bad_level(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        measure_size([tmp_path / "absent.onnx"])
    path = tmp_path / "a.txt"
    path.write_text("a")
    with pytest.raises(RecipeError, match="zstd level is 0; accepted: an integer from 1 to 22"):
        measure_size([path], level=0)


def test_same_name_in_two_folders_is_kept_apart(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "config.json").write_text("{}")
    (tmp_path / "b" / "config.json").write_text('{"x": 1}')
    report = measure_size([tmp_path / "a" / "config.json", tmp_path / "b" / "config.json"])
    assert len(report.files) == 2 and report.raw_bytes == 2 + 8
