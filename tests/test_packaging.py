"""The package's public face: version, exports, and docs that list every metric."""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

import resilient
from resilient.metrics import CATALOG


ROOT = Path(__file__).parent.parent
PUBLIC = ["resilient", "resilient.metrics", "resilient.testing"]


def test_version_comes_from_the_installed_metadata() -> None:
    assert resilient.__version__ == importlib.metadata.version("resilient-middleware")
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        resilient.nope  # type: ignore[attr-defined]  # noqa: B018


@pytest.mark.parametrize("module_name", PUBLIC)
def test_all_is_sorted_and_complete(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = list(module.__all__)
    # isort-style, as ruff keeps it: CONSTANTS, then Classes, then functions.
    assert sorted(exported, key=lambda n: (not n.isupper(), not n[0].isupper(), n)) == exported
    for name in exported:
        assert hasattr(module, name), name
    defined_here = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (
            getattr(value, "__module__", "") == module_name
            or getattr(value, "__module__", "").startswith(module_name + "._")
        )
    }
    assert defined_here <= set(exported)


def test_importing_the_package_is_cheap_and_loads_no_optional_backend() -> None:
    optional = "{'trio', 'redis', 'starlette', 'opentelemetry.sdk'}"
    code = f"import sys, resilient.metrics; print(sorted(set(sys.modules) & {optional}))"
    out = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_every_metric_is_documented() -> None:
    page = (ROOT / "docs" / "metrics.md").read_text()
    for metric in CATALOG:
        assert f"`{metric.name}`" in page, metric.name


def test_typed_marker_ships() -> None:
    assert (Path(resilient.__file__).parent / "py.typed").exists()
