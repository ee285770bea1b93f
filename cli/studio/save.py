"""Opening and saving the sheet's CSV file, never over changes made on disk meanwhile.

`open_sheet(path)` reads the file (UTF-8, at most `MAX_SHEET_BYTES` plus a byte-order mark) and remembers
which file it is (symlinks resolved) and what it held: the SHA-256 of its bytes, their size and `st_mtime_ns`.
`save_sheet(opened, text)` writes `text` to that file only:

- another path is refused (`path=` must resolve to the same file);
- right before writing, the file is read again: if its bytes' SHA-256 or its `st_mtime_ns` differ from when it
  was opened (another program, another person, a second studio tab saved it), the save is refused with a
  message naming the file, and nothing is written — reopen it to see the other changes;
- the text is written to a temporary file in the same folder (`.<name>.<random>.tmp`, the original's
  permission bits), flushed to disk, then moved over the sheet with `os.replace`, which is atomic on one file
  system: a reader sees the old sheet or the new one, never half of one, and a crash leaves the old sheet.
  The symlink, if the sheet was opened through one, keeps pointing at the (replaced) file.

The check and the replace are two steps, so a write landing in the few microseconds between them is not
detected; the studio is a local, single-user tool and this guards against the common case (the file edited in
a spreadsheet while the studio had it open).

Returns a new `OpenedSheet` for the saved bytes, so the next save compares against what this one wrote.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from functions.rules.sheet import MAX_SHEET_BYTES

_BOM = "\ufeff".encode("utf-8")


class SaveRefused(Exception):
    """The sheet was not written (or not read); `str()` names the file and says why."""


@dataclass(frozen=True, slots=True)
class OpenedSheet:
    path: Path
    """The sheet's own file, symlinks resolved."""
    text: str
    """Its contents (a byte-order mark kept, as `SheetModel.from_csv` reads it)."""
    sha256: str
    size: int
    mtime_ns: int


def open_sheet(path: str | Path) -> OpenedSheet:
    """Read the sheet and remember what it held; `SaveRefused` if it cannot be read as a sheet file."""
    resolved = Path(path).resolve()
    try:
        stat = resolved.stat()
        if not resolved.is_file():
            raise SaveRefused(f"{path}: not a file")
        if stat.st_size > MAX_SHEET_BYTES + len(_BOM):
            raise SaveRefused(f"{path}: the sheet is {stat.st_size:,} bytes, more than the {MAX_SHEET_BYTES:,} a "
                              "rules sheet may have (split the sheet or remove rows)")
        data = resolved.read_bytes()
    except FileNotFoundError:
        raise SaveRefused(f"{path}: no such file") from None
    except OSError as error:
        raise SaveRefused(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SaveRefused(f"{path}: not UTF-8 text (byte {error.start}); save the sheet as CSV UTF-8") from None
    return OpenedSheet(resolved, text, hashlib.sha256(data).hexdigest(), len(data), stat.st_mtime_ns)


def save_sheet(opened: OpenedSheet, text: str, *, path: str | Path | None = None) -> OpenedSheet:
    """Write `text` (e.g. `SheetModel.to_csv()`) over the sheet `opened` came from (module docstring)."""
    target = opened.path if path is None else Path(path).resolve()
    if target != opened.path:
        raise SaveRefused(f"{path}: the studio saves only the sheet it opened, {opened.path}")
    data = text.encode("utf-8")
    if len(data) > MAX_SHEET_BYTES + len(_BOM):
        raise SaveRefused(f"{opened.path}: not saved: the sheet would be {len(data):,} bytes, more than the "
                          f"{MAX_SHEET_BYTES:,} a rules sheet may have (remove rows)")
    try:
        stat = target.stat()
        current = target.read_bytes()
    except FileNotFoundError:
        raise SaveRefused(f"{opened.path}: not saved: the file was moved or deleted since it was opened") from None
    except OSError as error:
        raise SaveRefused(f"{opened.path}: not saved: cannot read it: {error.strerror or error}") from None
    if stat.st_mtime_ns != opened.mtime_ns or hashlib.sha256(current).hexdigest() != opened.sha256:
        raise SaveRefused(f"{opened.path}: not saved: the file changed on disk since it was opened (another "
                          "program or person saved it); reopen it to see those changes, then make your edits again")
    handle = tempfile.NamedTemporaryFile("wb", dir=target.parent, prefix=f".{target.name}.", suffix=".tmp",
                                         delete=False)
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, stat.st_mode & 0o7777)
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    saved = target.stat()
    return OpenedSheet(target, text, hashlib.sha256(data).hexdigest(), len(data), saved.st_mtime_ns)
