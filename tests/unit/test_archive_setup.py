"""RELAY_ARCHIVE's settings, the folder backend and the image headers read while streaming."""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service import config
from service.archive import media, open_backend
from service.archive.backend import ArchiveError
from service.archive.folder import FolderBackend, read_range
from service.config import ConfigError
from service.sim.media import png_bytes


def load(**env: str) -> config.Settings:
    return config.load(env, env_file=None)


def test_archive_is_off_by_default() -> None:
    settings = load()
    assert settings.archive is None
    assert open_backend(settings) is None
    assert settings.archive_mode == "before_notify"
    assert settings.archive_url_ttl == 3600
    assert settings.archive_retention_days is None
    assert settings.archive_max_image_bytes == 50 * 1024 * 1024
    assert settings.archive_max_video_bytes == 2 * 1024**3
    assert settings.archive_retry_schedule == (0, 5, 30, 120, 600)


def test_archive_settings_are_read(tmp_path: Path) -> None:
    settings = load(
        RELAY_ARCHIVE=f"file://{tmp_path}/out/",
        RELAY_ARCHIVE_MODE="after_notify",
        RELAY_ARCHIVE_URL_TTL="600",
        RELAY_ARCHIVE_RETENTION_DAYS="30",
        RELAY_ARCHIVE_MAX_IMAGE_BYTES="1000",
        RELAY_ARCHIVE_MAX_VIDEO_BYTES="2000",
        RELAY_ARCHIVE_RETRY_SCHEDULE="0,1",
        RELAY_ARCHIVE_ENDPOINT="http://127.0.0.1:9000/",
    )
    assert settings.archive == f"file://{tmp_path}/out"
    assert (settings.archive_mode, settings.archive_url_ttl) == ("after_notify", 600)
    assert settings.archive_retention_days == 30
    assert (settings.archive_max_image_bytes, settings.archive_max_video_bytes) == (1000, 2000)
    assert settings.archive_retry_schedule == (0, 1)
    assert settings.archive_endpoint == "http://127.0.0.1:9000"
    backend = open_backend(settings)
    assert isinstance(backend, FolderBackend)
    assert backend.describe() == f"file://{tmp_path}/out"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"RELAY_ARCHIVE": "file://relative/path"}, "RELAY_ARCHIVE"),
        ({"RELAY_ARCHIVE": "ftp://user:hunter2@host/x"}, "RELAY_ARCHIVE"),
        ({"RELAY_ARCHIVE": "s3://"}, "RELAY_ARCHIVE"),
        ({"RELAY_ARCHIVE_MODE": "sometimes"}, "RELAY_ARCHIVE_MODE"),
        ({"RELAY_ARCHIVE_URL_TTL": "0"}, "RELAY_ARCHIVE_URL_TTL"),
        ({"RELAY_ARCHIVE_URL_TTL": "604801"}, "RELAY_ARCHIVE_URL_TTL"),
        ({"RELAY_ARCHIVE_RETENTION_DAYS": "0"}, "RELAY_ARCHIVE_RETENTION_DAYS"),
        ({"RELAY_ARCHIVE_RETENTION_DAYS": "soon"}, "RELAY_ARCHIVE_RETENTION_DAYS"),
        ({"RELAY_ARCHIVE_MAX_VIDEO_BYTES": "-5"}, "RELAY_ARCHIVE_MAX_VIDEO_BYTES"),
        ({"RELAY_ARCHIVE_RETRY_SCHEDULE": "0,x"}, "RELAY_ARCHIVE_RETRY_SCHEDULE"),
    ],
)
def test_invalid_archive_settings_stop_with_the_variable_named(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named) as caught:
        load(**env)
    assert "hunter2" not in str(caught.value)


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_folder_writes_whole_files_private_and_reads_ranges(tmp_path: Path) -> None:
    backend = FolderBackend(str(tmp_path / "archive"))
    stored = await backend.put("2026/11/30/job_1/0.png", _chunks(b"abc", b"defg"), "image/png")
    assert (stored.key, stored.bytes) == ("2026/11/30/job_1/0.png", 7)
    path = backend.path(stored.key)
    assert path.read_bytes() == b"abcdefg"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "archive").stat().st_mode) == 0o700
    assert os.listdir(path.parent) == ["0.png"]  # no temporary file left
    got = b"".join([c async for c in read_range(path, 2, 3, chunk=2)])
    assert got == b"cde"
    assert await backend.url(stored.key, 60) is None
    await backend.delete(stored.key)
    await backend.delete(stored.key)  # a missing file is no error
    assert not path.exists()


async def test_a_failed_put_leaves_nothing_under_its_key(tmp_path: Path) -> None:
    backend = FolderBackend(str(tmp_path))

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 10
        raise ArchiveError("cut short", retry=True)

    await backend.put("a/0.png", _chunks(b"old"), "image/png")
    with pytest.raises(ArchiveError):
        await backend.put("a/0.png", broken(), "image/png")
    assert backend.path("a/0.png").read_bytes() == b"old"
    assert os.listdir(tmp_path / "a") == ["0.png"]


def test_keys_never_leave_the_folder(tmp_path: Path) -> None:
    backend = FolderBackend(str(tmp_path))
    for key in ("../x", "a/../../x", ""):
        with pytest.raises(ArchiveError):
            backend.path(key)


def test_key_layout() -> None:
    # 2026-11-30T10:00:00Z
    assert media.key("job_1", 2, 1796032800.0, "video/mp4") == "2026/11/30/job_1/2.mp4"
    assert media.key("job_1", 0, 1796032800.0, "image/jpeg").endswith("/0.jpg")
    assert media.key("job_1", 0, 1796032800.0, "image/x-new").endswith("/0.bin")


def test_image_sizes_from_their_first_bytes() -> None:
    assert media.image_size(png_bytes(640, 3, size=5000)) == (640, 3)
    jpeg = (
        b"\xff\xd8"
        + b"\xff\xe0"
        + struct.pack(">H", 16)
        + b"JFIF\x00" * 2
        + b"\x00\x00\x00\x00"
        + b"\xff\xc0"
        + struct.pack(">HBHH", 17, 8, 720, 1280)
        + b"\x00" * 10
    )
    assert media.image_size(jpeg) == (1280, 720)
    vp8x = b"RIFF\x00\x00\x00\x00WEBPVP8X" + b"\x00" * 8 + (1919).to_bytes(3, "little")
    vp8x += (1079).to_bytes(3, "little")
    assert media.image_size(vp8x) == (1920, 1080)
    vp8 = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 10 + struct.pack("<HH", 300, 200)
    assert media.image_size(vp8) == (300, 200)
    assert media.image_size(b"\x00\x00\x00\x18ftypmp42") is None
    assert media.image_size(b"\x89PNG") is None


def test_an_unusable_archive_is_named_before_serving(tmp_path: Path) -> None:
    from service.archive import unavailable

    assert unavailable(load()) is None
    fine = tmp_path / "made" / "here"
    assert unavailable(load(RELAY_ARCHIVE=f"file://{fine}")) is None
    assert stat.S_IMODE(fine.stat().st_mode) == 0o700
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    problem = unavailable(load(RELAY_ARCHIVE=f"file://{blocker}/sub"))
    assert problem is not None and "cannot create the folder" in problem
