"""A DICOM series that travels as bytes (a zip archive), so no file path ever crosses an API.

A client zips a series' files (:func:`pack_series`: DICOM Part-10 files only, flat names); a server
reads the bytes back into a `Volume` (:func:`read_series_archive`). The bytes are untrusted:

* the archive's names are never used as paths: each file is written into a fresh private folder
  under a name of our own (a counter and the original base name reduced to ``[A-Za-z0-9._-]``);
  names that are absolute, hold ``..``, a drive letter or a NUL are refused all the same, as are
  symbolic links and encrypted entries;
* budgets are checked before anything is inflated (the entry count its end record declares, before
  the central directory is parsed; file count; the sizes the archive declares) and
  again while inflating (the bytes actually produced), so a zip bomb or a lying header stops at the
  budget; the voxels the slices declare are checked before any pixel is decoded;
* every file must be DICOM Part 10 (``DICM`` after the 128-byte preamble); macOS' ``__MACOSX/``
  resource forks and ``.DS_Store`` are skipped, anything else that is not DICOM is refused by name.

Then the series is read as any DICOM folder (`series.read_series`: slice geometry checks, UIDs kept);
the private folder is deleted whatever happens.
"""
from __future__ import annotations

import io
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from struct import error as struct_error
from pathlib import Path

import numpy as np

from ..errors import InputError

DICM_OFFSET = 128
MAX_FILES = 5000
_UID = re.compile(r"[0-9.]{1,64}")
_DRIVE = re.compile(r"^[A-Za-z]:")
_SKIP = ("__MACOSX/", ".DS_Store")


class ArchiveTooLarge(InputError):
    """The archive is over a budget (files, unpacked bytes, voxels): a server answers 413."""


def _shown(name: str) -> str:
    """An archive name as it may appear in a message: printable, short."""
    s = "".join(c if c.isprintable() else "?" for c in name)
    return s if len(s) <= 80 else s[:77] + "..."


def _unsafe(name: str) -> bool:
    n = name.replace("\\", "/")
    return (n.startswith("/") or bool(_DRIVE.match(n)) or "\x00" in n
            or any(part == ".." for part in n.split("/")))


def _safe_base(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]", "_", base)[:60].lstrip(".") or "file"


def is_dicom_part10(head: bytes) -> bool:
    return len(head) >= DICM_OFFSET + 4 and head[DICM_OFFSET:DICM_OFFSET + 4] == b"DICM"


def pack_series(source, level: int = 1) -> bytes:
    """A zip of the DICOM Part-10 files under ``source`` (a folder, searched recursively) with flat
    names: what a client sends. Non-DICOM files are left out; none found is an error."""
    folder = Path(source)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder of DICOM files")
    buf = io.BytesIO()
    n = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as z:
        for p in sorted(q for q in folder.rglob("*") if q.is_file()):
            with open(p, "rb") as f:
                if not is_dicom_part10(f.read(DICM_OFFSET + 4)):
                    continue
            n += 1
            z.write(p, f"{n:05d}_{_safe_base(p.name)}")
    if n == 0:
        raise InputError(f"no DICOM (Part 10) file found under {folder}")
    return buf.getvalue()


def _check_entry_count(buf: io.BytesIO, max_files: int) -> None:
    """Refuse an archive whose end record declares far more entries than files allowed, before zipfile
    parses its central directory (millions of tiny entries would take gigabytes as ZipInfo objects)."""
    try:
        end = zipfile._EndRecData(buf)  # the end-of-central-directory record (ZIP64 aware)
    except (OSError, ValueError, struct_error):
        end = None
    limit = 2 * max_files + 64  # folders are entries too
    if end is not None and end[zipfile._ECD_ENTRIES_TOTAL] > limit:
        raise ArchiveTooLarge(f"the archive declares {end[zipfile._ECD_ENTRIES_TOTAL]} entries, over the limit of "
                              f"{limit} for {max_files} files (medsegsuite serve --max-dicom-files); send one series")
    buf.seek(0)


def _members(z: zipfile.ZipFile, max_files: int, max_bytes: int) -> list[zipfile.ZipInfo]:
    """The file entries to read, after every check that needs no inflating."""
    infos = [i for i in z.infolist() if not i.is_dir()]
    for i in infos:
        if _unsafe(i.filename):
            raise InputError(f"archive entry '{_shown(i.filename)}' has an absolute or parent-folder ('..') path: "
                             "the archive was refused and nothing was extracted")
        if stat.S_ISLNK(i.external_attr >> 16):
            raise InputError(f"archive entry '{_shown(i.filename)}' is a symbolic link: the archive was refused")
        if i.flag_bits & 0x1:
            raise InputError(f"archive entry '{_shown(i.filename)}' is encrypted: send an unencrypted archive")
    infos = [i for i in infos if not any(s in i.filename for s in _SKIP)]
    if not infos:
        raise InputError("the archive holds no files; zip the DICOM files of one series")
    if len(infos) > max_files:
        raise ArchiveTooLarge(f"the archive holds {len(infos)} files, over the limit of {max_files} "
                              "(medsegsuite serve --max-dicom-files); send one series")
    declared = sum(i.file_size for i in infos)
    if declared > max_bytes:
        raise ArchiveTooLarge(f"the archive unpacks to {declared / 2**20:.1f} MiB, over the limit of "
                              f"{max_bytes / 2**20:g} MiB (medsegsuite serve --max-request-mb)")
    return infos


