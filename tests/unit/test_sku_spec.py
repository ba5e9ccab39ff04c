"""`SkuSpec.create`: canonical values out, every broken rule reported with its code and field."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.catalog.sku import (
    MAX_DISK_GIB,
    MAX_GPU_COUNT,
    MAX_HOURLY_PRICE_MINOR,
    MAX_RAM_GIB,
    MAX_VCPUS,
    SkuErrorCode,
    SkuSpec,
)
from domain.errors import InvalidInput
from domain.money import Money
from tests.support.catalog import SKU_VALUES

VALID: dict[str, Any] = SKU_VALUES


def spec(**changes: Any) -> SkuSpec:
    return SkuSpec.create(**{**VALID, **changes})


def problems_of(**changes: Any) -> set[tuple[str, str | None]]:
    with pytest.raises(InvalidInput) as caught:
        spec(**changes)
    return {(str(p.code), p.field) for p in caught.value.problems}


def test_valid_spec_keeps_its_values() -> None:
    created = spec()
    assert created == SkuSpec(
        name="h100x1",
        gpu_model="H100",
        gpu_count=1,
        vcpus=16,
        ram_gib=180,
        disk_gib=1000,
        region="us-east",
        hourly_price=Money(249, "USD"),
    )


def test_values_are_canonicalised() -> None:
    created = spec(
        name="  h100x1\t",
        gpu_model=" h100 sxm ",
        region=" us-east\n",
        currency=" eur ",
    )
    assert created.name == "h100x1"
    assert created.gpu_model == "H100 SXM"
    assert created.region == "us-east"
    assert created.hourly_price == Money(249, "EUR")


def test_name_case_is_kept() -> None:
    assert spec(name="H100-Big.v2_a").name == "H100-Big.v2_a"


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"gpu_count": 0}, SkuErrorCode.INVALID_GPU_COUNT, "gpuCount"),
        ({"gpu_count": -1}, SkuErrorCode.INVALID_GPU_COUNT, "gpuCount"),
        ({"gpu_count": MAX_GPU_COUNT + 1}, SkuErrorCode.INVALID_GPU_COUNT, "gpuCount"),
        ({"gpu_count": True}, SkuErrorCode.INVALID_GPU_COUNT, "gpuCount"),
        ({"gpu_count": 1.0}, SkuErrorCode.INVALID_GPU_COUNT, "gpuCount"),
        ({"vcpus": 0}, SkuErrorCode.INVALID_VCPUS, "vcpus"),
        ({"vcpus": MAX_VCPUS + 1}, SkuErrorCode.INVALID_VCPUS, "vcpus"),
        ({"vcpus": False}, SkuErrorCode.INVALID_VCPUS, "vcpus"),
        ({"ram_gib": 0}, SkuErrorCode.INVALID_RAM, "ramGib"),
        ({"ram_gib": MAX_RAM_GIB + 1}, SkuErrorCode.INVALID_RAM, "ramGib"),
        ({"ram_gib": True}, SkuErrorCode.INVALID_RAM, "ramGib"),
        ({"disk_gib": -5}, SkuErrorCode.INVALID_DISK, "diskGib"),
        ({"disk_gib": MAX_DISK_GIB + 1}, SkuErrorCode.INVALID_DISK, "diskGib"),
        ({"hourly_price_minor": 0}, SkuErrorCode.INVALID_PRICE, "hourlyPriceMinor"),
        ({"hourly_price_minor": -249}, SkuErrorCode.INVALID_PRICE, "hourlyPriceMinor"),
        (
            {"hourly_price_minor": MAX_HOURLY_PRICE_MINOR + 1},
            SkuErrorCode.INVALID_PRICE,
            "hourlyPriceMinor",
        ),
        ({"hourly_price_minor": True}, SkuErrorCode.INVALID_PRICE, "hourlyPriceMinor"),
        ({"currency": "XYZ"}, SkuErrorCode.UNKNOWN_CURRENCY, "currency"),
        ({"currency": ""}, SkuErrorCode.UNKNOWN_CURRENCY, "currency"),
        ({"currency": "US"}, SkuErrorCode.UNKNOWN_CURRENCY, "currency"),
        ({"name": ""}, SkuErrorCode.INVALID_NAME, "name"),
        ({"name": "   "}, SkuErrorCode.INVALID_NAME, "name"),
        ({"name": "has space"}, SkuErrorCode.INVALID_NAME, "name"),
        ({"name": "-leading-dash"}, SkuErrorCode.INVALID_NAME, "name"),
        ({"name": "a/b"}, SkuErrorCode.INVALID_NAME, "name"),
        ({"name": "a" * 65}, SkuErrorCode.INVALID_NAME, "name"),
        ({"name": "h100\nx1"}, SkuErrorCode.INVALID_NAME, "name"),
        ({"name": "h100é"}, SkuErrorCode.INVALID_NAME, "name"),
        ({"gpu_model": ""}, SkuErrorCode.INVALID_GPU_MODEL, "gpuModel"),
        ({"gpu_model": "H100;DROP"}, SkuErrorCode.INVALID_GPU_MODEL, "gpuModel"),
        ({"gpu_model": "A" * 65}, SkuErrorCode.INVALID_GPU_MODEL, "gpuModel"),
        ({"region": ""}, SkuErrorCode.INVALID_REGION, "region"),
        ({"region": "e"}, SkuErrorCode.INVALID_REGION, "region"),
        ({"region": "EU-west"}, SkuErrorCode.INVALID_REGION, "region"),
        ({"region": "1eu"}, SkuErrorCode.INVALID_REGION, "region"),
        ({"region": "eu_west"}, SkuErrorCode.INVALID_REGION, "region"),
        ({"region": "e" * 33}, SkuErrorCode.INVALID_REGION, "region"),
    ],
)
def test_each_invalid_value_is_refused_with_its_code_and_field(
    changes: dict[str, Any], code: SkuErrorCode, field: str
) -> None:
    assert problems_of(**changes) == {(code.value, field)}


@pytest.mark.parametrize(
    ("changes", "field", "value"),
    [
        ({"gpu_count": MAX_GPU_COUNT}, "gpu_count", MAX_GPU_COUNT),
        ({"vcpus": MAX_VCPUS}, "vcpus", MAX_VCPUS),
        ({"ram_gib": MAX_RAM_GIB}, "ram_gib", MAX_RAM_GIB),
        ({"disk_gib": MAX_DISK_GIB}, "disk_gib", MAX_DISK_GIB),
        ({"name": "a" * 64}, "name", "a" * 64),
        ({"region": "e" * 32}, "region", "e" * 32),
        ({"region": "eu"}, "region", "eu"),
    ],
)
def test_boundary_values_are_accepted(changes: dict[str, Any], field: str, value: object) -> None:
    assert getattr(spec(**changes), field) == value


def test_largest_price_is_accepted() -> None:
    assert spec(hourly_price_minor=MAX_HOURLY_PRICE_MINOR).hourly_price.amount_minor == (
        MAX_HOURLY_PRICE_MINOR
    )


def test_every_problem_is_reported_at_once() -> None:
    found = problems_of(
        name="bad name",
        gpu_model="",
        gpu_count=0,
        vcpus=-1,
        ram_gib=0,
        disk_gib=0,
        region="X",
        hourly_price_minor=-1,
        currency="XYZ",
    )
    assert found == {
        ("INVALID_NAME", "name"),
        ("INVALID_GPU_MODEL", "gpuModel"),
        ("INVALID_GPU_COUNT", "gpuCount"),
        ("INVALID_VCPUS", "vcpus"),
        ("INVALID_RAM", "ramGib"),
        ("INVALID_DISK", "diskGib"),
        ("INVALID_REGION", "region"),
        ("INVALID_PRICE", "hourlyPriceMinor"),
        ("UNKNOWN_CURRENCY", "currency"),
    }


def test_error_message_joins_every_problem() -> None:
    with pytest.raises(InvalidInput) as caught:
        spec(gpu_count=0, currency="XYZ")
    text = str(caught.value)
    assert "GPU count" in text
    assert "'XYZ'" in text
    assert all(p.message for p in caught.value.problems)


@given(st.integers(min_value=1, max_value=MAX_GPU_COUNT))
def test_any_gpu_count_inside_bounds_is_accepted(count: int) -> None:
    assert spec(gpu_count=count).gpu_count == count


@given(st.integers().filter(lambda n: not 1 <= n <= MAX_GPU_COUNT))
def test_any_gpu_count_outside_bounds_is_refused(count: int) -> None:
    assert problems_of(gpu_count=count) == {("INVALID_GPU_COUNT", "gpuCount")}


@given(st.integers().filter(lambda n: not 1 <= n <= MAX_HOURLY_PRICE_MINOR))
def test_any_price_outside_bounds_is_refused(price: int) -> None:
    assert problems_of(hourly_price_minor=price) == {("INVALID_PRICE", "hourlyPriceMinor")}


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True))
def test_any_name_matching_the_rule_is_accepted_unchanged(name: str) -> None:
    assert spec(name=name).name == name


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .-_"))
def test_gpu_model_is_stored_upper_case_and_stripped(model: str) -> None:
    try:
        created = spec(gpu_model=model)
    except InvalidInput as exc:
        assert {(p.code, p.field) for p in exc.problems} == {("INVALID_GPU_MODEL", "gpuModel")}
    else:
        assert created.gpu_model == model.strip().upper()
