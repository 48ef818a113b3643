"""The JPEG scan count is read from the file's markers as libjpeg reads them: segment
lengths followed, entropy-coded data and junk between segments skipped, so scans cannot
be hidden from the count and still be decoded."""

from pathlib import Path

import pytest

from app.uploads.sanitize import JPEG_MAX_SCANS, Refused, _check_jpeg_scans, _jpeg_markers
from tests import upload_files


def test_a_photo_has_its_one_scan() -> None:
    markers = list(_jpeg_markers(upload_files.phone_jpeg()))
    assert markers.count(0xDA) == 1
    assert 0xE1 in markers  # its EXIF segment, skipped by its length


def test_scans_past_the_limit_are_refused_even_with_junk_between_them(tmp_path: Path) -> None:
    bomb = upload_files.jpeg_scan_bomb(scans=JPEG_MAX_SCANS + 1)
    first = bomb.index(b"\xff\xda")
    junky = bomb[:first] + b"junk" + bomb[first:]  # libjpeg warns, skips it and decodes on
    for data in (bomb, junky):
        path = tmp_path / "bomb.jpg"
        path.write_bytes(data)
        with pytest.raises(Refused, match=f"more than {JPEG_MAX_SCANS} scans"):
            _check_jpeg_scans(path)
    fine = tmp_path / "fine.jpg"
    fine.write_bytes(upload_files.jpeg_scan_bomb(scans=JPEG_MAX_SCANS - 20))
    _check_jpeg_scans(fine)
