"""The internal (ops) listener, `[internal] listen`: /health, /metrics, /nodes (relay spec §12),
on loopback, with real moq-rs publishers and subscribers."""

from __future__ import annotations

import contextlib
import json
import socket
import urllib.error
import urllib.request

import trio
from harness import Flag, free_port, in_thread, publish_until, read_groups, running_relay, wait_until
from prometheus_client.parser import text_string_to_metric_families
from test_cluster import cluster_extra
from test_ops_errors import assert_one_error_line, run_relay

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def internal_extra(port: int) -> str:
    return f'[internal]\nlisten = "127.0.0.1:{port}"'


def http_get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=20) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


async def get(url: str) -> tuple[int, dict[str, str], bytes]:
    return await trio.to_thread.run_sync(http_get, url)


async def scrape(base: str) -> Samples:
    status, headers, body = await get(base + "/metrics")
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def traffic(samples: Samples, what: str, role: str) -> float:
    return value(samples, f"moq_relay_{what}_total", tier="", role=role)


async def test_health_and_metrics_with_moq_rs_clients(tmp_path) -> None:
    ip = free_port()
    stop = Flag()
    async with running_relay(tmp_path, "moq-lite-05", extra=internal_extra(ip)) as relay:
        base = relay.handle.internal[0]
        assert base == f"http://127.0.0.1:{ip}"
        status, _, body = await get(base + "/health")
        assert (status, body) == (200, b"ok\n")
        first = await scrape(base)
        assert traffic(first, "bytes", "publisher") == 0 and traffic(first, "frames", "subscriber") == 0
        assert traffic(first, "viewers_opened", "publisher") == 0 and traffic(first, "stale_groups", "publisher") == 0
        assert value(first, "moq_relay_sessions_active", transport="quic", version="") == 0
        assert value(first, "moq_relay_broadcasts_active") == 0
        async with trio.open_nursery() as n:
            n.start_soon(in_thread, lambda: publish_until(relay.url("moql", "anon"), "cam", stop))
            try:
                with trio.fail_after(30):
                    await wait_until(lambda: relay.handle.origin.best("anon/cam") is not None, 15)
                    live = await scrape(base)
                    assert value(live, "moq_relay_sessions_active", transport="quic", version="moq-lite-05") == 1
                    assert value(live, "moq_relay_sessions_opened_total", tier="") == 1
                    assert value(live, "moq_relay_broadcasts_active") == 1
                    got: list[bytes] = []

                    async def viewer() -> None:
                        got.extend(await in_thread(lambda: read_groups(relay.url("https", "anon"), "cam", 12)))
                    n.start_soon(viewer)
                    while True:  # the viewer is served: egress (role publisher) rises while it reads
                        during = await scrape(base)
                        if traffic(during, "frames", "publisher") >= 3:
                            break
                        await trio.sleep(0.1)
                    assert value(during, "moq_relay_sessions_active", transport="webtransport",
                                 version="moq-lite-05") == 1
                    assert value(during, "moq_relay_tracks_active") == 1
                    assert value(during, "moq_relay_subscribers_active") == 1
                    assert traffic(during, "subscriptions_opened", "subscriber") == 1
                    assert traffic(during, "subscriptions_opened", "publisher") == 1
                    assert traffic(during, "viewers_opened", "publisher") == 1
                    assert traffic(during, "viewers_closed", "publisher") == 0
                    assert traffic(during, "viewers_opened", "subscriber") == 0  # egress only, as in Rust
                    while True:
                        later = await scrape(base)
                        if traffic(later, "frames", "subscriber") > traffic(during, "frames", "subscriber"):
                            break
                        await trio.sleep(0.1)
                    assert traffic(later, "bytes", "subscriber") > traffic(during, "bytes", "subscriber")
                    await wait_until(lambda: len(got) == 12, 20)
                    assert got[0].startswith(b"cam-")
                    after = await scrape(base)
                    assert traffic(after, "groups", "subscriber") >= 12
                    assert traffic(after, "frames", "publisher") >= 12 and traffic(after, "groups", "publisher") >= 12
                    assert traffic(after, "bytes", "publisher") >= sum(len(g) for g in got)
                    assert value(after, "moq_relay_quic_up") == 1
                    assert value(after, "moq_relay_http_accepted_total", listener="internal") >= 4
                    await wait_until(lambda: len(relay.handle.sessions) == 1, 10)  # the viewer left
                    after = await scrape(base)
                    assert value(after, "moq_relay_sessions_closed_total", tier="") == 1
                    assert traffic(after, "subscriptions_closed", "subscriber") == 1
                    assert traffic(after, "subscriptions_closed", "publisher") == 1
                    assert traffic(after, "viewers_closed", "publisher") == 1
                    assert value(after, "moq_relay_sessions_active", transport="webtransport", version="") == 0
            finally:
                stop.set()


