"""ONNX export: onnxruntime matches PyTorch for every architecture; metadata is written, read and checked."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests.conftest import FAST_TRAINER, REPO, only_run_dir
from tumorlab.cli.main import main
from tumorlab.compression.export import ATOL, RTOL, check_metadata, export_onnx, read_metadata
from tumorlab.errors import ConfigError
from tumorlab.models import CNN9, ResNet3, SmallCNN, TimmClassifier, UNetWithClassifier
from tumorlab.tasks import ClassificationTask, MultiTaskTask, SegmentationTask


def _unet() -> UNetWithClassifier:
    return UNetWithClassifier(encoder_depth=3, decoder_channels=(16, 8, 4))


# architecture -> (task around it, image side)
TASKS = {
    "cnn9": (lambda: ClassificationTask(CNN9(width=8)), 32),
    "small_cnn": (lambda: ClassificationTask(SmallCNN(image_size=32, num_classes=2)), 32),
    "resnet3": (lambda: ClassificationTask(ResNet3(width=8)), 32),
    "timm_resnet18": (lambda: ClassificationTask(TimmClassifier(name="resnet18", pretrained=False)), 64),
    "timm_efficientnet_b0": (lambda: ClassificationTask(TimmClassifier(name="efficientnet_b0", pretrained=False)), 64),
    "timm_vit_tiny": (
        lambda: ClassificationTask(TimmClassifier(name="vit_tiny_patch16_224", pretrained=False, image_size=32)),
        32,
    ),
    "unet_multitask": (lambda: MultiTaskTask(_unet()), 32),
    "unet_segmentation": (lambda: SegmentationTask(_unet()), 32),
}
KIND = {"unet_multitask": "multitask", "unet_segmentation": "segmentation"}


def _metadata(name: str, size: int) -> dict:
    return {
        "task": KIND.get(name, "classification"),
        "image_size": size,
        "channels": [0, 1, 2],
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "brain_crop": False,
        "class_names": ["no_tumour", "tumour"],
    }


def _torch_outputs(task, name: str, x: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        out = task.net(x)
    if KIND.get(name) == "multitask":
        return [out.mask_logits.numpy(), out.class_logits.numpy()]
    if KIND.get(name) == "segmentation":
        return [out.mask_logits.numpy()]
    return [out.numpy()]


@pytest.mark.parametrize("name", list(TASKS))
def test_onnxruntime_matches_pytorch(name, tmp_path):
    build, size = TASKS[name]
    task = build().eval()
    path = export_onnx(task, tmp_path / "m.onnx", _metadata(name, size), dynamic_batch=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    got = session.run(None, {"image": x.numpy()})
    expected = _torch_outputs(task, name, x)
    assert len(got) == len(expected) == (2 if name == "unet_multitask" else 1)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, atol=ATOL, rtol=RTOL)
    meta = read_metadata(path)
    check_metadata(meta, path)
    assert meta["image_size"] == size and meta["class_names"] == ["no_tumour", "tumour"]
    assert meta["outputs"] == [o.name for o in session.get_outputs()]


def _rewrite(path, **changes) -> None:
    model = onnx.load(str(path))
    for entry in model.metadata_props:
        key = entry.key.removeprefix("tumorlab.")
        if key in changes:
            entry.value = json.dumps(changes[key])
    onnx.save(model, str(path))


def test_metadata_that_contradicts_the_graph_is_refused(tmp_path):
    task = ClassificationTask(CNN9(width=8)).eval()
    path = export_onnx(task, tmp_path / "m.onnx", _metadata("cnn9", 32))  # static 1×3×32×32 input
    _rewrite(path, image_size=64)
    with pytest.raises(ConfigError, match="32×32 but tumorlab.image_size is 64"):
        check_metadata(read_metadata(path), path)
    _rewrite(path, image_size=32, mean=[0.5], class_names=["a", "b", "c"])
    with pytest.raises(ConfigError, match="1 means.*3 class names"):
        check_metadata(read_metadata(path), path)


def test_an_onnx_file_without_tumorlab_metadata_is_named(tmp_path):
    path = tmp_path / "plain.onnx"
    torch.onnx.export(CNN9(width=8).eval(), (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False)
    with pytest.raises(ConfigError, match="lacks tumorlab.task"):
        read_metadata(path)


def test_export_command_on_a_run(lgg_phantom, tmp_path, cli):
    args = ["fit", "--config", str(REPO / "configs/experiments/lgg_cnn9.yaml"), *FAST_TRAINER]
    args += ["--data.root", str(lgg_phantom), "--data.image_size", "32", "--model.net.init_args.width", "8"]
    assert main([*args, "--data.channels", "[1]", "--run.root", str(tmp_path), "--run.name", "x"]) == 0
    run = only_run_dir(tmp_path, "x")
    result = cli("export", "--ckpt_path", str(run), "--dynamic-batch")
    assert result.returncode == 0, result.stderr
    meta = read_metadata(run / "model.onnx")
    # what the run's data module fed: one channel (the FLAIR slice's green), its ImageNet statistics
    assert meta["channels"] == [1] and meta["mean"] == pytest.approx([0.456]) and meta["std"] == pytest.approx([0.224])
    assert meta["image_size"] == 32 and meta["task"] == "classification"
    assert meta["session"].get_inputs()[0].shape[1] == 1
