"""External validation on LGG data: ``LGGDataModule(test_root=...)`` tests a second download whole, and refuses
a patient in both roots or a test root of another layout; ``tumorlab audit ROOT --test-root`` reports it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tumorlab.data import FolderDataModule, LGGDataModule
from tumorlab.data.lgg import patient_of, scan_kaggle_3m
from tumorlab.errors import DataError
from tumorlab.synth import write_lgg

TINY = {"image_size": 32, "batch_size": 4, "cache": "none", "num_workers": 0}


@pytest.fixture(scope="module")
def external(tmp_path_factory) -> Path:
    """4 phantom patients of another seed with other ids (TCGA_PH_0101 ...) than ``lgg_phantom``'s."""
    out = tmp_path_factory.mktemp("lgg_external")
    write_lgg(out, patients=4, slices=(6, 8), size=64, seed=11, first_patient=100)
    return out


def _patients(dm: LGGDataModule, split: str) -> set[str]:
    return set(dm.split_patients(split))


def test_the_test_root_is_the_whole_test_split_and_nothing_else(lgg_phantom, external):
    dm = LGGDataModule(str(lgg_phantom), test_root=str(external), task="multitask", **TINY)
    dm.setup()
    outside = {s.patient for s in scan_kaggle_3m(external)}
    inside = {s.patient for s in scan_kaggle_3m(lgg_phantom)}
    assert len(outside) == 4 and not outside & inside
    assert _patients(dm, "test") == outside
    assert {str(s.image) for s in dm.datasets["test"].samples} == {
        str(p) for p in external.rglob("*.tif") if not p.name.endswith("_mask.tif")
    }
    assert _patients(dm, "train") | _patients(dm, "val") == inside  # root gives train and val, all of it
    assert not (_patients(dm, "train") | _patients(dm, "val")) & outside
    assert len(dm.datasets["test"]) == len(scan_kaggle_3m(external))
    assert set(dm.metadata) == inside | outside  # both data.csv files are read
    # k-fold validation of root's patients keeps the external test set whole in every fold
    for fold in range(2):
        kdm = LGGDataModule(str(lgg_phantom), test_root=str(external), num_folds=2, fold=fold, **TINY)
        kdm.setup()
        assert _patients(kdm, "test") == outside and _patients(kdm, "val") <= inside


def test_a_patient_in_both_roots_is_refused_as_a_leak(lgg_phantom, tmp_path):
    # the same patient ids (another seed draws other images: only the id gives the patient away)
    other = tmp_path / "other"
    write_lgg(other, patients=2, slices=(4, 5), size=32, seed=5)
    with pytest.raises(DataError) as err:
        LGGDataModule(str(lgg_phantom), test_root=str(other), **TINY)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("patient TCGA_PH_0001 (and 1 more) is in both data.root")
    assert str(lgg_phantom) in message and str(other) in message and "leak" in message
    # a test root inside the root is the same patients again
    with pytest.raises(DataError, match="is in both data.root"):
        LGGDataModule(str(lgg_phantom), test_root=str(lgg_phantom / "kaggle_3m"), **TINY)


def test_a_test_root_of_another_layout_is_one_line(lgg_phantom, folders_phantom, tmp_path):
    with pytest.raises(DataError) as err:
        LGGDataModule(str(lgg_phantom), test_root=str(folders_phantom), **TINY)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"data.test_root {folders_phantom} holds no LGG slices but data.root")
    with pytest.raises(DataError) as err:
        FolderDataModule(str(folders_phantom), test_root=str(lgg_phantom), **TINY)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"data.test_root {lgg_phantom} is LGG kaggle_3m data but data.root")
    with pytest.raises(DataError, match=f"data.test_root {tmp_path / 'gone'} does not exist"):
        LGGDataModule(str(lgg_phantom), test_root=str(tmp_path / "gone"), **TINY)


def test_audit_reports_an_lgg_test_root(lgg_phantom, external, folders_phantom, tmp_path, cli):
    r = cli("audit", str(lgg_phantom), "--test-root", str(external), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    test_slices = scan_kaggle_3m(external)
    tumour = sum(1 for s in test_slices if s.mask.stat().st_size and _has_tumour(s.mask))
    assert report["classes"]["tumour"]["test_root"] == tumour
    assert report["classes"]["no_tumour"]["test_root"] == len(test_slices) - tumour
    assert report["splits"]["test"]["samples"] == len(test_slices) and report["splits"]["test"]["patients"] == 4
    assert report["test_root"] == str(external)
    text = cli("audit", str(lgg_phantom), "--test-root", str(external), cwd=tmp_path).stdout
    assert f"test root {external}" in text and "--test-root" in text
    bad = cli("audit", str(lgg_phantom), "--test-root", str(folders_phantom), cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "holds no LGG slices" in bad.stderr


def _has_tumour(mask: Path) -> bool:
    from tumorlab.data.io import read_mask

    return bool(read_mask(mask).any())


def test_real_patients_as_root_and_as_an_external_test_root(real_data, tmp_path):
    """Four real patients train and validate, three others (of other institutions) are the external test set."""
    cases = {p.name: p for p in sorted((real_data / "lgg-mri-segmentation" / "kaggle_3m").iterdir()) if p.is_dir()}
    by_site: dict[str, list[str]] = {}
    for case in cases:
        by_site.setdefault(case.split("_")[1], []).append(case)
    train_cases = by_site["DU"][:4]
    test_cases = [by_site["CS"][0], by_site["HT"][0], by_site["FG"][0]]
    for folder, chosen in (("root", train_cases), ("external", test_cases)):
        (tmp_path / folder / "kaggle_3m").mkdir(parents=True)
        for case in chosen:
            shutil.copytree(cases[case], tmp_path / folder / "kaggle_3m" / case)
    dm = LGGDataModule(str(tmp_path / "root"), test_root=str(tmp_path / "external"), **TINY)
    dm.setup()
    assert _patients(dm, "test") == {patient_of(c) for c in test_cases}
    assert _patients(dm, "train") | _patients(dm, "val") == {patient_of(c) for c in train_cases}
    real_slices = sum(1 for c in test_cases for f in cases[c].iterdir() if f.name.endswith("_mask.tif"))
    assert len(dm.datasets["test"]) == real_slices
    # the same real patient under both roots is a leak
    shutil.copytree(cases[train_cases[0]], tmp_path / "external" / "kaggle_3m" / train_cases[0])
    with pytest.raises(DataError, match=f"patient {patient_of(train_cases[0])} is in both"):
        LGGDataModule(str(tmp_path / "root"), test_root=str(tmp_path / "external"), **TINY)
