"""Chapters are text sources: each notebook equals what ``python -m tools.sync`` makes of its source, and the
chapter code passes the project's ruff rules and imports only what trustml has. Each check is also shown to
fail on a deliberately broken chapter."""

from __future__ import annotations

import pathlib
import shutil

import pytest

from tools.lint import missing_imports, mypy_findings, ruff_findings
from tools.sync import check, read_source, write_all

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHAPTER = pathlib.Path("book") / "privacy" / "01_dp_basics.md"


@pytest.fixture
def scratch_book(tmp_path: pathlib.Path) -> pathlib.Path:
    """A copy of one chapter (source and notebook) and the project's configuration in a temporary root."""
    for relative in (CHAPTER, CHAPTER.with_suffix(".ipynb"), pathlib.Path("pyproject.toml")):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / relative, tmp_path / relative)
    return tmp_path


def test_every_notebook_equals_its_source():
    assert check() == {}, "run: python -m tools.sync"


def test_sync_check_fails_on_a_stale_notebook(scratch_book: pathlib.Path):
    assert check(scratch_book) == {}
    source = scratch_book / CHAPTER
    source.write_text(source.read_text().replace("N_DEVICES = 1000", "N_DEVICES = 999"))
    problems = check(scratch_book)
    assert list(problems) == [str(CHAPTER.with_suffix(".ipynb"))]
    assert "source differ" in problems[str(CHAPTER.with_suffix(".ipynb"))][0]
    write_all(scratch_book)
    assert check(scratch_book) == {}


def test_sync_check_fails_on_a_notebook_without_source(scratch_book: pathlib.Path):
    (scratch_book / CHAPTER).unlink()
    assert "no source" in check(scratch_book)[str(CHAPTER.with_suffix(".ipynb"))][0]


def test_a_source_must_start_with_the_notebook_header(tmp_path: pathlib.Path):
    plain = tmp_path / "chapter.md"
    plain.write_text("# A page\n")
    with pytest.raises(ValueError, match="MyST notebook header"):
        read_source(plain)


def test_the_repository_passes_ruff():
    assert ruff_findings() == []


def test_ruff_reports_a_broken_chapter_at_its_source_line(scratch_book: pathlib.Path):
    source = scratch_book / CHAPTER
    lines = source.read_text().split("\n")
    at = lines.index("import warnings") + 1
    lines.insert(at, "import os")
    source.write_text("\n".join(lines))
    write_all(scratch_book)
    assert ruff_findings(scratch_book) == [f"{CHAPTER}:{at + 1}:8: F401 `os` imported but unused"]


@pytest.mark.parametrize("path", sorted((ROOT / "book").glob("*/*.md")), ids=lambda p: p.stem)
def test_chapter_imports_exist_in_trustml(path: pathlib.Path):
    assert missing_imports(read_source(path)) == []


def test_missing_import_check_catches_a_renamed_function():
    chapter = read_source(ROOT / CHAPTER)
    cell = next(c for c in chapter.cells if "from trustml.privacy import" in c.source)
    cell.source = cell.source.replace("gaussian_delta", "gaussian_delta_renamed")
    assert any("gaussian_delta_renamed" in found for found in missing_imports(chapter))


@pytest.mark.slow
def test_trustml_passes_mypy():
    assert mypy_findings() == []


def test_mypy_findings_report_a_type_error(tmp_path: pathlib.Path):
    (tmp_path / "trustml").mkdir()
    (tmp_path / "trustml" / "__init__.py").write_text('def half(x: int) -> int:\n    return x / 2\n')
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    found = mypy_findings(tmp_path)
    assert len(found) == 1 and "Incompatible return value type" in found[0]

