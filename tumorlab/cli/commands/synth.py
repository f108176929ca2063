"""`tumorlab synth`: its parser and what it runs (the phantom generator, imported lazily)."""

from __future__ import annotations

import argparse

from tumorlab.errors import TumorlabError

__all__ = ["add_parser"]


_VOLUME_LAYOUTS = ("brats", "brats2023", "decathlon", "nnunet", "datalist", "dicom")  # = synth.VOLUME_LAYOUTS


def _synth_volumes(ns: argparse.Namespace) -> int:
    from tumorlab.synth.volumes import write_volumes

    extra = {} if ns.layout == "dicom" else {"orientation": ns.orientation}
    try:
        summary = write_volumes(
            ns.out, ns.layout, subjects=ns.subjects, seed=ns.seed, size=ns.volume_size, slices=ns.volume_slices,
            overwrite=ns.overwrite, **extra,
        )  # fmt: skip
    except (FileExistsError, ValueError) as err:
        raise TumorlabError(str(err)) from err
    shape = f"{ns.volume_size}x{ns.volume_size}x{ns.volume_slices}"
    print(f"wrote {summary['subjects']} subjects ({shape} voxels) in the {summary['layout']} layout: {summary['root']}")
    return 0


def _synth(ns: argparse.Namespace) -> int:
    from tumorlab.synth import write_folders, write_lgg

    if ns.layout in _VOLUME_LAYOUTS:
        return _synth_volumes(ns)
    common = {"size": ns.size, "seed": ns.seed, "difficulty": ns.difficulty, "overwrite": ns.overwrite}
    try:
        if ns.layout == "lgg":
            summary = write_lgg(ns.out, patients=ns.patients, slices=tuple(ns.slices), **common)
            print(
                f"wrote {summary['patients']} patients, {summary['slices']} slices "
                f"({summary['tumour_slices']} with tumour) to {ns.out}/kaggle_3m"
            )
        else:
            summary = write_folders(
                ns.out, train_per_class=ns.train_per_class, test_per_class=ns.test_per_class, **common
            )
            for split, counts in summary.items():
                print(f"wrote {sum(counts.values())} images to {ns.out}/{split}: {counts}")
    except (FileExistsError, ValueError) as err:
        raise TumorlabError(str(err)) from err
    return 0


def add_parser(sub) -> None:
    """Add ``synth`` to the subcommands ``sub``."""
    synth = sub.add_parser(
        "synth",
        help="generate synthetic brain-MRI phantoms in the layout of a real data set",
        description="Write a deterministic synthetic data set in the on-disk layout of the LGG kaggle_3m "
        "download (--layout lgg), of the 4-class folder download (--layout folders), or as volumes: BraTS "
        "2021/2023, the Decathlon, nnU-Net raw, a datalist JSON with free file names, or DICOM series.",
    )
    synth.add_argument(
        "--layout",
        choices=("lgg", "folders", *_VOLUME_LAYOUTS),
        required=True,
        help="lgg: kaggle_3m/<case>/<case>_<n>.tif + _mask.tif + data.csv; "
        "folders: Training/ and Testing/ with one JPEG folder per class; "
        "brats: <case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz (brats2023: <case>-{t2f,t1n,t1c,t2w,seg}); "
        "decathlon: imagesTr/ 4D + labelsTr/ + dataset.json; nnunet: imagesTr/<case>_0000.nii.gz ...; "
        "datalist: datalist.json over free file names; dicom: one DICOM series per modality + classes.csv",
    )
    synth.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same files")
    synth.add_argument("--size", type=int, default=256, help="image side in pixels (the real sets: 256)")
    synth.add_argument(
        "--difficulty", type=float, default=0.3, help="0 (clean, high tumour contrast) to 1 (noisy, faint tumours)"
    )
    synth.add_argument("--patients", type=int, default=20, help="lgg: number of patients")
    synth.add_argument(
        "--slices",
        type=int,
        nargs=2,
        default=(20, 32),
        metavar=("MIN", "MAX"),
        help="lgg: slices per patient, drawn between MIN and MAX",
    )
    synth.add_argument("--train-per-class", type=int, default=60, help="folders: Training images per class")
    synth.add_argument("--test-per-class", type=int, default=15, help="folders: Testing images per class")
    synth.add_argument("--subjects", type=int, default=6, help="volume layouts: number of subjects")
    synth.add_argument("--volume-size", type=int, default=64, help="volume layouts: in-plane voxels per side")
    synth.add_argument("--volume-slices", type=int, default=24, help="volume layouts: axial slices")
    synth.add_argument(
        "--orientation", choices=("RAS", "LPS"), default="RAS", help="volume layouts: NIfTI storage orientation"
    )
    synth.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    synth.set_defaults(func=_synth)
