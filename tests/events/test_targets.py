"""Hostile target configurations are refused whole (nothing written); the secret is stored encrypted and shown only
when generated; SSRF: no loopback, link-local/metadata, multicast or wrapped forms unless a setting allows them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from soko.events import Targets
from soko.events.targets import TargetAlreadyExists, TargetNotFound
from soko.events.webhook import InvalidTarget, check_url, send
from soko.meta.schema import event_targets

ACCOUNT = "000000000000"


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://127.0.0.1:5000/",
        "http://127.9.9.9/",
        "http://[::1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://[fe80::1]/",
        "http://100.100.100.200/",
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http://user:pass@example.com/",
        "http://example.com/#frag",
        "http:///nohost",
        "http://exa mple.com/",
        "http://example.com/\r\nX-Injected: 1",
        "http://example.com:99999/",
        "http://" + "a" * 3000 + ".com/",
        "",
    ],
)
def test_unsafe_or_malformed_urls_are_refused(registry, url: str) -> None:
    targets = Targets(registry.ctx)
    with pytest.raises(InvalidTarget):
        targets.create(ACCOUNT, "hook", url)
    assert targets.status() == []


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",  # the forms a resolver reads as loopback without DNS
        "http://0x7f.0.0.1/",
        "http://127.1/",
        "http://localhost:8080/",
        "http://api.localhost./",
        "http://\u2460\u2461\u2466.0.0.1/",  # circled digits: IDNA makes them 127.0.0.1
        "http://ex\u00e4mple.com/",  # internationalised: the xn-- form only
        "http://a..b/",
        "http://-a.example.com/",
        "http://1.2.3.4.5/",
        "http://example.com:0/",
    ],
)
def test_addresses_in_disguise_and_malformed_hosts_are_refused_when_configured(url: str) -> None:
    with pytest.raises(InvalidTarget):
        check_url(url, [])


def test_names_limits_secrets_and_patterns_are_checked(registry) -> None:
    targets = Targets(registry.ctx)
    url = "https://hooks.example.com/soko"
    for kwargs in (
        {"name": "bad name"},
        {"name": "x" * 65},
        {"name": ""},
        {"name": "../etc"},
        {"max_attempts": 0},
        {"max_attempts": 1000},
        {"timeout": 0},
        {"timeout": 3600},
        {"secret": "short"},
        {"secret": "line\nbreak-and-long-enough"},
        {"pattern": '{"source": [{"wildcard": "*"}]}'},
        {"pattern": "not json"},
        {"pattern": "[" * 3000},  # deeper than the JSON parser goes
        {"pattern": '{"detail": {"n": [{"numeric": [">", NaN]}]}}'},
        {"account_id": "../../x"},
    ):
        account = kwargs.pop("account_id", ACCOUNT)
        name = kwargs.pop("name", "hook")
        with pytest.raises(Exception) as info:
            targets.create(account, name, url, **kwargs)
        assert type(info.value).__name__ in ("InvalidTarget", "InvalidPattern")
    assert targets.status() == []
    targets.create(ACCOUNT, "hook", url)
    with pytest.raises(TargetAlreadyExists):
        targets.create(ACCOUNT, "hook", url)
    with pytest.raises(TargetNotFound):
        targets.update(ACCOUNT, "missing", enabled=False)
    with pytest.raises(InvalidTarget):
        targets.update(ACCOUNT, "hook", url="http://169.254.169.254/")
    assert targets.status()[0].url == url


def test_the_secret_is_stored_encrypted_and_never_listed(registry) -> None:
    targets = Targets(registry.ctx)
    secret = targets.create(ACCOUNT, "hook", "https://hooks.example.com/")
    assert len(secret) >= 32
    with registry.ctx.db.read() as conn:
        stored = conn.execute(sa.select(event_targets.c.secret)).scalar_one()
    assert secret.encode() not in stored
    assert secret not in json.dumps([vars(s) for s in targets.status()])
    with registry.ctx.db.read() as conn:
        row = conn.execute(sa.select(event_targets)).one()
    assert targets.secret(row) == secret


def test_a_name_that_resolves_to_a_forbidden_address_is_refused_when_sending() -> None:
    outcome = send("http://localhost:9/", b"{}", "id", "secret-secret-secret", 1, 1.0, [])
    assert not outcome.ok and "may not reach" in outcome.error


def test_allowed_networks_open_loopback_only_as_far_as_they_say(registry) -> None:
    registry.settings.event_target_allow_cidrs = ["127.0.0.1/32"]
    targets = Targets(registry.ctx)
    targets.create(ACCOUNT, "local", "http://127.0.0.1:8080/")
    with pytest.raises(InvalidTarget):
        targets.create(ACCOUNT, "other", "http://127.0.0.2:8080/")
    with pytest.raises(InvalidTarget):
        targets.create(ACCOUNT, "meta", "http://169.254.169.254/")


def test_the_cli_adds_lists_updates_and_removes_targets_without_showing_the_secret(tmp_path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOKO_")}

    def soko(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "soko", "events", *args, "--data-dir", str(data)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    added = soko(
        "add", "hook", "--url", "https://hooks.example.com/x", "--pattern", '{"detail": {"action-type": ["PUSH"]}}'
    )
    assert added.returncode == 0, added.stderr
    secret = json.loads(added.stdout)["Secret"]
    listed = soko("targets", "--format", "json")
    assert listed.returncode == 0 and secret not in listed.stdout
    (row,) = json.loads(listed.stdout)
    assert row["name"] == "hook" and row["pattern"] == {"detail": {"action-type": ["PUSH"]}} and row["enabled"]
    refused = soko("add", "meta", "--url", "http://169.254.169.254/")
    assert refused.returncode == 2 and "may not reach" in refused.stderr and "Traceback" not in refused.stderr
    assert soko("update", "hook", "--disable").returncode == 0
    assert json.loads(soko("targets", "--format", "json").stdout)[0]["enabled"] is False
    assert soko("redeliver", "hook", "no-such-event").returncode == 2
    assert soko("remove", "hook").returncode == 0
    assert soko("remove", "hook").returncode == 2
    assert json.loads(soko("targets", "--format", "json").stdout) == []


def test_the_cli_refuses_hostile_input_with_a_clear_error(tmp_path, capsys) -> None:
    from soko.cli import main

    add = ["add", "h", "--url", "https://hooks.example.com/"]
    for args, says in [
        ([*add, "--secret-file", str(tmp_path / "missing")], "cannot read"),
        ([*add, "--secret-file", "/dev/zero"], "secret"),
        ([*add, "--pattern", "[" * 3000], "nests deeper"),
        ([*add, "--account", "not-an-account"], "12 digits"),
        ([*add, "--timeout", "nan"], "timeout"),
        (["add", "h", "--url", "http://[::ffff:169.254.169.254]/"], "may not reach"),
        (["dead-letters", "--limit", "-1"], "1 to 1000"),
        (["tail", "--last", "-5"], "--last"),
        (["tail", "--after", "-1"], "--after"),
        (["tail", "--count", "-1"], "--count"),
        (["tail", "--pattern", '{"source": [{"wildcard": "*"}]}'], "not supported"),
    ]:
        code = main(["events", *args, "--data-dir", str(tmp_path / "data")])
        err = capsys.readouterr().err
        assert code == 2 and says in err and "Traceback" not in err, (args, err)
    assert main(["events", "targets", "--format", "json", "--data-dir", str(tmp_path / "data")]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_a_session_keeps_its_connection_and_sends_without_nagle_delays(receiver) -> None:
    """Kept alive across events, with TCP_NODELAY as http.client's own connect sets it (headers and body are two
    writes: without it every event after the first waits for the receiver's delayed ACK)."""
    import socket

    from soko.events.webhook import Session, allowed_networks

    with Session(allowed_networks(["127.0.0.1/32"])) as session:
        for n in range(3):
            assert session.send(receiver.url, b"{}", f"id-{n}", "secret-secret-secret", 1, 5.0).ok
        sock = session._conn.sock  # type: ignore[union-attr]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert session.connections == 1
    assert len({r["client_port"] for r in receiver.requests}) == 1
