"""Every configs/data/*.yaml fragment composes with the demo config and parses (`--print_config`)."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import REPO
from tumorlab.cli.lightning import run_lightning_cli

FRAGMENTS = sorted((REPO / "configs" / "data").glob("*.yaml"))


def test_there_are_fragments_for_each_data_module():
    classes = {yaml.safe_load(p.read_text())["data"]["class_path"] for p in FRAGMENTS}
    assert classes == {
        "tumorlab.data.LGGDataModule",
        "tumorlab.data.FolderDataModule",
        "tumorlab.data.ManifestDataModule",
    }


@pytest.mark.parametrize("fragment", FRAGMENTS, ids=[p.stem for p in FRAGMENTS])
def test_fragment_parses_with_print_config(fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        run_lightning_cli(
            ["fit", "--config", str(REPO / "configs" / "demo.yaml"), "--config", str(fragment), "--print_config"]
        )
    assert done.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    want = yaml.safe_load(fragment.read_text())["data"]
    assert cfg["data"]["class_path"] == want["class_path"]
    for key, value in want["init_args"].items():
        assert cfg["data"]["init_args"][key] == value, key
    assert not (tmp_path / "runs").exists()
