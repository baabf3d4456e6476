"""
The three packages are ready to publish: complete metadata, one version, one license.

Cheap checks on the source tree and the installed (editable) distributions; the
built wheels and sdists are checked in a clean virtual environment by
``scripts/package_check.py`` (``make package-check``, run by CI).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import tomllib
from typing import Any

import pytest

from tests.helpers.processes import ROOT

PACKAGES = {
    "quotes-core": "quotes_core",
    "quotes-server": "quotes_server",
    "quotes-client": "quotes_client",
}
VERSION = (ROOT / "VERSION").read_text().strip()


def project(name: str) -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((ROOT / "packages" / name / "pyproject.toml").read_text())
    return data


@pytest.mark.parametrize("name", PACKAGES)
def test_metadata_is_complete(name: str) -> None:
    """Each package declares what an index shows: license, README, classifiers, keywords."""
    meta = project(name)["project"]
    folder = ROOT / "packages" / name
    assert meta["license"] == "MIT"
    assert meta["license-files"] == ["LICENSE"]
    assert (folder / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
    assert (folder / meta["readme"]).read_text().startswith(f"# {name}\n")
    assert meta["keywords"]
    assert "Typing :: Typed" in meta["classifiers"]
    # PEP 639: a license expression replaces the license classifiers
    assert not [c for c in meta["classifiers"] if c.startswith("License ::")]
    assert meta["description"]


@pytest.mark.parametrize("name", PACKAGES)
def test_one_version(name: str) -> None:
    """The version comes from VERSION alone: pyproject, installed metadata and __version__."""
    config = project(name)
    assert "version" not in config["project"]
    assert "version" in config["project"]["dynamic"]
    assert config["tool"]["hatch"]["version"]["path"] == "../../VERSION"
    assert importlib.metadata.version(name) == VERSION
    assert importlib.import_module(PACKAGES[name]).__version__ == VERSION


@pytest.mark.parametrize("name", ["quotes-server", "quotes-client"])
def test_quotes_core_pinned_to_the_same_version(name: str) -> None:
    """A published server or client requires exactly the quotes-core released with it."""
    requires = importlib.metadata.requires(name) or []
    assert f"quotes-core=={VERSION}" in requires
    assert [r for r in requires if r.startswith("quotes-core")] == [f"quotes-core=={VERSION}"]


def test_quotes_core_has_no_server_dependency() -> None:
    """quotes-core needs pydantic only (Hypothesis only with its testing extra)."""
    requires = importlib.metadata.requires("quotes-core") or []
    assert [r for r in requires if "extra ==" not in r] == ["pydantic<3,>=2.11"]


def test_changelog_has_an_unreleased_section() -> None:
    """CHANGELOG.md follows Keep a Changelog: an Unreleased section comes first."""
    headings = [
        line for line in (ROOT / "CHANGELOG.md").read_text().splitlines() if line.startswith("## ")
    ]
    assert headings[0] == "## [Unreleased]"
