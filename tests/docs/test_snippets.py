"""Every Python block of the quick start and the guides runs, as the page says, against the
real dev authority (issue 20.3): servers as processes on free loopback ports, configured from
the environment the authority describes, called with real tokens; test files under pytest.

A page's blocks are files (`:caption: NAME.py`); RUNS says which test runs each file, and
`test_every_block_is_run` fails for a block that no test runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import runpy
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from examples.signin import _fill_in_the_page as fill_in_the_page
from grpc_obo.devauthority import DevAuthority
from tests.docs.snippets import (
    JWT,
    RUN_PAGES,
    TIMEOUT,
    Service,
    blocks,
    clean_env,
    free_address,
    run,
    write_files,
)
from tests.redis_server import redis_server

RUNS: dict[tuple[str, str], str] = {
    ("quickstart.md", "server.py"): "test_quickstart",
    ("quickstart.md", "middle_tier.py"): "test_quickstart",
    ("quickstart.md", "call.py"): "test_quickstart",
    ("guides/server.md", "notes_server.py"): "test_server_guide",
    ("guides/downstream-grpc.md", "summary_tier.py"): "test_downstream_guide",
    ("guides/http-downstream.md", "profile_service.py"): "test_http_downstream_guide",
    ("guides/front-door.md", "front_door.py"): "test_front_door_guide",
    ("guides/secretless.md", "secretless_tier.py"): "test_secretless_guide",
    ("guides/replicas.md", "replica.py"): "test_replicas_guide",
    ("guides/telemetry.md", "telemetry.py"): "test_telemetry_guide",
    ("guides/dev-authority.md", "world_tour.py"): "test_dev_authority_guide",
    ("guides/testing.md", "test_my_api.py"): "test_testing_guide",
    ("guides/testing.md", "test_sign_in.py"): "test_testing_guide",
    ("guides/entra.md", "options.py"): "test_entra_guide_options",
    ("guides/entra.md", "middle_tier_channel.py"): "test_entra_guide_options",
    ("guides/entra.md", "claims.py"): "test_entra_guide_claims_challenge",
}
# The one block that only Entra can run: MSAL fetches the tenant's metadata from
# login.microsoftonline.com when the application object is built (no network here). Its
# functions (claims.py) run against the dev authority with an app built for it.
ENTRA_ONLY = {("guides/entra.md", "entra_app.py")}

REPO_DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_block_is_run() -> None:
    found: set[tuple[str, str]] = set()
    for page in RUN_PAGES:
        for block in blocks(page):
            if block.language == "python" and block.include is None:
                assert block.caption and block.caption.endswith(".py"), (
                    f"{page}:{block.line}: a Python block without a file name (:caption: x.py)"
                )
                found.add((page, block.caption))
    assert found == set(RUNS) | ENTRA_ONLY, "blocks no test runs, or tests of vanished blocks"
    assert all(name in globals() for name in RUNS.values())


def _call(target: str, method: str, token: str | None, request: bytes = b"") -> bytes:
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(target) as channel:
        return channel.unary_unary(method)(request, metadata=metadata, timeout=TIMEOUT)


def _refusal(target: str, method: str, token: str | None, request: bytes = b"") -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        _call(target, method, token, request)
    return refused.value


def _challenge(error: grpc.RpcError) -> str:
    trailers = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
    return str(trailers.get("www-authenticate", ""))


def _env(authority: DevAuthority, app: str, **extra: str) -> dict[str, str]:
    return clean_env(**authority.azure_env(app), **extra)


def _no_token_in(*texts: str) -> None:
    for text in texts:
        assert not JWT.search(text), "a token was printed"


# -- quick start: followed literally, with the grpc-obo command --------------------------------


@pytest.fixture
def cli_authority(tmp_path: Path) -> Iterator[Path]:
    """`grpc-obo authority --write-env dev.json --write-dotenv env/` in tmp_path (demo world)."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "grpc_obo._cli",
            "authority",
            "--write-env",
            "dev.json",
            "--write-dotenv",
            "env/",
            "--state-dir",
            "state",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
    )
    try:
        deadline = TIMEOUT
        start = time.monotonic()
        while not (tmp_path / "dev.json").exists():
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() - start < deadline, "the authority did not start"
            time.sleep(0.05)
        yield tmp_path
    finally:
        process.terminate()
        process.communicate(timeout=TIMEOUT)


