"""One contract between data, model and config: the data module sets the network's sizes and the network its
normalisation; a hand-set value that contradicts the data is refused; ``null`` on the command line is None."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tests.conftest import FAST_TRAINER, REPO, only_run_dir
from tumorlab.cli.main import main

EXPERIMENTS = REPO / "configs" / "experiments"
DEMO = str(REPO / "configs" / "demo.yaml")


def _state(run_dir) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_one_mri_channel_trains_a_one_channel_network(tmp_path, lgg_phantom):
    args = ["fit", "--config", str(EXPERIMENTS / "lgg_cnn9.yaml"), *FAST_TRAINER, "--data.root", str(lgg_phantom)]
    args += ["--data.image_size", "32", "--data.channels", "[1]", "--run.root", str(tmp_path), "--run.name", "flair"]
    assert main(args) == 0
    run_dir = only_run_dir(tmp_path, "flair")
    first_conv = _state(run_dir)["net.features.0.weight"]
    assert first_conv.shape[1] == 1, "the data's one channel sets the network's in_channels"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["preprocessing"]["channels"] == [1] and record["preprocessing"]["image_size"] == 32


def test_binary_folders_give_a_two_class_head_and_the_input_size(tmp_path, folders_phantom):
    args = ["fit", "--config", str(EXPERIMENTS / "mri4_smallcnn.yaml"), *FAST_TRAINER]
    args += ["--data.root", str(folders_phantom), "--data.binary", "true", "--data.image_size", "32"]
    assert main([*args, "--run.root", str(tmp_path), "--run.name", "binary"]) == 0
    state = _state(only_run_dir(tmp_path, "binary"))
    linear = sorted(k for k in state if k.startswith("net.head.") and k.endswith(".weight") and state[k].dim() == 2)
    assert state[linear[-1]].shape[0] == 2, "binary: tumour / no tumour"
    assert state[linear[0]].shape[1] == 64 * (32 // 8) ** 2, "SmallCNN is built for the data's 32 px"


def test_a_hand_set_value_that_contradicts_the_data_is_refused(tmp_path, lgg_phantom, capsys):
    args = ["fit", "--config", str(EXPERIMENTS / "lgg_cnn9.yaml"), *FAST_TRAINER, "--data.root", str(lgg_phantom)]
    args += ["--model.net.init_args.num_classes", "3", "--run.root", str(tmp_path)]
    assert main(args) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("tumorlab: error: model.net.init_args.num_classes is 3")
    assert "num_classes 2" in line
    assert not any(tmp_path.iterdir()), "nothing is created"


def test_a_hand_set_value_equal_to_the_data_is_accepted(tmp_path, lgg_phantom):
    args = ["fit", "--config", str(EXPERIMENTS / "lgg_cnn9.yaml"), *FAST_TRAINER, "--data.root", str(lgg_phantom)]
    args += ["--data.image_size", "32", "--model.net.init_args.num_classes", "2", "--run.root", str(tmp_path)]
    assert main([*args, "--run.name", "same"]) == 0


@pytest.mark.slow
def test_null_on_the_command_line_means_none_and_wandb_follows_the_run_name(tmp_path, lgg_phantom, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = ["fit", "--config", DEMO, *FAST_TRAINER[:2], "--data.root", str(lgg_phantom), "--data.image_size", "32"]
    args += ["--model.net.init_args.encoder_weights=null", "--run.root", str(tmp_path), "--run.name", "nullweights"]
    assert main(args) == 0  # the text "None" would make smp look for pretrained weights named "None"
    saved = yaml.safe_load((only_run_dir(tmp_path, "nullweights") / "config.yaml").read_text())
    assert saved["model"]["init_args"]["net"]["init_args"]["encoder_weights"] is None
    logger = saved["trainer"]["logger"]
    assert logger["class_path"].endswith("WandbLogger") and logger["init_args"]["name"] == "nullweights"
    assert logger["init_args"]["tags"] == ["demo", "synthetic"]


def test_without_a_monitored_checkpoint_nothing_is_called_best(tmp_path, capsys):
    args = ["fit", "--model", "tests.helpers.PlainModule", "--model.net", "tests.helpers.TinyNet"]
    args += ["--data", "tests.helpers.ShapesDataModule", *FAST_TRAINER]
    assert main([*args, "--run.root", str(tmp_path), "--run.name", "plain"]) == 0
    run_dir = only_run_dir(tmp_path, "plain")
    record = json.loads((run_dir / "run.json").read_text())
    assert record["best_checkpoint"] is None, "checkpoints/last.ckpt is for resuming, not the best model"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "no monitored checkpoint" in capsys.readouterr().out


def test_experiment_configs_leave_sizes_and_shared_defaults_to_the_cli():
    for path in sorted(EXPERIMENTS.glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        net_args = cfg["model"]["init_args"]["net"].get("init_args", {})
        assert not {"num_classes", "in_channels", "image_size", "img_size"} & set(net_args), path.name
        assert "logger" not in cfg.get("trainer", {}), path.name
        # the callbacks the command adds itself (checkpoints, guards, epoch log) stay out; a study's own may be set
        for callback in cfg.get("trainer", {}).get("callbacks", []):
            own = callback["class_path"].startswith(("tumorlab.training.callbacks.", "tumorlab.training.epoch_log."))
            assert not own and not callback["class_path"].endswith("ModelCheckpoint"), path.name


@pytest.mark.slow
def test_normalisation_comes_from_the_network_and_is_saved(tmp_path, folders_phantom):
    args = ["fit", "--config", str(EXPERIMENTS / "mri4_resnet18_nadam.yaml"), *FAST_TRAINER]
    args += ["--data.root", str(folders_phantom), "--data.image_size", "32", "--data.channels", "[1]"]
    args += ["--model.net.init_args.name", "vit_tiny_patch16_224", "--model.net.init_args.pretrained", "false"]
    assert main([*args, "--run.root", str(tmp_path), "--run.name", "vit"]) == 0
    run_dir = only_run_dir(tmp_path, "vit")
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["init_args"]["normalize"]
    assert saved == {"mean": [0.5], "std": [0.5]}, "a ViT's weights expect 0.5/0.5, not ImageNet statistics"
    applied = json.loads((run_dir / "run.json").read_text())["preprocessing"]
    assert applied["normalization"]["source"].startswith("timm pretrained_cfg of vit_tiny_patch16_224")
    assert applied["image_size"] == 32  # the ViT was built for the data's size


@pytest.mark.slow
def test_a_hand_set_normalisation_wins_with_a_note(tmp_path, lgg_phantom, capsys):
    args = ["fit", "--config", str(EXPERIMENTS / "lgg_cnn9.yaml"), *FAST_TRAINER, "--data.root", str(lgg_phantom)]
    args += ["--data.image_size", "32", "--data.normalize", "{mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}"]
    assert main([*args, "--run.root", str(tmp_path), "--run.name", "norm"]) == 0
    (note,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tumorlab: note:")]
    assert "data.normalize" in note and "replaces the network's own" in note and "ImageNet statistics" in note
    applied = json.loads((only_run_dir(tmp_path, "norm") / "run.json").read_text())["preprocessing"]["normalization"]
    assert applied == {"mean": [0.5] * 3, "std": [0.25] * 3, "source": "data.normalize"}
