"""The bad-input matrix: every bad input tumorlab is tested against and what the user sees.

``test_matrix.py`` runs one parametrised case per row (the ids below) through the ``tumorlab`` command;
``docs/reliability.md`` holds the same table with the counts of the last run (``python -m tests.reliability.table``
rewrites it), and ``test_table.py`` fails when the two drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Case", "CASES", "GROUPS"]


@dataclass(frozen=True)
class Case:
    """One row: its id (the pytest id), group, the bad input, and what the user sees.

    ``slow`` rows (subprocess kills, several processes) run in ``make test`` only; ``known_failure`` names
    the module that still lacks the fix, and the case is a strict ``xfail`` until it lands.
    """

    id: str
    group: str
    bad_input: str
    user_sees: str
    slow: bool = False
    known_failure: str = ""


GROUPS = ("images", "masks", "folders and splits", "configs", "checkpoints", "runs", "crash safety", "safe loading")

_I, _M, _F, _C, _K, _R, _S, _L = GROUPS

CASES: tuple[Case, ...] = (
    # --- images (tumorlab fit on class folders, tumorlab audit, tumorlab predict-images) ---
    Case("truncated-jpeg", _I, "a JPEG cut in half", "`<file>: not a readable image (corrupt, truncated ...)`, exit 2"),
    Case("truncated-png", _I, "a PNG cut in half", "`<file>: not a readable image (corrupt, truncated ...)`, exit 2"),
    Case(
        "truncated-jpeg-skip",
        _I,
        "the truncated JPEG with `data.on_bad_file: skip`",
        "training runs; warning `skipped 1 bad files (on_bad_file: skip); first: <file>: ...`",
    ),
    Case("zero-byte", _I, "a 0-byte `.jpg`", "`<file>: empty file (0 bytes)`, exit 2"),
    Case("text-as-jpg", _I, "a text file named `.jpg`", "`<file>: not a readable image ...`, exit 2"),
    Case("png-named-jpg", _I, "a PNG named `.jpg` (the extension lies)", "read by its content: training runs"),
    Case("png-alpha", _I, "an RGBA PNG", "alpha dropped, RGB kept: training runs, audit mode `RGBA 8-bit`"),
    Case("tiff-16bit", _I, "a 16-bit grey TIFF", "rescaled to 8 bits by its maximum: training runs"),
    Case("float-tiff-nan", _I, "a float TIFF holding NaN", "`<file>: holds NaN or Inf pixel values`, exit 2"),
    Case("one-pixel", _I, "a 1x1 image", "`<file>: image is 1x1 pixels; expected at least 8x8`, exit 2"),
    Case("cmyk-jpeg", _I, "a CMYK JPEG", "converted to RGB (colours kept): training runs"),
    Case(
        "predict-images-bad-files",
        _I,
        "`predict-images` on a truncated, an empty and a 1x1 file",
        "one `predictions.csv` row per file, its `error` cell naming the cause; the good file is predicted",
    ),
    # --- masks (LGG kaggle_3m layout) ---
    Case(
        "mask-0-1",
        _M,
        "masks holding {0, 1} instead of {0, 255}",
        "read as tumour/background: same tumour slices as {0, 255}; training runs",
    ),
    Case(
        "mask-third-value",
        _M,
        "a mask holding 0, 128 and 255",
        "`<mask>: mask holds 3 values (0, 128, 255); expected 0 for background and one value ...`, exit 2",
    ),
    Case(
        "mask-other-size",
        _M,
        "a 40x40 mask beside a 48x48 slice",
        "`<mask>: mask size 40x40 differs from its image <slice name> (48x48)`, exit 2",
    ),
    Case(
        "slice-without-mask",
        _M,
        "a slice whose mask is missing",
        "`<slice>: slice without its mask (expected <slice>_mask.tif beside it)`, exit 2",
    ),
    Case(
        "slice-without-mask-skip",
        _M,
        "the same with `data.on_bad_file: skip`",
        "training runs; warning `skipped 1 unpaired LGG files (on_bad_file: skip); first: ...`",
    ),
    Case("mask-without-slice", _M, "a mask whose slice is missing", "`<mask>: mask without its slice`, exit 2"),
    # --- folders, splits, manifests ---
    Case(
        "unknown-class-folder",
        _F,
        "a class folder `astrocytoma` the config does not know",
        "`<folder>: unknown class folder 'astrocytoma'; expected ... or name it in data.classes`, exit 2",
    ),
    Case("empty-class-folder", _F, "a class folder with no images", "`<folder>: class folder 'x' holds no images`"),
    Case("root-without-images", _F, "a data root holding no images", "`data root <root> holds no images; ...`"),
    Case(
        "spaces-and-non-ascii",
        _F,
        "a root and files with spaces and non-ASCII names (`Daten ü/bild é 1.png`)",
        "read as any other path: training runs",
    ),
    Case(
        "train-split-one-class",
        _F,
        "a manifest whose `split` column leaves one class in train",
        "`<csv>: the train split holds class 'glioma' only (... none of no_tumour); ...`, exit 2",
    ),
    Case(
        "manifest-missing-column",
        _F,
        "a manifest without its `patient` column",
        "`<csv>: missing column 'patient' (found: path, label); expected path,label,patient...`, exit 2",
    ),
    Case(
        "manifest-missing-file",
        _F,
        "a manifest row naming a file that does not exist",
        "`<csv>, line 3, column 'path': file <path> does not exist`, exit 2",
    ),
    Case(
        "manifest-missing-file-skip",
        _F,
        "the same with `data.on_bad_file: skip`",
        "training runs; warning `skipped 1 manifest rows with missing files (on_bad_file: skip); first: ...`",
    ),
    # --- configs ---
    Case("unknown-key", _C, "`--trainer.max_epoch 1`", "one line naming the key and `max_epochs` as the nearest"),
    Case(
        "wrong-type",
        _C,
        "`--trainer.max_epochs many`",
        "one line naming `trainer.max_epochs` and the value",
    ),
    Case("max-epochs-0", _C, "`--trainer.max_epochs 0`", "`trainer.max_epochs is 0: fit would train nothing ...`"),
    # --- checkpoints ---
    Case(
        "truncated-checkpoint",
        _K,
        "`fit --ckpt_path RUN` whose last.ckpt is cut in half",
        "`--ckpt_path <file>: not a readable checkpoint (truncated or corrupt: ...)`, exit 2, no run folder",
    ),
    Case(
        "truncated-checkpoint-file",
        _K,
        "`fit --ckpt_path FILE.ckpt`, the file cut in half",
        "the same line",
    ),
    Case(
        "checkpoint-of-another-model",
        _K,
        "`fit --ckpt_path RUN` of a SmallCNN with a CNN9 config",
        "`--ckpt_path <file>: a checkpoint of another model: ... weights of ... are missing ...`, exit 2",
    ),
    Case(
        "checkpoint-other-classes",
        _K,
        "`fit --ckpt_path RUN` of a 3-class run with 2-class data",
        "`--ckpt_path <file>: weight <key> has shape [3, ...] in the checkpoint but [2, ...] ...`, exit 2",
    ),
    # --- runs ---
    Case(
        "nan-input-batch",
        _R,
        "a training batch holding NaN pixels",
        "`training batch <b> of epoch <e> holds NaN or Inf pixel values (... first: <file>)`, exit 2",
    ),
    Case(
        "nan-loss",
        _R,
        "a learning rate that grows until the loss is NaN",
        "`the training loss became nan at epoch <e>, step <s> ...; the last good checkpoint is <last.ckpt>`; "
        "that checkpoint loads, with finite weights",
    ),
    Case(
        "disk-full",
        _R,
        "the disk fills while a checkpoint is written (ENOSPC)",
        "`could not write checkpoint <file>: No space left on device (the previous one is unchanged)`; the "
        "previous checkpoint loads",
    ),
    Case(
        "worker-dies",
        _R,
        "a DataLoader worker killed (SIGKILL) while loading a sample",
        "`a data loader worker died while loading <file> (item <k> of the train split) ...`, exit 2",
    ),
    # --- crash safety ---
    Case(
        "kill-during-save",
        _S,
        "SIGKILL during checkpoint saves, 12 times",
        "the checkpoint file always loads (the old or the new one); a plain write is cut",
        slow=True,
    ),
    Case(
        "same-second-runs",
        _S,
        "two runs with one name started in the same second",
        "two run folders (`<stamp>_fit`, `<stamp>_fit_2`), each with its own checkpoints, config and run.json",
        slow=True,
    ),
    Case("same-second-processes", _S, "8 processes claiming a run folder at once", "8 distinct folder names"),
    Case(
        "ctrl-c",
        _S,
        "SIGINT during `fit`",
        "`interrupted at epoch <e>, step <s>; saved <last.ckpt>`, `resume with: ... --ckpt_path <run>`, "
        "exit 1; the resume runs",
        slow=True,
    ),
    # --- safe loading ---
    Case("torch-load-weights-only", _L, "every `torch.load` in tumorlab", "called with `weights_only=True`"),
    Case(
        "malicious-checkpoint",
        _L,
        "`fit --ckpt_path RUN` / `export` of a checkpoint holding a pickled command",
        "`--ckpt_path <file>: holds pickled objects other than tensors ...`, exit 2; the command never runs",
    ),
    Case(
        "malicious-checkpoint-file",
        _L,
        "`fit --ckpt_path FILE.ckpt` holding a pickled command",
        "the same line; the command never runs",
    ),
    Case("onnx-no-pickle", _L, "an exported ONNX file", "protobuf only: no pickle stream in any field"),
    Case(
        "predict-images-pickle",
        _L,
        "`predict-images` on a pickle named `.png`",
        "`error` cell `not a readable image`; the pickled command never runs",
    ),
)
