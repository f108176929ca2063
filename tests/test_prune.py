"""Pruning: requested sparsity, channel removal, plain reloadable checkpoints, the prune command and callback."""

from __future__ import annotations

import copy
import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from torch.nn.utils import prune

from tests.conftest import FAST_TRAINER, REPO, only_run_dir
from tumorlab.cli.main import main
from tumorlab.compression.prune import (
    MagnitudePruning,
    channel_prune,
    check_sparsity,
    fold_masks,
    magnitude_prune,
    make_permanent,
    weight_sparsity,
)
from tumorlab.errors import ConfigError
from tumorlab.models import CNN9, ResNet3, TimmClassifier, UNetWithClassifier
from tumorlab.models.pruned import changed_shapes, narrow_to
from tumorlab.runs.load import load_run


def _tiny_unet() -> UNetWithClassifier:
    return UNetWithClassifier(encoder_depth=3, decoder_channels=(16, 8, 4))


NETS = {
    "cnn9": (lambda: CNN9(width=8), 32),
    "resnet3": (lambda: ResNet3(width=8), 32),
    "timm_resnet18": (lambda: TimmClassifier(name="resnet18", pretrained=False), 64),
    "timm_efficientnet_b0": (lambda: TimmClassifier(name="efficientnet_b0", pretrained=False), 64),
    "unet": (_tiny_unet, 32),
}


def _outputs(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, tuple) else [out]


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
@pytest.mark.parametrize("name", ["cnn9", "unet"])
def test_magnitude_sparsity_equals_the_request(name, sparsity):
    net = NETS[name][0]()
    magnitude_prune(net, sparsity)
    zeros, total = weight_sparsity(net)
    assert zeros == round(sparsity * total)  # global_unstructured rounds amount · total to whole weights
    assert not any(hasattr(m, "weight_mask") for m in net.modules()), "masks must be folded in"


def test_magnitude_pruning_is_global_and_removes_the_smallest_weights():
    net = CNN9(width=8)
    weights = torch.cat([m.weight.detach().abs().flatten() for m, _ in _prunable(net)])
    threshold = weights.kthvalue(round(0.5 * weights.numel())).values
    magnitude_prune(net, 0.5)
    kept = torch.cat([m.weight.detach().abs().flatten() for m, _ in _prunable(net)])
    assert kept[kept > 0].min() >= threshold  # nothing below the global threshold survives, in any layer


def _prunable(net):
    from tumorlab.compression.prune import prunable_weights

    return prunable_weights(net)


def test_iterative_magnitude_pruning_keeps_earlier_zeros():
    net = CNN9(width=8)
    magnitude_prune(net, 0.3)
    before = [m.weight == 0 for m, _ in _prunable(net)]
    magnitude_prune(net, 0.7)
    after = [m.weight == 0 for m, _ in _prunable(net)]
    assert all(bool((a | ~b).all()) for a, b in zip(after, before, strict=True))
    zeros, total = weight_sparsity(net)
    assert zeros == round(0.7 * total)


@pytest.mark.parametrize("value", [1.0, -0.1, 1.5, "half"])
def test_sparsity_outside_zero_one_is_refused(value):
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        check_sparsity(value)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        magnitude_prune(CNN9(width=8), value)


def test_a_masked_model_saves_and_reloads_as_a_plain_model(tmp_path):
    net = CNN9(width=8).eval()
    magnitude_prune(net, 0.6, permanent=False)
    assert any(isinstance(h, prune.BasePruningMethod) for m in net.modules() for h in m._forward_pre_hooks.values())
    x = torch.randn(3, 3, 32, 32)
    expected = net(x)
    torch.save(fold_masks(net.state_dict()), tmp_path / "w.pt")
    fresh = CNN9(width=8).eval()
    fresh.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))  # strict: no *_orig/*_mask keys
    assert not any(m._forward_pre_hooks for m in fresh.modules())
    torch.testing.assert_close(fresh(x), expected)
    make_permanent(net)
    torch.testing.assert_close(net(x), expected)


@pytest.mark.parametrize("name", list(NETS))
def test_channel_pruning_shrinks_keeps_the_output_shape_and_trains(name):
    build, size = NETS[name]
    dense = build().eval()
    x = torch.randn(2, 3, size, size)
    pruned = channel_prune(copy.deepcopy(dense), 0.5, x)
    n_dense, n_pruned = (sum(p.numel() for p in m.parameters()) for m in (dense, pruned))
    assert n_pruned < 0.5 * n_dense  # half the filters: roughly a quarter of the weights of each conv
    with torch.no_grad():
        shapes = [o.shape for o in _outputs(dense(x))]
        assert [o.shape for o in _outputs(pruned.eval()(x))] == shapes
    pruned.train()
    optimizer = torch.optim.SGD(pruned.parameters(), lr=0.1)
    loss = sum(o.float().pow(2).mean() for o in _outputs(pruned(x)))
    loss.backward()
    before = [p.detach().clone() for p in pruned.parameters()]
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, pruned.parameters(), strict=True))
    # the structure survives a save: the dense network narrowed to the recorded shapes takes the weights
    rebuilt = narrow_to(build(), changed_shapes(dense, pruned)).eval()
    rebuilt.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        for a, b in zip(_outputs(rebuilt(x)), _outputs(pruned.eval()(x)), strict=True):
            torch.testing.assert_close(a, b)


