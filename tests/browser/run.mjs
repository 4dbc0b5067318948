#!/usr/bin/env node
// Run one MoQ client library in headless Chromium against a relay over WebTransport.
//
//   node run.mjs --lib moq-lite --role subscribe|publish --params '{"url": "https://127.0.0.1:P/anon", ...}'
//                [--chromium /usr/bin/chromium] [--timeout 60]
//
// 1. Bundles libs/<lib>.mjs (the library's adapter: exports `publish` and `subscribe`) with esbuild,
//    from this folder's node_modules, into one ES module.
// 2. Serves it with a tiny page on http://127.0.0.1:<ephemeral> (a secure context: loopback).
// 3. Launches the system Chromium through playwright-core (no browser download), with a fresh
//    profile directory, opens the page and awaits `moqTest[role](params)` in it.
// The page's console goes to stderr as `[console.<type>] ...`; the role's result is printed to
// stdout as one JSON line `{"library": ..., "result": ...}`. Exit 0 on success, 1 on failure
// (with `{"error": ...}` on stdout).
import { rm } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import * as esbuild from "esbuild";
import { launchChromium } from "./chromium.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
	options: {
		lib: { type: "string", default: "moq-lite" },
		role: { type: "string", default: "subscribe" },
		params: { type: "string", default: "{}" },
		chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
		timeout: { type: "string", default: "60" },
	},
});
if (!/^[a-z0-9-]+$/.test(args.lib) || args.lib === "common") throw new Error(`bad --lib ${args.lib}`);
if (!["publish", "subscribe"].includes(args.role)) throw new Error(`bad --role ${args.role}`);
const params = JSON.parse(args.params);
const started = Date.now();
const log = (msg) => console.error(`run.mjs +${Date.now() - started}ms ${msg}`);


let server;
let context;
let profile;
const cleanup = async () => {
	await context?.close().catch(() => {});
	server?.close();
	if (profile) await rm(profile, { recursive: true, force: true }).catch(() => {});
};
const finish = async (code, line) => {
	console.log(JSON.stringify(line));
	await cleanup();
	process.exit(code);
};
const watchdog = setTimeout(
	() => finish(1, { error: `timeout after ${args.timeout}s` }),
	Number(args.timeout) * 1000,
);

try {
	const built = await esbuild.build({
		entryPoints: [join(here, "libs", `${args.lib}.mjs`)],
		absWorkingDir: here,
		bundle: true,
		format: "esm",
		platform: "browser",
		target: "es2022",
		write: false,
		logLevel: "silent",
	});
	const bundle = built.outputFiles[0].contents;
	log(`bundled libs/${args.lib}.mjs: ${bundle.length} bytes`);

	const page = `<!doctype html><meta charset="utf-8"><title>moq ${args.lib}</title>
<script type="module">
import * as lib from "/lib.js";
window.moqTest = lib;
</script>`;
	server = createServer((req, res) => {
		if (req.url === "/") {
			res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(page);
		} else if (req.url === "/lib.js") {
			res.writeHead(200, { "content-type": "text/javascript; charset=utf-8" }).end(bundle);
		} else {
			res.writeHead(204).end(); // favicon.ico and the like
		}
	});
	await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
	const origin = `http://127.0.0.1:${server.address().port}`;

	({ context, profile } = await launchChromium(args.chromium, "moq-chromium-"));
	log(`chromium ${context.browser()?.version() ?? "(persistent context)"} started, profile ${profile}`);
	const tab = context.pages()[0] ?? (await context.newPage());
	tab.on("console", (m) => console.error(`[console.${m.type()}] ${m.text()}`));
	tab.on("pageerror", (e) => console.error(`[pageerror] ${e.stack ?? e}`));
	await tab.goto(`${origin}/`);
	await tab.waitForFunction(() => window.moqTest !== undefined, null, { timeout: 10_000 });
	log(`page ${origin}/ loaded, user agent ${await tab.evaluate(() => navigator.userAgent)}`);

	const result = await tab.evaluate(([role, p]) => window.moqTest[role](p), [args.role, params]);
	log(`${args.role} done`);
	clearTimeout(watchdog);
	await finish(0, { library: args.lib, elapsed_ms: Date.now() - started, result });
} catch (err) {
	clearTimeout(watchdog);
	await finish(1, { error: String(err?.stack ?? err) });
}
