"""The photo quality bar, without a database: the sharpness floor is calibrated on a synthetic sharp pattern
against the same pattern Gaussian-blurred (radius 4), at the sizes phones and the portal produce
(docs/dermatology.md#photo-checks)."""

from __future__ import annotations

import pytest
from PIL import ImageFilter

from telecare.core.errors import FieldError
from telecare.dermatology import service
from telecare.dermatology.models import PhotoRole
from telecare.files.content import sharpness
from telecare.messaging.service import Upload
from tests.files.images import jpeg, picture

SIZES = [(800, 600), (640, 640), (1200, 900), (2000, 1500), (1536, 2048)]
LIMITS = {"max_bytes": 20_000_000, "max_pixels": 50_000_000, "max_edge": 2048}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_sharpness_floor_separates_sharp_from_blurred_with_a_margin(size: tuple[int, int]) -> None:
    sharp = sharpness(jpeg(picture(size))).score
    blurred = sharpness(jpeg(picture(size).filter(ImageFilter.GaussianBlur(radius=4)))).score
    assert sharp > 4 * service.MIN_SHARPNESS, sharp
    assert blurred < service.MIN_SHARPNESS / 2, blurred


def _check(data: bytes, field: str = "close_up") -> service._Checked:
    photo = service.PhotoUpload(PhotoRole.CLOSE_UP, field, Upload(data, "x.jpg"))
    return service._check_photo(photo, LIMITS["max_bytes"], LIMITS["max_pixels"], LIMITS["max_edge"])


def test_a_sharp_photo_passes_with_its_measurements() -> None:
    checked = _check(jpeg(picture((1200, 900))))
    assert (checked.width, checked.height) == (1200, 900)
    assert checked.sharpness > service.MIN_SHARPNESS


def test_a_blurred_photo_is_refused_naming_the_field_with_the_retake_message() -> None:
    blurred = jpeg(picture((1200, 900)).filter(ImageFilter.GaussianBlur(radius=4)))
    with pytest.raises(service.PhotoRejected) as caught:
        _check(blurred, "context")
    assert caught.value.status_code == 422
    assert caught.value.errors == [FieldError("context", service.BLURRED)]
    assert "blurred" in service.BLURRED
    assert "retake" in service.BLURRED


@pytest.mark.parametrize("size", [(599, 800), (800, 599), (320, 240)])
def test_a_photo_under_the_minimum_short_edge_is_refused(size: tuple[int, int]) -> None:
    with pytest.raises(service.PhotoRejected) as caught:
        _check(jpeg(picture(size)))
    assert caught.value.errors[0].field == "close_up"
    assert "too small" in caught.value.errors[0].message


def test_the_short_edge_minimum_is_inclusive() -> None:
    assert min(_check(jpeg(picture((600, 800)))).width, 800) == 600
