#!/usr/bin/env node
// Watch the relay's dashboard (`/` on the internal listener) in headless Chromium.
//
//   node dashboard.mjs --url http://127.0.0.1:P/ --broadcast /anon/cam --screenshot /tmp/x.png
//                      [--chromium /usr/bin/chromium] [--rise-ms 2000] [--gone-ms 20000] [--timeout 60]
//
// 1. Opens the page once (system Chromium through playwright-core, a fresh profile directory).
// 2. Waits, at most --rise-ms after the page's load event, until the broadcasts table shows
//    --broadcast with a non-zero bitrate and a byte count above the first one it showed; prints
//    `{"phase": "live", ...}` (the test then stops the publisher).
// 3. Waits, at most --gone-ms, until that row is gone; prints `{"phase": "gone", ...}`.
// The page must never navigate again (the updates come by server-sent events, not reloads).
// On failure: a screenshot at --screenshot, `{"error": ..., "screenshot": ...}`, exit 1.
// The page's console goes to stderr as `[console.<type>] ...`.
import { rm } from "node:fs/promises";
import { parseArgs } from "node:util";
import { launchChromium } from "./chromium.mjs";

const { values: args } = parseArgs({
	options: {
		url: { type: "string" },
		broadcast: { type: "string" },
		screenshot: { type: "string" },
		chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
		"rise-ms": { type: "string", default: "2000" },
		"gone-ms": { type: "string", default: "20000" },
		timeout: { type: "string", default: "60" },
	},
});
if (!args.url || !args.broadcast || !args.screenshot) throw new Error("--url, --broadcast and --screenshot are required");
const started = Date.now();
const log = (msg) => console.error(`dashboard.mjs +${Date.now() - started}ms ${msg}`);
const emit = (line) => console.log(JSON.stringify(line));


let context;
let tab;
let profile;
const cleanup = async () => {
	await context?.close().catch(() => {});
	if (profile) await rm(profile, { recursive: true, force: true }).catch(() => {});
};
const fail = async (error) => {
	let shot = null;
	if (tab) {
		shot = await tab
			.screenshot({ path: args.screenshot, fullPage: true })
			.then(() => args.screenshot)
			.catch(() => null);
	}
	emit({ error: String(error?.stack ?? error), screenshot: shot });
	await cleanup();
	process.exit(1);
};
const watchdog = setTimeout(() => fail(`timeout after ${args.timeout}s`), Number(args.timeout) * 1000);

// The broadcast's row as the page shows it (null when absent); numbers from the cells' data-value.
function readRow(path) {
	for (const tr of document.querySelectorAll("#broadcasts tbody tr")) {
		if (tr.dataset.path !== path) continue;
		const value = (key) => {
			const raw = tr.querySelector(`td[data-key="${key}"]`)?.dataset.value ?? "";
			return raw === "" ? null : Number(raw);
		};
		const text = (key) => tr.querySelector(`td[data-key="${key}"]`)?.textContent ?? "";
		return {
			path: text("path"),
			bitrate: value("bitrate"),
			bitrateText: text("bitrate"),
			bytes: value("bytes"),
			subscribers: value("subscribers"),
			publisher: value("publisher"),
			tracks: text("tracks"),
			events: Number(document.getElementById("status").dataset.events),
			sessions: document.querySelectorAll("#sessions tbody tr[data-session]").length,
		};
	}
	return null;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

try {
	({ context, profile } = await launchChromium(args.chromium, "moq-dashboard-chromium-"));
	log(`chromium ${context.browser()?.version() ?? "(persistent context)"} started, profile ${profile}`);
	tab = context.pages()[0] ?? (await context.newPage());
	tab.on("console", (m) => console.error(`[console.${m.type()}] ${m.text()}`));
	tab.on("pageerror", (e) => console.error(`[pageerror] ${e.stack ?? e}`));
	let navigations = 0;
	tab.on("framenavigated", (frame) => {
		if (frame === tab.mainFrame()) navigations += 1;
	});
	const requests = [];
	tab.on("request", (r) => requests.push(r.url()));

	await tab.goto(args.url, { waitUntil: "load" });
	const loaded = Date.now();
	log(`page ${args.url} loaded`);

	// Live: the row, a bitrate above 0 and bytes above the first count the page showed.
	let first = null;
	let live = null;
	const riseDeadline = loaded + Number(args["rise-ms"]);
	while (Date.now() <= riseDeadline) {
		const row = await tab.evaluate(readRow, args.broadcast);
		if (row && row.bytes !== null) {
			first ??= row;
			if (row.bitrate > 0 && row.bytes > first.bytes) {
				live = row;
				break;
			}
		}
		await sleep(100);
	}
	if (!live) {
		throw new Error(`within ${args["rise-ms"]} ms of the load: ${args.broadcast} shown ${JSON.stringify(first)}, ` +
			`now ${JSON.stringify(await tab.evaluate(readRow, args.broadcast))}`);
	}
	emit({ phase: "live", elapsed_ms: Date.now() - loaded, first, live });

	// Gone: the publisher left (the test stops it when it reads the line above).
	const goneDeadline = Date.now() + Number(args["gone-ms"]);
	let gone = false;
	while (Date.now() <= goneDeadline) {
		if ((await tab.evaluate(readRow, args.broadcast)) === null) {
			gone = true;
			break;
		}
		await sleep(100);
	}
	if (!gone) throw new Error(`${args.broadcast} still shown ${args["gone-ms"]} ms after the publisher was stopped`);
	const events = Number(await tab.evaluate(() => document.getElementById("status").dataset.events));
	const body = await tab.evaluate(() => document.querySelector("#broadcasts tbody").textContent);
	const foreign = requests.filter((u) => !u.startsWith(new URL(args.url).origin));
	emit({ phase: "gone", elapsed_ms: Date.now() - loaded, navigations, events, broadcasts_text: body, foreign });
	clearTimeout(watchdog);
	await cleanup();
	process.exit(0);
} catch (err) {
	clearTimeout(watchdog);
	await fail(err);
}
