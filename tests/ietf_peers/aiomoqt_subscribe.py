"""An aiomoqt 0.5.3 subscriber (run with the aiomoqt venv's python, not the relay's).

Over WebTransport: SUBSCRIBE_NAMESPACE `prefix` (when given), then SUBSCRIBE to `namespace` /
`track` with aiomoqt's defaults (filter LargestObject, ascending), and prints each object it
receives as one JSON line on stdout ("@@" prefixed: group, object, payload in hex) until killed.
With `--join N` it follows the SUBSCRIBE with a relative joining FETCH of N groups, as aiomoqt's
join example does, and prints the FETCH answer and the fetched objects too. (aiomoqt's own
`join()` and `fetch()` helpers build their messages with fields the message classes do not
have and raise TypeError, so the FETCH is built here from its `Fetch` class, which encodes fine.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from aiomoqt.client import MOQTClient
from aiomoqt.messages import Fetch, FetchError, FetchObject, SubscribeError, SubscribeNamespaceError
from aiomoqt.types import FetchType, GroupOrder


def say(**event: object) -> None:
    print("@@" + json.dumps(event), flush=True)


async def main(args: argparse.Namespace) -> None:
    client = MOQTClient(args.host, args.port, endpoint=args.endpoint, use_quic=False, verify_tls=False)
    async with client.connect() as session:

        def on_object(msg, size: int, now: int, group_id: int | None, subgroup_id: int | None) -> None:
            say(event="object", group=group_id, subgroup=subgroup_id, object=msg.object_id,
                status=int(msg.status or 0), payload=bytes(msg.payload).hex())

        session.on_object_received = on_object
        # aiomoqt parses FETCH_HEADER streams but hands their objects to no callback (it logs
        # them): look at what its stream parser returns instead.
        parse = session._moqt_handle_data_stream

        def parse_and_report(stream_id: int, buf, length: int):
            msg = parse(stream_id, buf, length)
            if isinstance(msg, FetchObject):
                say(event="fetched", group=msg.group_id, subgroup=msg.subgroup_id, object=msg.object_id,
                    status=int(msg.status or 0), payload=bytes(msg.payload).hex())
            return msg

        session._moqt_handle_data_stream = parse_and_report
        await session.client_session_init()
        if args.prefix:
            response = await session.subscribe_namespace(namespace_prefix=args.prefix, wait_response=True)
            if isinstance(response, SubscribeNamespaceError):
                say(event="refused", what="subscribe_namespace", code=int(response.error_code))
                sys.exit(2)
        response = await session.subscribe(namespace=args.namespace, track_name=args.track, wait_response=True)
        if isinstance(response, SubscribeError):
            say(event="refused", what="subscribe", code=int(response.error_code), reason=str(response.reason))
            sys.exit(2)
        say(event="subscribed", alias=int(response.track_alias))
        if args.join is not None:
            request_id = session._allocate_request_id()
            reply = session._fetch_responses[request_id] = asyncio.get_running_loop().create_future()
            session._subscriptions[request_id] = []  # its FETCH_HEADER stream names a known request
            session.send_control_message(Fetch(fetch_type=FetchType.JOINING_FETCH, request_id=request_id,
                                               group_order=GroupOrder.ASCENDING, joining_sub_id=response.request_id,
                                               pre_group_offset=args.join).serialize())
            fetched = await asyncio.wait_for(reply, 10)
            if isinstance(fetched, FetchError):
                say(event="fetch_error", code=int(fetched.error_code), reason=str(fetched.reason))
            else:
                say(event="fetch_ok", end_of_track=int(fetched.end_of_track),
                    end=[int(fetched.largest_group_id), int(fetched.largest_object_id)])
        await session.async_closed()
        say(event="closed", error=str(session._close_err))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--endpoint", default="anon")
    p.add_argument("--prefix", default="")
    p.add_argument("--namespace", required=True)
    p.add_argument("--track", required=True)
    p.add_argument("--join", type=int, default=None, help="joining FETCH of this many earlier groups")
    asyncio.run(main(p.parse_args()))
