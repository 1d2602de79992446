"""The console in a real headless browser (Debian's chromium, driven by Playwright): sign in, browse, edit and
preview a lifecycle policy, denied panels, sign out; XSS payloads inert; a cross-site form refused; axe-core finds
no serious accessibility violation. SOKO_CONSOLE_SCREENSHOTS=DIR saves screenshots of the main pages there."""

from __future__ import annotations

import json
import os
import pathlib
import re
from urllib.parse import quote

import pytest

from soko.registry.models import RepoRef
from tests.conftest import ROOT_KEY_ID, ROOT_SECRET
from tests.console.helpers import LIST_ONLY, XSS, make_user, push_rich_image, wait_for

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
AXE = pathlib.Path(__file__).resolve().parents[2] / ".venv/axe/node_modules/axe-core/axe.min.js"
ACCOUNT = "000000000000"
SHOTS = os.environ.get("SOKO_CONSOLE_SCREENSHOTS")

if not os.path.exists(CHROMIUM):
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: scripts/bootstrap.sh --test installs Debian's chromium")
    pytest.skip("chromium is not installed (scripts/bootstrap.sh --test)", allow_module_level=True)


@pytest.fixture(scope="module", params=["postgresql"])
def database_kind(request) -> str:
    """The browser tests run on PostgreSQL only (the HTTP tests cover SQLite): a browser is the slow part."""
    return request.param


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.set_default_timeout(15_000)
    dialogs: list[str] = []
    p.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    p.dialogs = dialogs  # type: ignore[attr-defined]
    try:
        yield p
    finally:
        context.close()


def shot(page, name: str) -> None:
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


def sign_in(page, base: str, key_id: str, secret: str) -> None:
    page.goto(base + "/console/")
    assert page.url.endswith("/console/signin")
    page.get_by_label("Access key id").fill(key_id)
    page.get_by_label("Secret access key").fill(secret)
    page.get_by_role("button", name="Sign in").click()


def axe_violations(page) -> list[dict]:
    page.evaluate(AXE.read_text())  # through the DevTools protocol: the page's CSP stays as it is
    found = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length}))"
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


POLICY = json.dumps(
    {
        "rules": [
            {
                "rulePriority": 1,
                "description": "keep one",
                "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1},
                "action": {"type": "expire"},
            }
        ]
    },
    indent=2,
)


def test_sign_in_browse_edit_preview_and_sign_out(server, page):
    registry = server.registry
    ref = RepoRef(ACCOUNT, "team/web")
    registry.repositories.create(ref)
    for name in ("team/api", "tools/builder", "zeta"):
        registry.repositories.create(RepoRef(ACCOUNT, name))
    old = push_rich_image(registry, ref, "v1", label="first", seed="1")
    new = push_rich_image(registry, ref, "v2", label="second", seed="2")

    sign_in(page, server.url, "AKIA-WRONG", "nope")
    assert "not valid" in page.locator("#signin-error").inner_text()
    shot(page, "signin")
    sign_in(page, server.url, ROOT_KEY_ID, ROOT_SECRET)
    page.wait_for_url(re.compile(r"/console/repositories$"))
    assert page.get_by_role("link", name="team/web").is_visible()
    assert axe_violations(page) == []
    shot(page, "repositories")

    page.get_by_label("Search names").fill("team")
    page.get_by_label("Sort by").select_option("-name")
    page.get_by_role("button", name="Apply").click()
    names = page.locator("tbody td:first-child a").all_inner_texts()
    assert names == ["team/web", "team/api"]

    page.get_by_role("link", name="team/web").click()
    page.wait_for_url(re.compile(r"/console/repo/team/web$"))
    assert page.locator(".tag", has_text="v1").is_visible() and page.locator(".tag", has_text="v2").is_visible()
    assert axe_violations(page) == []
    shot(page, "repository")

    page.locator(f'a[href$="{new}"]').click()
    page.wait_for_url(re.compile(new + "$"))
    assert page.locator("#pull").input_value() == f"docker pull {server.host}/team/web@{new}"
    assert page.get_by_role("button", name="Copy").is_visible()  # the script ran (progressive enhancement)
    assert "linux/amd64" in page.inner_text("main") and "GREETING=second" in page.inner_text("main")
    assert axe_violations(page) == []
    shot(page, "image")

    page.goto(server.url + "/console/repo/team/web/-/lifecycle")
    page.get_by_label("Policy (JSON, as PutLifecyclePolicy takes it)").fill('{"rules": []}')
    page.get_by_role("button", name="Save policy").click()
    assert page.locator("#policy-error").is_visible()  # validation shown in place
    assert page.locator("#policy").get_attribute("aria-invalid") == "true"
    page.get_by_label("Policy (JSON, as PutLifecyclePolicy takes it)").fill(POLICY)
    page.get_by_role("button", name="Save policy").click()
    page.wait_for_url(re.compile(r"/-/lifecycle$"))
    assert registry.lifecycle.get(ref).text == POLICY
    page.get_by_role("button", name="Preview what it would expire").click()
    # The preview is a leased job the server's runner takes; the page refreshes itself until it is done.
    page.locator("#preview-summary").wait_for(timeout=30_000)
    assert page.locator("#preview-summary").inner_text() == "1 image(s) would expire."
    assert old[:19] in page.inner_text("main") and new[:19] not in page.locator("tbody").inner_text()
    assert axe_violations(page) == []
    shot(page, "lifecycle")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/console/signin$"))
    page.goto(server.url + "/console/repositories")
    assert page.url.endswith("/console/signin")
    assert page.dialogs == []


