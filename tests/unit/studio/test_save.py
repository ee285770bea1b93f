"""Saving only over the sheet that was opened, unchanged since."""

from __future__ import annotations

import os

import pytest

from cli.studio.save import SaveRefused, open_sheet, save_sheet
from cli.studio.sheet_model import SheetModel

from .conftest import DEMO, read


@pytest.fixture
def sheet(tmp_path):
    path = tmp_path / "rules.csv"
    path.write_bytes(DEMO.read_bytes())
    path.chmod(0o640)
    return path


def test_save_writes_the_edit_and_can_save_again(sheet):
    opened = open_sheet(sheet)
    model = SheetModel.from_csv(opened.text).set_cell(0, "Target-C", "4")
    saved = save_sheet(opened, model.to_csv())
    assert sheet.read_text(encoding="utf-8") == model.to_csv() and saved.text == model.to_csv()
    assert oct(sheet.stat().st_mode & 0o777) == "0o640"
    assert [p.name for p in sheet.parent.iterdir()] == ["rules.csv"]  # no temporary file left
    save_sheet(saved, model.set_cell(0, "Target-C", "5").to_csv())
    assert SheetModel.from_csv(read(sheet)).cell(0, "Target-C") == "5"


def test_unedited_save_is_byte_identical(sheet):
    opened = open_sheet(sheet)
    save_sheet(opened, SheetModel.from_csv(opened.text).to_csv())
    assert sheet.read_bytes() == DEMO.read_bytes()


def test_refused_when_the_file_changed_on_disk(sheet):
    opened = open_sheet(sheet)
    sheet.write_text(opened.text.replace("push-regular", "someone-else"), encoding="utf-8")
    with pytest.raises(SaveRefused, match="changed on disk since it was opened") as refused:
        save_sheet(opened, opened.text)
    assert str(sheet) in str(refused.value)
    assert "someone-else" in sheet.read_text(encoding="utf-8")


def test_refused_when_only_the_time_changed(sheet):
    opened = open_sheet(sheet)
    os.utime(sheet, ns=(opened.mtime_ns + 5_000_000_000, opened.mtime_ns + 5_000_000_000))
    with pytest.raises(SaveRefused, match="changed on disk"):
        save_sheet(opened, "x")
    assert sheet.read_bytes() == DEMO.read_bytes()


def test_refused_for_another_path_and_a_deleted_file(sheet, tmp_path):
    opened = open_sheet(sheet)
    other = tmp_path / "other.csv"
    with pytest.raises(SaveRefused, match="only the sheet it opened"):
        save_sheet(opened, opened.text, path=other)
    assert not other.exists()
    sheet.unlink()
    with pytest.raises(SaveRefused, match="moved or deleted"):
        save_sheet(opened, opened.text)


def test_symlink_is_resolved_and_kept(sheet, tmp_path):
    link = tmp_path / "link.csv"
    link.symlink_to(sheet)
    opened = open_sheet(link)
    assert opened.path == sheet.resolve()
    save_sheet(opened, opened.text.replace("push-regular", "pushed"), path=link)
    assert link.is_symlink() and "pushed" in sheet.read_text(encoding="utf-8")


def test_open_refuses_what_is_not_a_sheet_file(tmp_path):
    with pytest.raises(SaveRefused, match="no such file"):
        open_sheet(tmp_path / "none.csv")
    with pytest.raises(SaveRefused, match="not a file"):
        open_sheet(tmp_path)
    (tmp_path / "latin1.csv").write_bytes("RuleId\n\xe9\n".encode("latin-1"))
    with pytest.raises(SaveRefused, match="not UTF-8"):
        open_sheet(tmp_path / "latin1.csv")
    (tmp_path / "big.csv").write_bytes(b"a" * 1_000_100)
    with pytest.raises(SaveRefused, match="more than the 1,000,000"):
        open_sheet(tmp_path / "big.csv")


def test_refuses_to_write_more_than_a_sheet_may_hold(sheet):
    opened = open_sheet(sheet)
    with pytest.raises(SaveRefused, match="would be"):
        save_sheet(opened, "a" * 1_000_100)
    assert sheet.read_bytes() == DEMO.read_bytes()