def test_channel_pruning_names_the_layer_it_cannot_trace():
    vit = TimmClassifier(name="vit_tiny_patch16_224", pretrained=False, image_size=32)
    with pytest.raises(ConfigError, match=r"layer 'backbone' \(VisionTransformer\).*cls_token"):
        channel_prune(vit, 0.5, torch.randn(1, 3, 32, 32))


@pytest.mark.slow
def test_callback_prunes_at_its_epoch_and_saves_plain_checkpoints(lgg_phantom, tmp_path):
    # a list: a single callback dict (the sweep's form) needs lightning_cli to accept a lone callback
    callback = json.dumps(
        [{"class_path": "tumorlab.compression.prune.MagnitudePruning", "init_args": {"sparsity": 0.6, "at_epoch": 1}}]
    )
    args = ["fit", "--config", str(REPO / "configs/experiments/lgg_cnn9.yaml"), *FAST_TRAINER]
    args += ["--data.root", str(lgg_phantom), "--data.image_size", "32", "--model.net.init_args.width", "8"]
    args += ["--trainer.max_epochs", "2", f"--trainer.callbacks={callback}"]
    assert main([*args, "--run.root", str(tmp_path), "--run.name", "cb"]) == 0
    ckpts = only_run_dir(tmp_path, "cb") / "checkpoints"
    for name, expected in (("epoch00.ckpt", 0.0), ("last.ckpt", 0.6)):
        state = torch.load(ckpts / name, weights_only=False)["state_dict"]
        assert not any(k.endswith(("_orig", "_mask")) for k in state)
        net = CNN9(width=8)
        net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        zeros, total = weight_sparsity(net)
        assert zeros / total == pytest.approx(expected, abs=1 / total)


def test_callback_refuses_a_decreasing_schedule():
    with pytest.raises(ConfigError, match="increase"):
        MagnitudePruning(schedule=[0.5, 0.3])
    assert MagnitudePruning(schedule=[0.3, 0.5], at_epoch=2, every_n_epochs=2).target(5) == 0.5


def _rows(folder: Path) -> list[dict]:
    with (folder / "pruning.csv").open() as f:
        return list(csv.DictReader(f))


def _prune_folder(run: Path) -> Path:
    """The newest prune folder beside ``run`` (two in the same second are ``..._prune`` and ``..._prune_2``)."""
    return max(run.parent.glob("*_prune*"), key=lambda p: p.stat().st_mtime_ns)


def test_prune_command_writes_the_table_and_plain_reloadable_models(cnn9_run, cli):
    result = cli("prune", "--ckpt_path", str(cnn9_run), "--sparsity", "0.5", "0.3", "--iterative")
    assert result.returncode == 0, result.stderr
    folder = _prune_folder(cnn9_run)
    assert folder.parent == cnn9_run.parent  # beside the run it prunes
    rows = _rows(folder)
    assert [float(r["sparsity"]) for r in rows] == [0.3, 0.5]
    for row in rows:
        assert float(row["weight_sparsity"]) == pytest.approx(float(row["sparsity"]), abs=1e-4)
        assert int(row["nonzero"]) < int(row["params"])
        assert 0.0 <= float(row["finetuned_acc"]) <= 1.0
    assert "| 50% |" in (folder / "pruning.md").read_text() and "| 50% |" in result.stdout
    state = torch.load(folder / "s0.50/checkpoints/pruned.ckpt", weights_only=True)["state_dict"]
    assert not any(k.endswith(("_orig", "_mask")) for k in state)
    loaded = load_run(folder / "s0.50")
    assert not any(m._forward_pre_hooks for m in loaded.task.modules())
    assert weight_sparsity(loaded.task.net)[0] / weight_sparsity(loaded.task.net)[1] == pytest.approx(0.5, abs=1e-4)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.task(x), load_run(folder / "s0.50").task(x))


