"""Fine-tuning as the field does it, through the command: a run from real ImageNet weights that needs them
never again, init_from, gradual unfreezing, the plateau mode, sync-BN and layer-wise learning-rate decay."""

from __future__ import annotations

import copy
import functools
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import REPO
from tumorlab.errors import ConfigError

LITE0 = str(REPO / "configs" / "experiments" / "mri4_lite0_transfer.yaml")
SMALL = ["--data.image_size", "32", "--data.batch_size", "4", "--data.num_workers", "0", "--trainer.logger", "false",
         "--trainer.accelerator", "cpu", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
         "--trainer.limit_test_batches", "1", "--run.report", "false"]  # fmt: skip


def _fit_dir(root: Path, name: str) -> Path:
    (run,) = [p for p in (root / name).iterdir() if p.name.endswith("_fit")]
    return run


@pytest.fixture(scope="module")
def lite0_run(tmp_path_factory, folders_phantom, lite_weights):
    """A 2-epoch fit of the Lite0 transfer config from a copy of the imported ImageNet file (gradual unfreezing
    after epoch 0); the copy is then moved away, so nothing later can read it."""
    from tumorlab.cli.main import main

    root = tmp_path_factory.mktemp("lite0_run")
    weights = root / "w" / "tf_efficientnet_lite0.safetensors"
    weights.parent.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(lite_weights / f"tf_efficientnet_lite0{suffix}", weights.with_suffix(suffix))
    argv = ["fit", "--config", LITE0, "--data.root", str(folders_phantom), *SMALL, "--trainer.max_epochs", "2",
            "--model.net.init_args.weights_file", str(weights), "--trainer.callbacks.init_args.head_epochs", "1",
            "--run.root", str(root / "runs"), "--run.name", "lite0"]  # fmt: skip
    assert main(argv) == 0
    fit = _fit_dir(root / "runs", "lite0")
    moved = root / "elsewhere"
    shutil.move(str(weights.parent), moved)
    return {"fit": fit, "root": root / "runs", "weights": moved / weights.name, "argv": argv}


