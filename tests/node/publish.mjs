#!/usr/bin/env node
// Publish a broadcast through a MoQ relay over WebSocket (QMux) with @moq/lite on Node 20.
//
//   node publish.mjs [--url ws://127.0.0.1:P/anon] [--broadcast nodeclock] [--track seconds]
//                    [--groups 5] [--frames 2] [--interval 1000] [--linger 2000]
//
// Announces the broadcast, then writes one group every --interval ms, each with --frames text
// frames (the current time), to every subscriber of --track. Exits 0 after --groups groups
// (plus --linger ms so the last group drains).
import "./node20-shim.mjs";
import { parseArgs } from "node:util";
import * as Moq from "@moq/lite";

const { values: args } = parseArgs({
	options: {
		url: { type: "string", default: "ws://127.0.0.1:4443/anon" },
		broadcast: { type: "string", default: "nodeclock" },
		track: { type: "string", default: "seconds" },
		groups: { type: "string", default: "5" },
		frames: { type: "string", default: "2" },
		interval: { type: "string", default: "1000" },
		linger: { type: "string", default: "2000" },
	},
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const conn = await Moq.Connection.connect(new URL(args.url), { websocket: { enabled: true } });
console.error(`connected: url=${conn.url} version=${conn.version}`);
let closing = false;
conn.closed.then(() => {
	if (closing) return;
	console.error("publish.mjs: connection closed by peer");
	process.exit(1);
});

const broadcast = new Moq.Broadcast();
conn.publish(Moq.Path.from(args.broadcast), broadcast);
console.error(`published broadcast ${args.broadcast}`);

// Every subscription (the relay makes one per track, shared by all downstream subscribers)
// arrives as a TrackRequest; keep the live ones and fan each new group out to them.
const tracks = new Set();
(async () => {
	for (;;) {
		const req = await broadcast.requested();
		if (!req) break;
		if (req.track.name !== args.track) {
			req.track.close(new Error("not found"));
			continue;
		}
		console.error(`subscribed by relay: track=${req.track.name} priority=${req.priority}`);
		tracks.add(req.track);
		req.track.closed.finally(() => tracks.delete(req.track));
	}
})();

for (let g = 0; g < Number(args.groups); g++) {
	const payloads = [];
	for (let f = 0; f < Number(args.frames); f++) payloads.push(`${new Date().toISOString()} g${g} f${f}`);
	for (const track of tracks) {
		const group = new Moq.Group(g); // same sequence number for every subscriber
		track.writeGroup(group);
		for (const p of payloads) group.writeString(p);
		group.close();
	}
	console.log(`group ${g}: ${payloads.join(" | ")} -> ${tracks.size} subscriber(s)`);
	await sleep(Number(args.interval));
}
await sleep(Number(args.linger));
closing = true;
broadcast.close();
conn.close();
await sleep(200);
process.exit(0);
