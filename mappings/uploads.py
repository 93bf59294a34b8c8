"""Files uploaded for an import, kept between the preview and the confirm of one person."""

from __future__ import annotations

import re
import secrets
import tempfile
import time
from pathlib import Path

from django import forms

UPLOAD_DIR_NAME = "stagemap-imports"
KEEP_SECONDS = 24 * 3600
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
SUFFIXES = (".csv", ".xlsx")
BAD_SUFFIX = "Upload a .csv (UTF-8) or .xlsx file."
TOO_LARGE = "The file is larger than {limit} MB."
_TOKEN = re.compile(r"[0-9a-f]{32}")


class ImportFileForm(forms.Form):
    import_file = forms.FileField(label="File (.csv or .xlsx)")

    def clean_import_file(self):
        upload = self.cleaned_data["import_file"]
        if Path(upload.name).suffix.lower() not in SUFFIXES:
            raise forms.ValidationError(BAD_SUFFIX)
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(TOO_LARGE.format(limit=MAX_UPLOAD_BYTES // 2**20))
        return upload


def upload_dir() -> Path:
    folder = Path(tempfile.gettempdir()) / UPLOAD_DIR_NAME
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def upload_store(*, upload, owner: str) -> tuple[str, str]:
    """Copy the upload chunk by chunk to a private file; returns (token, suffix).

    `owner` (e.g. "<user id>-<field mapping id>") is part of the file name, so only the same
    person on the same page finds it again.
    """
    _forget_old()
    token = secrets.token_hex(16)
    suffix = Path(upload.name).suffix.lower()
    with open(upload_dir() / f"{owner}-{token}{suffix}", "xb") as out:
        for chunk in upload.chunks():
            out.write(chunk)
    return token, suffix


def upload_path(*, owner: str, token: str, suffix: str) -> Path | None:
    """The stored file, or None when the token is malformed or the file is gone."""
    if not _TOKEN.fullmatch(token or "") or suffix not in SUFFIXES:
        return None
    path = upload_dir() / f"{owner}-{token}{suffix}"
    return path if path.is_file() else None


def upload_forget(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def _forget_old() -> None:
    limit = time.time() - KEEP_SECONDS
    for path in upload_dir().iterdir():
        try:
            if path.stat().st_mtime < limit:
                path.unlink(missing_ok=True)
        except OSError:
            continue
