"""Volumes: every layout and the datalist read the same phantom subjects to the same tensors; orientation, DICOM
geometry, label maps, slice selection, intensity, splits by subject and the decode-once cache."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from tumorlab.data.volumes import LABEL_MAPS, VolumeData, apply_label_map, read_nifti
from tumorlab.data.volumes.dicom import read_series, scan_dicom
from tumorlab.data.volumes.slices import normalise, plane_to_volume, select_slices, slice_plane
from tumorlab.synth.volumes import phantom_subject, write_volumes

SMALL = {"image_size": 32, "num_workers": 0, "slices": "all", "split": (0.34, 0.33, 0.33)}
NIFTI_LAYOUTS = ("brats", "brats2023", "decathlon", "nnunet", "datalist")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """3 phantom subjects of 32x32x12 voxels in every layout (module-wide, read-only)."""
    base = tmp_path_factory.mktemp("volumes")
    roots = {}
    for layout in (*NIFTI_LAYOUTS, "dicom"):
        roots[layout] = write_volumes(base / layout, layout, subjects=3)["root"]
    roots["brats_lps"] = write_volumes(base / "brats_lps", "brats", subjects=3, orientation="LPS")["root"]
    return roots


def _arrays(dm: VolumeData) -> dict:
    """Every sample's prepared arrays keyed by (subject, slice), straight from the filled decode cache."""
    out = {}
    for i, s in enumerate(dm.samples):
        image, mask = dm._cache.get(i)
        out[(s.patient, s.index)] = (image, mask)
    return out


def test_every_layout_and_the_datalist_read_the_same_tensors(phantoms):
    reference = VolumeData(phantoms["brats"], **SMALL)
    reference.inspect()
    ref = _arrays(reference)
    assert len(ref) == 3 * 12 and reference.mask_channels == 3
    for layout in NIFTI_LAYOUTS[1:]:
        extra = {"label_map": "brats2021"} if layout == "datalist" else {}  # the datalist's files say nothing
        dm = VolumeData(phantoms[layout], **SMALL, **extra)
        assert dm.layout == {"brats2023": "brats"}.get(layout, layout)
        assert dm.modalities == ["flair", "t1", "t1ce", "t2"]
        dm.inspect()
        got = _arrays(dm)
        assert got.keys() == ref.keys(), layout
        for key, (image, mask) in ref.items():
            np.testing.assert_array_equal(got[key][0], image, err_msg=f"{layout} {key}")
            np.testing.assert_array_equal(got[key][1], mask, err_msg=f"{layout} {key}")
    # the DICOM series hold the same images (no labels: classification by the CSV)
    csv = f"{phantoms['dicom']}/classes.csv"
    dicom = VolumeData(phantoms["dicom"], task="classification", class_csv=csv, **SMALL)
    assert dicom.label_source == "class" and dicom.class_names == ["astrocytoma", "glioblastoma"]
    dicom.inspect()
    for key, (image, _) in _arrays(dicom).items():
        np.testing.assert_array_equal(image, ref[key][0], err_msg=f"dicom {key}")


def test_batches_carry_one_channel_per_modality_and_per_region(phantoms):
    dm = VolumeData(phantoms["brats"], modalities=["flair", "t1ce", "t2"], **SMALL)
    dm.setup()
    item = dm.datasets["train"][0]
    assert item["image"].shape == (3, 32, 32) and item["mask"].shape == (3, 32, 32)
    # regions nest: enhancing within core within whole tumour
    masks = np.stack([dm.datasets[s][i]["mask"].numpy() for s in ("train",) for i in range(len(dm.datasets[s]))])
    wt, tc, et = masks[:, 0], masks[:, 1], masks[:, 2]
    assert (tc <= wt).all() and (et <= tc).all() and et.sum() > 0 and (wt > tc).any()
    assert dm.in_channels == 3 and dm.region_names == ["whole_tumour", "tumour_core", "enhancing"]


def test_label_maps_of_each_layout_are_pinned():
    labels = np.array([0, 1, 2, 3, 4])
    brats21 = apply_label_map(np.array([0, 1, 2, 4]), LABEL_MAPS["brats2021"], "x")
    #                         WT bit0, TC bit1, ET bit2: 1 -> WT+TC, 2 -> WT, 4 -> WT+TC+ET
    assert brats21.tolist() == [0, 0b011, 0b001, 0b111]
    assert apply_label_map(np.array([0, 1, 2, 3]), LABEL_MAPS["brats2023"], "x").tolist() == [0, 0b011, 0b001, 0b111]
    #          Decathlon: 1 oedema -> WT, 2 non-enhancing -> WT+TC, 3 enhancing -> all three
    assert apply_label_map(np.array([0, 1, 2, 3]), LABEL_MAPS["decathlon"], "x").tolist() == [0, 0b001, 0b011, 0b111]
    assert apply_label_map(labels, None, "x").tolist() == [0, 1, 1, 1, 1]  # binary: every non-zero voxel


