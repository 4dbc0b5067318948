"""An aiomoqt 0.5.3 publisher (run with the aiomoqt venv's python, not the relay's).

Announces `namespace` with PUBLISH_NAMESPACE over WebTransport, and for each SUBSCRIBE to
`track` answers SUBSCRIBE_OK and writes `groups` groups of `frames` objects each, one
WebTransport uni stream per group (SUBGROUP_HEADER, subgroup 0, objects "g<G>f<F>"), ended the
way aiomoqt's own pub example ends a group: an END_OF_GROUP status object, then FIN. It prints
one JSON line per event on stdout ("@@" prefixed; aiomoqt logs to stderr) and stays until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from aiomoqt.client import MOQTClient, MOQTSession
from aiomoqt.messages import PublishNamespaceError, SubgroupHeader, Subscribe
from aiomoqt.types import MOQTMessageType


def say(**event: object) -> None:
    print("@@" + json.dumps(event), flush=True)


async def write_groups(session: MOQTSession, alias: int, groups: int, frames: int, period: float) -> None:
    h3 = session._h3
    assert h3 is not None and session._session_id is not None, "WebTransport only (aiomoqt's publisher)"
    for g in range(groups):
        stream_id = h3.create_webtransport_stream(session_id=session._session_id, is_unidirectional=True)
        header = SubgroupHeader(track_alias=alias, group_id=g, subgroup_id=0, publisher_priority=128)
        session._quic.send_stream_data(stream_id, header.serialize().data, end_stream=False)
        for f in range(frames):
            data = header.next_object(payload=b"g%df%d" % (g, f)).data
            session._quic.send_stream_data(stream_id, data, end_stream=False)
        session._quic.send_stream_data(stream_id, header.end_group().data, end_stream=True)
        session.transmit()
        say(event="group", group=g)
        await asyncio.sleep(period)


async def main(args: argparse.Namespace) -> None:
    client = MOQTClient(args.host, args.port, endpoint=args.endpoint, use_quic=False, verify_tls=False)

    async def on_subscribe(session: MOQTSession, msg: Subscribe) -> None:
        name = msg.track_name.decode() if isinstance(msg.track_name, bytes) else str(msg.track_name)
        say(event="subscribe", track=name, filter=int(msg.filter_type), order=int(msg.group_order))
        if name != args.track:
            session.subscribe_error(msg.request_id, error_code=0x4, reason="no such track")
            return
        ok = session.subscribe_ok(request_msg=msg)
        await asyncio.sleep(args.delay)
        await write_groups(session, ok.track_alias, args.groups, args.frames, args.period)

    client.register_handler(MOQTMessageType.SUBSCRIBE, on_subscribe)
    async with client.connect() as session:
        await session.client_session_init()
        response = await session.publish_namespace(namespace=args.namespace, wait_response=True)
        if isinstance(response, PublishNamespaceError):
            say(event="refused", code=int(response.error_code))
            sys.exit(2)
        say(event="announced", namespace=args.namespace)
        await session.async_closed()
        say(event="closed", error=str(session._close_err))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--endpoint", default="anon")
    p.add_argument("--namespace", required=True)
    p.add_argument("--track", required=True)
    p.add_argument("--groups", type=int, default=5)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--period", type=float, default=0.05)
    p.add_argument("--delay", type=float, default=0.3, help="seconds between SUBSCRIBE_OK and group 0")
    asyncio.run(main(p.parse_args()))
