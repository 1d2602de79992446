"""Settings: a key Soko does not know is refused, naming it (it would otherwise be accepted and do nothing)."""

from __future__ import annotations

import pytest

from soko.config import load_settings


def test_known_keys_load_and_unknown_ones_are_refused(tmp_path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('listen = "127.0.0.1:5001"\nkeepalive_timeout = "90s"\n')
    settings = load_settings(str(good), env={})
    assert (settings.listen, settings.keepalive_timeout) == ("127.0.0.1:5001", 90.0)
    typo = tmp_path / "typo.toml"
    typo.write_text('tls_certificate = "/etc/soko/cert.pem"\nendpoint_vpcs = ["vpc-1"]\n')
    with pytest.raises(ValueError) as refused:
        load_settings(str(typo), env={})
    message = str(refused.value)
    assert "tls_certificate" in message and "endpoint_vpcs (removed" in message and str(typo) in message


def test_scan_concurrency() -> None:
    assert load_settings(env={}).scan_concurrency == 1
    assert load_settings(env={"SOKO_SCAN_CONCURRENCY": "0"}).scan_concurrency == 0  # this node runs no scans
    with pytest.raises(ValueError, match="scan_concurrency: must be 0 or more"):
        load_settings(env={"SOKO_SCAN_CONCURRENCY": "-1"})


@pytest.mark.parametrize("name", ["keepalive_timeout", "tls_reload_interval"])
@pytest.mark.parametrize("value", ["0", "0s", "-5s"])
def test_a_zero_or_negative_timeout_is_refused(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"{name}: must be more than zero|invalid duration"):
        load_settings(env={f"SOKO_{name.upper()}": value})
