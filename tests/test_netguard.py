"""SSRF guard: private targets are refused before any connection, redirects included; caps hold."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from fastapi.testclient import TestClient

from shared.errors import BadImage, UrlRefused
from shared.netguard import Guard, check_url, fetch, is_public
from tests.http_helpers import SMALL, canary, png, receiver


def loopback_forms(port: int) -> list[str]:
    return [f"http://127.0.0.1:{port}/x", f"http://2130706433:{port}/x",
            f"http://0x7f000001:{port}/x", f"http://0177.0.0.1:{port}/x",
            f"http://[::ffff:127.0.0.1]:{port}/x", f"http://localhost:{port}/x"]


OTHER_PRIVATE = ["http://10.0.0.5/x", "http://169.254.169.254/latest/meta-data/",
                 "http://192.168.1.1/", "http://[fd00:ec2::254]/", "http://[::1]/",
                 "http://0.0.0.0/", "http://100.64.0.1/"]


@pytest.mark.parametrize("ip,public", [
    ("8.8.8.8", True), ("127.0.0.1", False), ("10.1.2.3", False), ("169.254.169.254", False),
    ("::ffff:127.0.0.1", False), ("::ffff:8.8.8.8", True), ("64:ff9b::a00:1", False),
    ("2002:7f00:1::", False), ("224.0.0.1", False), ("2606:4700:4700::1111", True)])
def test_is_public(ip, public):
    assert is_public(ipaddress.ip_address(ip)) is public


def test_every_private_form_is_refused_before_connecting():
    with canary() as (port, touched):
        for url in loopback_forms(port) + OTHER_PRIVATE:
            with pytest.raises(UrlRefused, match="not a public address"):
                asyncio.run(check_url(url, Guard(), "webhook"))
            with pytest.raises(UrlRefused):
                asyncio.run(fetch(url, Guard(), "init_image"))
        assert not touched()


def test_non_http_schemes_and_credentials_are_refused():
    for url in ["file:///etc/passwd", "gopher://8.8.8.8/", "http://user:pw@8.8.8.8/"]:
        with pytest.raises(UrlRefused):
            asyncio.run(check_url(url, Guard()))


def test_webhook_to_a_private_address_is_refused_at_submission(client):
    with canary() as (port, touched):
        for url in loopback_forms(port) + OTHER_PRIVATE[:2]:
            out = client.post("/api/v3/text2img", json={"prompt": url, "webhook": url}).json()
            assert out["status"] == "error" and list(out["message"]) == ["webhook"], out
        assert not touched()


def test_init_image_url_to_a_private_address_is_refused(client):
    with canary() as (port, touched):
        for url in loopback_forms(port) + OTHER_PRIVATE[:2]:
            out = client.post("/api/v3/img2img", json={"prompt": url, "init_image": url}).json()
            assert out["status"] == "error" and "public address" in out["message"]["init_image"][0]
        assert not touched()


def test_allowlisted_host_serves_init_images_and_redirects_are_rechecked(make_app):
    with canary() as (port, touched), receiver() as host:
        host.routes = {
            "/cat.png": (200, {"content-type": "image/png"}, png()),
            "/moved": (302, {"location": "/cat.png"}, b""),
            "/to-canary": (302, {"location": f"http://2130706433:{port}/x.png"}, b""),
            "/to-metadata": (302, {"location": "http://169.254.169.254/latest/"}, b""),
        }
        allowed = "127.0.0.1:" + host.url.rsplit(":", 1)[1]
        with TestClient(make_app(allowed_private_hosts=allowed)) as c:
            for path in ("/cat.png", "/moved"):
                out = c.post("/api/v3/img2img", json={"prompt": path, "init_image": host.url + path,
                                                      **SMALL}).json()
                assert out["status"] == "success" and out["meta"]["init_image"] == host.url + path
            for path in ("/to-canary", "/to-metadata"):
                out = c.post("/api/v3/img2img", json={"prompt": path, "init_image": host.url + path,
                                                      **SMALL}).json()
                assert "public address" in out["message"]["init_image"][0]
        assert "/to-canary" in [h.path for h in host.hits]  # the first hop was made ...
        assert not touched()  # ... the redirect target never was


def test_webhook_redirects_are_not_followed(make_app):
    with canary() as (port, touched), receiver() as hook:
        hook.routes = {"/hook": (307, {"location": f"http://127.0.0.1:{port}/hook"}, b"")}
        allowed = "127.0.0.1:" + hook.url.rsplit(":", 1)[1]
        with TestClient(make_app(allowed_private_hosts=allowed, webhook_attempts=2,
                                 webhook_backoff_seconds=0)) as c:
            c.post("/api/v3/text2img", json={"prompt": "x", "webhook": hook.url + "/hook",
                                             **SMALL})
            assert len(hook.wait_for(2)) == 2  # a 3xx is a failed attempt, retried ...
        assert not touched()  # ... and never followed


def test_downloads_are_capped_in_bytes():
    with receiver() as host:
        host.routes = {"/big": (200, {}, b"x" * 5000)}
        guard = Guard(allow_private=True, max_bytes=1000)
        with pytest.raises(BadImage, match="byte limit"):
            asyncio.run(fetch(host.url + "/big", guard, "init_image"))
        assert asyncio.run(fetch(host.url + "/big", Guard(allow_private=True))) == b"x" * 5000


def test_downloads_are_capped_in_time():
    import threading

    hold = threading.Event()
    with receiver(hold=hold) as host:
        with pytest.raises(BadImage, match="longer than"):
            asyncio.run(fetch(host.url + "/slow", Guard(allow_private=True, timeout=0.5)))
        hold.set()


def test_connection_goes_to_the_checked_ip_with_the_name_in_host():
    with receiver() as host:
        port = int(host.url.rsplit(":", 1)[1])
        host.routes = {"/x": (200, {}, b"hello")}
        guard = Guard(allowlist=frozenset({f"127.0.0.1:{port}"}))
        # The name as written (here a decimal IPv4 form) goes in Host; the socket goes to the IP.
        target = asyncio.run(check_url(f"http://2130706433:{port}/x?a=1", guard))
        assert target.pinned_url() == f"http://127.0.0.1:{port}/x?a=1"
        assert asyncio.run(fetch(f"http://2130706433:{port}/x", guard)) == b"hello"
        assert host.hits[-1].headers["host"] == f"2130706433:{port}"