def test_ras_and_lps_files_give_the_same_slices(phantoms):
    lps_file = next(p for p in __import__("pathlib").Path(phantoms["brats_lps"]).rglob("*_flair.nii.gz"))
    assert nib.aff2axcodes(nib.load(lps_file).affine) == ("L", "P", "S")
    ras, lps = VolumeData(phantoms["brats"], **SMALL), VolumeData(phantoms["brats_lps"], **SMALL)
    ras.inspect()
    lps.inspect()
    a, b = _arrays(ras), _arrays(lps)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key][0], b[key][0])
        np.testing.assert_array_equal(a[key][1], b[key][1])
    for subject in ras.grids:
        np.testing.assert_allclose(ras.grid_of(subject).affine, lps.grid_of(subject).affine, atol=1e-6)
        assert lps.grid_of(subject).source_axcodes == ("L", "P", "S")


def test_dicom_order_comes_from_positions_and_values_from_slope_and_intercept(phantoms, tmp_path):
    ordered = write_volumes(tmp_path / "ordered", "dicom", subjects=1, shuffle=False)["root"]
    (shuffled,) = [s for s in scan_dicom(phantoms["dicom"]) if s.patient == "Phantom_001" and s.description == "T1CE"]
    (plain,) = [s for s in scan_dicom(ordered) if s.description == "T1CE"]
    import pydicom

    numbers = [int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) for f in shuffled.files]
    assert numbers != sorted(numbers)  # instance numbers shuffled, and so are the file names
    assert [f.name for f in shuffled.files] != sorted(f.name for f in shuffled.files)
    a, header = read_series(shuffled)
    b, _ = read_series(plain)
    truth = phantom_subject(0).images["t1ce"]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, truth)  # stored = (value + 100) / 0.5: the rescale is applied
    stored = pydicom.dcmread(shuffled.files[5]).pixel_array
    assert stored.max() > truth.max()  # what is stored is not the value
    assert header.spacing == pytest.approx((1.0, 1.0, 2.0))
    np.testing.assert_allclose(header.affine, phantom_subject(0).affine, atol=1e-6)