@pytest.mark.slow
def test_channel_pruned_run_works_with_test_predict_cam_and_export(cnn9_run, cli, tmp_path):
    result = cli("prune", "--ckpt_path", str(cnn9_run), "--sparsity", "0.5", "--method", "channel")
    assert result.returncode == 0, result.stderr
    pruned = _prune_folder(cnn9_run) / "s0.50"
    dense, loaded = load_run(cnn9_run), load_run(pruned)
    n = [sum(p.numel() for p in r.task.net.parameters()) for r in (dense, loaded)]
    assert n[1] < 0.5 * n[0]
    assert float(_rows(pruned.parent)[0]["speedup_b1"]) > 0
    assert cli("test", "--ckpt_path", str(pruned)).returncode == 0
    assert cli("predict", "--ckpt_path", str(pruned)).returncode == 0
    result = cli("cam", "--ckpt_path", str(pruned), "--score", "--out", str(tmp_path / "cams"), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    scores = json.loads((tmp_path / "cams" / "localisation.json").read_text())
    assert scores["slices"] > 0 and 0.0 <= scores["pointing_game"] <= 1.0
    result = cli("export", "--ckpt_path", str(pruned), "--out", str(tmp_path / "pruned.onnx"))
    assert result.returncode == 0, result.stderr  # export checks onnxruntime against PyTorch itself
    assert (tmp_path / "pruned.onnx").stat().st_size > 0


def _val_score(run: Path) -> tuple[str, float]:
    """The run's monitored validation metric, recomputed with a Trainer of the run's own batch limits."""
    from lightning.pytorch import Trainer

    loaded = load_run(run)
    limit = loaded.config["trainer"].get("limit_val_batches") or 1.0
    trainer = Trainer(logger=False, enable_progress_bar=False, limit_val_batches=limit, accelerator="cpu")
    (metrics,) = trainer.validate(loaded.task, datamodule=loaded.datamodule, verbose=False)
    return loaded.task.monitor, float(metrics[loaded.task.monitor])


@pytest.mark.slow
def test_finetuning_keeps_the_best_validation_epoch(cnn9_run, cli):
    args = ["prune", "--ckpt_path", str(cnn9_run), "--sparsity", "0.5", "--method", "channel"]
    assert cli(*args, "--finetune-epochs", "0").returncode == 0
    _, untuned = _val_score(_prune_folder(cnn9_run) / "s0.50")
    result = cli(*args, "--finetune-epochs", "3", "--finetune-lr", "0.01")
    assert result.returncode == 0, result.stderr
    folder = _prune_folder(cnn9_run)
    (row,) = _rows(folder)
    monitor, kept = _val_score(folder / "s0.50")
    assert monitor == "val/auroc" and 0 <= int(row["kept_epoch"]) <= 3
    assert float(row["kept_val"]) == pytest.approx(kept, abs=1e-5)  # the saved model is the one it chose
    assert kept >= untuned - 1e-6  # never worse on validation than not fine-tuning at all
    assert "learning rate 0.01" in (folder / "pruning.md").read_text()
    assert json.loads((folder / "run.json").read_text())["argv"][-2:] == ["--finetune-lr", "0.01"]


def test_prune_command_refuses_bad_input(cnn9_run, cli, tmp_path):
    result = cli("prune", "--ckpt_path", str(cnn9_run), "--sparsity", "1.0")
    assert result.returncode == 2 and "[0, 1)" in result.stderr
    result = cli("prune", "--ckpt_path", str(cnn9_run), "--sparsity", "0.5", "--finetune-lr", "0")
    assert result.returncode == 2 and "--finetune-lr" in result.stderr
    # a checkpoint of another model: the config says width 8, this copy says 16
    other = tmp_path / "other"
    shutil.copytree(cnn9_run, other)
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["model"]["init_args"]["net"]["init_args"]["width"] = 16
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    ckpt = next((other / "checkpoints").glob("epoch*.ckpt"))
    result = cli("prune", "--ckpt_path", str(ckpt), "--sparsity", "0.5")
    assert result.returncode == 2 and "another model type" in result.stderr


def test_a_pruned_model_records_trainable_and_total_parameters_apart(cnn9_run, tmp_path):
    from tumorlab.compression.study import _save

    run = load_run(cnn9_run)
    next(iter(run.task.net.parameters())).requires_grad_(False)  # a frozen first layer, as fine-tuning has
    magnitude_prune(run.task.net, 0.5)
    _save(run.task, run, tmp_path / "s0.50", "magnitude", 0.5, {}, None)
    counts = json.loads((tmp_path / "s0.50" / "run.json").read_text())["parameters"]
    params = list(run.task.parameters())
    assert counts["total"] == sum(p.numel() for p in params)
    assert counts["trainable"] == sum(p.numel() for p in params if p.requires_grad) < counts["total"]
    assert counts["nonzero"] == sum(int((p != 0).sum()) for p in params) < counts["total"]