def test_restricted_user_sees_not_allowed_panels(server, aws, page):
    server.registry.repositories.create(RepoRef(ACCOUNT, "private/app"))
    key_id, secret = make_user(aws("iam"), "auditor", LIST_ONLY)
    sign_in(page, server.url, key_id, secret)
    page.wait_for_url(re.compile(r"/console/repositories$"))
    page.get_by_role("link", name="private/app").click()
    panels = page.get_by_role("alert")
    assert panels.count() >= 3  # images, lifecycle policy, repository policy
    assert "ecr:DescribeImages" in panels.first.inner_text()
    assert axe_violations(page) == []
    shot(page, "not-allowed")
    page.goto(server.url + "/console/repo/private/app/-/lifecycle")
    assert "Not allowed" in page.inner_text("main")
    # The pages beyond repositories: each names the action the user lacks.
    for path, action in (
        ("/console/usage", "ce:GetCostAndUsage"),
        ("/console/audit", "cloudtrail:LookupEvents"),
        ("/console/events", "soko:ListEventDeliveries"),
        ("/console/repo/private/app/-/policy", "ecr:GetRepositoryPolicy"),
        ("/console/iam", "iam:ListUsers"),
    ):
        page.goto(server.url + path)
        panel = page.get_by_role("alert").first
        assert "Not allowed" in panel.inner_text() and action in page.inner_text("main"), path
    assert axe_violations(page) == []


