"""The module paths that configs and run folders saved before the package layout moved still import, for one
release: each old name is the new module under another name, and warns naming the new path."""

from __future__ import annotations

import copy
import importlib
import sys

import pytest
import torch

import tumorlab
from tests.conftest import REPO


@pytest.mark.parametrize(("old", "new"), sorted(tumorlab.MOVED_MODULES.items()))
def test_an_old_module_path_is_the_new_module_and_warns(old, new, monkeypatch):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        alias = importlib.import_module(old)
    module = importlib.import_module(new)
    public = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    assert public
    assert all(getattr(alias, name) is getattr(module, name) for name in public)


def test_the_old_run_folder_helpers_forward_with_a_warning():
    from tumorlab.runs import folders

    with pytest.warns(DeprecationWarning, match="tumorlab.runs.folders.find_checkpoint"):
        from tumorlab.runs import find_checkpoint
    assert find_checkpoint is folders.find_checkpoint
    with pytest.raises(AttributeError):
        tumorlab.runs.no_such_name  # noqa: B018


def test_a_config_naming_old_class_paths_still_runs_through_the_cli(cli, tmp_path, lgg_phantom, monkeypatch):
    for old in ("tumorlab.callbacks", "tumorlab.loggers"):
        monkeypatch.delitem(sys.modules, old, raising=False)
    old_style = tmp_path / "old.yaml"
    old_style.write_text(
        "trainer:\n"
        "  callbacks:\n"
        "    - class_path: tumorlab.callbacks.FiniteGuard\n"
        "  logger:\n"
        "    class_path: tumorlab.loggers.WandbLogger\n"
        "    init_args: {project: tumorlab, offline: true}\n"
    )
    with pytest.warns(DeprecationWarning, match="tumorlab.training.callbacks"):
        result = cli(
            "fit", "--config", str(REPO / "configs" / "demo.yaml"), "--config", str(old_style),
            "--data.root", str(lgg_phantom), "--print_config",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # the config a run saves names the classes where they live now: it still loads once the old names are gone
    assert "tumorlab.training.callbacks.FiniteGuard" in result.stdout
    assert "tumorlab.training.loggers.WandbLogger" in result.stdout
    assert "class_path: tumorlab.callbacks." not in result.stdout


@pytest.mark.slow  # a pruning pass and a test: the alias table itself is checked in the quick tier
def test_a_pruned_run_saved_under_the_old_class_path_still_loads_and_tests(cnn9_run, cli, tmp_path, monkeypatch):
    from tumorlab.compression.prune import channel_prune
    from tumorlab.compression.study import _save
    from tumorlab.runs.load import load_run

    run = load_run(cnn9_run)
    dense_net = copy.deepcopy(run.task.net)
    size = int(run.datamodule.image_size)
    channel_prune(run.task.net, 0.5, torch.randn(2, 3, size, size))
    folder = tmp_path / "s0.50"
    _save(run.task, run, folder, "channel", 0.5, {}, dense_net)
    saved = (folder / "config.yaml").read_text()
    assert "class_path: tumorlab.models.pruned.ChannelPruned" in saved  # a new pruned run names the new home
    (folder / "config.yaml").write_text(saved.replace("tumorlab.models.pruned.", "tumorlab.compression.loading."))
    monkeypatch.delitem(sys.modules, "tumorlab.compression.loading", raising=False)
    with pytest.warns(DeprecationWarning, match="tumorlab.compression.loading moved to tumorlab.models.pruned"):
        old = load_run(folder)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(old.task(x), run.task.eval()(x))
    # `tumorlab test` on it runs, and the config its own run saves names the class where it lives now
    assert cli("test", "--ckpt_path", str(folder), "--run.root", str(tmp_path / "t")).returncode == 0
    (tested,) = (tmp_path / "t").rglob("config.yaml")
    assert "tumorlab.models.pruned.ChannelPruned" in tested.read_text()
    assert "tumorlab.compression.loading" not in tested.read_text()
