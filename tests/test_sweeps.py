"""W&B sweep files: valid for W&B's own sweep engine, and every sampled value reaches the resolved config."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tumorlab.cli.main import main

sweeps = pytest.importorskip("sweeps", reason="W&B's sweep engine (PyPI `sweeps`, installed by `make dev`)")

SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _samples(config: dict, n: int = 3) -> list[dict]:
    """Parameter values W&B's engine proposes: every grid point (up to 16) or ``n`` draws."""
    n = 16 if config["method"] == "grid" else n
    runs: list = []
    for _ in range(n):
        run = sweeps.next_run(config, runs, validate=True)
        if run is None:
            break
        run.state = sweeps.RunState.finished
        run.summary_metrics = {config["metric"]["name"]: 0.5}
        runs.append(run)
    return [{k: v["value"] for k, v in r.config.items()} for r in runs][:n]


def _agent_args(values: dict) -> list[str]:
    """What `wandb agent` puts in place of ${args}: --key=value per parameter."""
    out = []
    for key, value in values.items():
        value = float(value) if hasattr(value, "dtype") and value.dtype.kind == "f" else value
        value = int(value) if hasattr(value, "dtype") else value
        out.append(f"--{key}={value}")
    return out


def _command(config: dict, values: dict, data_root: Path) -> list[str]:
    command = []
    for part in config["command"]:
        if part == "${env}":
            continue
        if part == "${args}":
            command += _agent_args(values)
        else:
            command.append(part)
    assert command[0] == "tumorlab", "the agent must run the tumorlab command"
    # the sweep's data path stands for the user's download: point it at phantoms
    i = command.index("--data.init_args.root")
    command[i + 1] = str(data_root)
    return command[1:]


def _print_config(args: list[str]) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code in (0, None), f"tumorlab {' '.join(args)} failed to parse"
    return yaml.safe_load(out.getvalue())


def _lookup(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return KeyError
        node = node[part]
    return node


def _unknown_keys(config: dict, resolved: dict) -> list[str]:
    """Sweep parameters that name no key of the resolved config (the agent's run would exit with code 2)."""
    unknown = []
    for key in config["parameters"]:
        parent, leaf = key.rsplit(".", 1) if "." in key else ("", key)
        node = _lookup(resolved, parent) if parent else resolved
        if not (isinstance(node, dict) and leaf in node):
            unknown.append(key)
    return unknown


def test_a_parameter_that_is_no_cli_key_is_named(lgg_phantom, monkeypatch):
    monkeypatch.chdir(REPO)
    config = _load(REPO / "sweeps" / "lgg_unet_theta.yaml")
    config["parameters"]["model.init_args.thetta"] = {"values": [0.5]}
    base = _print_config(_command(config, {}, lgg_phantom))
    assert _unknown_keys(config, base) == ["model.init_args.thetta"]


def _data_root(config: dict, lgg_phantom: Path, folders_phantom: Path) -> Path:
    return lgg_phantom if "lgg" in " ".join(config["command"]) else folders_phantom


def test_there_is_a_sweep_per_study_question():
    names = {p.stem for p in SWEEPS}
    assert {
        "lgg_cnn9_hparams",
        "lgg_unet_theta",
        "lgg_unet_uncertainty",
        "mri4_transfer_backbones",
        "mri4_optimizer",
    } <= names


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_is_valid_for_wandb(path):
    config = _load(path)
    assert sweeps.schema_violations_from_proposed_config(config) == []
    assert config["command"].index("--config") < config["command"].index("${args}"), "config first, then the agent"
    assert config["metric"]["name"].startswith("val/")


@pytest.mark.slow  # several --print_config per sweep; the sweep files are validated in the quick tier above
@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sampled_values_reach_the_resolved_config(path, lgg_phantom, folders_phantom, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    config = _load(path)
    root = _data_root(config, lgg_phantom, folders_phantom)
    base = _print_config(_command(config, {}, root))
    assert _unknown_keys(config, base) == [], "sweep parameters that are not keys of the resolved config"
    for values in _samples(config):
        resolved = _print_config(_command(config, values, root))
        for key, value in values.items():
            got = _lookup(resolved, key)
            if isinstance(value, str) and value.startswith("{"):
                expected = json.loads(value)
                if isinstance(got, list):  # trainer.callbacks: the sampled one among those tumorlab adds
                    got = next((c for c in got if c["class_path"] == expected["class_path"]), {"class_path": None})
                assert got["class_path"] == expected["class_path"], key
                for k, v in expected.get("init_args", {}).items():
                    assert got["init_args"][k] == v, f"{key}.init_args.{k}"
            elif isinstance(value, float):
                assert got == pytest.approx(float(value)), key
            else:
                assert got == value, key