def test_xss_payloads_are_inert(server, page):
    ref = RepoRef(ACCOUNT, "xss")
    server.registry.repositories.create(ref)
    digest = push_rich_image(server.registry, ref, "v1", label=XSS)
    server.registry.lifecycle.put(
        ref,
        json.dumps(
            {
                "rules": [
                    {
                        "rulePriority": 1,
                        "description": XSS,
                        "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 5},
                        "action": {"type": "expire"},
                    }
                ]
            }
        ),
    )
    sign_in(page, server.url, ROOT_KEY_ID, ROOT_SECRET)
    page.wait_for_url(re.compile(r"/console/repositories$"))
    for path in (
        f"/console/repo/xss/-/image/{digest}",
        "/console/repo/xss",
        "/console/repo/xss/-/lifecycle",
        "/console/repositories?q=" + XSS,
    ):
        page.goto(server.url + path)
        assert page.locator("img[src=x]").count() == 0
        assert page.locator("script:not([src])").count() == 0
    page.goto(server.url + f"/console/repo/xss/-/image/{digest}")
    assert XSS in page.inner_text("main")  # shown as text
    page.goto(server.url + "/console/repo/xss/-/lifecycle")
    page.locator("#policy").fill(XSS)
    page.get_by_role("button", name="Save policy").click()
    assert page.locator("#policy").input_value() == XSS  # back in the editor as text, with the error beside it
    # Filters reflected into the new pages, and policy text in the repository policy editor.
    for path in (
        "/console/audit?principal=" + quote(XSS) + "&action=" + quote(XSS),
        "/console/usage?month=" + quote(XSS),
        "/console/events?target=" + quote(XSS),
    ):
        page.goto(server.url + path)
        assert page.locator("img[src=x]").count() == 0 and page.locator("script:not([src])").count() == 0, path
    page.goto(server.url + "/console/audit?principal=" + quote(XSS))
    assert page.get_by_label("Principal ARN").input_value() == XSS  # back in the form as text
    page.goto(server.url + "/console/repo/xss/-/policy")
    page.locator("#policy").fill(XSS)
    page.get_by_role("button", name="Save policy").click()
    assert page.locator("#policy").input_value() == XSS and page.locator("#policy-error").is_visible()
    assert page.locator("img[src=x]").count() == 0
    assert page.dialogs == []


def test_a_form_on_another_site_cannot_change_anything(server, aws, page):
    ref = RepoRef(ACCOUNT, "target")
    server.registry.repositories.create(ref)
    sign_in(page, server.url, ROOT_KEY_ID, ROOT_SECRET)
    page.wait_for_url(re.compile(r"/console/repositories$"))
    # Another origin's page (a data: URL) posts the settings form at the console, with a guessed token.
    attack = (
        f'<form id="f" method="post" action="{server.url}/console/repo/target/-/settings">'
        '<input name="mutability" value="IMMUTABLE"><input name="csrf" value="guess"></form>'
    )
    page.goto("data:text/html," + attack)
    with page.expect_navigation():
        page.evaluate("document.getElementById('f').submit()")
    assert "Refused" in page.content() or "Signed out" in page.content()
    assert server.registry.repositories.get(ref).tag_mutability == "MUTABLE"
    # The new pages' changes: an access key, a redelivery, a repository policy.
    policy = '{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "ecr:BatchGetImage"}]}'
    server.registry.policies.set_repository_policy(ref, policy)
    keys_before = aws("iam").list_access_keys()["AccessKeyMetadata"]
    for action, fields in (
        ("/console/iam/keys", '<input name="action" value="create">'),
        ("/console/events/redeliver", '<input name="target" value="any">'),
        ("/console/repo/target/-/policy", '<input name="action" value="delete">'),
    ):
        csrf = '<input name="csrf" value="x">'
        attack = f'<form id="f" method="post" action="{server.url}{action}">{fields}{csrf}</form>'
        page.goto("data:text/html," + attack)
        with page.expect_navigation():
            page.evaluate("document.getElementById('f').submit()")
        assert "Refused" in page.content() or "Signed out" in page.content(), action
    assert aws("iam").list_access_keys()["AccessKeyMetadata"] == keys_before
    assert server.registry.policies.repository_policy(ref) == policy


