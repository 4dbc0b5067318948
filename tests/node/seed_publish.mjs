#!/usr/bin/env node
// Publish a broadcast through a MoQ relay with the seed-era @kixelated/moq 0.9 on Node 20.
//
//   node seed_publish.mjs [--url http://127.0.0.1:P/anon] [--broadcast seedclock] [--track seconds]
//                         [--groups 5] [--frames 2] [--interval 500] [--linger 1500]
//
// Node has no WebTransport, so the library falls back to its WebSocket polyfill (subprotocol
// `webtransport`) and the legacy in-band SETUP, where it speaks moq-lite-01. Each group holds
// --frames text frames "<name> g<group> f<frame>"; every subscription the relay opens gets the
// same groups. Exits 0 after --groups groups (plus --linger ms so the last one drains).
import "./seed-shim.mjs";
import { parseArgs } from "node:util";
const Moq = await import("@kixelated/moq");

const { values: args } = parseArgs({
	options: {
		url: { type: "string", default: "http://127.0.0.1:4443/anon" },
		broadcast: { type: "string", default: "seedclock" },
		track: { type: "string", default: "seconds" },
		groups: { type: "string", default: "5" },
		frames: { type: "string", default: "2" },
		interval: { type: "string", default: "500" },
		linger: { type: "string", default: "1500" },
		timeout: { type: "string", default: "30" },
	},
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const fail = (msg) => {
	console.error(`seed_publish.mjs: ${msg}`);
	process.exit(1);
};
setTimeout(() => fail(`timeout after ${args.timeout}s`), Number(args.timeout) * 1000).unref();

const conn = await Moq.Connection.connect(new URL(args.url));
const kind = conn instanceof Moq.Lite.Connection ? "lite" : "ietf";
console.error(`connected: url=${conn.url} session=${kind}`);
let closing = false;
conn.closed.then(() => closing || fail("connection closed by peer"));

const broadcast = new Moq.Broadcast();
conn.publish(Moq.Path.from(args.broadcast), broadcast);
console.error(`published broadcast ${args.broadcast}`);

// The relay subscribes once per track, however many subscribers it has downstream.
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

// Wait for the relay's subscription before the first group, so none is written to nobody.
while (tracks.size === 0) await sleep(20);
for (let g = 0; g < Number(args.groups); g++) {
	const payloads = [];
	for (let f = 0; f < Number(args.frames); f++) payloads.push(`${args.broadcast} g${g} f${f}`);
	for (const track of tracks) {
		const group = new Moq.Group(g);
		track.writeGroup(group);
		for (const p of payloads) group.writeString(p);
		group.close();
	}
	console.log(`group ${g}: ${payloads.join(" | ")} -> ${tracks.size} subscription(s)`);
	await sleep(Number(args.interval));
}
await sleep(Number(args.linger));
closing = true;
broadcast.close();
conn.close();
await sleep(200);
process.exit(0);
