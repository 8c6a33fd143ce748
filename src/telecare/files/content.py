"""What an upload is, decided from its bytes; images re-encoded without metadata
(docs/files.md#content-checks).

Allowed: JPEG, PNG and HEIC/HEIF photos (iPhones), and PDF documents. The uploaded file name and the
declared content type are never consulted: an HTML page named `x.png` is refused, a PDF named `x.jpg` is a
PDF. Images are decoded (Pillow, with pi-heif for HEIC), turned upright by their EXIF orientation, converted
to sRGB, scaled to at most `max_edge` pixels on the long edge and written out afresh (JPEG for photos, PNG
stays PNG) with no metadata at all: no EXIF (GPS, camera serial, time), XMP, comments or ICC profile.

Everything here is CPU work on untrusted input: callers run it in a worker thread."""

from __future__ import annotations

import contextlib
import io
import math
import re
import threading
import unicodedata
import warnings
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageFilter, ImageOps, ImageStat, UnidentifiedImageError

from telecare.core.errors import AppError, FieldError, PayloadTooLarge, ValidationFailed
from telecare.files.models import FileKind

JPEG = "image/jpeg"
PNG = "image/png"
HEIC = "image/heic"
PDF = "application/pdf"

# ISO/IEC 23008-12 brands of HEVC-coded HEIF (what iPhones write) and the generic image brands that may
# carry it; AVIF ("avif", "avis") is not accepted: pi-heif ships no AV1 decoder.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
_PILLOW_FORMAT = {JPEG: "JPEG", PNG: "PNG", HEIC: "HEIF"}
_EXTENSION = {JPEG: "jpg", PNG: "png", PDF: "pdf"}
_JPEG_QUALITY = 90  # visually lossless for photos of skin; about 1 MB at 2,048 px


class UnsupportedFileType(AppError):
    """The content is not one of the accepted types (JPEG, PNG, HEIC/HEIF, PDF), or not one this upload
    accepts; `errors` names the field."""

    status_code = 415
    code = "unsupported_file_type"
    title = "Unsupported file type"


class UnreadableFile(ValidationFailed):
    """The content starts like an accepted type but does not decode as one (truncated or malformed)."""

    code = "unreadable_file"
    title = "The file cannot be read"


class ImageTooLarge(ValidationFailed):
    """The image has more pixels than the limit (a decompression bomb, or a panorama)."""

    code = "image_too_large"
    title = "Image too large"


class FileTooLarge(PayloadTooLarge):
    """The upload is larger than TELECARE_MAX_UPLOAD_BYTES."""

    code = "file_too_large"
    title = "File too large"


@dataclass(frozen=True)
class CheckedContent:
    kind: FileKind
    content_type: str  # of `data`, what is stored
    data: bytes
    width: int | None = None
    height: int | None = None
    source_type: str = ""  # what was uploaded (image/heic before its re-encoding to JPEG)

    @property
    def extension(self) -> str:
        return _EXTENSION[self.content_type]


def sniff(data: bytes) -> str | None:
    """The content type of `data` by its magic numbers, or None when it is none of the accepted types."""
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if len(data) >= 16 and data[4:8] == b"ftyp":
        box = int.from_bytes(data[:4], "big")
        brands = [data[8:12]] + [data[i : i + 4] for i in range(16, min(box, len(data), 64), 4)]
        if brands[0] not in (b"avif", b"avis") and any(b in _HEIF_BRANDS for b in brands):
            return HEIC
        return None
    if re.match(rb"%PDF-[12]\.\d", data[:8]):
        return PDF
    return None


