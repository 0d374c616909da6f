// A 1 GiB file end to end: uploaded through the real UI (whose crypto workers are replaced by
// fresh ones as they go), downloaded through the streaming service worker (whose fetcher is
// replaced the same way, the decryption resuming in the fresh one), with the downloading
// tab's memory sampled through the DevTools protocol.

import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, mkdtempSync, openSync, closeSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { freshPage, launchBrowser, startServer } from "./harness.mjs";
import { openTab } from "./bench/tab.mjs";

const MiB = 1024 * 1024;
const SIZE = 1024 * MiB;
/** The bound for the tab while it downloads 1 GiB. */
const TAB_LIMIT = 400 * MiB;

let server;
let browser;
let dir;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  dir = mkdtempSync(join(tmpdir(), "bitstratus-large-"));
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Writes `size` random bytes to `path` without holding them; returns their SHA-256. */
function randomFile(path, size) {
  const hash = createHash("sha256");
  const fd = openSync(path, "w");
  for (let left = size; left > 0; left -= 16 * MiB) {
    const chunk = randomBytes(Math.min(left, 16 * MiB));
    hash.update(chunk);
    writeSync(fd, chunk);
  }
  closeSync(fd);
  return hash.digest("hex");
}

async function fileSha256(path) {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 16 * MiB })) hash.update(chunk);
  return hash.digest("hex");
}

test("a 1 GiB file streams to disk byte-identical while the tab stays under 400 MiB", async () => {
  const source = join(dir, "one-gibibyte.bin");
  const expected = randomFile(source, SIZE);

  // Upload from a tab Playwright does not instrument: an instrumented one copies every request
  // body into DevTools events, which would make this upload take minutes.
  const tab = await openTab(browser, server.origin + "/");
  // Every crypto worker the page starts, counted as DevTools attaches to it.
  await tab.trackWorkers();
  let cryptoWorkers = 0;
  tab.onEvent(({ method, params }) => {
    if (method === "Target.attachedToTarget" && params.targetInfo.url.endsWith("/worker_loader.js")) cryptoWorkers += 1;
  });
  await tab.waitFor("#file-input");
  await tab.setInputFiles("#file-input", source);
  const share = await tab.evaluate(async (_, page) => {
    document.querySelector("#upload").click();
    await page.waitFor(".share-link, .job .error");
    const error = document.querySelector(".job .error");
    if (error) throw new Error(error.textContent);
    return document.querySelector(".share-link").value;
  });
  // The pool (one worker per core, at most 4) replaces each worker after 64 parts (256 MiB),
  // so that no worker's heap grows with the file: 1 GiB is 256 parts, several replacements.
  const pool = Math.min(Math.max(await tab.evaluate(() => navigator.hardwareConcurrency), 1), 4);
  assert.ok(cryptoWorkers >= pool + 2, `crypto workers were replaced as the upload went on (${cryptoWorkers} started, pool of ${pool})`);
  await tab.close();

  const { context, page, problems } = await freshPage(browser);
  const cdp = await context.newCDPSession(page);
  // Trunk's loader announces the app's wasm instance; keep its memory to measure it.
  await page.addInitScript(() =>
    addEventListener("TrunkApplicationStarted", (event) => (window.appWasmMemory = event.detail.wasm.memory)),
  );
  await page.goto(share);
  await page.waitForSelector("#download");
  let peak = 0;
  let wasmSeen = false;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      // JS heap, ArrayBuffer backing stores (decrypted chunks would be there) and wasm memory.
      const { usedSize, backingStorageSize } = await cdp.send("Runtime.getHeapUsage");
      const wasm = await page.evaluate(() => window.appWasmMemory?.buffer.byteLength ?? 0);
      wasmSeen ||= wasm > 0;
      peak = Math.max(peak, usedSize + backingStorageSize + wasm);
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  // Download fetchers started: each serves 64 parts, then hands over to a fresh one.
  let fetchers = 0;
  page.on("worker", (worker) => (fetchers += worker.url().endsWith("/fetcher.js")));
  const streams = [];
  page.on("request", (request) => {
    if (new URL(request.url()).pathname.startsWith("/stream/")) streams.push(request.url());
  });
  const [download] = await Promise.all([page.waitForEvent("download", { timeout: 300_000 }), page.click("#download")]);
  await page.waitForSelector("#saved", { timeout: 300_000 });
  sampling = false;
  await sampler;

  assert.equal(streams.length, 1, "the download went through the streaming service worker");
  assert.equal(await fileSha256(await download.path()), expected, "1 GiB downloads byte-identical");
  const parts = Math.ceil(SIZE / (64 * 65519));
  assert.equal(fetchers, Math.ceil(parts / 64), `the ${parts} parts were fetched by a fresh fetcher every 64`);
  assert.ok(wasmSeen, "the app's wasm memory was part of the measure");
  assert.ok(peak < TAB_LIMIT, `the tab peaked at ${(peak / MiB).toFixed(0)} MiB (limit ${TAB_LIMIT / MiB} MiB)`);
  console.log(`# 1 GiB download: tab memory peak ${(peak / MiB).toFixed(1)} MiB`);
  assert.deepEqual(problems, []);
  await context.close();
});
