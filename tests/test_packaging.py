"""pyproject.toml in the form current setuptools wants: an install prints no deprecation warnings."""

from __future__ import annotations

import gc
import tomllib
import warnings
from pathlib import Path

from packaging.licenses import canonicalize_license_expression

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def test_license_is_an_spdx_expression_and_the_build_backend_understands_it() -> None:
    project = tomllib.loads(PYPROJECT.read_text())
    license_ = project["project"]["license"]
    assert isinstance(license_, str), "PEP 639: `license` is an SPDX expression string, not a table"
    assert canonicalize_license_expression(license_) == license_


def test_setuptools_reads_pyproject_without_warnings() -> None:
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    gc.collect()  # objects other tests left behind warn when collected, not here
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", ResourceWarning)  # a collector pass inside setuptools is not setuptools
        dist = apply_configuration(Distribution(), str(PYPROJECT))
    assert [str(w.message) for w in caught] == []
    assert dist.metadata.license_expression == "Apache-2.0"
