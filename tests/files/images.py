"""Test photos and documents, made on the spot (nothing downloaded)."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import ExifTags, Image, ImageDraw

CAMERA = "TelecareTestCam"  # the camera model written into EXIF: must not survive re-encoding
JFIF_HEADER = b"\xff\xd8\xff\xe0\x00\x10JFIF"


def picture(size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A photo-like RGB image with detail (so sharpness has something to measure)."""
    image = Image.new("RGB", size, (180, 120, 100))
    draw = ImageDraw.Draw(image)
    step = max(4, size[0] // 16)
    for x in range(0, size[0], step):
        draw.line([(x, 0), (x, size[1])], fill=(40, 30, 20), width=2)
    for y in range(0, size[1], step):
        draw.line([(0, y), (size[0], y)], fill=(240, 230, 220), width=1)
    return image


def gps_exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Model] = CAMERA
    exif[ExifTags.Base.Make] = CAMERA
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (40.0, 26.0, 46.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "W"
    gps[ExifTags.GPS.GPSLongitude] = (79.0, 58.0, 56.0)
    return exif


def jpeg(image: Image.Image | None = None, *, exif: Image.Exif | None = None, quality: int = 85) -> bytes:
    out = io.BytesIO()
    kwargs = {"exif": exif.tobytes()} if exif is not None else {}
    (image or picture()).save(out, format="JPEG", quality=quality, **kwargs)
    return out.getvalue()


def png(image: Image.Image | None = None) -> bytes:
    out = io.BytesIO()
    (image or picture()).save(out, format="PNG")
    return out.getvalue()


def two_halves(size: tuple[int, int] = (60, 40)) -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    return image


def heic(image: Image.Image | None = None, *, exif: Image.Exif | None = None) -> bytes:
    """A HEIC photo encoded with pillow-heif's x265 encoder (a test extra); skips when it cannot encode."""
    try:
        import pillow_heif
    except ImportError:
        pytest.skip("pillow-heif (test extra) is not installed: no HEIC encoder to make the test photo")
    if "x265" not in pillow_heif.libheif_info().get("encoders", {}):
        pytest.skip("this libheif has no HEVC encoder: cannot make a HEIC test photo")
    out = io.BytesIO()
    kwargs = {"exif": exif.tobytes()} if exif is not None else {}
    pillow_heif.from_pillow(image or picture()).save(out, quality=80, **kwargs)
    return out.getvalue()


def minimal_pdf() -> bytes:
    body = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    body += b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
    xref = len(body)
    body += b"xref\n0 3\n0000000000 65535 f \n0000000009 00000 n \n0000000058 00000 n \n"
    body += b"trailer\n<< /Size 3 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref
    return body


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header declaring `width` x `height` (a decompression bomb's header), tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