def _sh(command: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """A page's shell line, with `python` and `grpc-obo` this environment's."""
    return subprocess.run(
        ["/bin/sh", "-c", command],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_shell_env(**extra),
        timeout=TIMEOUT * 2,
        check=False,
    )


def _shell_env(**extra: str) -> dict[str, str]:
    # `python` and `grpc-obo` as a reader of the page has them: this environment's bin first.
    env = clean_env(**extra)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _sh_service(command: str, cwd: Path, **extra: str) -> Service:
    # The page's `(set -a; . env/x.env; python x.py)`, with exec so SIGTERM reaches Python.
    inner = command.strip().removeprefix("(").removesuffix(")").replace("python ", "exec python ")
    process = subprocess.Popen(
        ["/bin/sh", "-c", inner],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_shell_env(**extra),
        cwd=cwd,
    )
    service = Service(command, process)
    assert process.stdout is not None
    line = process.stdout.readline()
    if "serving on" not in line:
        process.kill()
        raise AssertionError(f"{command} did not start: {line}{process.communicate()}")
    service.first_line = line
    return service


def _shell_lines(page: str) -> list[str]:
    return [
        line
        for block in blocks(page)
        if block.language == "sh"
        for line in block.code.splitlines()
        if line and not line.startswith(("#", "pip "))
    ]


def test_quickstart(cli_authority: Path) -> None:
    directory = cli_authority
    write_files("quickstart.md", directory)
    lines = _shell_lines("quickstart.md")
    assert lines[0].startswith("grpc-obo authority --write-env dev.json --write-dotenv env/")
    serve_downstream, serve_middle, get_token, call = lines[1], lines[2], lines[3], lines[4]
    assert serve_downstream == "(set -a; . env/downstream.env; python server.py)"
    assert serve_middle == "(set -a; . env/original.env; python middle_tier.py)"
    # The page's default ports, made free ones: the only change to what it says.
    downstream_address, middle_address = free_address(), free_address()
    downstream = _sh_service(serve_downstream, directory, LISTEN=downstream_address)
    middle = _sh_service(
        serve_middle, directory, LISTEN=middle_address, DOWNSTREAM=downstream_address
    )
    try:
        assert call == "python call.py 127.0.0.1:50051"
        called = _sh(f"{get_token} && {call.replace('127.0.0.1:50051', middle_address)}", directory)
        assert called.returncode == 0, called.stderr
        document = json.loads((directory / "dev.json").read_text())
        alice = document["users"]["alice"]
        original = document["apps"]["original"]["client_id"]
        assert called.stdout.splitlines() == [
            f"original: {alice['username']}",
            f"downstream: {alice['username']} {alice['tenant_id']}/{alice['oid']} via {original}",
        ]
    finally:
        outputs = [downstream.stop(), middle.stop()]
    _no_token_in(called.stdout, called.stderr, *outputs)


# -- guides: the session's dev authority (grpc_obo's pytest plugin), tokens minted --------------


@pytest.fixture
def notes(grpc_obo_authority: DevAuthority, tmp_path: Path) -> Iterator[str]:
    """The server guide's notes_server.py as the `downstream` API; yields its address."""
    written = write_files("guides/server.md", tmp_path)
    address = free_address()
    service = Service.start(
        written["notes_server.py"], _env(grpc_obo_authority, "downstream", LISTEN=address), tmp_path
    )
    try:
        yield address
    finally:
        _no_token_in(service.stop())


def test_server_guide(grpc_obo_authority: DevAuthority, notes: str) -> None:
    alice = grpc_obo_authority.world.user("alice")
    reader = grpc_obo_authority.mint_user_token(
        "alice", audience="downstream", scopes=["Data.Read"]
    )
    assert _call(notes, "/guide.Notes/Read", reader) == (
        f"notes of {alice.username}, scopes ['Data.Read']".encode()
    )
    with grpc.insecure_channel(notes) as channel:
        watch = channel.unary_stream("/guide.Notes/Watch")
        replies = list(watch(b"", metadata=[("authorization", f"Bearer {reader}")], timeout=10))
    assert replies == [f"{alice.oid} {n}".encode() for n in range(3)]

    refused = _refusal(notes, "/guide.Notes/Write", reader)
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    challenge = _challenge(refused)
    assert challenge.startswith('Bearer error="insufficient_scope"')
    assert 'scope="Data.Write"' in challenge
    writer = grpc_obo_authority.mint_user_token(
        "alice", audience="downstream", scopes=["Data.Write"]
    )
    assert (
        _call(notes, "/guide.Notes/Write", writer)
        == f"stored for {alice.tenant_id}/{alice.oid}".encode()
    )

    anonymous = _refusal(notes, "/guide.Notes/Read", None)
    assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    assert _challenge(anonymous) == "Bearer"
    foreign = grpc_obo_authority.mint_user_token("alice", audience="original")
    wrong_audience = _refusal(notes, "/guide.Notes/Read", foreign)
    assert wrong_audience.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    assert _challenge(wrong_audience).startswith('Bearer error="invalid_token"')


def test_downstream_guide(grpc_obo_authority: DevAuthority, notes: str, tmp_path: Path) -> None:
    written = write_files("guides/downstream-grpc.md", tmp_path)
    downstream = grpc_obo_authority.world.app("downstream")
    address = free_address()
    env = _env(
        grpc_obo_authority,
        "original",
        LISTEN=address,
        NOTES=notes,
        NOTES_APP_SCOPE=f"{downstream.app_id_uri}/.default",
    )
    tier = Service.start(written["summary_tier.py"], env, tmp_path)
    try:
        assert "SecretToken('**********')" in tier.first_line
        alice = grpc_obo_authority.world.user("alice")
        token = grpc_obo_authority.mint_user_token("alice", audience="original")
        expected = f"notes of {alice.username}, scopes ['Data.Read']".encode()
        assert _call(address, "/guide.Summary/Get", token) == expected
        assert _call(address, "/guide.Summary/Get", token) == expected
        assert grpc_obo_authority.requests.count(grant="obo", user="alice") == 1  # cached

        refused = _refusal(address, "/guide.Summary/Get", token, b"write")
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
        assert 'scope="Data.Write"' in _challenge(refused)  # Notes' own challenge, relayed
    finally:
        _no_token_in(tier.stop())


@pytest.mark.redis
def test_replicas_guide(grpc_obo_authority: DevAuthority, notes: str, tmp_path: Path) -> None:
    written = write_files("guides/replicas.md", tmp_path)
    key = bytes(range(32)).hex()
    with redis_server(env_var="GRPC_OBO_DOCS_REDIS_URL") as url:
        addresses = [free_address(), free_address()]
        replicas = [
            Service.start(
                written["replica.py"],
                _env(
                    grpc_obo_authority,
                    "original",
                    LISTEN=address,
                    NOTES=notes,
                    REDIS_URL=url,
                    TOKEN_CACHE_KEY=key,
                ),
                tmp_path,
            )
            for address in addresses
        ]
        try:
            token = grpc_obo_authority.mint_user_token("alice", audience="original")
            for address in addresses:  # one replica exchanges, the other reads it from Redis
                assert _call(address, "/guide.Summary/Get", token).startswith(b"notes of alice@")
            assert grpc_obo_authority.requests.count(grant="obo", user="alice") == 1
        finally:
            _no_token_in(*(replica.stop() for replica in replicas))


def test_telemetry_guide(tmp_path: Path) -> None:
    written = write_files("guides/telemetry.md", tmp_path)
    env = clean_env(
        OTEL_SERVICE_NAME="docs-telemetry",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{free_address()}",  # nothing listens: no export
    )
    done = run(written["telemetry.py"], env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


def test_dev_authority_guide(tmp_path: Path) -> None:
    written = write_files("guides/dev-authority.md", tmp_path)
    (tmp_path / "world.example.toml").write_text((REPO_DOCS / "world.example.toml").read_text())
    done = run(written["world_tour.py"], env=clean_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first.startswith("dana@fabrikam.example ")
    assert first.endswith("['Orders.Read'] ['Orders.Admin']")
    assert second.endswith("requests served")


def test_testing_guide(tmp_path: Path) -> None:
    write_files("guides/testing.md", tmp_path)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
        timeout=TIMEOUT * 4,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 passed" in done.stdout, done.stdout


def test_http_downstream_guide(grpc_obo_authority: DevAuthority, tmp_path: Path) -> None:
    """profile_service.py asks the Graph-like API for the caller, On-Behalf-Of her, with CAE
    tokens; after revoke_sessions her old token is refused with the claims challenge, a new
    sign-in is served."""
    authority = grpc_obo_authority
    written = write_files("guides/http-downstream.md", tmp_path)
    address = free_address()
    env = _env(authority, "downstream", LISTEN=address, GRAPH_URL=authority.graph_url)
    service = Service.start(written["profile_service.py"], env, tmp_path)
    try:
        alice = authority.world.user("alice")
        token = authority.mint_user_token("alice", audience="downstream")
        for _ in range(2):
            name = _call(address, "/guide.Profile/WhoAmI", token).decode()
            assert name == alice.display_name
        assert authority.requests.count(grant="obo", user="alice") == 1  # cached

        authority.world.revoke_sessions("alice")
        refused = _refusal(address, "/guide.Profile/WhoAmI", token)
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        challenge = _challenge(refused)
        assert challenge.startswith('Bearer error="insufficient_claims"')
        assert "claims=" in challenge and "authorization_uri" not in challenge
        again = authority.mint_user_token("alice", audience="downstream")
        assert _call(address, "/guide.Profile/WhoAmI", again).decode() == alice.display_name
    finally:
        _no_token_in(service.stop())


def test_front_door_guide(grpc_obo_authority: DevAuthority, notes: str, tmp_path: Path) -> None:
    """front_door.py under uvicorn on loopback, the server guide's Notes behind it."""
    authority = grpc_obo_authority
    written = write_files("guides/front-door.md", tmp_path)
    address = free_address()
    env = _env(authority, "original", LISTEN=address, NOTES=notes)
    door = Service.start(written["front_door.py"], env, tmp_path)
    try:
        alice = authority.world.user("alice")
        token = authority.mint_user_token("alice", audience="original")
        with httpx.Client(base_url=f"http://{address}", timeout=TIMEOUT) as http:

            def get(path: str, bearer: str | None = None) -> httpx.Response:
                headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
                return http.get(path, headers=headers)

            assert get("/health").json() == {"status": "ok"}
            anonymous = get("/notes")
            assert anonymous.status_code == 401
            assert anonymous.headers["www-authenticate"] == "Bearer"
            foreign = get("/notes", authority.mint_user_token("alice", audience="downstream"))
            assert foreign.status_code == 401
            assert foreign.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
            unscoped = get(
                "/notes", authority.mint_user_token("alice", audience="original", scopes=["other"])
            )
            assert unscoped.status_code == 403
            assert 'scope="access_as_user"' in unscoped.headers["www-authenticate"]

            ok = get("/notes", token)
            assert ok.status_code == 200, ok.text
            assert ok.json() == {
                "oid": alice.oid,
                "notes": f"notes of {alice.username}, scopes ['Data.Read']",
            }
            assert authority.requests.count(grant="obo", user="alice") == 1

            write = http.post("/notes", headers={"Authorization": f"Bearer {token}"})
            assert write.status_code == 403
            challenge = write.headers["www-authenticate"]
            assert challenge.startswith('Bearer error="insufficient_scope"')
            assert "ipv4" not in write.text
        _no_token_in(anonymous.text, ok.text, write.text, challenge)
    finally:
        _no_token_in(door.stop())


@pytest.mark.parametrize("source", ["federated_token_file", "managed_identity"])
def test_secretless_guide(
    grpc_obo_private_authority: DevAuthority, tmp_path: Path, source: str
) -> None:
    """secretless_tier.py as `original` with no secret or key in its environment: a projected
    service-account token, or a managed identity, federated with the app."""
    authority = grpc_obo_private_authority
    quickstart = write_files("quickstart.md", tmp_path)
    written = write_files("guides/secretless.md", tmp_path)
    original = authority.world.app("original")
    env = {
        k: v
        for k, v in _env(authority, "original").items()
        if k not in ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH")
    }
    if source == "federated_token_file":
        subject = "system:serviceaccount:shop:original"
        issuer = authority.workloads.issuer("docs")
        authority.world.add_federated_credential(
            "original", issuer=issuer.credential_issuer, subject=subject
        )
        token_file = authority.workloads.project(tmp_path / "sa.token", subject, cluster="docs")
        env["AZURE_FEDERATED_TOKEN_FILE"] = str(token_file.path)
    else:
        identity = authority.managed_identities.add("mi-original", federate="original")
        env["GRPC_OBO_MANAGED_IDENTITY_CLIENT_ID"] = identity.client_id
        env.update(authority.managed_identities.env(authority.base_url))
    downstream_address, address = free_address(), free_address()
    services = [
        Service.start(
            quickstart["server.py"],
            _env(authority, "downstream", LISTEN=downstream_address),
            tmp_path,
        )
    ]
    try:
        services.append(
            Service.start(
                written["secretless_tier.py"],
                {**env, "LISTEN": address, "DOWNSTREAM": downstream_address},
                tmp_path,
            )
        )
        assert services[1].first_line.endswith(f"with ['{source}']\n")
        alice = authority.world.user("alice")
        token = authority.mint_user_token("alice", audience="original")
        reply = _call(address, "/quickstart.Hop/Who", token).decode()
        assert reply == (
            f"downstream: {alice.username} {alice.tenant_id}/{alice.oid} via {original.client_id}"
        )
        assert authority.requests.count(grant="obo", user="alice") == 1
    finally:
        _no_token_in(*(service.stop() for service in services))


# -- the real-Entra guide: what runs without Entra ------------------------------------------------


def test_entra_guide_options(grpc_obo_authority: DevAuthority, tmp_path: Path) -> None:
    written = write_files("guides/entra.md", tmp_path)
    done = run(written["options.py"], env=clean_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # ConfidentialClient.from_env() with a middle tier's variables (here the dev authority's).
    done = run(
        written["middle_tier_channel.py"], env=_env(grpc_obo_authority, "original"), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    _no_token_in(done.stdout, done.stderr)


async def test_entra_guide_claims_challenge(
    grpc_obo_authority: DevAuthority, tmp_path: Path
) -> None:
    """claims.py's functions meet an MFA challenge raised two hops down: the client app's
    first call is refused with the relayed challenge, its silent sign-in with the claims is
    refused (MFA needs the user), its interactive sign-in with the claims gets a token that
    satisfies it, the retry succeeds."""
    import msal

    authority = grpc_obo_authority
    quickstart = write_files("quickstart.md", tmp_path)
    claims = runpy.run_path(str(write_files("guides/entra.md", tmp_path)["claims.py"]))
    downstream_address, middle_address = free_address(), free_address()
    services = [
        Service.start(
            quickstart["server.py"],
            _env(authority, "downstream", LISTEN=downstream_address),
            tmp_path,
        ),
        Service.start(
            quickstart["middle_tier.py"],
            _env(authority, "original", LISTEN=middle_address, DOWNSTREAM=downstream_address),
            tmp_path,
        ),
    ]
    page = authority.msal_http_client()
    try:
        world = authority.world
        alice = world.user("alice")
        app = msal.PublicClientApplication(
            world.app("client").client_id,
            authority=authority.authority_url,
            instance_discovery=False,
            http_client=authority.msal_http_client(),
            client_capabilities=["cp1"],
        )
        scopes = [f"{world.app('original').app_id_uri}/.default"]  # as in entra_app.py
        signed_in = app.acquire_token_by_username_password(
            alice.username, alice.password, scopes=scopes
        )
        assert "access_token" in signed_in, signed_in.get("error_description")
        authority.faults.require_claims(
            "alice", resource_client_id=world.app("downstream").client_id
        )
        # MFA is never answered silently nor by a password (as in Entra): the guide's code
        # falls back to acquire_token_interactive, and this test is the person at the
        # authority's sign-in page. It fills the page in over HTTP as a browser would (the
        # device code flow's page, which has the same MFA step), never leaving the test hanging
        # on a browser that is not there.

        def interactive(scopes: list[str], claims_challenge: str | None = None, **_: Any) -> Any:
            flow = app.initiate_device_flow(scopes=scopes, claims_challenge=claims_challenge)
            fill_in_the_page(page, flow, alice.username, alice.password)
            return app.acquire_token_by_device_flow(flow)

        app.acquire_token_interactive = interactive  # type: ignore[method-assign]

        async with grpc.aio.insecure_channel(middle_address) as channel:
            who = channel.unary_unary("/quickstart.Hop/Who")
            with pytest.raises(grpc.aio.AioRpcError) as refused:  # without the functions
                await who(b"", metadata=[("authorization", f"Bearer {signed_in['access_token']}")])
            decoded = claims["claims_challenge"](refused.value)
            assert decoded is not None and json.loads(decoded)  # the relayed challenge

            # meets it, retries once
            reply = await asyncio.wait_for(claims["call"](app, scopes, who, b""), 120)
        assert reply.decode().splitlines()[1].startswith(f"downstream: {alice.username} ")
    finally:
        page.close()
        _no_token_in(*(service.stop() for service in services))


def test_code_fits_the_page() -> None:
    """Python blocks stay within 79 columns: the site's code column shows that many without
    scrolling (seen on the screenshots of make docs-screenshots)."""
    for page in RUN_PAGES:
        for block in blocks(page):
            if block.language == "python":
                for n, line in enumerate(block.code.splitlines()):
                    assert len(line) <= 79, f"{page}:{block.line + n + 2}: {line}"