def _extract(z: zipfile.ZipFile, infos, folder: Path, max_bytes: int) -> None:
    """Write each entry under a name of ours, counting the bytes inflation actually produces."""
    total = 0
    for n, info in enumerate(infos, 1):
        target = folder / f"{n:05d}_{_safe_base(info.filename)}"
        with z.open(info) as src, open(target, "xb") as dst:
            head = True
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise ArchiveTooLarge(f"the archive unpacks to more than {max_bytes / 2**20:g} MiB (its entries "
                                          "declare less: a malformed or malicious archive); refused")
                if head:
                    if not is_dicom_part10(chunk):
                        raise InputError(f"archive entry '{_shown(info.filename)}' is not a DICOM file (no 'DICM' "
                                         "after the 128-byte preamble); zip only the DICOM files of the series")
                    head = False
                dst.write(chunk)
            if head:
                raise InputError(f"archive entry '{_shown(info.filename)}' is empty, not a DICOM file")


def _pick_series(folder: Path, series: str | None, max_voxels: int) -> str:
    """The series to read (checked against ``max_voxels`` from its headers, before any pixel)."""
    from .series import list_series

    found = list_series(folder)
    if not found:
        raise InputError("the archive holds no DICOM image series (only non-image objects, or none)")
    if series is None:
        if len(found) > 1:
            listing = "\n  ".join(s.describe() for s in found)
            raise InputError(f"the archive holds {len(found)} image series; send it again naming one (series=UID, "
                             f"a unique prefix is enough):\n  {listing}")
        pick = found[0]
    else:
        hits = [s for s in found if s.uid == series] or [s for s in found if s.uid.startswith(series)]
        if len(hits) != 1:
            listing = "\n  ".join(s.describe() for s in found)
            raise InputError(f"the archive holds {'no' if not hits else 'more than one'} image series matching "
                             f"'{series}'; it holds:\n  {listing}")
        pick = hits[0]
    voxels = sum(int(h.Rows) * int(h.Columns) * int(getattr(h, "NumberOfFrames", 1) or 1) for h in pick.headers)
    if voxels > max_voxels:
        raise ArchiveTooLarge(f"series {pick.uid} has {voxels:,} voxels, over the limit of {max_voxels:,} "
                              "(medsegsuite serve --max-image-voxels)")
    return pick.uid


def read_series_archive(data: bytes, series: str | None = None, *, max_files: int = MAX_FILES,
                        max_bytes: int = 2**31, max_voxels: int = 2**29, name: str | None = None):
    """A `Volume` (with ``meta["dicom"]``, file names reduced to their base names) from a zip of one
    DICOM series; ``series`` (a UID or unique prefix) picks one of several. See the module docstring."""
    from .series import read_series

    if series is not None and not _UID.fullmatch(str(series)):
        raise InputError("series must be a DICOM UID (digits and dots, at most 64 characters)")
    buf = io.BytesIO(data)
    if not zipfile.is_zipfile(buf):
        raise InputError("the upload is not a zip archive; send the DICOM files of one series as a zip")
    _check_entry_count(buf, max_files)
    tmp = Path(tempfile.mkdtemp(prefix="medsegsuite-dicom-"))
    try:
        try:
            with zipfile.ZipFile(buf) as z:
                infos = _members(z, max_files, max_bytes)
                _extract(z, infos, tmp, max_bytes)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
            raise InputError(f"the zip archive is damaged or uses an unsupported feature ({type(e).__name__}: "
                             f"{_shown(str(e))}); zip the series again") from None
        try:
            uid = _pick_series(tmp, series, max_voxels)
            vol = read_series(f"{tmp}#{uid}", name=name or "dicom-upload")
        except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError) as e:
            if isinstance(e, InputError):
                raise
            raise InputError(f"the DICOM headers could not be read ({type(e).__name__}: {_shown(str(e))}); "
                             "check the files are an image series") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta = vol.meta["dicom"]
    meta["files"] = [Path(f).name for f in meta.get("files", [])]
    if not np.isfinite(vol.array).all():
        raise InputError("the series' pixel values are not all finite")
    return vol
