"""How long volumes take to become cached slices: VolumeDataModule's constructor (header checks, then one decode
of every file, normalisation, label map, slice selection, resize, perceptual hash, cache fill) on phantom
subjects of BraTS size (240 x 240 x 155 voxels, four modalities and a label volume, gzip-compressed NIfTI),
and a second construction from the finished disk cache (nothing decoded).

    python benchmarks/volumes.py --subjects 4 --out benchmarks/results/volumes.json
    python benchmarks/volumes.py --quick   # 2 small subjects: keeps this script working
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import write_json
from tumorlab.data.volumes import VolumeData
from tumorlab.synth.volumes import write_volumes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--size", type=int, default=240, help="in-plane voxels per side (BraTS: 240)")
    parser.add_argument("--slices", type=int, default=155, help="axial slices (BraTS: 155)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="2 subjects of 48 x 48 x 24 voxels")
    parser.add_argument("--out", help="write the JSON record here")
    args = parser.parse_args()
    if args.quick:
        args.subjects, args.size, args.slices = 2, 48, 24
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "brats"
        start = time.perf_counter()
        write_volumes(root, "brats", subjects=args.subjects, size=args.size, slices=args.slices)
        written = time.perf_counter() - start
        common = {"image_size": args.image_size, "num_workers": 0, "cache": "disk", "cache_dir": f"{tmp}/cache"}
        start = time.perf_counter()
        dm = VolumeData(str(root), **common)
        first = time.perf_counter() - start
        start = time.perf_counter()
        VolumeData(str(root), **common)
        again = time.perf_counter() - start
        megabytes = sum(p.stat().st_size for p in root.rglob("*.nii.gz")) / 2**20
    results = {
        "subjects": args.subjects,
        "voxels": [args.size, args.size, args.slices],
        "files_mib": round(megabytes, 1),
        "slices_cached": len(dm.samples),
        "write_s": round(written, 2),
        "decode_and_cache_s": round(first, 2),
        "per_subject_s": round(first / args.subjects, 2),
        "from_disk_cache_s": round(again, 2),
    }
    for key, value in results.items():
        print(f"{key}: {value}")
    write_json(args.out, "volumes", vars(args), results)


if __name__ == "__main__":
    main()
