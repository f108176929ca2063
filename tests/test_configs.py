"""Every YAML under configs/ parses (--print_config) and trains one fast_dev_run step on phantoms.

Experiment files and the demo are complete configs; fragments under configs/model and configs/trainer are
composed with a small LGG base. The data module sets the network's sizes, so the overrides below never name
num_classes, in_channels or an image size of the network.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import REPO, run_cli
from tumorlab.cli.main import main
from tumorlab.synth.volumes import write_volumes

CONFIGS = REPO / "configs"
FULL = sorted([CONFIGS / "demo.yaml", *(CONFIGS / "experiments").glob("*.yaml")])
# An experiment `experiments/X.yaml` with a folder `experiments/X/` of overlays: each overlay composes with it
# (`--config X.yaml --config X/overlay.yaml`) into a study of its own, named `X_<overlay>`.
OVERLAID = sorted(
    (base, overlay) for base in FULL if base.with_suffix("").is_dir() for overlay in base.with_suffix("").glob("*.yaml")
)
COMPOSED = [[path] for path in FULL] + [list(pair) for pair in OVERLAID]
MODEL_FRAGMENTS = sorted((CONFIGS / "model").glob("*.yaml"))
# ddp.yaml starts several processes: tests/test_scale.py runs it with two CPU processes.
DDP_FRAGMENT = CONFIGS / "trainer" / "ddp.yaml"
TRAINER_FRAGMENTS = sorted(p for p in (CONFIGS / "trainer").glob("*.yaml") if p != DDP_FRAGMENT)
DATA_FRAGMENTS = sorted((CONFIGS / "data").glob("*.yaml"))  # tests/test_data_configs.py
PHANTOM_SIZE = 32
_MIN_SIZE = {"inception_v3": 80}  # timm's inception stem needs at least 75 px


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_every_config_file_is_covered():
    every = set(CONFIGS.rglob("*.yaml"))
    tested = (
        set(FULL)
        | {overlay for _, overlay in OVERLAID}
        | set(MODEL_FRAGMENTS)
        | set(TRAINER_FRAGMENTS)
        | set(DATA_FRAGMENTS)
        | {DDP_FRAGMENT}
    )
    assert every == tested, f"untested configs: {sorted(map(_rel, every - tested))}"


@pytest.fixture(scope="module")
def phantoms(lgg_phantom, folders_phantom, tmp_path_factory) -> dict[str, Path]:
    """Data roots per DataModule, plus a manifest CSV over the folder phantoms (one patient per image)."""
    out = tmp_path_factory.mktemp("manifest")
    rows = [
        {"path": str(p), "label": p.parent.name, "patient": f"{p.parent.name}-{p.stem}"}
        for p in sorted((folders_phantom / "Training").rglob("*.jpg"))
    ]
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "patient"])
        writer.writeheader()
        writer.writerows(rows)
    brats = write_volumes(tmp_path_factory.mktemp("brats") / "brats", "brats", subjects=6)["root"]
    return {"lgg": lgg_phantom, "folders": folders_phantom, "manifest": out / "manifest.csv", "brats": Path(brats)}


def _overrides(cfg: dict, phantoms: dict[str, Path], tmp_path: Path) -> list[str]:
    """CPU, tiny images, no pretrained weights, the phantom data: what turns a study config into a smoke test."""
    data = cfg["data"]["class_path"].rsplit(".", 1)[-1]
    net = cfg["model"]["init_args"]["net"]
    net_name, net_args = net["class_path"].rsplit(".", 1)[-1], net.get("init_args", {})
    size = _MIN_SIZE.get(net_args.get("name"), PHANTOM_SIZE)
    args = ["--trainer.fast_dev_run=true", "--trainer.logger=false", "--trainer.accelerator=cpu"]
    args += ["--run.root", str(tmp_path / "runs"), f"--data.image_size={size}", "--data.batch_size=4"]
    if data == "LGGDataModule":
        args += [f"--data.root={phantoms['lgg']}", "--data.num_workers=0"]
    elif data == "VolumeDataModule":
        args += [f"--data.root={phantoms['brats']}", "--data.num_workers=0"]
    elif data == "FolderDataModule":
        args += [f"--data.root={phantoms['folders']}", "--data.num_workers=0"]
    else:
        args += [f"--data.csv={phantoms['manifest']}", "--data.min_class_count=0", "--data.max_per_patient=null"]
        args += ["--data.num_workers=0"]
    if net_name == "TimmClassifier" and not net_args.get("weights_file"):
        args.append("--model.net.init_args.pretrained=false")  # a weights file is imported offline: it stays
    if net_name == "UNetWithClassifier":
        assert net_args.get("encoder_weights") is None, "smp downloads: configs use encoder_weights_file instead"
    return args


def _uses_weights_file(cfg: dict) -> bool:
    net_args = cfg["model"]["init_args"]["net"].get("init_args", {})
    return bool(net_args.get("weights_file") or net_args.get("encoder_weights_file"))


def _fast_dev_run(configs: list[Path], cfg: dict, phantoms, tmp_path) -> None:
    argv = ["fit", *(a for c in configs for a in ("--config", str(c))), *_overrides(cfg, phantoms, tmp_path)]
    assert main(argv) == 0
    runs = list((tmp_path / "runs").rglob("run.json"))
    assert len(runs) == 1
    record = json.loads(runs[0].read_text())
    assert record["parameters"]["trainable"] > 0 and record["train_time_s"] > 0


def _ids(configs: list[Path]) -> str:
    return "+".join(map(_rel, configs))


def _merged(configs: list[Path]) -> dict:
    """The configs' YAML merged as several --config merge them (later keys win, nested mappings merge)."""

    def merge(a: dict, b: dict) -> dict:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    cfg: dict = {}
    for path in configs:
        cfg = merge(cfg, yaml.safe_load(path.read_text()))
    return cfg


