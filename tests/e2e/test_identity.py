"""Identity end to end with real clients: the AWS CLI for the control plane, skopeo for images.

Every test starts its own ``soko serve`` on a fresh data dir (plus a private-endpoint listener on 127.0.0.2), so
the tests share no state: the README's quick start, the cross-account pull (ECS in account B pulls from A), a
registry that only serves pulls through a VPC endpoint, and revocation of a password when its key is deactivated.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .aws_cli import AwsCli, AwsCliError, audit, aws_binary, create_account, soko_cli
from .conftest import _require
from .images import build_image
from .layout import ImageRef, assert_same_content
from .servers import E2E_TARGET, RegistryServer, free_port, soko_root_key, start_soko
from .skopeo import Skopeo, SkopeoResult, can_override_hosts

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(E2E_TARGET != "soko", reason="identity is Soko's (Distribution has no IAM)"),
]

ACCOUNT_A = "000000000000"  # the default account
ACCOUNT_B = "111122223333"
REGION = "us-east-1"
VPCE = "vpce-0abc1234"
PULL_ACTIONS = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
PUSH_ACTIONS = [
    "ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload", "ecr:PutImage",
]


def repo_arn(name: str, account: str = ACCOUNT_A) -> str:
    return f"arn:aws:ecr:{REGION}:{account}:repository/{name}"


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _require_hosts() -> None:
    message = ("skopeo reaches <account>.dkr.ecr.<region>.localhost only through a hosts line, and this machine "
               "cannot give a test process its own /etc/hosts (unshare --mount)")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def assert_unauthorized(result: SkopeoResult) -> None:
    assert result.returncode != 0, "skopeo succeeded without valid credentials"
    text = result.stderr.lower()
    login_problem = re.search(r"\b401\b", text) or "unauthorized" in text or "authentication required" in text
    assert login_problem, result.stderr[-2000:]


def assert_denied(result: SkopeoResult) -> None:
    assert result.returncode != 0, "skopeo succeeded although IAM should deny it"
    text = result.stderr.lower()
    assert "403" in text or "denied" in text, result.stderr[-2000:]
    # (\b: the server's port, e.g. 127.0.0.1:40135, must not count as a 401)
    assert not re.search(r"\b401\b", text), f"a denial must not look like a login problem:\n{result.stderr[-2000:]}"


# -- the deployment under test -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require("umoci", "skopeo")
    return tmp_path_factory.mktemp("identity-images") / "oci"


@pytest.fixture(scope="module")
def image(layout: Path) -> ImageRef:
    """One small single-arch image (two layers), built with umoci."""
    return build_image(layout, "small", "identity", [48 * 1024, 16 * 1024])


@pytest.fixture(scope="module")
def other_image(layout: Path, image: ImageRef) -> ImageRef:
    """Another small image sharing no layer with ``image``: pushing it must upload blobs."""
    return build_image(layout, "other", "identity-other", [24 * 1024])


@dataclass
class Deployment:
    server: RegistryServer
    endpoint_host: str  # 127.0.0.2:PORT, the private endpoint VPCE's listener
    tmp: Path

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    @property
    def host(self) -> str:
        return self.server.host

    def aws(self, key: dict[str, str], name: str, url: str | None = None) -> AwsCli:
        return AwsCli.for_key(url or self.server.url, key, self.tmp / f"aws-{name}")

    def root_a(self) -> AwsCli:
        return self.aws(soko_root_key(self.data_dir), "root-a")

    def account_host(self, account: str) -> str:
        """ECR's name for ``account``'s registry: ``<account>.dkr.ecr.<region>.localhost:<port>``."""
        return f"{account}.dkr.ecr.{REGION}.localhost:{self.host.rsplit(':', 1)[1]}"

    def skopeo(self, name: str, password: str | None = None, hosts: tuple[str, ...] | None = None) -> Skopeo:
        """An isolated skopeo; with ``password``, logged in (user ``AWS``) to ``hosts`` (default: the bare host).
        Account host names among ``hosts`` resolve to the server for this skopeo alone (the README's hosts lines)."""
        hosts = hosts or (self.host,)
        auths = {host: ("AWS", password) for host in hosts} if password else {}
        names = {host.rsplit(":", 1)[0]: "127.0.0.1" for host in hosts if ".dkr.ecr." in host}
        if names and not can_override_hosts():
            _require_hosts()
        return Skopeo.create(self.tmp / f"skopeo-{name}", auths, names)

    def ref(self, repo: str, tag: str = "v1", host: str | None = None) -> str:
        return f"docker://{host or self.host}/{repo}:{tag}"


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    """A fresh ``soko serve`` (account A = the default account) with the private endpoint ``VPCE`` on 127.0.0.2."""
    _require("skopeo")
    endpoint_host = f"127.0.0.2:{free_port('127.0.0.2')}"
    server = start_soko(tmp_path / "data", extra_args=["--endpoint", f"{VPCE}={endpoint_host}"])
    try:
        yield Deployment(server, endpoint_host, tmp_path)
    finally:
        code = server.stop()
    assert code == 0, f"soko exited with {code} after SIGTERM\n{server.log_tail()}"


def push_image(skopeo: Skopeo, image: ImageRef, dest: str) -> None:
    skopeo.copy(image.ref, dest)


def pull_and_compare(skopeo: Skopeo, source: str, image: ImageRef, out: Path) -> None:
    pulled = image.with_path(out)
    skopeo.copy(source, pulled.ref)
    assert pulled.top_manifest() == image.top_manifest()
    assert_same_content(image.closure(), pulled.closure())


def try_pull(skopeo: Skopeo, source: str, out: Path) -> SkopeoResult:
    return skopeo.copy(source, f"oci:{out}:pulled", check=False)


def denials(
    deployment: Deployment, principal: str | None = None, expected: set[str] = frozenset()
) -> list[dict[str, Any]]:
    """Audited denials (of ``principal``), once they include the ``expected`` actions."""
    args = ["--decision", "deny"] + (["--principal", principal] if principal else [])
    return audit(deployment.data_dir, *args, until=lambda rows: expected <= {r["action"] for r in rows})


# -- 1. the README's quick start ------------------------------------------------------------------------------------


def login_pipeline(aws: AwsCli, skopeo: Skopeo, host: str) -> subprocess.CompletedProcess[bytes]:
    """``aws ecr get-login-password | skopeo login --tls-verify=false -u AWS --password-stdin HOST``, as a pipe."""
    get_password = subprocess.Popen(
        [aws_binary(), "--endpoint-url", aws.endpoint_url, "ecr", "get-login-password"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=aws.env(),
    )
    assert get_password.stdout is not None
    try:
        login = subprocess.run(
            ["skopeo", "login", "--authfile", str(skopeo.authfile), "--tls-verify=false", "-u", "AWS",
             "--password-stdin", host],
            stdin=get_password.stdout, capture_output=True, env=skopeo.env(), timeout=120, check=False,
        )
    finally:
        get_password.stdout.close()
        assert get_password.wait(timeout=120) == 0, "aws ecr get-login-password failed"
    return login


def test_quick_start_login_push_pull(deployment: Deployment, image: ImageRef, tmp_path: Path) -> None:
    credentials = deployment.data_dir / "root-credentials"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    aws = deployment.root_a()
    assert aws.json("sts", "get-caller-identity")["Arn"] == f"arn:aws:iam::{ACCOUNT_A}:root"
    skopeo = deployment.skopeo("user")
    dest = deployment.ref("team/app")

    assert_unauthorized(skopeo.copy(image.ref, dest, check=False))  # not logged in yet

    login = login_pipeline(aws, skopeo, deployment.host)
    assert login.returncode == 0, login.stderr.decode(errors="replace")
    assert b"Login Succeeded" in login.stdout
    assert deployment.host in json.loads(skopeo.authfile.read_text())["auths"]

    push_image(skopeo, image, dest)
    pull_and_compare(skopeo, dest, image, tmp_path / "pulled")

    repos = aws.json("ecr", "describe-repositories")["repositories"]
    assert [r["repositoryName"] for r in repos] == ["team/app"]  # created on push
    details = aws.json("ecr", "describe-images", "--repository-name", "team/app")["imageDetails"]
    assert [(d["imageDigest"], d.get("imageTags")) for d in details] == [(image.top_digest(), ["v1"])]
    assert details[0]["registryId"] == ACCOUNT_A


def test_wrong_password_is_unauthorized(deployment: Deployment, image: ImageRef) -> None:
    password = deployment.root_a().login_password()
    forged = password[:-4] + ("AAAA" if not password.endswith("AAAA") else "BBBB")
    skopeo = deployment.skopeo("forged", forged)
    assert_unauthorized(skopeo.copy(image.ref, deployment.ref("team/app"), check=False))
    rows = audit(deployment.data_dir, "--decision", "deny", until=lambda rows: any(r["event"] == "authn" for r in rows))
    assert any(r["event"] == "authn" for r in rows), rows


def test_root_key_and_account_from_environment(tmp_path: Path, image: ImageRef) -> None:
    """the ``SOKO_ROOT_*`` key and ``SOKO_ACCOUNT_ID`` in place of a generated key."""
    _require("skopeo")
    account = "210987654321"
    key = {"AccessKeyId": "AKIAE2EIDENTITYTEST1", "SecretAccessKey": "e2e/identity/secret/" + "x" * 20}
    env = {"SOKO_ACCOUNT_ID": account, "SOKO_ROOT_ACCESS_KEY_ID": key["AccessKeyId"],
           "SOKO_ROOT_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    server = start_soko(tmp_path / "data", env=env)
    try:
        assert not (server.data_dir / "root-credentials").exists()  # nothing generated, nothing written
        aws = AwsCli.for_key(server.url, key, tmp_path / "aws")
        assert aws.json("sts", "get-caller-identity")["Arn"] == f"arn:aws:iam::{account}:root"
        wrong_secret = AwsCli.for_key(server.url, {**key, "SecretAccessKey": "y" * 40}, tmp_path / "aws-wrong")
        result = wrong_secret.run("ecr", "describe-repositories", check=False)
        assert result.returncode != 0 and "InvalidSignatureException" in result.stderr, result.stderr
        unknown = AwsCli.for_key(server.url, {**key, "AccessKeyId": "AKIAE2EUNKNOWNKEY001"}, tmp_path / "aws-unknown")
        result = unknown.run("ecr", "describe-repositories", check=False)
        assert result.returncode != 0 and "UnrecognizedClientException" in result.stderr, result.stderr

        skopeo = Skopeo.create(tmp_path / "skopeo")
        login = login_pipeline(aws, skopeo, server.host)
        assert login.returncode == 0, login.stderr.decode(errors="replace")
        dest = f"docker://{server.host}/env/app:v1"
        push_image(skopeo, image, dest)
        pull_and_compare(skopeo, dest, image, tmp_path / "pulled")
        details = aws.json("ecr", "describe-images", "--repository-name", "env/app")["imageDetails"]
        assert [(d["registryId"], d["imageDigest"]) for d in details] == [(account, image.top_digest())]
    finally:
        code = server.stop()
    assert code == 0, f"soko exited with {code} after SIGTERM\n{server.log_tail()}"


def test_second_account_pushes_and_pulls_through_the_bare_host(deployment: Deployment, image: ImageRef,
                                                              tmp_path: Path) -> None:
    """The bare host serves the caller's own account: B needs no DNS set-up, and its images are B's, not A's."""
    result = soko_cli(deployment.data_dir, "account", "create", ACCOUNT_B)
    b_key = json.loads(result.stdout)  # stdout: only the key; the DNS hint goes to stderr
    b_host = f"{ACCOUNT_B}.dkr.ecr.{REGION}.localhost"
    assert f"127.0.0.1 {b_host}" in result.stderr and f"*.dkr.ecr.{REGION}.localhost" in result.stderr
    b = deployment.aws(b_key, "root-b")
    token = b.json("ecr", "get-authorization-token")["authorizationData"][0]
    assert token["proxyEndpoint"] == f"http://{deployment.host}"

    skopeo = deployment.skopeo("b", b.login_password())
    push_image(skopeo, image, deployment.ref("team/app"))
    pull_and_compare(skopeo, deployment.ref("team/app"), image, tmp_path / "pulled")

    repos = b.json("ecr", "describe-repositories")["repositories"]
    assert [(r["registryId"], r["repositoryName"]) for r in repos] == [(ACCOUNT_B, "team/app")]
    assert repos[0]["repositoryUri"] == f"{deployment.account_host(ACCOUNT_B)}/team/app"  # ECR's form
    details = b.json("ecr", "describe-images", "--repository-name", "team/app")["imageDetails"]
    assert [d["imageDigest"] for d in details] == [image.top_digest()]
    # A's root, through the same bare host, sees its own (empty) registry
    assert deployment.root_a().json("ecr", "describe-repositories")["repositories"] == []
    a_skopeo = deployment.skopeo("a", deployment.root_a().login_password())
    missing = a_skopeo.inspect(deployment.ref("team/app"), check=False)
    assert missing.returncode != 0 and "403" not in missing.stderr, missing.stderr[-2000:]


# -- 2. cross-account: ECS in account B pulls from account A --------------------------------------------------------


@dataclass
class CrossAccount:
    a: AwsCli  # account A's root
    b_root: AwsCli
    b_user: AwsCli  # B's IAM user "ecs", identity policy allowing the pull from A's repository
    user_arn: str
    repo: str


B_USER = "ecs"
SHARED_REPO = "shared/app"


def b_identity_policy(repo: str) -> str:
    return policy(
        {"Sid": "Login", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {"Sid": "PullFromA", "Effect": "Allow", "Action": PULL_ACTIONS, "Resource": repo_arn(repo)},
    )


def a_repository_policy() -> str:
    return policy({
        "Sid": "AccountBPulls", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_B}:root"},
        "Action": [*PULL_ACTIONS, "ecr:BatchCheckLayerAvailability"],
    })


def set_up_cross_account(deployment: Deployment, image: ImageRef) -> CrossAccount:
    a = deployment.root_a()
    a.json("ecr", "create-repository", "--repository-name", SHARED_REPO)
    publisher = deployment.skopeo("publisher-a", a.login_password())
    push_image(publisher, image, deployment.ref(SHARED_REPO))

    b_key = create_account(deployment.data_dir, ACCOUNT_B)  # the CLI, on the running server's database
    assert b_key["AccountId"] == ACCOUNT_B
    b_root = deployment.aws(b_key, "root-b")
    user_arn = b_root.json("iam", "create-user", "--user-name", B_USER)["User"]["Arn"]
    assert user_arn == f"arn:aws:iam::{ACCOUNT_B}:user/{B_USER}"
    user_key = b_root.json("iam", "create-access-key", "--user-name", B_USER)["AccessKey"]
    b_root.run("iam", "put-user-policy", "--user-name", B_USER, "--policy-name", "pull-from-a",
               "--policy-document", b_identity_policy(SHARED_REPO))
    a.json("ecr", "set-repository-policy", "--repository-name", SHARED_REPO, "--policy-text", a_repository_policy())
    b_user = deployment.aws(user_key, "user-b")
    return CrossAccount(a, b_root, b_user, user_arn, SHARED_REPO)


def test_cross_account_pull_with_both_policies(deployment: Deployment, image: ImageRef, other_image: ImageRef,
                                               tmp_path: Path) -> None:
    setup = set_up_cross_account(deployment, image)
    assert setup.b_root.json("sts", "get-caller-identity")["Arn"] == f"arn:aws:iam::{ACCOUNT_B}:root"
    assert setup.b_user.json("sts", "get-caller-identity")["Arn"] == setup.user_arn
    # B's own registry is the bare host it called; A's is ECR's account host name, as ECR hands them out
    a_host = deployment.account_host(ACCOUNT_A)
    tokens = setup.b_user.json("ecr", "get-authorization-token", "--registry-ids", ACCOUNT_B, ACCOUNT_A)
    endpoints = [t["proxyEndpoint"] for t in tokens["authorizationData"]]
    assert endpoints == [f"http://{deployment.host}", f"http://{a_host}"]
    skopeo = deployment.skopeo("ecs-b", setup.b_user.login_password(), hosts=(a_host,))

    pull_and_compare(skopeo, deployment.ref(setup.repo, host=a_host), image, tmp_path / "pulled")
    by_digest = f"docker://{a_host}/{setup.repo}@{image.top_digest()}"
    assert skopeo.inspect_raw(by_digest) == image.top_manifest()

    # B may pull, but not push: neither side grants B any push action. Re-tagging what is there fails at the
    # manifest; new content already at the upload.
    assert_denied(skopeo.copy(image.ref, deployment.ref(setup.repo, "from-b", host=a_host), check=False))
    assert_denied(skopeo.copy(other_image.ref, deployment.ref(setup.repo, "other", host=a_host), check=False))
    expected = {"ecr:PutImage", "ecr:InitiateLayerUpload"}
    pushes = [r for r in denials(deployment, setup.user_arn, expected) if r["action"] in PUSH_ACTIONS]
    assert expected <= {r["action"] for r in pushes}, denials(deployment)
    assert all(r["resource"] == repo_arn(setup.repo) for r in pushes)
    tags = setup.a.json("ecr", "list-images", "--repository-name", setup.repo)["imageIds"]
    assert [t.get("imageTag") for t in tags] == ["v1"]


def test_cross_account_pull_denied_without_repository_policy(deployment: Deployment, image: ImageRef,
                                                             tmp_path: Path) -> None:
    setup = set_up_cross_account(deployment, image)
    a_host = deployment.account_host(ACCOUNT_A)
    skopeo = deployment.skopeo("ecs-b", setup.b_user.login_password(), hosts=(a_host,))
    pull_and_compare(skopeo, deployment.ref(setup.repo, host=a_host), image, tmp_path / "before")

    setup.a.json("ecr", "delete-repository-policy", "--repository-name", setup.repo)
    assert_denied(try_pull(skopeo, deployment.ref(setup.repo, host=a_host), tmp_path / "after"))
    assert_pull_denial_audited(deployment, setup)

    # the same password works again as soon as A shares the repository again: tokens authenticate, IAM decides
    setup.a.json("ecr", "set-repository-policy", "--repository-name", setup.repo, "--policy-text",
                 a_repository_policy())
    pull_and_compare(skopeo, deployment.ref(setup.repo, host=a_host), image, tmp_path / "again")


def test_cross_account_pull_denied_without_identity_policy(deployment: Deployment, image: ImageRef,
                                                           tmp_path: Path) -> None:
    setup = set_up_cross_account(deployment, image)
    a_host = deployment.account_host(ACCOUNT_A)
    skopeo = deployment.skopeo("ecs-b", setup.b_user.login_password(), hosts=(a_host,))
    pull_and_compare(skopeo, deployment.ref(setup.repo, host=a_host), image, tmp_path / "before")

    setup.b_root.run("iam", "delete-user-policy", "--user-name", B_USER, "--policy-name", "pull-from-a")
    assert_denied(try_pull(skopeo, deployment.ref(setup.repo, host=a_host), tmp_path / "after"))
    assert_pull_denial_audited(deployment, setup)
    # and B's user cannot even get a new password now
    result = setup.b_user.run("ecr", "get-login-password", check=False)
    assert result.returncode != 0 and "AccessDenied" in result.stderr, result.stderr


def assert_pull_denial_audited(deployment: Deployment, setup: CrossAccount) -> None:
    rows = [r for r in denials(deployment, setup.user_arn, {"ecr:BatchGetImage"}) if r["event"] == "authz"]
    assert rows, f"no denial of {setup.user_arn} in the audit log: {denials(deployment)}"
    pull_denials = [r for r in rows if r["action"] in PULL_ACTIONS]
    assert pull_denials, rows
    row = pull_denials[-1]
    assert row["principal"] == setup.user_arn
    assert row["resource"] == repo_arn(setup.repo)
    assert row["decision"] == "deny"
    assert row["endpoint"] == "public"
    # the text form names them too, for the operator reading `soko audit --decision deny`
    text = soko_cli(deployment.data_dir, "audit", "--decision", "deny").stdout
    assert setup.user_arn in text and row["action"] in text and repo_arn(setup.repo) in text


# -- 3. private endpoint: pulls only through the VPC endpoint -------------------------------------------------------


def vpce_only_policy(resource: str | None) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Sid": "PullOnlyThroughTheEndpoint", "Effect": "Deny", "Principal": "*", "Action": PULL_ACTIONS,
        "Condition": {"StringNotEquals": {"aws:SourceVpce": VPCE}},
    }
    if resource:
        statement["Resource"] = resource
    return statement


@pytest.mark.parametrize("where", ["registry-policy", "repository-policy"])
def test_private_endpoint_required_for_pull(where: str, deployment: Deployment, image: ImageRef,
                                            tmp_path: Path) -> None:
    a = deployment.root_a()
    repo = "private/app"
    password = a.login_password()
    skopeo = deployment.skopeo("root-a", password, hosts=(deployment.host, deployment.endpoint_host))
    push_image(skopeo, image, deployment.ref(repo))
    if where == "registry-policy":  # REGISTRY_POLICY_SCOPE V2 (the default) lets it name any ECR action
        a.json("ecr", "put-registry-policy", "--policy-text",
               policy(vpce_only_policy(f"arn:aws:ecr:{REGION}:{ACCOUNT_A}:repository/*")))
    else:
        a.json("ecr", "set-repository-policy", "--repository-name", repo, "--policy-text",
               policy(vpce_only_policy(None)))

    assert_denied(try_pull(skopeo, deployment.ref(repo), tmp_path / "public"))
    pull_and_compare(skopeo, deployment.ref(repo, host=deployment.endpoint_host), image, tmp_path / "vpce")

    # the control plane obeys the same policy: BatchGetImage through the endpoint only
    batch = ["ecr", "batch-get-image", "--repository-name", repo, "--image-ids", "imageTag=v1"]
    with pytest.raises(AwsCliError) as denied:
        a.json(*batch)
    assert "AccessDeniedException" in denied.value.result.stderr
    through_vpce = deployment.aws(soko_root_key(deployment.data_dir), "root-a-vpce", f"http://{deployment.endpoint_host}")
    images = through_vpce.json(*batch)["images"]
    assert [i["imageId"]["imageDigest"] for i in images] == [image.top_digest()]

    root_arn = f"arn:aws:iam::{ACCOUNT_A}:root"
    wanted = {("deny", "public"), ("allow", VPCE)}
    rows = [r for r in audit(deployment.data_dir, "--principal", root_arn,
                             until=lambda rows: wanted <= {(r["decision"], r["endpoint"]) for r in rows})
            if r["event"] == "authz" and r["action"] == "ecr:BatchGetImage"]
    assert {(r["decision"], r["endpoint"]) for r in rows} >= {("deny", "public"), ("allow", VPCE)}, rows
    assert all(r["resource"] == repo_arn(repo) for r in rows)
    # pushes were never restricted: through the public listener they still work
    push_image(skopeo, image, deployment.ref(repo, "v2"))


def test_repository_reachable_only_through_the_endpoint(deployment: Deployment, image: ImageRef,
                                                        tmp_path: Path) -> None:
    """A repository policy that denies every ECR action outside the endpoint, set (without ``--force``) by a caller
    on the endpoint: that caller keeps every right there, and loses them on the public listener."""
    key = soko_root_key(deployment.data_dir)
    public = deployment.root_a()
    vpce = deployment.aws(key, "root-a-vpce", f"http://{deployment.endpoint_host}")
    repo = "vpce/only"
    vpce.json("ecr", "create-repository", "--repository-name", repo)
    statement = {**vpce_only_policy(None), "Sid": "EndpointOnly", "Action": "ecr:*"}
    vpce.json("ecr", "set-repository-policy", "--repository-name", repo, "--policy-text", policy(statement))

    with pytest.raises(AwsCliError) as denied:
        public.json("ecr", "describe-images", "--repository-name", repo)
    assert "AccessDeniedException" in denied.value.result.stderr
    with pytest.raises(AwsCliError) as denied:
        public.json("ecr", "delete-repository-policy", "--repository-name", repo)
    assert "AccessDeniedException" in denied.value.result.stderr

    skopeo = deployment.skopeo("root-a", public.login_password(), hosts=(deployment.host, deployment.endpoint_host))
    assert_denied(skopeo.copy(image.ref, deployment.ref(repo), check=False))
    push_image(skopeo, image, deployment.ref(repo, host=deployment.endpoint_host))
    pull_and_compare(skopeo, deployment.ref(repo, host=deployment.endpoint_host), image, tmp_path / "vpce")
    details = vpce.json("ecr", "describe-images", "--repository-name", repo)["imageDetails"]
    assert [d["imageDigest"] for d in details] == [image.top_digest()]
    vpce.json("ecr", "delete-repository-policy", "--repository-name", repo)
    assert public.json("ecr", "describe-images", "--repository-name", repo)["imageDetails"]


# -- 4. revocation: a password dies with its access key -------------------------------------------------------------


CI_USER = "ci"


def set_up_ci_user(deployment: Deployment, repo: str) -> tuple[AwsCli, AwsCli, str]:
    a = deployment.root_a()
    a.json("iam", "create-user", "--user-name", CI_USER)
    key = a.json("iam", "create-access-key", "--user-name", CI_USER)["AccessKey"]
    a.run("iam", "put-user-policy", "--user-name", CI_USER, "--policy-name", "push-pull", "--policy-document",
          policy({"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
                 {"Effect": "Allow", "Action": [*PULL_ACTIONS, *PUSH_ACTIONS], "Resource": repo_arn(repo)}))
    return a, deployment.aws(key, "ci"), key["AccessKeyId"]


@pytest.mark.parametrize("revoke", ["deactivate", "delete"])
def test_password_dies_with_its_access_key(revoke: str, deployment: Deployment, image: ImageRef,
                                           tmp_path: Path) -> None:
    repo = "ci/app"
    a, ci, key_id = set_up_ci_user(deployment, repo)
    skopeo = deployment.skopeo("ci", ci.login_password())
    push_image(skopeo, image, deployment.ref(repo))
    pull_and_compare(skopeo, deployment.ref(repo), image, tmp_path / "before")

    if revoke == "deactivate":
        a.run("iam", "update-access-key", "--user-name", CI_USER, "--access-key-id", key_id, "--status", "Inactive")
        keys = a.json("iam", "list-access-keys", "--user-name", CI_USER)["AccessKeyMetadata"]
        assert [(k["AccessKeyId"], k["Status"]) for k in keys] == [(key_id, "Inactive")]
    else:
        a.run("iam", "delete-access-key", "--user-name", CI_USER, "--access-key-id", key_id)

    assert_unauthorized(try_pull(skopeo, deployment.ref(repo), tmp_path / "after"))
    assert_unauthorized(skopeo.copy(image.ref, deployment.ref(repo, "v2"), check=False))
    result = ci.run("ecr", "get-login-password", check=False)
    assert result.returncode != 0
    assert "UnrecognizedClientException" in result.stderr or "InvalidClientTokenId" in result.stderr, result.stderr
    authn_denied = lambda rows: any(r["event"] == "authn" for r in rows)  # noqa: E731
    assert authn_denied(audit(deployment.data_dir, "--decision", "deny", until=authn_denied))

    if revoke == "deactivate":  # a new password from the re-activated key works; nothing else changed
        a.run("iam", "update-access-key", "--user-name", CI_USER, "--access-key-id", key_id, "--status", "Active")
        fresh = deployment.skopeo("ci-again", ci.login_password())
        pull_and_compare(fresh, deployment.ref(repo), image, tmp_path / "again")


def test_assumed_role_session_pulls_but_cannot_push(deployment: Deployment, image: ImageRef,
                                                   tmp_path: Path) -> None:
    """A role session's password (``aws sts assume-role``, then ``get-login-password`` with the session) pulls."""
    a = deployment.root_a()
    repo = "roles/app"
    push_image(deployment.skopeo("root-a", a.login_password()), image, deployment.ref(repo))
    trust = policy({"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_A}:root"},
                    "Action": "sts:AssumeRole"})
    role_arn = a.json("iam", "create-role", "--role-name", "puller",
                      "--assume-role-policy-document", trust)["Role"]["Arn"]
    a.run("iam", "put-role-policy", "--role-name", "puller", "--policy-name", "pull", "--policy-document",
          policy({"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
                 {"Effect": "Allow", "Action": PULL_ACTIONS, "Resource": repo_arn(repo)}))
    # roles may not be assumed by root: a deployer user whose identity policy allows sts:AssumeRole does it
    a.json("iam", "create-user", "--user-name", "deployer")
    deployer_key = a.json("iam", "create-access-key", "--user-name", "deployer")["AccessKey"]
    a.run("iam", "put-user-policy", "--user-name", "deployer", "--policy-name", "assume", "--policy-document",
          policy({"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arn}))
    deployer = deployment.aws(deployer_key, "deployer")
    creds = deployer.json("sts", "assume-role", "--role-arn", role_arn,
                          "--role-session-name", "deploy")["Credentials"]
    session = deployment.aws(creds, "session")
    assert session.json("sts", "get-caller-identity")["Arn"] == f"arn:aws:sts::{ACCOUNT_A}:assumed-role/puller/deploy"
    skopeo = deployment.skopeo("session", session.login_password())
    pull_and_compare(skopeo, deployment.ref(repo), image, tmp_path / "pulled")
    assert_denied(skopeo.copy(image.ref, deployment.ref(repo, "v2"), check=False))  # the role cannot push
