"""polyzoo.shared.paths.missing_data: skip where data is optional, fail where CI promised it."""

import pytest

from polyzoo.shared.paths import REQUIRE_DATA_ENV, data_required, missing_data


@pytest.mark.parametrize("value", ["", "0", "no", "false"])
def test_skips_when_data_is_optional(monkeypatch, value):
    monkeypatch.setenv(REQUIRE_DATA_ENV, value)
    assert not data_required()
    with pytest.raises(pytest.skip.Exception, match="no files in /x"):
        missing_data("no files in /x")


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_fails_when_ci_requires_the_data(monkeypatch, value):
    monkeypatch.setenv(REQUIRE_DATA_ENV, value)
    assert data_required()
    with pytest.raises(pytest.fail.Exception, match=r"no files in /x .*POLYZOO_REQUIRE_DATA is set"):
        missing_data("no files in /x")


def test_unset_means_optional(monkeypatch):
    monkeypatch.delenv(REQUIRE_DATA_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception):
        missing_data("absent")
