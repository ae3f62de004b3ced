"""The sign-in page in a real browser: headless Chromium (Debian's package, installed by
`make chromium`) driven through chromedriver with Selenium, the way a person signs in: MSAL
starts the authorization code flow with PKCE, the browser opens its `auth_uri`, the person types
a username and password, approves the MFA step, and the page's form_post brings the code to the
app's loopback redirect URI, where MSAL redeems it.

Selenium over the W3C WebDriver protocol rather than raw DevTools: clicks and typing are real
input events, waits are explicit, and chromedriver from the same Debian release matches the
browser. The browser trusts the dev authority by pinning its server key
(`--ignore-certificate-errors-spki-list`), not by ignoring certificate errors.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from grpc_obo.devauthority import DevAuthority
from tests.devauthority.conftest import TIMEOUT, Msal, scope


def _spki_pin(authority: DevAuthority) -> str:
    pem = ssl.get_server_certificate(("127.0.0.1", authority.port))
    key = x509.load_pem_x509_certificate(pem.encode()).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture
def browser(authority: DevAuthority, tmp_path: Path) -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("chromium and chromedriver are needed: `make chromium` installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # containers and root: Chromium's sandbox needs user namespaces
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--ignore-certificate-errors-spki-list={_spki_pin(authority)}",
    ):
        options.add_argument(argument)
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    chrome.set_page_load_timeout(TIMEOUT)
    try:
        yield chrome
    finally:
        chrome.quit()


class _Callback(ThreadingHTTPServer):
    """The app's loopback redirect URI: records what the browser brings (query or POST)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: dict[str, str] = {}
        self.arrived = threading.Event()

    @property
    def redirect_uri(self) -> str:
        return f"http://localhost:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: _Callback

    def do_GET(self) -> None:
        self._record(urllib.parse.urlsplit(self.path).query)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self._record(self.rfile.read(length).decode())

    def _record(self, query: str) -> None:
        if urllib.parse.urlsplit(self.path).path != "/":  # the browser's /favicon.ico
            self.send_error(404)
            return
        self.server.received = dict(urllib.parse.parse_qsl(query))
        body = b"<!doctype html><title>done</title><p id=done>Signed in.</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.arrived.set()

    def log_message(self, format: str, *args: object) -> None:
        pass  # the code is in the URL: nothing of it goes to stderr


@pytest.fixture
def callback() -> Iterator[_Callback]:
    server = _Callback()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_person_signs_in_with_mfa_in_headless_chromium(
    authority: DevAuthority,
    msal_apps: Msal,
    browser: webdriver.Chrome,
    callback: _Callback,
) -> None:
    challenge = authority.faults.require_claims("alice")  # MFA for every resource
    app = msal_apps.public()
    flow = app.initiate_auth_code_flow(
        [scope(authority, "original")],
        redirect_uri=callback.redirect_uri,
        response_mode="form_post",
        login_hint="alice@contoso.example",
        claims_challenge=challenge.claims,
    )
    alice = authority.world.user("alice")
    wait = WebDriverWait(browser, TIMEOUT)

    browser.get(flow["auth_uri"])
    assert "Signing in to client" in browser.find_element(By.CLASS_NAME, "app").text
    username = browser.find_element(By.ID, "username")
    assert username.get_attribute("value") == alice.username  # login_hint
    browser.find_element(By.ID, "password").send_keys(alice.password)
    browser.find_element(By.ID, "sign-in").click()
    wait.until(expected_conditions.element_to_be_clickable((By.ID, "approve"))).click()
    # The form_post page's script (allowed by its hash) posts the code to the app.
    wait.until(expected_conditions.presence_of_element_located((By.ID, "done")))
    assert callback.arrived.wait(TIMEOUT)

    assert callback.received["state"] == flow["state"]
    result = app.acquire_token_by_auth_code_flow(flow, callback.received)
    assert "access_token" in result, result
    claims = jwt.decode(result["access_token"], options={"verify_signature": False})
    assert claims["amr"] == ["pwd", "mfa"] and claims["oid"] == alice.oid
    assert alice.password not in browser.page_source


def test_a_wrong_password_stays_on_the_page_in_chromium(
    authority: DevAuthority,
    msal_apps: Msal,
    browser: webdriver.Chrome,
    callback: _Callback,
) -> None:
    flow = msal_apps.public().initiate_auth_code_flow(
        [scope(authority, "original")],
        redirect_uri=callback.redirect_uri,
        response_mode="form_post",
    )
    browser.get(flow["auth_uri"])
    browser.find_element(By.ID, "username").send_keys("alice@contoso.example")
    browser.find_element(By.ID, "password").send_keys("not-her-password")
    browser.find_element(By.ID, "sign-in").click()
    error = WebDriverWait(browser, TIMEOUT).until(
        expected_conditions.presence_of_element_located((By.CLASS_NAME, "error"))
    )
    assert "AADSTS50126" in error.text
    assert not callback.arrived.is_set()
