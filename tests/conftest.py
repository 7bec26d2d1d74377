"""Helpers for the cross-package tests."""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture(scope="session")
def uv_bin() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")
    if not uv:
        pytest.skip("uv is not on PATH (run the tests with `uv run pytest`)")
    return uv
