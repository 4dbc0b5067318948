#!/usr/bin/env node
// Live video through a relay in headless Chromium: examples/web/publish.html sends Chromium's
// fake camera with <moq-publish>, examples/web/watch.html (a second tab) plays it with
// <moq-watch>; the watch canvas is sampled twice, and both pages are screenshotted.
//
//   node video.mjs --url http://127.0.0.1:P/anon --name cam --out DIR [--chromium /usr/bin/chromium]
//                  [--timeout 60]
//
// The pages are bundled with esbuild from examples/web/src (packages from this folder's
// node_modules) and served on 127.0.0.1. Prints one JSON line: {"result": {...}} (exit 0) or
// {"error": ...} (exit 1); the pages' consoles go to stderr.
import { rm } from "node:fs/promises";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import * as esbuild from "esbuild";
import { launchChromium } from "./chromium.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const web = join(here, "..", "..", "examples", "web");
const { values: args } = parseArgs({
	options: {
		url: { type: "string" },
		name: { type: "string", default: "camera" },
		out: { type: "string" },
		chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
		timeout: { type: "string", default: "60" },
	},
});
const started = Date.now();
const log = (msg) => console.error(`video.mjs +${Date.now() - started}ms ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Only for this run: a fake camera (a moving test pattern) granted without a prompt, and
// playback without a user gesture.
const MEDIA_ARGS = [
	"--use-fake-device-for-media-stream",
	"--use-fake-ui-for-media-stream",
	"--autoplay-policy=no-user-gesture-required",
];

let server;
let context;
let profile;
const finish = async (code, line) => {
	await context?.close().catch(() => {});
	server?.close();
	if (profile) await rm(profile, { recursive: true, force: true }).catch(() => {});
	process.stdout.write(`${JSON.stringify(line)}\n`, () => process.exit(code));
};
const watchdog = setTimeout(() => finish(1, { error: `timeout after ${args.timeout}s` }), Number(args.timeout) * 1000);

// A digest of the watch canvas: drawn onto a small 2D canvas (whatever context the element
// renders with) and summed; null while it is blank.
function sampleCanvas() {
	const source = document.querySelector("moq-watch canvas");
	if (!source || source.width === 0 || source.height === 0) return null;
	const probe = document.createElement("canvas");
	probe.width = 64;
	probe.height = 36;
	const ctx = probe.getContext("2d", { willReadFrequently: true });
	ctx.drawImage(source, 0, 0, probe.width, probe.height);
	const data = ctx.getImageData(0, 0, probe.width, probe.height).data;
	let sum = 0;
	let lit = 0;
	let hash = 0;
	for (let i = 0; i < data.length; i += 4) {
		const v = data[i] + data[i + 1] + data[i + 2];
		sum += v;
		if (v > 30) lit++;
		hash = (hash * 31 + data[i] + 7 * data[i + 1] + 13 * data[i + 2]) >>> 0;
	}
	return lit === 0 ? null : { width: source.width, height: source.height, lit, sum, hash };
}

// The watch element's own counters (@moq/watch: decoded frames, bytes received) and the codecs
// the publisher's catalog names for its video renditions.
function watchState() {
	const el = window.moqElement;
	const stats = el?.video?.out?.stats?.peek?.();
	const renditions = el?.broadcast?.out?.catalog?.peek?.()?.video?.renditions ?? {};
	const codecs = Object.fromEntries(Object.entries(renditions).map(([k, v]) => [k, v.codec]));
	return { frames: stats?.frameCount ?? 0, bytes: stats?.bytesReceived ?? 0, codecs };
}

try {
	const built = await esbuild.build({
		entryPoints: { publish: join(web, "src", "publish.js"), watch: join(web, "src", "watch.js") },
		nodePaths: [join(here, "node_modules")],
		bundle: true,
		format: "esm",
		platform: "browser",
		target: "es2022",
		outdir: "/dist",
		write: false,
		logLevel: "silent",
	});
	const files = new Map(built.outputFiles.map((f) => [`/dist/${f.path.split("/").pop()}`, f.contents]));
	log(`bundled ${[...files].map(([k, v]) => `${k} ${v.length} bytes`).join(", ")}`);

	server = createServer(async (req, res) => {
		const path = new URL(req.url, "http://x").pathname;
		if (files.has(path)) {
			res.writeHead(200, { "content-type": "text/javascript; charset=utf-8" }).end(files.get(path));
		} else if (path === "/publish.html" || path === "/watch.html") {
			res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(await readFile(join(web, path)));
		} else {
			res.writeHead(204).end();
		}
	});
	await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
	const origin = `http://127.0.0.1:${server.address().port}`;
	const query = `?url=${encodeURIComponent(args.url)}&name=${encodeURIComponent(args.name)}`;

	({ context, profile } = await launchChromium(args.chromium, "moq-video-", MEDIA_ARGS));
	const open = async (role) => {
		const tab = await context.newPage();
		await tab.setViewportSize({ width: 800, height: 600 });
		tab.on("console", (m) => console.error(`[${role} console.${m.type()}] ${m.text()}`));
		tab.on("pageerror", (e) => console.error(`[${role} pageerror] ${e.stack ?? e}`));
		await tab.goto(`${origin}/${role}.html${query}`);
		return tab;
	};
	const publisher = await open("publish");
	const codecs = await publisher.evaluate(async () => {
		const out = {};
		for (const codec of ["avc1.42E01F", "vp09.00.10.08", "av01.0.04M.08", "vp8"]) {
			const config = { codec, width: 640, height: 480, bitrate: 1_000_000, framerate: 30 };
			out[codec] = (await VideoEncoder.isConfigSupported(config).catch(() => ({ supported: false }))).supported;
		}
		return out;
	});
	log(`VideoEncoder support: ${JSON.stringify(codecs)}`);
	const watcher = await open("watch");

	// Wait for a picture, then two samples 1 s apart: decoded frames advancing change them.
	let first = null;
	while (!(first = await watcher.evaluate(sampleCanvas))) await sleep(200);
	first.state = await watcher.evaluate(watchState);
	log(`first picture ${JSON.stringify(first)}`);
	await sleep(1000);
	const second = await watcher.evaluate(sampleCanvas);
	second.state = await watcher.evaluate(watchState);
	log(`second sample ${JSON.stringify(second)}`);
	await watcher.screenshot({ path: join(args.out, "watch.png") });
	await publisher.screenshot({ path: join(args.out, "publish.png") });
	clearTimeout(watchdog);
	await finish(0, { result: { codecs, first, second, elapsed_ms: Date.now() - started } });
} catch (err) {
	clearTimeout(watchdog);
	await finish(1, { error: String(err?.stack ?? err) });
}
