"""The HTTP side of the relay (relay spec §7): quart-trio under hypercorn, on TCP.

GET /health, /certificate.sha256, /announced[/prefix], /fetch/<broadcast>/<track>[?group=].
Everything else is a 404 landing page (the WebSocket fallback will claim those paths).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import trio
from quart import Response, request, websocket
from quart_trio import QuartTrio

from relay.auth.scope import AuthError, Decide, Scope
from relay.digits import ascii_uint
from relay.errors import RemoteError
from relay.model.origin import Origin
from relay.model.subscription import Wish
from relay.model.track import GroupAborted, TrackClosed
from relay.transport.base import SessionInfo
from relay.transport.websocket import QuartChannel
from relay.web.serve import ResponseCut

log = logging.getLogger("relay.web")

FETCH_DEADLINE = 30.0
# `?group=N` may name a past group: ask for the publisher's whole window (it is clamped to it).
HTTP_FETCH_WINDOW_MS = 30_000
GROUP_LIMIT = 2**62 - 1  # group sequences are varints, and one more (Opt+1) must still be one


class BadRequest(RemoteError):
    """A request the HTTP side cannot parse: answered with HTTP 400 and the reason."""


def parse_group(arg: str) -> int | None:
    """`?group=`: "latest" (None) or a group sequence in ASCII digits; BadRequest otherwise."""
    if arg == "latest":
        return None
    group = ascii_uint(arg, GROUP_LIMIT)
    if group is None:
        raise BadRequest(f"group must be an integer below 2^62 - 1 or 'latest', not {arg[:40]!r}")
    return group


LANDING = (
    "<!doctype html><title>moq-relay</title><h1>moq-relay</h1>"
    "<p>This is a Media over QUIC relay. Connect with a MoQ client.</p>\n"
)



WsSelect = Callable[[str, list[str], str], Awaitable["WsDecision"]]


@dataclass
class WsDecision:
    status: int
    subprotocol: str | None = None
    info: SessionInfo | None = None
    reason: str = ""


def create_app(origin: Origin, authorize: Decide, fingerprint: Callable[[], str | None], *,
               ws_select: WsSelect | None = None,
               ws_run: Callable[[QuartChannel, SessionInfo], Awaitable[None]] | None = None) -> QuartTrio:
    app = QuartTrio("relay")
    app.config["RESPONSE_TIMEOUT"] = None  # /fetch bodies stream; our own deadline applies

    @app.after_request
    async def cors(response: Response) -> Response:
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    def text(body: str, status: int = 200) -> Response:
        return Response(body, status=status, content_type="text/plain; charset=utf-8")

    async def authorize_request(raw_path: str) -> Scope:
        # The route's path with the request's own query (its ?jwt=), as every transport passes it;
        # no session facts: a one-shot request (an auth server sees transport "http").
        query = request.query_string.decode("utf-8", "replace")
        return await authorize(f"{raw_path}?{query}" if query else raw_path, None)

    @app.before_request
    async def preflight() -> Response | None:
        # CORS preflight for every path (Quart's automatic OPTIONS would answer without it).
        if request.method == "OPTIONS":
            resp = Response("", status=200)
            resp.headers["Access-Control-Allow-Methods"] = "GET"
            return resp
        return None

    @app.get("/health")
    async def health() -> Response:
        return Response("ok\n", content_type="text/plain")

    @app.get("/certificate.sha256")
    async def certificate() -> Response:
        fp = fingerprint()
        if fp is None:
            return text("no certificate\n", 404)
        return text(fp)

    @app.get("/announced")
    @app.get("/announced/")
    @app.get("/announced/<path:prefix>")
    async def announced(prefix: str = "") -> Response:
        try:
            scope = await authorize_request("/" + prefix)
        except AuthError as exc:
            log.info("announced refused path=/%s reason=%s", prefix, exc.reason)
            return text(f"unauthorized: {exc.reason}\n", exc.status)
        if not scope.subscribe:
            return text("unauthorized: no subscribe scope\n", 401)
        found: set[str] = set()
        for watch in scope.watch_prefixes(""):
            for abs_path, _ in origin.active_under(scope.absolute(watch)):
                rel = scope.relative(abs_path)
                if rel is not None and scope.can_see(abs_path):
                    found.add(rel)
        return text("\n".join(sorted(found)))

    @app.get("/fetch/<path:target>")
    async def fetch(target: str) -> Response:
        parts = [p for p in target.split("/") if p]
        if len(parts) < 2:
            return text("need /fetch/<broadcast>/<track>\n", 400)
        broadcast_rel, track_name = "/".join(parts[:-1]), parts[-1]
        try:
            want = parse_group(request.args.get("group", "latest"))
        except BadRequest as exc:
            log.info("fetch /%s refused: %s", target, exc)
            return text(f"{exc}\n", 400)
        try:
            scope = await authorize_request("/" + broadcast_rel)
        except AuthError as exc:
            return text(f"unauthorized: {exc.reason}\n", exc.status)
        if not scope.can_subscribe(""):
            return text("unauthorized: no subscribe scope\n", 401)

        deadline = trio.current_time() + FETCH_DEADLINE
        broadcast = None
        with trio.move_on_at(deadline):
            broadcast = await origin.wait_broadcast(scope.root)
        if broadcast is None:
            return text("broadcast not announced\n", 404)
        return await _serve_group(broadcast, track_name, want, deadline)

    async def _serve_group(broadcast, track_name: str, want: int | None, deadline: float) -> Response:
        # The latest group only, or group `want` (the publisher's whole window may be needed).
        # A one-shot fetch like a FETCH request (Broadcast.fetch_group), served through a
        # subscription so a group not cached yet is pulled in; not a viewer.
        broadcast.traffic.fetches += 1
        wish = Wish() if want is None else Wish(max_latency_ms=HTTP_FETCH_WINDOW_MS, start=want)
        subscription = broadcast.subscribe(track_name, wish)
        try:
            track = subscription.__enter__().track
        except TrackClosed:
            return text("broadcast ended\n", 404)
        except Exception as exc:  # the broadcast's track table is full
            return text(f"{exc}\n", 500)
        entered = True
        try:
            group = None
            with trio.move_on_at(deadline) as cs:
                while True:
                    if want is None and track.latest is not None:
                        group = track.latest
                    elif want is not None:
                        group = track.cached(want)
                        if group is None and track.latest is not None:
                            break  # the track is live but does not hold that group: not found
                    if group is not None or track.closed:
                        break
                    await track.wait_changed()
            if cs.cancelled_caught:
                return text("timed out\n", 504)
            if group is None:
                return text("group not found\n", 404)

            async def body() -> AsyncIterator[bytes]:
                try:
                    with trio.move_on_at(deadline):
                        async for frame in group.frames_from(0):
                            yield frame.payload
                except GroupAborted as exc:
                    # Ending the body normally would send the last chunk and make a cut group look
                    # whole: raising makes hypercorn drop the connection without it.
                    log.info("fetch: group %d of %s/%s aborted mid-body; cutting the response short",
                             group.sequence, broadcast.path, track_name)
                    raise ResponseCut("group aborted") from exc
                finally:
                    subscription.__exit__(None, None, None)

            entered = False  # the body generator releases the subscription
            return Response(body(), status=200, content_type="application/octet-stream")
        finally:
            if entered:
                subscription.__exit__(None, None, None)

    if ws_select is not None and ws_run is not None:
        # The WebSocket fallback on every path (relay spec §7): QMux carrying a moq-lite session.
        @app.websocket("/")
        @app.websocket("/<path:ws_path>")
        async def ws_entry(ws_path: str = "") -> Response | None:
            target = websocket.full_path if "?" in websocket.full_path else websocket.path
            offered = [p for header in websocket.requested_subprotocols for p in header.split(",")]
            decision = await ws_select(target, [p.strip() for p in offered if p.strip()], str(websocket.remote_addr or ""))
            if decision.status != 200 or decision.info is None:
                log.info("websocket upgrade %s refused (%d): %s", websocket.path, decision.status, decision.reason)
                return Response(decision.reason + "\n", status=decision.status, content_type="text/plain")
            await websocket.accept(subprotocol=decision.subprotocol)
            await ws_run(QuartChannel(websocket._get_current_object()), decision.info)
            return None

    @app.route("/", methods=["GET"])
    @app.route("/<path:other>", methods=["GET"])
    async def landing(other: str = "") -> Response:
        return Response(LANDING, status=404, content_type="text/html; charset=utf-8")

    return app