def check_upload(
    data: bytes,
    *,
    field: str,
    accept: frozenset[FileKind],
    max_bytes: int,
    max_pixels: int,
    max_edge: int,
) -> CheckedContent:
    """Decide what `data` is and return what to store; refuse anything else with a problem naming `field`."""
    if len(data) > max_bytes:
        raise FileTooLarge(
            f"The file is larger than {max_bytes} bytes.",
            errors=[FieldError(field, f"larger than {max_bytes} bytes")],
        )
    detected = sniff(data)
    if detected is None:
        raise UnsupportedFileType(
            "Accepted: JPEG, PNG or HEIC photos and PDF documents.",
            errors=[FieldError(field, "not a JPEG, PNG, HEIC or PDF file")],
        )
    kind = FileKind.PDF if detected == PDF else FileKind.IMAGE
    if kind not in accept:
        wanted = " or ".join(sorted(str(k) for k in accept))
        raise UnsupportedFileType(
            f"This upload accepts: {wanted}.", errors=[FieldError(field, f"expected {wanted}, got {kind}")]
        )
    if kind is FileKind.PDF:
        return _check_pdf(data, field)
    return reencode_image(data, detected, field=field, max_pixels=max_pixels, max_edge=max_edge)


def _check_pdf(data: bytes, field: str) -> CheckedContent:
    # A PDF ends with "startxref", the offset of its cross-reference and "%%EOF" (ISO 32000-1 7.5.5); an
    # incremental update appends another such trailer. The file is stored as uploaded: the server never
    # parses or renders it (docs/files.md#pdf).
    tail = data[-2048:]
    if b"startxref" not in tail or b"%%EOF" not in data[-1024:]:
        raise UnreadableFile(
            "The PDF is truncated or malformed.", errors=[FieldError(field, "not a complete PDF file")]
        )
    return CheckedContent(FileKind.PDF, PDF, data, source_type=PDF)


_heif_lock = threading.Lock()
_heif_ready = False


def _enable_heif() -> None:
    """Teach Pillow to open HEIF with pi-heif (BSD-3-Clause, libheif and libde265 decoders only)."""
    global _heif_ready
    with _heif_lock:
        if not _heif_ready:
            import pi_heif

            pi_heif.register_heif_opener()
            _heif_ready = True


def _open(data: bytes, detected: str, field: str, max_pixels: int) -> Image.Image:
    if detected == HEIC:
        _enable_heif()
    try:
        image = Image.open(io.BytesIO(data), formats=[_PILLOW_FORMAT[detected]])
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UnreadableFile(
            "The image cannot be decoded.", errors=[FieldError(field, "not a readable image")]
        ) from exc
    width, height = image.size
    if width <= 0 or height <= 0 or width * height > max_pixels:
        image.close()
        raise ImageTooLarge(
            f"Images may have at most {max_pixels} pixels.",
            errors=[FieldError(field, f"more than {max_pixels} pixels")],
        )
    return image


def reencode_image(
    data: bytes, detected: str, *, field: str, max_pixels: int, max_edge: int
) -> CheckedContent:
    with warnings.catch_warnings():
        # Pillow's own bomb guard (Image.MAX_IMAGE_PIXELS) warns, then raises; ours is lower and checked
        # from the header before any pixel is decoded, so either of Pillow's is refused the same way.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = _open(data, detected, field, max_pixels)
            with image:
                _draft(image, max_edge)
                image.load()
                upright = ImageOps.exif_transpose(image)
                icc = image.info.get("icc_profile")
            clean = _normalise(upright, icc, to_jpeg=detected != PNG)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise ImageTooLarge(
                f"Images may have at most {max_pixels} pixels.",
                errors=[FieldError(field, f"more than {max_pixels} pixels")],
            ) from exc
        except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt pixel data
            raise UnreadableFile(
                "The image cannot be decoded.", errors=[FieldError(field, "not a readable image")]
            ) from exc
    clean = _fit(clean, max_edge)
    out = io.BytesIO()
    if detected == PNG:
        clean.save(out, format="PNG", optimize=False)
        content_type = PNG
    else:
        clean.save(out, format="JPEG", quality=_JPEG_QUALITY)
        content_type = JPEG
    return CheckedContent(
        FileKind.IMAGE, content_type, out.getvalue(), clean.width, clean.height, source_type=detected
    )


DRAFT_TOLERANCE = 0.98


