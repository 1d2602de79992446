"""The console over plain HTTP: sign-in, sessions, CSRF, headers, authorization and hostile input."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator

import httpx
import pytest

from soko.registry.models import RepoRef
from tests.conftest import ROOT_KEY_ID, ROOT_SECRET, RunningServer, make_settings, open_registry, serve
from tests.console.helpers import LIST_ONLY, XSS, hidden_csrf, make_user, push_rich_image, sign_in, wait_for

ACCOUNT = "000000000000"


@pytest.fixture
def web(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture
def root(web):
    r = sign_in(web, ROOT_KEY_ID, ROOT_SECRET)
    assert r.status_code == 303 and r.headers["location"] == "/console/repositories", r.text
    return web


def test_signin_sets_a_strict_session_cookie_and_signout_revokes_it(server, web):
    r = sign_in(web, ROOT_KEY_ID, ROOT_SECRET)
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("soko_console=")
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/console/", "Max-Age=43200"):
        assert attribute in cookie
    assert "Secure" not in cookie  # plain HTTP here (TestBehindATlsProxy: Secure under TLS)
    value = cookie.split(";")[0].split("=", 1)[1]
    page = web.get("/console/repositories")
    assert page.status_code == 200 and "Repositories" in page.text
    r = web.post("/console/signout", data={"csrf": hidden_csrf(page.text)})
    assert r.status_code == 303 and "Max-Age=0" in r.headers["set-cookie"]
    # The old cookie, replayed, no longer signs anyone in: the session was deleted on the server.
    with httpx.Client(base_url=server.url, cookies={"soko_console": value}) as replay:
        assert replay.get("/console/repositories").headers["location"] == "/console/signin"


def test_wrong_secret_unknown_key_and_throttling(aws, web):
    # A key of its own to lock out: the module's other tests sign in with the root key.
    key_id, secret = make_user(aws("iam"), "locked", None)
    r = sign_in(web, key_id, "wrong-secret")
    assert r.status_code == 401 and "not valid" in r.text
    assert "soko_console=" not in r.headers.get("set-cookie", "")
    assert sign_in(web, "AKIANOSUCHKEY0000000", "x").status_code == 401
    for _ in range(4):
        sign_in(web, key_id, "wrong-secret")
    r = sign_in(web, key_id, secret)  # the right secret, but the key is locked out for a while
    assert r.status_code == 429 and "too many failed sign-ins" in r.text


def test_secrets_never_reach_the_log_or_the_audit_trail(server, web, caplog):
    caplog.set_level("DEBUG")
    sign_in(web, ROOT_KEY_ID, "a-wrong-secret-that-must-not-leak")
    sign_in(web, ROOT_KEY_ID, ROOT_SECRET)
    server.identity.audit.flush()
    assert "a-wrong-secret-that-must-not-leak" not in caplog.text and ROOT_SECRET not in caplog.text
    rows = server.registry.ctx.db.read
    import sqlalchemy as sa

    from soko.meta.schema import audit_events, console_sessions

    with rows() as conn:
        reasons = [r.reason or "" for r in conn.execute(sa.select(audit_events))]
        stored = conn.execute(sa.select(console_sessions)).all()
    assert any("console sign-in" in reason for reason in reasons)
    assert not any(ROOT_SECRET in reason for reason in reasons)
    cookie = web.cookies.get("soko_console")
    assert cookie and all(cookie not in str(tuple(row)) for row in stored)  # only its hash is stored


def test_security_headers_and_no_inline_script(root):
    r = root.get("/console/repositories")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"
    assert not re.search(r"<script(?![^>]*\bsrc=)", r.text)  # every script is a file Soko serves
    assert " style=" not in r.text and "<style" not in r.text
    assert root.get("/console/static/console.js").headers["content-type"].startswith("text/javascript")


def test_csrf_refused(server, root):
    server.registry.repositories.create(RepoRef(ACCOUNT, "app"))
    r = root.post("/console/repo/app/-/settings", data={"mutability": "IMMUTABLE"})  # no token
    assert r.status_code == 403 and "CSRF" in r.text
    r = root.post("/console/repo/app/-/settings", data={"mutability": "IMMUTABLE", "csrf": "forged"})
    assert r.status_code == 403
    page = root.get("/console/repo/app")
    token = hidden_csrf(page.text)
    r = root.post(
        "/console/repo/app/-/settings",
        data={"mutability": "IMMUTABLE", "csrf": token},
        headers={"Origin": "https://evil.example"},
    )
    assert r.status_code == 403
    r = root.post(
        "/console/repo/app/-/settings",
        data={"mutability": "IMMUTABLE", "csrf": token},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert r.status_code == 403
    assert server.registry.repositories.get(RepoRef(ACCOUNT, "app")).tag_mutability == "MUTABLE"
    r = root.post("/console/repo/app/-/settings", data={"mutability": "IMMUTABLE", "csrf": token})
    assert r.status_code == 303
    assert server.registry.repositories.get(RepoRef(ACCOUNT, "app")).tag_mutability == "IMMUTABLE"
    # The sign-in form is protected too (double-submit token).
    r = root.post("/console/signin", data={"access_key_id": ROOT_KEY_ID, "secret_access_key": ROOT_SECRET})
    assert r.status_code == 403


def test_pages_show_the_domain(server, root):
    ref = RepoRef(ACCOUNT, "team/app")
    server.registry.repositories.create(ref)
    digest = push_rich_image(server.registry, ref, "v1", label="hello")
    page = root.get("/console/repositories", params={"q": "team/app"})
    assert "team/app" in page.text and "1 repository" in page.text
    page = root.get("/console/repo/team/app")
    assert page.status_code == 200 and digest[:19] in page.text and ">v1<" in page.text
    image = root.get(f"/console/repo/team/app/-/image/{digest}")
    assert image.status_code == 200
    for expected in ("linux/amd64", "GREETING=hello", "/bin/app", "RUN echo hello", f"@{digest}", "layer"):
        assert expected in image.text.replace("&#34;", '"'), expected
    assert root.get("/console/repo/team/app/-/image/sha256:" + "0" * 64).status_code == 404
    assert root.get("/console/repo/nope").status_code == 404


def test_hostile_inputs_answer_clean_errors(server, root):
    page = root.get("/console/repositories")
    token = hidden_csrf(page.text)
    assert root.get("/console/repositories", params={"sort": "drop table"}).status_code == 400
    assert root.get("/console/repositories", params={"after": "!!notbase64"}).status_code == 400
    assert root.get("/console/repositories", params={"after": "WzEsMl0"}).status_code == 400  # [1,2]
    assert root.get("/console/repositories", params={"q": "x" * 300}).status_code == 400
    assert root.get("/console/repositories", params={"q": "%_\\"}).status_code == 200
    assert root.get("/console/repo/UPPER/case").status_code == 404
    assert root.get("/console/repo/ab/-/image/not-a-digest").status_code == 404
    assert root.get("/console/repo/ab/-/nothing").status_code in (404,)
    server.registry.repositories.create(RepoRef(ACCOUNT, "ab"))
    assert root.get("/console/repo/ab", params={"images_after": "garbage"}).status_code == 400
    r = root.post("/console/repo/ab/-/settings", content=b'{"csrf": "x"}', headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    r = root.post("/console/repo/ab/-/lifecycle", data={"csrf": token, "action": "save", "policy": "x" * (300 << 10)})
    assert r.status_code == 400
    r = root.post(
        "/console/repo/ab/-/lifecycle",
        content=b"csrf=" + token.encode() + b"&policy=%ff%fe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400
    r = root.post("/console/repo/ab/-/lifecycle", data={"csrf": token, "action": "launch"})
    assert r.status_code == 400
    assert root.request("DELETE", "/console/repositories").status_code == 405
    assert root.get("/console/static/../web.py").status_code == 404


def test_lifecycle_validation_errors_shown_in_place(server, root):
    server.registry.repositories.create(RepoRef(ACCOUNT, "lc"))
    token = hidden_csrf(root.get("/console/repo/lc/-/lifecycle").text)
    bad = '{"rules": [{"rulePriority": 0}]}'
    r = root.post("/console/repo/lc/-/lifecycle", data={"csrf": token, "action": "save", "policy": bad})
    assert r.status_code == 400 and 'aria-invalid="true"' in r.text
    assert "{&#34;rules&#34;: [{&#34;rulePriority&#34;: 0}]}" in r.text  # the text as submitted, escaped


def test_restricted_user_sees_not_allowed_panels(server, aws, web):
    server.registry.repositories.create(RepoRef(ACCOUNT, "open"))
    server.registry.repositories.create(RepoRef(ACCOUNT, "secret"))
    key_id, secret = make_user(
        aws("iam"),
        "viewer",
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["ecr:DescribeRepositories"], "Resource": "*"},
                {
                    "Effect": "Allow",
                    "Action": ["ecr:DescribeImages"],
                    "Resource": f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/open",
                },
            ],
        },
    )
    assert sign_in(web, key_id, secret).status_code == 303
    assert "open" in web.get("/console/repositories").text
    page = web.get("/console/repo/secret")
    assert page.status_code == 200  # the repository itself may be described
    assert "Not allowed" in page.text and "ecr:DescribeImages" in page.text
    assert "ecr:GetLifecyclePolicy" in page.text
    page = web.get("/console/repo/open")
    assert "ecr:DescribeImages" not in page.text
    lifecycle = web.get("/console/repo/open/-/lifecycle")
    assert lifecycle.status_code == 403 and "ecr:GetLifecyclePolicy" in lifecycle.text
    # A change it may not make is refused, and nothing changes.
    token = hidden_csrf(web.get("/console/repo/open").text)
    r = web.post("/console/repo/open/-/settings", data={"csrf": token, "mutability": "IMMUTABLE"})
    assert r.status_code == 403
    assert server.registry.repositories.get(RepoRef(ACCOUNT, "open")).tag_mutability == "MUTABLE"


def test_user_without_any_permission(aws, web):
    key_id, secret = make_user(aws("iam"), "nobody", None)
    assert sign_in(web, key_id, secret).status_code == 303
    page = web.get("/console/repositories")
    assert page.status_code == 403 and "ecr:DescribeRepositories" in page.text


def test_deactivated_key_ends_the_session(aws, web):
    iam = aws("iam")
    key_id, secret = make_user(iam, "temp", None)
    assert sign_in(web, key_id, secret).status_code == 303
    assert web.get("/console/repositories").status_code == 403  # signed in (no permissions)
    iam.update_access_key(UserName="temp", AccessKeyId=key_id, Status="Inactive")
    assert web.get("/console/repositories").headers["location"] == "/console/signin"


def test_assumed_role_signs_in_with_its_session_token(server, aws, web):
    iam = aws("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole"}
        ],
    }
    import json

    iam.create_role(RoleName="reader", AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(
        RoleName="reader",
        PolicyName="r",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "ecr:DescribeRepositories", "Resource": "*"}],
            }
        ),
    )
    assumer_key, assumer_secret = make_user(
        iam,
        "assumer",
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]},
    )
    sts = aws("sts", assumer_key, assumer_secret)
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/reader", RoleSessionName="web")["Credentials"]
    assert sign_in(web, creds["AccessKeyId"], creds["SecretAccessKey"]).status_code == 401  # token missing
    r = sign_in(web, creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
    assert r.status_code == 303
    page = web.get("/console/repositories")
    assert page.status_code == 200 and "assumed-role/reader/web" in page.text


def test_idle_and_absolute_expiry(server, web):
    sign_in(web, ROOT_KEY_ID, ROOT_SECRET)
    assert web.get("/console/repositories").status_code == 200
    ctx = server.registry.ctx
    real = ctx.clock
    try:
        ctx.clock = lambda: real() + server.registry.settings.console_idle_timeout + 1
        assert web.get("/console/repositories").headers["location"] == "/console/signin"
    finally:
        ctx.clock = real
    assert web.get("/console/repositories").status_code == 303  # and it stays gone


def test_xss_payloads_render_inert(server, root):
    ref = RepoRef(ACCOUNT, "xs")
    server.registry.repositories.create(ref)
    digest = push_rich_image(server.registry, ref, "v1", label=XSS)
    for path in ("/console/repo/xs", f"/console/repo/xs/-/image/{digest}", "/console/repositories?q=" + XSS):
        text = root.get(path).text
        assert "<script>alert" not in text and "<img src=x" not in text, path
        if "/image/" in path or "?q=" in path:
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text, path


@contextlib.contextmanager
def own_server(tmp_path, **settings) -> Iterator[RunningServer]:
    """A server with other settings, on a SQLite file (what is tested here does not depend on the database)."""
    registry = open_registry(make_settings(str(tmp_path / "data"), f"sqlite:///{tmp_path / 'metadata.db'}"))
    for name, value in settings.items():
        setattr(registry.settings, name, value)
    try:
        with serve(registry.settings, registry) as running:
            yield running
    finally:
        registry.close()


def test_console_off(tmp_path):
    with own_server(tmp_path, console=False) as running, httpx.Client(base_url=running.url) as c:
        assert c.get("/console/signin").status_code == 404
        assert c.get("/console/static/console.css").status_code == 404


def test_the_session_cookie_is_secure_under_tls(tmp_path):
    # The test client plays a TLS-terminating proxy.
    with own_server(tmp_path, trusted_proxies=["127.0.0.1/32"]) as server:
        proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "registry.example.com"}
        with httpx.Client(base_url=server.url, headers=proxy) as c:
            form = c.get("/console/signin")
            assert "Secure" in form.headers["set-cookie"]
            r = c.post(
                "/console/signin",
                data={"csrf": hidden_csrf(form.text), "access_key_id": ROOT_KEY_ID, "secret_access_key": ROOT_SECRET},
                headers={
                    "Origin": "https://registry.example.com",
                    # (a Secure cookie: httpx keeps it from this plain-HTTP hop to the "proxy"; a browser would send it)
                    "Cookie": f"soko_console_signin={form.cookies['soko_console_signin']}",
                },
            )
            assert r.status_code == 303, r.text
            assert r.headers["set-cookie"].startswith("soko_console=") and "; Secure" in r.headers["set-cookie"]
            # A form from the plain-HTTP origin of the same host is another origin: refused.
            r = c.post("/console/signin", data={"csrf": "x"}, headers={"Origin": "http://registry.example.com"})
            assert r.status_code == 403


# ---- repository policy, usage, audit log, IAM, event delivery ---------------------------------------------------
def _policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def test_repository_policy_editor_validates_in_place_and_refuses_a_lock_out(server, root):
    ref = RepoRef(ACCOUNT, "pol/app")
    server.registry.repositories.create(ref)
    page = root.get("/console/repo/pol/app/-/policy")
    assert page.status_code == 200 and "no policy" in page.text
    token = hidden_csrf(page.text)
    r = root.post("/console/repo/pol/app/-/policy", data={"csrf": token, "action": "save", "policy": '{"Statement": 1'})
    assert r.status_code == 400 and 'aria-invalid="true"' in r.text and "Invalid repository policy" in r.text
    assert "{&#34;Statement&#34;: 1" in r.text  # the text as submitted, escaped
    allow = {"Sid": "pull", "Effect": "Allow", "Principal": "*", "Action": "ecr:BatchGetImage"}
    r = root.post("/console/repo/pol/app/-/policy", data={"csrf": token, "action": "save", "policy": _policy(allow)})
    assert r.status_code == 303
    assert json.loads(server.registry.policies.repository_policy(ref))["Statement"][0]["Sid"] == "pull"
    # A policy that denies the caller SetRepositoryPolicy: refused as the API refuses it without force.
    lock = _policy({"Effect": "Deny", "Principal": "*", "Action": "ecr:SetRepositoryPolicy"})
    r = root.post("/console/repo/pol/app/-/policy", data={"csrf": token, "action": "save", "policy": lock})
    assert r.status_code == 400 and "force" in r.text and 'name="force"' in r.text
    assert "pull" in server.registry.policies.repository_policy(ref)
    r = root.post(
        "/console/repo/pol/app/-/policy", data={"csrf": token, "action": "save", "policy": lock, "force": "on"}
    )
    assert r.status_code == 303 and "Deny" in server.registry.policies.repository_policy(ref)
    r = root.post("/console/repo/pol/app/-/policy", data={"csrf": token, "action": "delete"})
    assert r.status_code == 303 and "no policy" in root.get("/console/repo/pol/app/-/policy").text
    assert root.post("/console/repo/pol/app/-/policy", data={"csrf": token, "action": "drop"}).status_code == 400
    assert root.post("/console/repo/pol/app/-/policy", data={"action": "delete"}).status_code == 403  # no CSRF token


def test_usage_page_charts_the_metering_report(server, root):
    ref = RepoRef(ACCOUNT, "usage/app")
    server.registry.repositories.create(ref)
    push_rich_image(server.registry, ref, "v1", label="usage", seed="u")
    page = root.get("/console/usage")
    assert page.status_code == 200
    assert page.text.count('role="img"') == 4 and "<title id=\"chart-storage-t\">" in page.text
    assert "usage/app" in page.text and "<table id=\"usage\">" in page.text
    month = re.search(r'name="month" value="(\d{4}-\d{2})"', page.text).group(1)
    assert f"soko usage --month {month}" in page.text
    assert root.get("/console/usage", params={"month": "2026-02"}).status_code == 200
    csv = root.get("/console/usage.csv", params={"month": month})
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert f'filename="usage-{ACCOUNT}-{month}.csv"' in csv.headers["content-disposition"]
    lines = csv.text.splitlines()
    assert lines[0].startswith("month,account_id,scope,repository") and any(",usage/app," in x for x in lines)
    for bad in ("2026-13", "yesterday", "0001-01", "<script>"):
        r = root.get("/console/usage", params={"month": bad})
        assert r.status_code == 400 and "<script>" not in r.text, bad


def test_audit_search_filters_pages_and_stays_in_the_account(server, aws, root):
    ref = RepoRef(ACCOUNT, "audit/app")
    server.registry.repositories.create(ref)
    ecr = aws("ecr")
    for _ in range(3):
        ecr.describe_images(repositoryName="audit/app")
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.describe_images(repositoryName="audit/missing")
    page = root.get("/console/audit", params={"repository": "audit/app", "action": "ecr:DescribeImages"})
    assert page.status_code == 200
    rows = re.findall(r"<tr class=\"(allow|deny)\">", page.text)
    assert rows and set(rows) == {"allow"}
    assert f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/audit/app" in page.text
    assert "audit/missing" not in page.text
    # Keyset pages of 50: 60 denials (never merged into one row), newest first, then "Older" continues.
    for i in range(60):
        server.identity.audit.record("authz", "arn:aws:iam::000000000000:user/p", "ecr:PutImage",
                                     f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/audit/app", "deny", f"n{i}", None)
    query = {"action": "ecr:PutImage", "decision": "deny", "repository": "audit/app"}
    first = root.get("/console/audit", params=query)
    reasons = re.findall(r"<td>(n\d+)</td></tr>", first.text)
    assert reasons == [f"n{i}" for i in range(59, 9, -1)]
    older = re.search(r'rel="next" href="([^"]+)"', first.text).group(1).replace("&amp;", "&")
    second = root.get(older)
    assert re.findall(r"<td>(n\d+)</td></tr>", second.text) == [f"n{i}" for i in range(9, -1, -1)]
    assert "Newest" in second.text and 'rel="next"' not in second.text
    # Another account's decisions are not shown.
    other = "999999999999"
    server.identity.audit.record("authz", f"arn:aws:iam::{other}:root", "ecr:ListImages",
                                 f"arn:aws:ecr:us-east-1:{other}:repository/x", "allow", "other account", None)
    assert "999999999999" not in root.get("/console/audit", params={"action": "ecr:ListImages"}).text
    hostile = ({"before": "garbage"}, {"since": "tomorrow"}, {"decision": "maybe"}, {"repository": "UP/per"},
               {"principal": "x" * 3000}, {"before": "WyJ4IiwxXQ"})
    for params in hostile:
        assert root.get("/console/audit", params=params).status_code == 400, params
    r = root.get("/console/audit", params={"principal": XSS})
    assert r.status_code == 200 and "<script>alert" not in r.text


def test_iam_page_lists_users_and_roles_and_manages_own_keys(server, aws, root):
    iam = aws("iam")
    iam.create_user(UserName="listed-user")
    page = root.get("/console/iam")
    assert page.status_code == 200 and "listed-user" in page.text and ROOT_KEY_ID in page.text
    assert "(this session)" in page.text
    token = hidden_csrf(page.text)
    r = root.post("/console/iam/keys", data={"csrf": token, "action": "create"})
    assert r.status_code == 200 and "shown only this once" in r.text
    new_id = re.search(r"New access key ([A-Z0-9]+)", r.text).group(1)
    assert re.search(r'id="new-secret" value="[^"]{30,}"', r.text)
    assert new_id in [k["AccessKeyId"] for k in iam.list_access_keys()["AccessKeyMetadata"]]
    r = root.post("/console/iam/keys", data={"csrf": token, "action": "delete", "key": ROOT_KEY_ID})
    assert r.status_code == 400 and "sign in with another key" in r.text
    r = root.post("/console/iam/keys", data={"csrf": token, "action": "delete", "key": "<b>x</b>"})
    assert r.status_code == 400 and "<b>x" not in r.text
    r = root.post("/console/iam/keys", data={"csrf": token, "action": "delete", "key": new_id})
    assert r.status_code == 200 and new_id not in r.text
    assert new_id not in [k["AccessKeyId"] for k in iam.list_access_keys()["AccessKeyMetadata"]]
    assert root.post("/console/iam/keys", data={"csrf": "forged", "action": "create"}).status_code == 403
    assert root.get("/console/iam", params={"users_after": "\x01"}).status_code == 400


def test_dead_letters_are_shown_and_redelivered(server, root):
    from soko.events.targets import Targets
    from tests.events.receiver import Receiver

    receiver = Receiver().start()
    receiver.status = 500
    try:
        targets = Targets(server.registry.ctx)
        targets.create(ACCOUNT, "http-hook", receiver.url, max_attempts=1, timeout=5)
        server.registry.repositories.create(RepoRef(ACCOUNT, "hooked/app"))
        letters = wait_for(lambda: targets.dead_letters(ACCOUNT, "http-hook"))
        page = root.get("/console/events", params={"target": "http-hook"})
        assert page.status_code == 200 and "Soko Repository Action" in page.text
        assert letters[0]["event_id"] in page.text and "HTTP 500" in page.text
        receiver.status = 200
        token = hidden_csrf(page.text)
        r = root.post(
            "/console/events/redeliver",
            data={"csrf": token, "target": "http-hook", "event_id": letters[0]["event_id"]},
        )
        assert r.status_code == 200 and "1 event(s) queued" in r.text
        wait_for(lambda: not targets.dead_letters(ACCOUNT, "http-hook"))
        assert any(e["detail"].get("repository-name") == "hooked/app" for e in receiver.unique_events())
        for form in ({"target": "no such"}, {"target": "http-hook", "event_id": "<x>"}):
            assert root.post("/console/events/redeliver", data={"csrf": token, **form}).status_code == 400
        assert root.post("/console/events/redeliver", data={"csrf": token, "target": "missing"}).status_code == 400
        assert root.get("/console/events", params={"target": "../x"}).status_code == 400
    finally:
        targets.delete(ACCOUNT, "http-hook")
        receiver.stop()


def test_new_pages_authorize_with_the_api_actions(server, aws, web):
    server.registry.repositories.create(RepoRef(ACCOUNT, "walled"))
    key_id, secret = make_user(aws("iam"), "walled-user", LIST_ONLY)
    assert sign_in(web, key_id, secret).status_code == 303
    for path, action in (
        ("/console/usage", "ce:GetCostAndUsage"),
        ("/console/usage.csv", "ce:GetCostAndUsage"),
        ("/console/audit", "cloudtrail:LookupEvents"),
        ("/console/events", "soko:ListEventDeliveries"),
        ("/console/repo/walled/-/policy", "ecr:GetRepositoryPolicy"),
    ):
        r = web.get(path)
        assert r.status_code == 403 and "Not allowed" in r.text and action in r.text, path
    iam_page = web.get("/console/iam")
    assert iam_page.status_code == 200
    for action in ("iam:ListUsers", "iam:ListRoles", "iam:ListAccessKeys"):
        assert action in iam_page.text
    token = hidden_csrf(iam_page.text)
    r = web.post("/console/iam/keys", data={"csrf": token, "action": "create"})
    assert r.status_code == 403 and "Not allowed" in r.text
    assert len(aws("iam").list_access_keys(UserName="walled-user")["AccessKeyMetadata"]) == 1
    policy = _policy({"Effect": "Allow", "Principal": "*", "Action": "ecr:BatchGetImage"})
    r = web.post("/console/repo/walled/-/policy", data={"csrf": token, "action": "save", "policy": policy})
    assert r.status_code == 403
    r = web.post("/console/events/redeliver", data={"csrf": token, "target": "any"})
    assert r.status_code == 403
