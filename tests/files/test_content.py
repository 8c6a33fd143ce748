"""Content checks by content, not by name (docs/files.md#content-checks): what is accepted, what is refused,
and what re-encoding leaves of a photo."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image, ImageFilter

from telecare.files.content import (
    CheckedContent,
    FileTooLarge,
    ImageTooLarge,
    UnreadableFile,
    UnsupportedFileType,
    check_upload,
    display_name,
    sharpness,
    sniff,
)
from telecare.files.models import FileKind
from telecare.files.service import ANY_FILE, IMAGES_ONLY
from tests.files import images

LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": 50_000_000, "max_edge": 2048}


def check(data: bytes, accept: frozenset[FileKind] = ANY_FILE, **limits: int) -> CheckedContent:
    return check_upload(data, field="photo", accept=accept, **{**LIMITS, **limits})


def _assert_names_field(exc: pytest.ExceptionInfo[Exception]) -> None:
    errors = getattr(exc.value, "errors", [])
    assert [e.field for e in errors] == ["photo"]


def test_jpeg_with_gps_exif_comes_out_without_any_metadata() -> None:
    source = images.jpeg(exif=images.gps_exif())
    assert b"Exif" in source
    assert images.CAMERA.encode() in source
    assert Image.open(io.BytesIO(source)).getexif().get_ifd(ExifTags.IFD.GPSInfo)
    checked = check(source)
    out = checked.data
    assert checked.content_type == "image/jpeg"
    assert b"Exif" not in out
    assert images.CAMERA.encode() not in out
    assert b"http://ns.adobe.com/xap" not in out  # no XMP
    decoded = images.decode(out)
    assert len(decoded.getexif()) == 0
    assert decoded.getexif().get_ifd(ExifTags.IFD.GPSInfo) == {}
    assert "exif" not in decoded.info
    assert "icc_profile" not in decoded.info


def test_exif_orientation_is_applied_before_the_metadata_goes() -> None:
    # Orientation 6: the camera was turned; viewers rotate 90 degrees clockwise, so the left (red) half of
    # the stored pixels shows on top.
    source = images.jpeg(images.two_halves((60, 40)), exif=images.gps_exif(orientation=6), quality=95)
    checked = check(source)
    decoded = images.decode(checked.data).convert("RGB")
    assert decoded.size == (40, 60)
    top, bottom = decoded.getpixel((20, 10)), decoded.getpixel((20, 50))
    assert isinstance(top, tuple)
    assert isinstance(bottom, tuple)
    assert (top[0] > 200, top[2] < 60) == (True, True), top  # red
    assert (bottom[2] > 200, bottom[0] < 60) == (True, True), bottom  # blue
    assert (checked.width, checked.height) == (40, 60)


def test_a_large_photo_is_capped_at_2048_on_the_long_edge() -> None:
    source = images.jpeg(images.picture((5000, 3000)), quality=60)
    checked = check(source)
    decoded = images.decode(checked.data)
    assert decoded.size == (2048, 1229)
    assert (checked.width, checked.height) == (2048, 1229)


def test_png_stays_png_and_loses_its_text_chunks() -> None:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", "patient-name-inside")
    out = io.BytesIO()
    images.picture().convert("RGBA").save(out, format="PNG", pnginfo=info)
    checked = check(out.getvalue())
    assert checked.content_type == "image/png"
    assert b"patient-name-inside" not in checked.data
    assert images.decode(checked.data).mode == "RGBA"


def test_heic_photo_is_decoded_and_stored_as_jpeg_without_metadata() -> None:
    source = images.heic(images.two_halves((64, 48)), exif=images.gps_exif())
    assert sniff(source) == "image/heic"
    checked = check(source, IMAGES_ONLY)
    assert checked.content_type == "image/jpeg"
    assert checked.source_type == "image/heic"
    assert checked.data.startswith(b"\xff\xd8\xff")
    assert b"Exif" not in checked.data
    assert images.CAMERA.encode() not in checked.data
    assert images.decode(checked.data).size == (64, 48)


def test_pdf_named_jpg_is_stored_as_pdf_by_its_content() -> None:
    pdf = images.minimal_pdf()
    checked = check(pdf)
    assert checked.content_type == "application/pdf"
    assert checked.data == pdf
    assert display_name("scan.jpg", checked.extension) == "scan.pdf"


def test_pdf_where_an_image_is_required_is_refused_415() -> None:
    with pytest.raises(UnsupportedFileType) as exc:
        check(images.minimal_pdf(), IMAGES_ONLY)
    assert exc.value.status_code == 415
    _assert_names_field(exc)


@pytest.mark.parametrize(
    "data",
    [
        b"<!doctype html><html><script>alert(document.cookie)</script></html>",
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
        b"MZ\x90\x00 an executable",
        b"",
        b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf",  # AVIF: no decoder shipped
    ],
    ids=["html-named-png", "gif", "exe", "empty", "avif"],
)
def test_other_content_is_refused_415_naming_the_field(data: bytes) -> None:
    with pytest.raises(UnsupportedFileType) as exc:
        check(data)
    assert exc.value.status_code == 415
    _assert_names_field(exc)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8\xff\xe0 a JPEG header and then nothing",
        b"\x89PNG\r\n\x1a\n garbage",
        b"%PDF-1.7\n no trailer",
        images.jpeg()[:200],
    ],
    ids=["jpeg-header-only", "png-garbage", "pdf-no-trailer", "truncated-jpeg"],
)
def test_content_that_only_starts_right_is_refused_422(data: bytes) -> None:
    with pytest.raises(UnreadableFile) as exc:
        check(data)
    assert exc.value.status_code == 422
    _assert_names_field(exc)


def test_decompression_bomb_header_is_refused_before_decoding() -> None:
    bomb = images.png_claiming(100_000, 100_000)  # 10^10 pixels declared in a 100-byte file
    with pytest.raises(ImageTooLarge) as exc:
        check(bomb)
    assert exc.value.status_code == 422
    _assert_names_field(exc)
    with pytest.raises(ImageTooLarge):
        check(images.png(images.picture((300, 200))), max_pixels=300 * 200 - 1)


def test_oversized_upload_is_refused_413() -> None:
    data = images.jpeg()
    with pytest.raises(FileTooLarge) as exc:
        check(data, max_bytes=len(data) - 1)
    assert exc.value.status_code == 413
    _assert_names_field(exc)


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ("../../etc/passwd", "passwd.jpg"),
        ("..\\..\\windows\\system32\\cmd.exe", "cmd.jpg"),
        ("rash\x00.php.jpg", "rash.php.jpg"),
        ("photo\u202egnp.exe", "photognp.jpg"),  # right-to-left override removed
        ("   ", "file.jpg"),
        (None, "file.jpg"),
        ("/", "file.jpg"),
        ("..", "file.jpg"),
        (".htaccess", "htaccess.jpg"),
        ("x" * 500 + ".jpeg", "x" * 116 + ".jpg"),
    ],
)
def test_display_names_are_harmless(declared: str | None, expected: str) -> None:
    name = display_name(declared, "jpg")
    assert name == expected
    assert "/" not in name
    assert "\\" not in name
    assert "\x00" not in name
    assert len(name) <= 120


def test_sharpness_is_higher_for_a_sharp_photo_than_for_its_blurred_copy() -> None:
    sharp = images.picture((800, 600))
    blurred = sharp.filter(ImageFilter.GaussianBlur(6))
    a, b = sharpness(images.png(sharp)), sharpness(images.png(blurred))
    assert (a.width, a.height) == (800, 600)
    assert a.score > 5 * b.score > 0
    flat = sharpness(images.png(Image.new("RGB", (100, 80), (128, 128, 128))))
    assert flat.score == 0.0
    assert (flat.width, flat.height) == (100, 80)


def test_cmyk_jpeg_palette_png_and_icc_profiles_come_out_plain() -> None:
    from PIL import ImageCms

    cmyk = io.BytesIO()
    images.picture().convert("CMYK").save(cmyk, format="JPEG")
    out = check(cmyk.getvalue())
    assert images.decode(out.data).mode == "RGB"
    palette = images.picture().convert("P")
    palette.info["transparency"] = 0
    out = check(images.png(palette))
    assert out.content_type == "image/png"
    assert images.decode(out.data).mode == "RGBA"
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    tagged = io.BytesIO()
    images.two_halves((64, 64)).save(tagged, format="JPEG", icc_profile=srgb, quality=95)
    out = check(tagged.getvalue())
    decoded = images.decode(out.data).convert("RGB")
    assert "icc_profile" not in decoded.info
    red = decoded.getpixel((8, 32))
    assert isinstance(red, tuple)
    assert red[0] > 200  # an sRGB-to-sRGB conversion keeps the colours


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_no_declared_name_yields_a_path_or_control_characters(declared: str) -> None:
    import unicodedata

    name = display_name(declared, "png")
    assert name.endswith(".png")
    assert 5 <= len(name) <= 120
    assert "/" not in name
    assert "\\" not in name
    assert not name.startswith(".")
    assert all(unicodedata.category(ch)[0] != "C" for ch in name)


def test_a_phone_photo_keeps_the_fast_half_scale_decode() -> None:
    # 4,032 x 3,024 (a 12 MP phone photo): the JPEG decoder's 1/2 scale gives 2,016 px, within 2 % of the
    # 2,048 cap, so the photo is stored at that size instead of a full decode and a LANCZOS resize.
    checked = check_upload(
        images.jpeg(images.picture((4032, 3024))), field="photo", accept=IMAGES_ONLY, **LIMITS
    )
    assert (checked.width, checked.height) == (2016, 1512)