def test_nifti_reader_applies_the_header_scaling(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(2.0, -5.0)
    nib.save(img, tmp_path / "v.nii.gz")
    got, header = read_nifti(tmp_path / "v.nii.gz")
    np.testing.assert_allclose(got, data * 2.0 - 5.0)
    assert header.shape == (2, 3, 4)


def test_slice_planes_invert():
    volume = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    for axis in range(3):
        for k in (0, 3):
            image = slice_plane(volume, axis, k)
            np.testing.assert_array_equal(plane_to_volume(image), np.take(volume, k, axis=axis))
    axial = slice_plane(volume, 2, 0)
    assert axial.shape == (5, 4) and axial[0, 0] == volume[0, 4, 0]  # top row anterior, left column at x = 0


def test_slice_selection_keys():
    brain = np.array([0, 5, 50, 60, 70, 60, 50, 5, 0, 0])
    tumour = np.array([0, 0, 0, 10, 20, 10, 0, 0, 0, 0])
    rng = np.random.default_rng(0)
    assert select_slices(brain, tumour, "all", 1, None, rng).tolist() == list(range(10))
    assert select_slices(brain, tumour, "brain", 1, None, rng).tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert select_slices(brain, tumour, "tumour", 1, None, rng).tolist() == [3, 4, 5]
    balanced = select_slices(brain, tumour, "tumour_balanced", 1, None, rng)
    assert {3, 4, 5} <= set(balanced.tolist()) and len(balanced) == 6
    assert select_slices(brain, tumour, "all", 3, None, rng).tolist() == [0, 3, 6, 9]
    capped = select_slices(brain, tumour, "brain", 1, 2, rng)
    assert len(capped) == 2 and set(capped.tolist()) <= {1, 2, 3, 4, 5, 6, 7}


def test_intensity_normalisation():
    rng = np.random.default_rng(0)
    volume = np.zeros((8, 8, 8), np.float32)
    volume[2:6, 2:6, 2:6] = rng.normal(500, 50, (4, 4, 4))
    z, _ = normalise(volume, "zscore", "v")
    brain = volume != 0
    # mean maps to the middle of the 8-bit window, background stays 0
    assert abs(float(z[brain].mean()) - 127.5) < 1.5 and (z[~brain] == 0).all()
    p, _ = normalise(volume, "percentile", "v")
    assert p[brain].max() == 255 and p[brain].min() == 0
    already = np.clip(volume / 1000, 0, 1)
    n, clipped = normalise(already, "none", "v")
    np.testing.assert_array_equal(n, (already * 255).round().astype(np.uint8))
    assert clipped == 0


@pytest.mark.parametrize("layout", [*NIFTI_LAYOUTS, pytest.param("dicom", marks=pytest.mark.slow)])
def test_no_subject_in_two_splits(tmp_path, layout):
    root = write_volumes(tmp_path / layout, layout, subjects=6)["root"]
    task = {"task": "classification", "class_csv": f"{root}/classes.csv"} if layout == "dicom" else {}
    dm = VolumeData(root, image_size=32, num_workers=0, seed=1, **task)
    dm.setup()
    sets = {name: set(dm.split_patients(name)) for name in ("train", "val", "test")}
    assert sum(map(len, sets.values())) == 6
    assert not (sets["train"] & sets["val"] or sets["train"] & sets["test"] or sets["val"] & sets["test"])
    for name, ds in dm.datasets.items():
        assert {dm.samples[i].patient for i in ds.indices} == sets[name]


def test_identical_volumes_are_flagged_and_kept_in_one_split(tmp_path):
    root = tmp_path / "brats"
    write_volumes(root, "brats", subjects=6)
    copy = root / "Copy_001"
    copy.mkdir()
    for f in (root / "Phantom_001").iterdir():
        shutil.copy(f, copy / f.name.replace("Phantom_001", "Copy_001"))
    dm = VolumeData(str(root), image_size=32, num_workers=0)
    dm.setup()
    assert dm.identical_volumes == [["Copy_001", "Phantom_001"]]
    where = {name for name in dm.datasets for p in dm.split_patients(name) if p in ("Copy_001", "Phantom_001")}
    assert len(where) == 1


def test_each_volume_is_decoded_once_and_a_disk_cache_is_reused(phantoms, tmp_path, monkeypatch):
    from tumorlab.data.volumes import subjects as subjects_module

    calls = []
    real = subjects_module.read_nifti
    monkeypatch.setattr(subjects_module, "read_nifti", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    dm = VolumeData(phantoms["brats"], cache="disk", cache_dir=str(tmp_path), **SMALL)
    dm.setup()
    assert len(calls) == 3 * 5 and len(set(calls)) == 15  # 4 modalities + labels, once each
    again = VolumeData(phantoms["brats"], cache="disk", cache_dir=str(tmp_path), **SMALL)
    again.setup()
    assert len(calls) == 15  # nothing decoded: the finished cache served every slice
    for i in range(len(dm.samples)):
        np.testing.assert_array_equal(dm._cache.get(i)[0], again._cache.get(i)[0])
    calls.clear()
    VolumeData(phantoms["decathlon"], **SMALL).setup()
    assert len(calls) == 3 * 2  # the 4D file once for its four channels, and the labels


def test_datalist_with_free_names_validation_and_test_entries(phantoms, tmp_path):
    import json
    from pathlib import Path

    path = Path(phantoms["datalist"])
    meta = json.loads(path.read_text())
    entries = meta["training"]
    flair_of_third = Path(entries[2]["image"][0]).name
    meta["training"], meta["validation"], meta["test"] = entries[:1], entries[1:2], entries[2:]
    # a mapping of modality to file instead of the table, in another order
    meta["test"][0]["image"] = dict(zip(["t2", "t1ce", "t1", "flair"], meta["test"][0]["image"][::-1], strict=True))
    custom = path.parent / "custom.json"
    custom.write_text(json.dumps(meta))
    dm = VolumeData(str(custom), label_map="brats2021", image_size=32, num_workers=0, task="segmentation")
    dm.setup()
    assert {n: dm.split_patients(n) for n in dm.datasets} == {
        "train": ["Phantom_001"],
        "val": ["Phantom_002"],
        "test": ["Phantom_003"],
    }
    assert dm.subject("Phantom_003").images["flair"].path.name == flair_of_third


def test_normalize_has_one_value_per_modality(phantoms):
    from tumorlab.data import VolumeDataModule
    from tumorlab.errors import ConfigError

    dm = VolumeDataModule(
        phantoms["brats"], modalities=["flair", "t2"], normalize={"mean": [0.4, 0.5], "std": [0.2, 0.3]}
    )
    assert dm.normalization["mean"] == [0.4, 0.5] and dm.hparams["normalize"]["std"] == [0.2, 0.3]
    with pytest.raises(ConfigError, match="one mean and one std per fed channel"):
        VolumeData(phantoms["brats"], modalities=["flair", "t2"], normalize={"mean": [0.4], "std": [0.2]})
    four = VolumeData(phantoms["brats"])
    assert len(four.normalization["mean"]) == 4 and four.in_channels == 4


def test_dicom_series_named_by_patterns(phantoms):
    from tumorlab.errors import DataError

    csv = f"{phantoms['dicom']}/classes.csv"
    patterns = {"flair": "flair", "t1ce": "t1ce", "t2": "^t2$"}  # the plain T1 series matches none
    dm = VolumeData(phantoms["dicom"], task="classification", class_csv=csv, series_modalities=patterns, **SMALL)
    assert dm.modalities == ["flair", "t1ce", "t2"] and dm.in_channels == 3
    passed = [reason for _, reason in dm.skipped_files if "matches no data.series_modalities" in reason]
    assert len(passed) == 3  # one T1 series per subject, listed
    with pytest.raises(DataError, match=r"series description 'T1CE' matches data.series_modalities t1, t1ce"):
        VolumeData(
            phantoms["dicom"], task="classification", class_csv=csv, series_modalities={"t1": "t1", "t1ce": "t1ce"}
        )
