"""Lesson 09's library: export and serve (cvlab.deployment), int8 quantization (cvlab.quantization),
latency and model choice (cvlab.latency). Behaviour only, never timings: parity below a tolerance,
files written atomically, a failing exporter reported in its row, quantized accuracy near float."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import cvlab
from cvlab.deployment import (FORMATS, export_onnx, export_report, max_abs_diff, onnx_opset, onnx_session, run_onnx,
                              write_atomically)
from cvlab.latency import count_gflops, format_table, latency_table, measure_latency
from cvlab.models import CompactCNN

FAST = dict(warmup=1, runs=2)
#: deprecations these tests use on purpose (the lesson compares both exporters and both quantization
#: libraries); the rows report them, and a test checks that they do
pytestmark = [pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export"),
              pytest.mark.filterwarnings("ignore:The feature will be removed"),
              pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated"),
              pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max")]


class DataDependent(nn.Module):
    """Control flow on a tensor's values: torch.export (so the dynamo ONNX exporter) refuses it, and
    tracing silently records the one branch the example took."""

    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return -x


def leftovers(folder):
    """Temporary files an atomic write would have left behind."""
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return CompactCNN().eval()


# --- parity and timing helpers ----------------------------------------------------------------------

def test_max_abs_diff_flattens_nested_outputs_and_refuses_other_shapes():
    a = [{"boxes": torch.zeros(2, 4), "labels": torch.tensor([1, 2])}]
    b = ({}, [{"boxes": np.full((2, 4), 0.5, dtype=np.float32), "labels": np.array([1, 3])}])  # a scripted detector
    assert max_abs_diff(a, b) == 1.0
    assert max_abs_diff(torch.zeros(0, 4), torch.zeros(0, 4)) == 0.0
    with pytest.raises(ValueError, match=r"shape \(2, 4\) in one and \(3, 4\)"):
        max_abs_diff(torch.zeros(2, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="1 and 2 tensors"):
        max_abs_diff(torch.zeros(1), [torch.zeros(1), torch.zeros(1)])


def test_measure_latency_gives_ms_and_leaves_the_mode(cnn):
    cnn.train()
    timing = measure_latency(cnn, torch.rand(1, 1, 28, 28), **FAST)
    assert cnn.training
    cnn.eval()
    assert set(timing) == {"median_ms", "p90_ms", "min_ms", "runs"} and timing["runs"] == 2
    assert 0 < timing["min_ms"] <= timing["median_ms"] <= timing["p90_ms"]
    with pytest.raises(ValueError, match="runs >= 1"):
        measure_latency(cnn, torch.rand(1, 1, 28, 28), runs=0)


# --- atomic files -----------------------------------------------------------------------------------

def test_write_atomically_never_replaces_a_file_unless_asked(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_text("old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_atomically(path, lambda tmp: open(tmp, "w").write("new"))
    assert path.read_text() == "old"

    def broken(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("the exporter died")
    with pytest.raises(RuntimeError, match="died"):
        write_atomically(path, broken, overwrite=True)
    assert path.read_text() == "old" and leftovers(tmp_path) == []
    write_atomically(path, lambda tmp: open(tmp, "w").write("new"), overwrite=True)
    assert path.read_text() == "new" and leftovers(tmp_path) == []


def test_export_onnx_writes_one_file_that_onnx_runtime_runs_like_pytorch(cnn, tmp_path):
    x = torch.rand(1, 1, 28, 28)
    path = export_onnx(cnn, x, tmp_path / "sub" / "cnn.onnx", dynamo=False)
    assert sorted(p.name for p in path.parent.iterdir()) == ["cnn.onnx"]  # weights inside, nothing left over
    assert onnx_opset(path) == 17
    out = run_onnx(onnx_session(path), x)
    assert max_abs_diff(cnn(x), out) < 1e-5
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        export_onnx(cnn, x, path, dynamo=False)
    assert path.read_bytes() == before


def test_a_failing_export_leaves_no_file(tmp_path, capsys):
    with pytest.raises(Exception):
        export_onnx(DataDependent(), torch.rand(1, 3), tmp_path / "bad.onnx", dynamo=True)
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr().out == ""  # the exporter's progress lines stay off the screen


def test_dynamic_batch_runs_any_batch_size(cnn, tmp_path):
    for dynamo in (True, False):
        path = export_onnx(cnn, torch.rand(1, 1, 28, 28), tmp_path / f"cnn_{dynamo}.onnx", dynamo=dynamo,
                           dynamic_batch=True)
        x = torch.rand(5, 1, 28, 28)
        assert max_abs_diff(cnn(x), run_onnx(onnx_session(path), x)) < 1e-5
    with pytest.raises(ValueError, match="one tensor"):
        export_onnx(cnn, [torch.rand(1, 1, 28, 28)], tmp_path / "list.onnx", dynamic_batch=True)


def test_onnx_session_and_run_onnx_say_what_is_wrong(cnn, tmp_path):
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        onnx_session(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot load"):
        onnx_session(tmp_path / "junk.onnx")
    session = onnx_session(export_onnx(cnn, torch.rand(1, 1, 28, 28), tmp_path / "cnn.onnx", dynamo=False))
    with pytest.raises(ValueError, match="takes 1 input"):
        run_onnx(session, [torch.rand(1, 1, 28, 28), torch.rand(1, 1, 28, 28)])


# --- export_report: one row per format ---------------------------------------------------------------

def test_export_report_of_the_cnn(cnn, tmp_path):
    cnn.train()
    rows = export_report(cnn, torch.rand(1, 1, 28, 28), folder=tmp_path, **FAST)
    assert cnn.training, "export_report must put the model back in its mode"
    cnn.eval()
    by = {r["format"]: r for r in rows}
    assert [r["format"] for r in rows] == list(FORMATS)
    for fmt in ("eager", "jit_trace", "torch_export", "onnx_dynamo", "onnx_legacy"):
        assert by[fmt]["works"], by[fmt]["error"]
        assert by[fmt]["max_abs_diff"] < 1e-5 and by[fmt]["size_mb"] > 0 and by[fmt]["latency_ms"] > 0
    assert (by["onnx_legacy"]["opset"], by["onnx_dynamo"]["opset"]) == (17, 18)
    assert "deprecated" in by["jit_trace"]["deprecations"]
    assert "legacy TorchScript-based ONNX export" in by["onnx_legacy"]["deprecations"]
    # CompactCNN's forward checks its input in plain Python, which torch.jit.script cannot compile
    script = by["jit_script"]
    assert not script["works"] and math.isnan(script["latency_ms"])
    assert script["error"].startswith("export failed: RuntimeError") and "models.py" in script["error"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["eager.pt", "jit_trace.pt", "torch_export.pt2", "onnx_dynamo.onnx", "onnx_legacy.onnx"])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_report(cnn, torch.rand(1, 1, 28, 28), formats=["onnx_legacy"], folder=tmp_path)
    with pytest.raises(ValueError, match="unknown format"):
        export_report(cnn, torch.rand(1, 1, 28, 28), formats=["tflite"])


def test_a_failing_exporter_gives_a_one_line_row(capsys):
    rows = export_report(DataDependent(), torch.rand(1, 3), formats=["torch_export", "onnx_dynamo", "jit_trace"], **FAST)
    by = {r["format"]: r for r in rows}
    for fmt in ("torch_export", "onnx_dynamo"):
        assert not by[fmt]["works"]
        assert by[fmt]["error"].startswith("export failed: ") and "\n" not in by[fmt]["error"]
        assert "data-dependent" in by[fmt]["error"] and len(by[fmt]["error"]) < 400
    assert by["jit_trace"]["works"]  # tracing records the branch taken: it "works", and is wrong for -x
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err


def test_segmenter_exports_to_onnx_with_both_exporters():
    from cvlab.segmenters import lraspp_mobilenet_v2

    model = lraspp_mobilenet_v2(11, pretrained_backbone=False)
    rows = export_report(model, torch.rand(1, 3, 64, 64), formats=["onnx_legacy", "onnx_dynamo"], **FAST)
    for row in rows:
        assert row["works"], row["error"]
        assert row["max_abs_diff"] < 1e-4


def test_detector_exports_with_script_and_the_legacy_exporter_only():
    from cvlab.detectors import fcos_mobilenet_v2

    torch.manual_seed(0)
    model = fcos_mobilenet_v2(3, 64, pretrained_backbone=False)
    model.score_thresh = 0.05  # an untrained head scores ~0.07: keep boxes, so that there is something to compare
    image = [torch.rand(3, 64, 64)]
    with torch.no_grad():
        assert len(model.eval()(image)[0]["boxes"]) > 0
    rows = export_report(model, image, formats=["jit_trace", "jit_script", "onnx_legacy", "onnx_dynamo"], **FAST)
    by = {r["format"]: r for r in rows}
    for fmt in ("jit_script", "onnx_legacy"):
        assert by[fmt]["works"], by[fmt]["error"]
        assert by[fmt]["max_abs_diff"] < 1e-3  # box corners in pixels, scores, labels
    assert not by["jit_trace"]["works"]  # a list of dicts cannot leave a traced function
    assert not by["onnx_dynamo"]["works"] and "data-dependent" in by["onnx_dynamo"]["error"]


# --- latency table and formatting ---------------------------------------------------------------------

def test_latency_table_reads_torchvision_meta_without_weights():
    rows = latency_table({"CompactCNN": CompactCNN(in_channels=3, image_size=64), "mnv3s": "mobilenet_v3_small"},
                         (3, 64, 64), **FAST)
    assert [r["model"] for r in rows] == ["CompactCNN", "mnv3s"]
    small = rows[1]
    assert small["params_m"] == pytest.approx(2.542856) and small["acc1"] == pytest.approx(67.668)
    assert small["meta_gflops"] == pytest.approx(0.057, abs=1e-3) and small["latency_ms"] > 0
    assert math.isnan(rows[0]["acc1"]) and rows[0]["gflops"] > 0
    with pytest.raises(ValueError, match="not a torchvision classification model"):
        latency_table({"x": "resnet_nine_thousand"}, (3, 64, 64), **FAST)


def test_counted_gflops_match_torchvisions():
    from torchvision.models import get_model

    for name, meta in (("resnet18", 1.814), ("mobilenet_v3_small", 0.057)):
        assert count_gflops(get_model(name, weights=None), torch.rand(1, 3, 224, 224)) == pytest.approx(meta, rel=0.05)


def test_format_table():
    text = format_table([{"format": "onnx", "works": True, "max_abs_diff": 6e-8, "latency_ms": 0.0612,
                          "size_mb": 0.1191, "error": ""},
                         {"format": "jit_script", "works": False, "max_abs_diff": math.nan, "latency_ms": math.nan,
                          "size_mb": math.nan, "error": "export failed: RuntimeError: x"}])
    lines = text.splitlines()
    assert lines[0].split() == ["format", "works", "max_abs_diff", "latency_ms", "size_mb", "error"]
    assert lines[1].split() == ["onnx", "yes", "6.0e-08", "0.06", "0.119"]
    assert lines[2].split()[:5] == ["jit_script", "no", "-", "-", "-"] and lines[2].endswith("RuntimeError: x")
    with pytest.raises(ValueError, match="no row has"):
        format_table([{"a": 1}], ["b"])


# --- quantization -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(fmnist_root):
    """A CompactCNN trained for 1 epoch on 6,000 Fashion-MNIST images (~83 %), and test images."""
    from cvlab.datasets import fashion_mnist_tensors
    from cvlab.loaders import InMemoryLoader

    x, y = fashion_mnist_tensors("train", fmnist_root)
    xt, yt = fashion_mnist_tensors("test", fmnist_root)
    model = CompactCNN()
    cvlab.fit(model, InMemoryLoader(x[:6000], y[:6000], 64, shuffle=True), epochs=1, lr=3e-3, progress=False,
              device="cpu", seed=0)
    return model.eval(), x[-256:], xt[:2000], yt[:2000]


def test_quantized_models_stay_accurate_and_get_smaller(trained, tmp_path):
    from cvlab.quantization import QUANT_METHODS, quantization_report

    model, calibration, images, labels = trained
    rows = quantization_report(model, calibration, images, labels, folder=tmp_path, **FAST)
    by = {r["method"]: r for r in rows}
    assert [r["method"] for r in rows] == list(QUANT_METHODS)
    assert all(r["works"] for r in rows), [r["error"] for r in rows]
    assert by["torch_float32"]["accuracy"] > 75
    assert by["onnx_float32"]["accuracy"] == pytest.approx(by["torch_float32"]["accuracy"], abs=0.1)
    for method in ("torch_int8_dynamic", "torch_int8_static", "onnx_int8_dynamic", "onnx_int8_static"):
        base = by["torch_float32" if method.startswith("torch") else "onnx_float32"]
        assert abs(by[method]["accuracy"] - base["accuracy"]) < 3, method
        assert by[method]["size_mb"] < base["size_mb"], method
    assert by["torch_int8_static"]["size_mb"] < 0.5 * by["torch_float32"]["size_mb"]
    assert by["onnx_int8_static"]["size_mb"] < 0.5 * by["onnx_float32"]["size_mb"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model_int8_dynamic.onnx",
                                                          "model_int8_static.onnx"]
    assert not model.training
    with pytest.raises(FileExistsError):
        quantization_report(model, calibration, images, labels, methods=["onnx_float32"], folder=tmp_path)


def test_quantize_functions_leave_the_model_alone(trained, tmp_path):
    from cvlab.quantization import quantize_dynamic_torch, quantize_onnx_static, quantize_static_torch

    model, calibration, images, _ = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = images[:8].float() / 255
    for q in (quantize_dynamic_torch(model), quantize_static_torch(model, calibration)):
        assert q(x).shape == (8, 10)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        quantize_onnx_static(tmp_path / "none.onnx", tmp_path / "q.onnx", calibration)
