// Debian's Chromium through playwright-core, for every page the tests drive (run.mjs,
// dashboard.mjs): one flag list, a fresh profile directory each launch.
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

// Playwright adds --headless, --no-sandbox, --no-first-run, --disable-background-networking and
// --disable-component-update itself; QUIC stays enabled: WebTransport runs over it.
export const CHROMIUM_ARGS = ["--disable-gpu", "--disable-sync"];

/** Launch `executablePath` headless on a new profile under `prefix`, with CHROMIUM_ARGS and
 * `extraArgs`; { context, profile }. */
export async function launchChromium(executablePath, prefix, extraArgs = []) {
	const profile = await mkdtemp(join(tmpdir(), prefix));
	const context = await chromium.launchPersistentContext(profile, {
		executablePath,
		headless: true,
		args: [...CHROMIUM_ARGS, ...extraArgs],
		timeout: 30_000,
	});
	return { context, profile };
}