def test_overlays_are_short_and_say_only_what_differs():
    assert OVERLAID, "configs/experiments/remind/ holds one overlay per backbone"
    for _, overlay in OVERLAID:
        text = yaml.safe_load(overlay.read_text())
        assert set(text) <= {"run", "model", "trainer"} and len(overlay.read_text().splitlines()) <= 15, overlay
        assert "data" not in text and "class_path" not in text.get("model", {}), "the base names task and data"


@pytest.mark.parametrize("configs", COMPOSED, ids=_ids)
def test_full_config_parses_and_keeps_to_its_study(configs, capsys):
    path = configs[-1]
    cfg = _merged(configs)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *(a for c in configs for a in ("--config", str(c))), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == cfg["model"]["class_path"]
    logger = printed["trainer"]["logger"]  # the shared default, named after run.name when the run starts
    assert logger["class_path"].endswith("WandbLogger") and logger["init_args"]["project"] == "tumorlab"
    monitor = printed["model"]["init_args"]["monitor"]
    assert monitor.startswith("val/")
    # the whole resolved config: tumorlab's own callbacks and the W&B run name are shown too
    assert logger["init_args"]["name"] == printed["run"]["name"]
    callbacks = {c["class_path"].rsplit(".", 1)[-1]: c.get("init_args") or {} for c in printed["trainer"]["callbacks"]}
    assert callbacks["BestCheckpoint"]["monitor"] == monitor and {"RNGState", "ResumeCheckpoint"} <= set(callbacks)
    if "experiments" in path.parts:
        name = path.stem if len(configs) == 1 else f"{configs[0].stem}_{path.stem}"
        assert cfg["run"]["name"] == printed["run"]["name"] == name and cfg["run"]["tags"]
        net = printed["model"]["init_args"]["net"]["init_args"]
        assert all(net[k] == v for k, v in cfg["model"]["init_args"]["net"].get("init_args", {}).items())


@pytest.mark.slow
@pytest.mark.parametrize("configs", COMPOSED, ids=_ids)
def test_full_config_runs_one_step(configs, phantoms, tmp_path, request, monkeypatch):
    cfg = _merged(configs)
    if _uses_weights_file(cfg):  # the real ImageNet file, imported from the installed package for the session
        monkeypatch.setenv("TUMORLAB_WEIGHTS_DIR", str(request.getfixturevalue("lite_weights")))
    _fast_dev_run(configs, cfg, phantoms, tmp_path)
    if _uses_weights_file(cfg):
        (record,) = list((tmp_path / "runs").rglob("run.json"))
        normalization = json.loads(record.read_text())["preprocessing"]["normalization"]
        assert normalization["mean"] == [0.5, 0.5, 0.5] and "tf_efficientnet_lite0" in normalization["source"]


def _lgg_base(tmp_path: Path, task: str) -> tuple[Path, dict]:
    init = {"root": "unused", "image_size": PHANTOM_SIZE, "batch_size": 4, "task": task}
    data = {"class_path": "tumorlab.data.LGGDataModule", "init_args": init}
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"data": data}))
    return base, data


_TASK_DATA = {"ClassificationTask": "classification", "SegmentationTask": "segmentation", "MultiTaskTask": "multitask"}


@pytest.mark.slow
@pytest.mark.parametrize("path", MODEL_FRAGMENTS, ids=_rel)
def test_model_fragment_composes_and_runs_one_step(path, phantoms, tmp_path):
    model = yaml.safe_load(path.read_text())["model"]
    base, data = _lgg_base(tmp_path, _TASK_DATA[model["class_path"].rsplit(".", 1)[-1]])
    _fast_dev_run([CONFIGS / "trainer" / "fast.yaml", base, path], {"model": model, "data": data}, phantoms, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("path", TRAINER_FRAGMENTS, ids=_rel)
def test_trainer_fragment_composes_and_runs_one_step(path, phantoms, tmp_path, capsys):
    trainer = yaml.safe_load(path.read_text())["trainer"]
    model = CONFIGS / "model" / "cnn9.yaml"
    base, data = _lgg_base(tmp_path, "classification")
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(path), "--config", str(model), "--config", str(base), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert all(printed["trainer"][k] == v for k, v in trainer.items())
    if trainer["accelerator"] == "gpu" and not torch.cuda.is_available():
        pytest.skip(f"{_rel(path)} parsed; running it needs a GPU")
    cfg = {"model": yaml.safe_load(model.read_text())["model"], "data": data}
    _fast_dev_run([path, model, base], cfg, phantoms, tmp_path)


@pytest.mark.slow
def test_experiment_runs_through_the_command_line(tmp_path, lgg_phantom):
    """One experiment as a user runs it: a subprocess, W&B offline, a checkpoint and run.json."""
    path = CONFIGS / "experiments" / "lgg_unet_segmentation.yaml"
    r = run_cli(
        "fit",
        "--config",
        str(path),
        "--data.root",
        str(lgg_phantom),
        "--data.image_size=32",
        "--data.num_workers=0",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=2",
        "--trainer.accelerator=cpu",
        "--run.root",
        "out",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (record,) = list((tmp_path / "out" / "lgg_unet_segmentation").rglob("run.json"))
    data = json.loads(record.read_text())
    assert "val/dice_volume" in data["best_score"] and data["train_time_s"] > 0
