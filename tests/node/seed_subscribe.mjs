#!/usr/bin/env node
// Subscribe to a broadcast through a MoQ relay with the seed-era @kixelated/moq 0.9 on Node 20.
//
//   node seed_subscribe.mjs [--url http://127.0.0.1:P/anon] [--broadcast clock] [--track seconds]
//                           [--groups 3] [--timeout 20]
//
// Waits for the broadcast's announcement, subscribes to the track, prints every frame of the
// first --groups groups as "group=<seq> frame=<n> <payload>", exits 0; exits 1 with a message
// if that does not happen within --timeout seconds.
import "./seed-shim.mjs";
import { parseArgs } from "node:util";
const Moq = await import("@kixelated/moq");

const { values: args } = parseArgs({
	options: {
		url: { type: "string", default: "http://127.0.0.1:4443/anon" },
		broadcast: { type: "string", default: "clock" },
		track: { type: "string", default: "seconds" },
		groups: { type: "string", default: "3" },
		timeout: { type: "string", default: "20" },
	},
});
const fail = (msg) => {
	console.error(`seed_subscribe.mjs: ${msg}`);
	process.exit(1);
};
const timer = setTimeout(() => fail(`timeout after ${args.timeout}s`), Number(args.timeout) * 1000);

async function main() {
	const conn = await Moq.Connection.connect(new URL(args.url));
	const kind = conn instanceof Moq.Lite.Connection ? "lite" : "ietf";
	console.error(`connected: url=${conn.url} session=${kind}`);
	conn.closed.then(() => fail("connection closed by peer"));

	const name = Moq.Path.from(args.broadcast);
	const announced = conn.announced(Moq.Path.empty());
	for (;;) {
		const entry = await announced.next();
		if (!entry) throw new Error("announcement stream closed before the broadcast appeared");
		console.error(`announced: ${entry.path} active=${entry.active}`);
		if (entry.path === name && entry.active) break;
	}

	const track = conn.consume(name).subscribe(args.track, 1);
	console.error(`subscribed: ${name}/${args.track}`);
	const decoder = new TextDecoder();
	let frames = 0;
	for (let groups = 0; groups < Number(args.groups); groups++) {
		const group = await track.nextGroup();
		if (!group) throw new Error("track ended");
		for (;;) {
			const frame = await group.readFrame();
			if (!frame) break;
			frames++;
			console.log(`group=${group.sequence} frame=${frames} ${decoder.decode(frame)}`);
		}
	}
	conn.close();
}

main().then(
	() => {
		clearTimeout(timer);
		process.exit(0);
	},
	(err) => fail(err?.stack ?? String(err)),
);
