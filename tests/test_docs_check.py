"""``make docs-check`` (tools/docs_check.py): the marked blocks of the docs are found, one per page that opens
with a phantom example, and a block runs end to end in its own folder with the phantoms, a failing one named by
file:line with its output."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.conftest import REPO

# The pages that open with an example on phantoms (or on the command itself).
PAGES = ("commands", "compression", "configs", "data", "evaluation", "reliability", "scaling", "transfer", "volumes")


@pytest.fixture(scope="module")
def docs_check():
    spec = importlib.util.spec_from_file_location("docs_check", REPO / "tools" / "docs_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("docs_check", None)


def test_every_page_with_a_phantom_example_has_a_marked_block(docs_check):
    blocks = [b for f in docs_check.default_files() for b in docs_check.find_blocks(f)]
    pages = {b.path.stem for b in blocks}
    assert set(PAGES) <= pages
    for block in blocks:  # the line is the opening fence's, right under the marker
        lines = block.path.read_text().splitlines()
        assert docs_check.MARKER.match(lines[block.line - 2]) and lines[block.line - 1].startswith("```")
        assert block.code.strip() and "```" not in block.code
    (first,) = [b for b in blocks if b.path.stem == "data"]
    assert first.code.startswith("tumorlab synth --layout lgg --out phantoms")
    assert [b.where for b in blocks if b.path.stem == "reliability"] == ["repo"]


def test_a_marker_without_a_block_names_its_line(docs_check, tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# t\n\n<!-- docs-check -->\ntext\n")
    with pytest.raises(ValueError, match=r"page.md:3: <!-- docs-check --> must stand right before a fenced code"):
        docs_check.find_blocks(page)
    page.write_text("<!-- docs-check -->\n```bash\nls\n")
    with pytest.raises(ValueError, match=r"page.md:2: the marked code block is never closed"):
        docs_check.find_blocks(page)
    page.write_text("```bash\nnot marked\n```\n<!-- docs-check -->\n~~~bash\necho ```\n~~~\n")
    (block,) = docs_check.find_blocks(page)
    assert block.line == 5 and block.code == "echo ```\n"


def test_the_commands_page_block_runs(docs_check, tmp_path):
    """One real marked block end to end, as make docs-check runs it (its phantom folders empty here: it needs none)."""
    (block,) = docs_check.find_blocks(REPO / "docs" / "commands.md")
    data = tmp_path / "data"
    for name in docs_check.PHANTOMS:
        (data / name).mkdir(parents=True)
    env = docs_check.block_env(docs_check.Path(sys.executable).parent)
    code, seconds, output = docs_check.run_block(block, tmp_path / "block", data, env, timeout=120)
    assert code == 0, output
    assert output.count("usage: tumorlab") == 3 and "fit" in output
    assert (tmp_path / "block" / "configs").resolve() == REPO / "configs"


@pytest.mark.slow  # writes the phantoms and runs tumorlab audit (about 10 s on a busy 2-core machine)
def test_blocks_run_in_their_own_folder_with_the_phantoms(docs_check, tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- docs-check -->\n```bash\n"
        "test -f phantoms/kaggle_3m/data.csv && test -d mri4/Training && test -f configs/demo.yaml\n"
        "tumorlab audit phantoms --json > audit.json && test -s audit.json\n"
        "touch mine\n```\n\n"
        "<!-- docs-check -->\n```bash\ntest ! -e mine   # a fresh folder\necho 'the tail'\nfalse\necho never\n```\n"
    )
    code = docs_check.main([str(REPO / "docs" / "commands.md"), str(page)])
    out = capsys.readouterr().out
    assert code == 1
    assert "ok      docs/commands.md:6" in out and f"ok      {page}:2" in out
    assert f"FAILED  {page}:9  (exit status 1" in out and "    the tail" in out and "never" not in out
    assert "2 of 3 blocks passed" in out
