#!/usr/bin/env node
// One role of @moq/net 0.3 in Node.js (no WebTransport there: it connects over the WebSocket
// fallback, QMux), through the same roles module the browser page uses.
//
//   node moq_net.mjs --role publish|subscribe --params '{"url": "ws://127.0.0.1:P/anon", ...}'
//
// Prints one JSON line, {"result": ...} (exit 0) or {"error": ...} (exit 1); the library's
// console goes to stderr.
import "./node20-shim.mjs";
import { parseArgs } from "node:util";
import * as Moq from "@moq/net";
import { roles } from "../browser/libs/moq-net-roles.mjs";

const { values: args } = parseArgs({
	options: { role: { type: "string" }, params: { type: "string", default: "{}" } },
});
console.log = (...a) => console.error(...a); // stdout carries the result line only
// Exit once the line is written: stdout is a pipe, asynchronous in Node, and exit() would cut it.
const finish = (code, line) => process.stdout.write(`${JSON.stringify(line)}\n`, () => process.exit(code));
const lib = roles(Moq, async () => ({ websocket: { enabled: true, delay: 0 } }));
if (!["publish", "subscribe"].includes(args.role)) throw new Error(`bad --role ${args.role}`);
try {
	finish(0, { result: await lib[args.role](JSON.parse(args.params)) });
} catch (err) {
	finish(1, { error: String(err?.stack ?? err) });
}
