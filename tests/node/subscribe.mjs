#!/usr/bin/env node
// Subscribe to a MoQ broadcast through a relay over WebSocket (QMux) with @moq/lite on Node 20.
//
//   node subscribe.mjs [--url ws://127.0.0.1:P/anon] [--broadcast clock] [--track seconds]
//                      [--groups 3] [--frames 0] [--timeout 20] [--direct]
//
// Waits for the broadcast to be announced (or, with --direct, subscribes straight away),
// subscribes to the track, prints every frame payload of the first N groups received, exits 0.
// Exits 1 with a message if that does not happen within --timeout seconds.
import "./node20-shim.mjs";
import { parseArgs } from "node:util";
import * as Moq from "@moq/lite";

const { values: args } = parseArgs({
	options: {
		url: { type: "string", default: "ws://127.0.0.1:4443/anon" },
		broadcast: { type: "string", default: "clock" },
		track: { type: "string", default: "seconds" },
		groups: { type: "string", default: "3" }, // stop after this many groups (0 = no limit)
		frames: { type: "string", default: "0" }, // stop after this many frames (0 = no limit)
		timeout: { type: "string", default: "20" },
		direct: { type: "boolean", default: false }, // skip waiting for the announcement
	},
});
const wantGroups = Number(args.groups);
const wantFrames = Number(args.frames);
const timeoutS = Number(args.timeout);

const fail = (msg) => {
	console.error(`subscribe.mjs: ${msg}`);
	process.exit(1);
};
const timer = setTimeout(
	() => fail(`timeout after ${timeoutS}s (url=${args.url} broadcast=${args.broadcast} track=${args.track})`),
	timeoutS * 1000,
);

async function main() {
	// No WebTransport in Node, so connect() goes straight to the WebSocket (QMux) path.
	const conn = await Moq.Connection.connect(new URL(args.url), { websocket: { enabled: true } });
	console.error(`connected: url=${conn.url} version=${conn.version}`);
	conn.closed.then(() => fail("connection closed by peer"));

	const name = Moq.Path.from(args.broadcast);
	if (!args.direct) {
		console.error(`waiting for announcement of ${name}`);
		const announced = conn.announced(Moq.Path.empty());
		for (;;) {
			const entry = await announced.next();
			if (!entry) throw new Error("announcement stream closed before the broadcast appeared");
			console.error(`announced: ${entry.path} active=${entry.active}`);
			if (entry.path === name && entry.active) break;
		}
	}

	const broadcast = conn.consume(name);
	const track = broadcast.subscribe(args.track, 1);
	console.error(`subscribed: ${name}/${args.track}`);

	let groups = 0;
	let frames = 0;
	const decoder = new TextDecoder();
	for (;;) {
		const group = await track.nextGroupOrdered();
		if (!group) throw new Error("track ended");
		groups++;
		for (;;) {
			const frame = await group.readFrame();
			if (!frame) break; // group finished
			frames++;
			console.log(`group=${group.sequence} frame=${frames} ${decoder.decode(frame)}`);
			if (wantFrames && frames >= wantFrames) return;
		}
		if (wantGroups && groups >= wantGroups) return;
	}
}

main().then(
	() => {
		clearTimeout(timer);
		process.exit(0);
	},
	(err) => fail(err?.stack ?? String(err)),
);
