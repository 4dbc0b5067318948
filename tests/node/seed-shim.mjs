// Runtime for the seed-era @kixelated/moq 0.9 on Node 20: the Node 20 polyfills, and a resolve
// hook for its extension-less relative imports. Import this first, then load the library with
// a dynamic `await import("@kixelated/moq")` (static imports are resolved before any hook).
import { register } from "node:module";
import "./node20-shim.mjs";

register("./seed-resolve.mjs", import.meta.url);
