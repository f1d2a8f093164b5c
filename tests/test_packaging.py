"""The distribution as the package index would show it: built with pip, its metadata read back."""

from __future__ import annotations

import email
import email.message
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import kling_widgets

REPO = Path(__file__).resolve().parents[1]
PROJECT = "https://github.com/kling-widgets/kling-widgets"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("*.whl")
    return zipfile.ZipFile(built)


@pytest.fixture(scope="module")
def metadata(wheel: zipfile.ZipFile) -> email.message.Message:
    (name,) = (n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    return email.message_from_bytes(wheel.read(name))


def test_the_version_has_one_source(metadata: email.message.Message) -> None:
    assert metadata["Version"] == kling_widgets.__version__
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \["version"\]$', pyproject, re.MULTILINE)
    assert not re.search(r"^version\s*=", pyproject, re.MULTILINE)


def test_the_license_file_matches_the_declared_license(
    wheel: zipfile.ZipFile, metadata: email.message.Message
) -> None:
    assert metadata["License-Expression"] == "MIT"
    (license_file,) = (n for n in wheel.namelist() if n.endswith(".dist-info/licenses/LICENSE"))
    text = wheel.read(license_file).decode()
    assert text.startswith("MIT License")
    assert "kling-widgets developers" in text


def test_project_urls_and_python_versions(metadata: email.message.Message) -> None:
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL", []))
    assert urls == {
        "Homepage": PROJECT,
        "Repository": PROJECT,
        "Issues": f"{PROJECT}/issues",
        "Documentation": f"{PROJECT}/tree/main/docs",
    }
    classifiers = metadata.get_all("Classifier", [])
    versions = sorted(c.rsplit(" :: ", 1)[1] for c in classifiers if re.fullmatch(r".*:: 3\.\d+", c))
    assert versions == ["3.10", "3.11", "3.12", "3.13"]
    assert metadata["Requires-Python"] == ">=3.10"


def test_readme_images_show_on_the_package_index(metadata: email.message.Message) -> None:
    """The index renders the README away from the repository: a relative image path shows nothing."""
    description = metadata.get_payload()
    assert isinstance(description, str)
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)", description)
    assert images
    assert all(url.startswith("https://") for url in images), images