async def test_health_is_503_while_draining(tmp_path) -> None:
    ip = free_port()
    async with running_relay(tmp_path, extra=internal_extra(ip), http=False) as relay:
        base = relay.handle.internal[0]
        with trio.fail_after(20):
            assert (await get(base + "/health"))[0] == 200
            relay.handle.admission.draining = True
            status, _, body = await get(base + "/health")
            assert (status, body) == (503, b"draining\n")
            samples = await scrape(base)
            assert value(samples, "moq_relay_draining") == 1
            relay.handle.admission.draining = False
            assert (await get(base + "/health"))[0] == 200
            assert relay.handle.endpoint is not None
            relay.handle.endpoint.serving = False  # as after the endpoint's sockets closed
            status, _, body = await get(base + "/health")
            assert (status, body) == (503, b"quic endpoint down\n")
            relay.handle.endpoint.serving = True


async def test_no_internal_listener_by_default(tmp_path) -> None:
    async with running_relay(tmp_path) as relay:
        assert relay.handle.internal == [] and relay.handle.internal_server is None


def test_internal_port_in_use_is_one_error_line() -> None:
    port, held_port = free_port(), free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", held_port))
        held.listen()
        proc = run_relay("--server-bind", f"127.0.0.1:{port}", "--internal-listen", f"127.0.0.1:{held_port}")
    assert_one_error_line(proc, "internal.listen", f"TCP 127.0.0.1:{held_port}", "Address already in use")


async def test_nodes_lists_a_static_peer(tmp_path) -> None:
    pa, pb, ip = free_port(), free_port(), free_port()
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(running_relay(tmp_path, port=pb, http=False))
        a = await stack.enter_async_context(running_relay(
            tmp_path, port=pa, http=False, extra=cluster_extra(pa, connect=[pb]) + "\n" + internal_extra(ip)))
        base = a.handle.internal[0]
        assert a.handle.cluster is not None
        with trio.fail_after(30):
            await wait_until(lambda: len(a.handle.cluster.link_sessions) == 1, 15)
            status, headers, body = await get(base + "/nodes")
            assert status == 200 and headers["content-type"].startswith("application/json")
            doc = json.loads(body)
            peer = f"https://127.0.0.1:{pb}/"
            conn_id = a.handle.cluster.link_sessions[peer].transport.info.conn_id
            assert doc == {"nodes": [{"node": peer, "connections": [{"id": conn_id}], "state": "up", "cost": 1}]}
            samples = await scrape(base)
            assert value(samples, "moq_relay_cluster_links", node=peer, state="up") == 1
            assert value(samples, "moq_relay_cluster_links_established_total") == 1
        await stack.aclose()


async def test_auth_rejections_by_reason(tmp_path) -> None:
    ip = free_port()
    async with running_relay(tmp_path, auth='public = "anon"', extra=internal_extra(ip)) as relay:
        base = relay.handle.internal[0]
        with trio.fail_after(30):
            before = await scrape(base)
            assert not [k for k in before if k[0] == "moq_relay_auth_rejections_total"]
            status, _, _ = await get(relay.http + "/fetch/secret/cam/v/0")
            assert status in (401, 403)
            status, _, _ = await get(relay.http + "/fetch/secret/cam/v/0?jwt=abc")
            assert status in (401, 403)
            after = await scrape(base)
            rejections = {dict(k[1])["reason"]: v for k, v in after.items() if k[0] == "moq_relay_auth_rejections_total"}
            assert sum(rejections.values()) == 2 and len(rejections) == 2, rejections