# ---- usage, audit log, IAM, repository policy, event delivery ---------------------------------------------------
def test_usage_audit_iam_policy_and_events_pages(server, page):
    import httpx

    from soko.events.targets import Targets
    from tests.events.receiver import Receiver

    registry = server.registry
    ref = RepoRef(ACCOUNT, "shop/cart")
    registry.repositories.create(ref)
    registry.repositories.create(RepoRef(ACCOUNT, "shop/empty"))
    digest = push_rich_image(registry, ref, "v1", label="cart", seed="cart")
    layer = registry.manifests.get(ref, digest)
    layer_digest = json.loads(layer.payload)["layers"][0]["digest"]
    with httpx.Client(base_url=server.url, headers=server.basic_auth) as pull:  # a real pull: metered transfer
        assert pull.get(f"/v2/shop/cart/blobs/{layer_digest}").status_code == 200
    registry.metering.sample()

    sign_in(page, server.url, ROOT_KEY_ID, ROOT_SECRET)
    page.wait_for_url(re.compile(r"/console/repositories$"))
    page.get_by_role("link", name="Usage", exact=True).click()
    page.wait_for_url(re.compile(r"/console/usage$"))
    charts = page.get_by_role("img")
    assert charts.count() == 4
    assert "Stored GB-months per repository" in page.locator("#chart-storage-t").text_content()
    assert "shop/cart" in page.locator("#usage").inner_text()
    assert page.locator("svg.chart rect.s0").count() >= 1  # bars drawn (transfer and storage)
    assert axe_violations(page) == []
    shot(page, "usage")

    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Repository").fill("shop/cart")
    page.get_by_label("Action").fill("ecr:GetDownloadUrlForLayer")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"repository=shop%2Fcart"))
    rows = page.locator("#audit tbody tr")
    assert rows.count() >= 1 and "repository/shop/cart" in rows.first.inner_text()  # the pull above
    assert axe_violations(page) == []
    shot(page, "audit")

    page.get_by_role("link", name="IAM").click()
    page.wait_for_url(re.compile(r"/console/iam$"))
    page.get_by_role("button", name="Create an access key").click()
    secret = page.locator("#new-secret").input_value()
    assert len(secret) >= 30
    new_key = page.locator("#new-key").inner_text().split("New access key ")[1].split(".")[0]
    assert page.locator("#keys").get_by_text(new_key).is_visible()
    page.get_by_role("button", name=f"Delete access key {new_key}").click()
    assert page.locator("#keys").get_by_text(new_key).count() == 0
    assert axe_violations(page) == []
    shot(page, "iam")

    page.goto(server.url + "/console/repo/shop/cart")
    page.get_by_role("link", name="Edit the repository policy").click()
    editor = page.get_by_label("Policy (JSON, as SetRepositoryPolicy takes it)")
    editor.fill('{"Version": "2012-10-17", "Statement": [{"Effect": "Allow"}]}')
    page.get_by_role("button", name="Save policy").click()
    assert page.locator("#policy-error").is_visible()
    assert page.locator("#policy").get_attribute("aria-invalid") == "true"
    assert axe_violations(page) == []
    shot(page, "policy")
    editor.fill(
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Sid": "ci", "Effect": "Allow", "Principal": "*", "Action": "ecr:BatchGetImage"}],
            },
            indent=2,
        )
    )
    page.get_by_role("button", name="Save policy").click()
    page.wait_for_url(re.compile(r"/-/policy$"))
    assert '"Sid": "ci"' in registry.policies.repository_policy(ref)

    receiver = Receiver().start()
    receiver.status = 500
    targets = Targets(registry.ctx)
    try:
        targets.create(ACCOUNT, "browser-hook", receiver.url, max_attempts=1, timeout=5)
        registry.repositories.create(RepoRef(ACCOUNT, "shop/hooked"))
        wait_for(lambda: targets.dead_letters(ACCOUNT, "browser-hook"))
        page.get_by_role("link", name="Events").click()
        page.wait_for_url(re.compile(r"/console/events$"))
        assert "browser-hook" in page.locator("#targets").inner_text()
        assert "Soko Repository Action" in page.locator("#dead-letters").inner_text()
        assert axe_violations(page) == []
        shot(page, "events")
        receiver.status = 200
        page.get_by_role("button", name="Redeliver all 1 dead letter(s) of browser-hook").click()
        assert "1 event(s) queued for redelivery" in page.locator("#redelivered").inner_text()
        wait_for(lambda: not targets.dead_letters(ACCOUNT, "browser-hook"))
        assert any(e["detail"].get("repository-name") == "shop/hooked" for e in receiver.unique_events())
    finally:
        targets.delete(ACCOUNT, "browser-hook")
        receiver.stop()
    assert page.dialogs == []