def _draft(image: Image.Image, max_edge: int) -> None:
    """Let the JPEG decoder scale down by 1/2, 1/4 or 1/8 while decoding (a 48 MP photo then never sits
    in memory at full size); the result stays at least the size the final image needs."""
    if image.format != "JPEG" or max(image.size) <= max_edge:
        return
    # "About" the long edge: a phone's 4,032 px photo halves to 2,016, 2 % under 2,048. Accepting that
    # keeps the decoder's 1/2 scale (about 4x faster than a full decode and resize, bench/messaging.py).
    scale = max_edge * DRAFT_TOLERANCE / max(image.size)
    wanted = (math.ceil(image.width * scale), math.ceil(image.height * scale))
    image.draft(image.mode if image.mode in ("RGB", "L") else None, wanted)


def _normalise(image: Image.Image, icc: bytes | None, *, to_jpeg: bool) -> Image.Image:
    """Pixels only, in a mode the output format keeps, colours in sRGB; a new image object so that none of
    the source's metadata (`info`: exif, xmp, icc_profile, comments, text chunks) can be written out."""
    rgb_source = image.mode in ("RGB", "RGBA")  # an ICC profile of a CMYK or grey image describes no RGB
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
        has_alpha = "A" in image.mode or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha and not to_jpeg else "RGB")
    if icc and rgb_source:
        # An unusable profile: keep the pixels as they are.
        with contextlib.suppress(ImageCms.PyCMSError, OSError, ValueError):
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"))
            if converted is not None:
                image = converted
    if to_jpeg and image.mode in ("LA", "RGBA"):
        background = Image.new("RGB" if image.mode == "RGBA" else "L", image.size, "white")
        background.paste(image, mask=image.getchannel("A"))
        image = background
    return Image.frombytes(image.mode, image.size, image.tobytes())


def _fit(image: Image.Image, max_edge: int) -> Image.Image:
    long_edge = max(image.size)
    if long_edge <= max_edge:
        return image
    scale = max_edge / long_edge
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


# ---- display names -------------------------------------------------------------------------------------

_NAME_LIMIT = 120


def display_name(declared: str | None, extension: str) -> str:
    """A name to show, never to open: the last path component of what the client sent, without control or
    formatting characters (NUL, bidi overrides), with the extension of what is really stored."""
    text = unicodedata.normalize("NFC", declared or "")
    text = re.split(r"[\\/]", text)[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] not in ("C", "Z") or ch == " ")
    text = re.sub(r"\s+", " ", text).strip(" .")
    stem = text.rsplit(".", 1)[0] if "." in text else text
    stem = stem.strip(" .")[: _NAME_LIMIT - len(extension) - 1].rstrip(" .") or "file"
    return f"{stem}.{extension}"


# ---- photo quality (dermatology) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Sharpness:
    width: int
    height: int
    score: float  # variance of the Laplacian; higher is sharper


_SHARPNESS_EDGE = 512
_LAPLACIAN = ImageFilter.Kernel((3, 3), [0, 1, 0, 1, -4, 1, 0, 1, 0], scale=1, offset=128)


def sharpness(data: bytes) -> Sharpness:
    """Blur measure of a stored (already checked) image: the variance of the Laplacian of a grayscale copy
    scaled to 512 px on the long edge (docs/files.md#sharpness). Pillow's 8-bit filter clips the Laplacian
    to +-127, which only flattens the strongest edges; a blurred photo scores far lower either way. The
    thresholds are the dermatology domain's to set."""
    _enable_heif()
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        width, height = image.size
        gray = ImageOps.exif_transpose(image).convert("L")
    if max(gray.size) > _SHARPNESS_EDGE:
        gray.thumbnail((_SHARPNESS_EDGE, _SHARPNESS_EDGE), Image.Resampling.BILINEAR)
    edges = gray.filter(_LAPLACIAN)
    if edges.width > 2 and edges.height > 2:  # the border pixels see the image's edge, not its content
        edges = edges.crop((1, 1, edges.width - 1, edges.height - 1))
    return Sharpness(width, height, float(ImageStat.Stat(edges).var[0]))