@pytest.mark.slow
def test_a_run_needs_its_starting_weights_never_again(lite0_run, cli, tmp_path, folders_phantom):
    fit, root = lite0_run["fit"], lite0_run["root"]
    assert not Path(yaml.safe_load((fit / "config.yaml").read_text())["model"]["init_args"]["net"]["init_args"]
                    ["weights_file"]).exists()  # fmt: skip
    for command in ("test", "validate", "predict"):
        r = cli(command, "--ckpt_path", str(fit))
        assert r.returncode == 0, r.stderr
    image = str(sorted((folders_phantom / "Testing").rglob("*.jpg"))[0])
    r = cli("cam", "--ckpt_path", str(fit), "--images", image, "--out", str(tmp_path / "cam"), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert list((tmp_path / "cam").glob("*.png"))
    r = cli("export", "--ckpt_path", str(fit), "--out", str(tmp_path / "m.onnx"))
    assert r.returncode == 0, r.stderr
    r = cli("prune", "--ckpt_path", str(fit), "--sparsity", "0.5", "--finetune-epochs", "0")
    assert r.returncode == 0, r.stderr
    resumed = cli(*lite0_run["argv"][:-4], "--run.root", str(root), "--run.name", "lite0", "--ckpt_path", "last",
                  "--trainer.max_epochs", "3")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    resumed_dir = max((p for p in (root / "lite0").iterdir() if p.name.endswith("_fit")), key=lambda p: p.name)
    assert json.loads((resumed_dir / "run.json").read_text())["epochs"] == 3


@pytest.mark.slow
def test_gradual_unfreezing_opens_the_backbone_after_the_head_epochs(lite0_run):
    fit = lite0_run["fit"]
    checkpoint = torch.load(fit / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    groups = checkpoint["optimizer_states"][0]["param_groups"]
    assert len(groups) == 2 and groups[1]["lr"] == pytest.approx(groups[0]["lr"] * 0.1)
    state = checkpoint["callbacks"]
    (finetuning,) = [v for k, v in state.items() if "GradualUnfreezing" in k]
    assert finetuning["internal_optimizer_metadata"], "BaseFinetuning keeps the added group for a resume"


@pytest.mark.slow
def test_run_json_counts_what_trains_after_the_unfreezing_callback_froze_it(lite0_run):
    """The parameters recorded are those fit trains: the head alone at the start (the callback froze the
    backbone in its setup), everything at the end; the split counts are those of the data module."""
    record = json.loads((lite0_run["fit"] / "run.json").read_text())
    params = record["parameters"]
    state = torch.load(lite0_run["fit"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    head = sum(t.numel() for k, t in state["state_dict"].items() if k.startswith("net.head."))
    assert params["trainable"] == head == 1280 * 4 + 4  # the head of 4 classes, nothing of the backbone
    assert params["trainable_at_end"] == params["total"]
    splits = record["splits"]
    assert splits["units"] == {"samples": "images", "patients": "duplicate groups"}
    assert {"train", "val", "test"} <= set(splits) and all(
        sum(splits[k]["classes"].values()) == splits[k]["samples"] for k in ("train", "val", "test")
    )


def test_the_gradual_schedule():
    from tumorlab.training.finetuning import GradualUnfreezing

    groups = GradualUnfreezing(head_epochs=2, mode="groups", groups_per_epoch=3)
    assert [groups.groups_open(e, 8) for e in range(6)] == [0, 0, 3, 6, 8, 8]
    assert [GradualUnfreezing(head_epochs=1).groups_open(e, 8) for e in range(3)] == [0, 8, 8]
    with pytest.raises(ConfigError, match="head_epochs >= 1"):
        GradualUnfreezing(head_epochs=0)


@pytest.mark.slow
def test_init_from_loads_exactly_the_matching_tensors_and_lr_zero_tests_as_the_source(
    lite0_run, cli, folders_phantom, tmp_path
):
    from tumorlab.models import TimmClassifier, UNetWithClassifier
    from tumorlab.tasks import ClassificationTask, MultiTaskTask

    fit = lite0_run["fit"]
    state = torch.load(json.loads((fit / "run.json").read_text())["best_checkpoint"], weights_only=True)["state_dict"]
    binary = ClassificationTask(TimmClassifier("tf_efficientnet_lite0", num_classes=2), init_from=str(fit))
    own = binary.state_dict()
    backbone = [k for k in own if k.startswith("net.backbone.")]
    assert backbone and all(torch.equal(own[k], state[k]) for k in backbone)
    assert own["net.head.1.weight"].shape == (2, 1280) and not torch.equal(
        own["net.head.1.bias"][:2], state["net.head.1.bias"][:2]
    )
    unet = MultiTaskTask(UNetWithClassifier("tu-tf_efficientnet_lite0", encoder_depth=3, decoder_channels=(8, 4, 2)),
                         init_from=str(fit))  # fmt: skip
    encoder = {k: v for k, v in unet.state_dict().items() if k.startswith("net.net.encoder.model.")}
    assert encoder and all(
        torch.equal(v, state["net.backbone." + k[len("net.net.encoder.model.") :]]) for k, v in encoder.items()
    )

    # lr 0 with the backbone's BatchNorm frozen (trainable_blocks 0): nothing changes, so the test is the source's
    source = cli("test", "--ckpt_path", str(fit))
    assert source.returncode == 0, source.stderr
    frozen = ["--model.net.init_args.weights_file=null", "--model.net.init_args.trainable_blocks", "0"]
    again = cli("fit", "--config", LITE0, "--data.root", str(folders_phantom), *SMALL, "--trainer.max_epochs", "1",
                "--trainer.callbacks=[]", *frozen, "--model.init_args.optimizer.init_args.lr", "0",
                "--model.init_from", str(fit), "--run.test_after_fit", "true",
                "--run.root", str(tmp_path / "runs"), "--run.name", "again")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert f"init_from {json.loads((fit / 'run.json').read_text())['best_checkpoint']}: loaded" in again.stdout
    tested = sorted(p for p in (lite0_run["root"] / "lite0").iterdir() if p.name.endswith("_test"))[-1]
    before = json.loads((tested / "run.json").read_text())["test_metrics"]
    after = json.loads((_fit_dir(tmp_path / "runs", "again") / "run.json").read_text())["test_metrics"]
    assert after["acc"] == before["acc"] and after["loss"] == pytest.approx(before["loss"], abs=1e-6)


@pytest.mark.slow
def test_init_from_refuses_another_architecture_and_an_empty_folder(lite0_run, cli, folders_phantom, tmp_path):
    from tumorlab.models import TimmClassifier
    from tumorlab.tasks import ClassificationTask

    with pytest.raises(
        ConfigError, match=r"is of another architecture: \d+ of 84 tensors of this network's net.backbone fit"
    ):
        ClassificationTask(TimmClassifier("resnet10t", num_classes=4), init_from=str(lite0_run["fit"]))
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("fit", "--config", LITE0, "--data.root", str(folders_phantom), *SMALL,
            "--model.net.init_args.weights_file=null", "--model.init_from", str(empty),
            "--run.root", str(tmp_path / "runs"))  # fmt: skip
    assert r.returncode == 2 and f"model.init_from {empty}: no checkpoint in that folder" in r.stderr
    assert not (tmp_path / "runs").exists(), "nothing is written when the input is refused"


def test_plateau_mode_follows_the_monitor_and_a_contradiction_is_refused(cli, folders_phantom, tmp_path):
    plateau = [
        "--model.init_args.scheduler",
        "torch.optim.lr_scheduler.ReduceLROnPlateau",
        "--model.monitor",
        "val/auroc",
    ]
    base = ["fit", "--config", LITE0, "--data.root", str(folders_phantom), *SMALL, *plateau]
    assert cli(*base, "--print_config").returncode == 0
    r = cli(*base, "--model.init_args.scheduler.init_args.mode", "min", "--run.root", str(tmp_path / "runs"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert (
        "ReduceLROnPlateau has mode 'min' but model.monitor val/auroc improves when it rises: set mode: max" in r.stderr
    )
    assert not (tmp_path / "runs").exists()


def test_plateau_mode_is_set_in_the_printed_config(folders_phantom, capsys):
    from tumorlab.cli.main import main

    with pytest.raises(SystemExit):
        main(["fit", "--config", LITE0, "--data.root", str(folders_phantom), "--model.init_args.scheduler",
              "torch.optim.lr_scheduler.ReduceLROnPlateau", "--model.monitor", "val/auroc",
              "--print_config"])  # fmt: skip
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["scheduler"]["init_args"]["mode"] == "max"


def test_plateau_mode_against_the_monitor_in_python():
    from tumorlab.models import SmallCNN
    from tumorlab.tasks import ClassificationTask

    scheduler = functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="min")
    task = ClassificationTask(SmallCNN(num_classes=2, image_size=32), scheduler=scheduler, monitor="val/f1")
    with pytest.raises(ConfigError, match="mode 'min' but model.monitor val/f1 improves when it rises"):
        task.configure_optimizers()


def test_sync_batchnorm_keeps_timms_outputs_and_the_command_uses_it(folders_phantom, capsys):
    from lightning.pytorch.plugins.layer_sync import TorchSyncBatchNorm

    from tumorlab.cli.main import main
    from tumorlab.models import TimmClassifier
    from tumorlab.training.sync_batchnorm import TimmSyncBatchNorm

    torch.manual_seed(0)
    net = TimmClassifier("efficientnet_b0", num_classes=4).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = net(x)
        synced = TimmSyncBatchNorm().apply(copy.deepcopy(net)).eval()
        assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
        assert torch.equal(synced(x), reference)
        assert torch.equal(TimmSyncBatchNorm().revert(synced)(x), reference)
        lightning_own = TorchSyncBatchNorm().apply(copy.deepcopy(net)).eval()
        assert (lightning_own(x) - reference).abs().max() > 1.0, "why the plugin exists: torch's drops the activation"
    with pytest.raises(SystemExit):
        main(["fit", "--config", LITE0, "--config", str(REPO / "configs" / "trainer" / "ddp.yaml"),
              "--data.root", str(folders_phantom), "--print_config"])  # fmt: skip
    printed = yaml.safe_load(capsys.readouterr().out)["trainer"]
    assert printed["sync_batchnorm"] is False
    assert [p["class_path"] for p in printed["plugins"]] == ["tumorlab.training.sync_batchnorm.TimmSyncBatchNorm"]


def test_layer_decay_scales_timms_groups():
    from tumorlab.models import TimmClassifier
    from tumorlab.tasks import ClassificationTask

    optimizer = functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05)
    task = ClassificationTask(
        TimmClassifier("vit_tiny_patch16_224", num_classes=3), optimizer=optimizer, layer_decay=0.5
    )
    groups = task.configure_optimizers().param_groups
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    net = task.net
    assert lr_of[id(net.head[1].weight)] == pytest.approx(1e-3)
    # timm's groups: stem, blocks 0..11 (the final norm joins block 11, the top group at the full rate)
    assert lr_of[id(net.backbone.blocks[11].mlp.fc1.weight)] == pytest.approx(1e-3)
    assert lr_of[id(net.backbone.blocks[10].mlp.fc1.weight)] == pytest.approx(1e-3 * 0.5)
    assert lr_of[id(net.backbone.patch_embed.proj.weight)] == pytest.approx(1e-3 * 0.5**12)
    assert sum(len(g["params"]) for g in groups) == len(list(task.parameters()))
    with pytest.raises(ConfigError, match="layer_decay must lie in"):
        ClassificationTask(TimmClassifier("resnet10t"), layer_decay=1.5)


@pytest.mark.slow
def test_imagenet_weights_beat_random_init_after_a_few_steps_on_real_mri(real_data, lite_weights, tmp_path):
    """The same few fine-tuning steps on a sample of the real 4-class folder: from the imported ImageNet weights
    the validation loss ends lower than from random initialisation."""
    from lightning.pytorch import seed_everything

    from tests.conftest import quiet_trainer
    from tumorlab.data import FolderDataModule
    from tumorlab.models import TimmClassifier
    from tumorlab.tasks import ClassificationTask

    source = real_data / "brain-tumor-classification" / "Training"
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        (tmp_path / "Training" / folder.name).mkdir(parents=True)
        for image in sorted(folder.glob("*.jpg"))[:40]:
            (tmp_path / "Training" / folder.name / image.name).symlink_to(image)
    losses = {}
    for init, weights in (("imagenet", str(lite_weights / "tf_efficientnet_lite0.safetensors")), ("random", None)):
        seed_everything(0)
        dm = FolderDataModule(str(tmp_path), image_size=64, batch_size=16, num_workers=0, duplicates="exact")
        net = TimmClassifier("tf_efficientnet_lite0", weights_file=weights, num_classes=4)
        pre = net.preprocessing
        dm.set_normalization(list(pre.mean), list(pre.std), pre.source)
        task = ClassificationTask(net, optimizer=functools.partial(torch.optim.Adam, lr=1e-3))
        trainer = quiet_trainer(tmp_path / init, max_steps=6, limit_val_batches=2, num_sanity_val_steps=0)
        trainer.fit(task, datamodule=dm)
        losses[init] = float(trainer.validate(task, datamodule=dm, verbose=False)[0]["val/loss"])
    assert losses["imagenet"] < losses["random"], losses


def test_init_from_a_file_that_is_not_a_checkpoint(tmp_path):
    from tumorlab.models import SmallCNN
    from tumorlab.tasks import ClassificationTask

    bad = tmp_path / "notes.ckpt"
    bad.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=f"model.init_from {bad} is not a readable checkpoint"):
        ClassificationTask(SmallCNN(num_classes=2, image_size=32), init_from=str(bad))
    with pytest.raises(ConfigError, match="does not exist; give a fit run folder or a .ckpt file"):
        ClassificationTask(SmallCNN(num_classes=2, image_size=32), init_from=str(tmp_path / "missing.ckpt"))
