// Browser benchmarks: `cargo xtask bench browser-upload | browser-download`, which builds the
// release server and app and runs `node e2e/bench/browser.mjs upload|download` with
// BITSTRATUS_SERVER, BITSTRATUS_STATIC_DIR and CHROMIUM set.
//
// Not a test: the file name must not match node's test-file patterns (`*.test.mjs`,
// `*-test.mjs`, `*_test.mjs`, `test-*.mjs`, `test.mjs`, anything under a `test/` directory), so
// `node --test e2e/` (`cargo xtask test`) never runs it; xtask has a unit test for that.
//
// Each run measures both sides in fresh tabs of the same browser against the same server, timed
// the same way on both (in the page for uploads, by the benchmark for downloads), over BITSTRATUS_BENCH_ROUNDS rounds (default 3) that alternate which side goes
// first, and reports each side's median; it prints one line on stdout (progress goes to
// stderr). MB is 10^6 bytes of the file (plaintext) for both sides; `in_flight` is the parts
// the app keeps in flight (for uploads, on both sides).
//
//   browser-upload: ratio=<encrypted/plain> encrypted_MBps=.. plain_MBps=.. bytes=.. parts=.. in_flight=4 rounds=3
//   browser-download: ratio=<encrypted/plain> encrypted_MBps=.. plain_MBps=.. bytes=.. parts=.. in_flight=3 rounds=3
//
// upload: the real UI uploads a file (from clicking #upload to the share link appearing) vs the
// same page PUTting the same bytes, read from the same file through a `File`, unencrypted (but
// hashed, as the API requires), in parts of the same plaintext size with the same parallelism
// (create, parts, complete).
// download: the real UI downloads it (from clicking #download until the browser's download
// manager reports the file complete on disk and the page shows #saved; the service worker
// fetches, decrypts and streams it there) vs a plain download of the same bytes uploaded
// unencrypted to the same server: the page takes a ticket and opens the file's URL
// (`GET /api/v1/files/{id}/content`, the whole body in one response) in a hidden frame, so the
// browser saves the response straight to disk itself, with no script between the network and
// the file, timed until the download manager reports it complete. That is how a user downloads
// a plain file from a file host: a link the browser saves. It is the strictest baseline (the
// encrypted side adds the service worker, the decryption and its copies), and the fair one:
// both sides end with the whole file in the download directory, through the same download
// manager and disk, timed the same way, and both files are checked after (size and SHA-256,
// untimed) and deleted. Our API takes the ticket only in the Authorization header, which a
// link cannot carry (a plain host would sign the URL instead): the frame's URL carries it as
// `?bench_ticket=` (which the server ignores) and the benchmark moves it into the header with
// DevTools' Fetch domain, pausing that one request before it is sent (the request stage only:
// the response body is never intercepted or copied). A fetch of the body streamed to disk from
// script would need a service worker or a save-file picker, which a plain host does not use.
//
// The tab is one Playwright does not instrument (see tab.mjs): under Playwright, Chromium copies
// every uploaded body to the DevTools client, which would make both sides measure that instead.
//
// BITSTRATUS_BENCH_BYTES sets the file size (`268435456`, `256MiB`, `1GiB`; default 256 MiB).

import { closeSync, createReadStream, mkdtempSync, openSync, rmSync, statSync, writeSync } from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

import { launchBrowser, startServer } from "../harness.mjs";
import { openTab } from "./tab.mjs";

const MiB = 1024 * 1024;
const DEFAULT_BYTES = 256 * MiB;
/** Plaintext bytes per part in the app: `64 * (65536 - 17)` (crypto-wasm/src/layout.rs). */
export const PLAINTEXT_PER_PART = 64 * (65536 - 17);
/** Parts the app keeps in flight: `PARTS_IN_FLIGHT` in app/src/upload.rs. */
export const APP_UPLOAD_IN_FLIGHT = 4;
/**
 * Parts the app fetches at once when it streams a download to disk: `PREFETCH` in app/sw.js
 * (files of 64 MiB and more, which is every size this benchmark is meant for).
 */
export const APP_DOWNLOAD_IN_FLIGHT = 3;

/** BITSTRATUS_BENCH_BYTES as a number of bytes, or `fallback` when it is not set. */
export function benchBytes(fallback = DEFAULT_BYTES) {
  const raw = process.env.BITSTRATUS_BENCH_BYTES;
  if (!raw) return fallback;
  const match = /^\s*(\d+)\s*(b|kib|mib|gib|kb|mb|gb|k|m|g)?\s*$/i.exec(raw);
  const units = { b: 1, k: 1024, kib: 1024, m: MiB, mib: MiB, g: 1024 * MiB, gib: 1024 * MiB, kb: 1e3, mb: 1e6, gb: 1e9 };
  const bytes = match && Number(match[1]) * units[(match[2] ?? "b").toLowerCase()];
  if (!bytes || !Number.isSafeInteger(bytes)) throw new Error(`BITSTRATUS_BENCH_BYTES=${raw}: expected a size such as 268435456, 256MiB or 1GiB`);
  return bytes;
}

/** BITSTRATUS_BENCH_ROUNDS, the timed rounds of a benchmark (default 3). */
export function benchRounds() {
  const rounds = Number(process.env.BITSTRATUS_BENCH_ROUNDS ?? 3);
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error("BITSTRATUS_BENCH_ROUNDS must be a positive integer");
  return rounds;
}

export const log = (message) => console.error(`bench: ${message}`);

/**
 * A temporary file of `size` random bytes, written in chunks (never all in memory): its `dir`,
 * `path` and `sha256` (hex).
 */
export function randomFile(size) {
  const dir = mkdtempSync(join(tmpdir(), "bitstratus-bench-"));
  const path = join(dir, "bench.bin");
  const fd = openSync(path, "w");
  const hash = createHash("sha256");
  for (let written = 0; written < size; ) {
    const chunk = randomBytes(Math.min(16 * MiB, size - written));
    hash.update(chunk);
    writeSync(fd, chunk);
    written += chunk.length;
  }
  closeSync(fd);
  return { dir, path, sha256: hash.digest("hex") };
}

/** In the page: clicks #upload and times it until the share link (or an error) appears. */
async function uiUploadInPage(_, { waitFor }) {
  const started = performance.now();
  document.querySelector("#upload").click();
  await waitFor(".share-link, .job .error");
  const ms = performance.now() - started;
  const error = document.querySelector(".job .error");
  if (error) throw new Error(`the UI upload failed: ${error.textContent}`);
  return { ms, share: document.querySelector(".share-link").value };
}

/** Uploads the file through the real UI; returns the time and the share link. */
export async function uiUpload(tab, path) {
  // The load event can come before the wasm app has mounted its page.
  await tab.waitFor("#file-input");
  await tab.setInputFiles("#file-input", path);
  await tab.waitFor(".job");
  return tab.evaluate(uiUploadInPage);
}

/**
 * In the page: uploads the file picked in `#bench-file` as it is (no encryption) through the
 * API with dummy metadata and auth token of the right shapes, `inFlight` parts at a time, each
 * with the real SHA-256 the server checks (Web Crypto). Returns the time and what a
 * downloader needs.
 */
export async function plainUploadInPage({ partSize, inFlight }) {
  const file = document.querySelector("#bench-file").files[0];
  const api = `${location.origin}/api/v1`;
  const b64url = (bytes) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const hex = (buffer) => Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
  const ok = async (response, what) => {
    if (!response.ok) throw new Error(`${what}: HTTP ${response.status} ${await response.text()}`);
    return response;
  };
  const auth = b64url(crypto.getRandomValues(new Uint8Array(32)));
  const metadata = b64url(crypto.getRandomValues(new Uint8Array(64)));
  const started = performance.now();
  const create = {
    metadata,
    auth_token: auth,
    kdf: null,
    size: file.size,
    first_part_size: partSize,
    part_size: partSize,
    expires_in: 3600,
    download_limit: null,
  };
  const created = await (
    await ok(
      await fetch(`${api}/files`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(create) }),
      "create",
    )
  ).json();
  const owner = { Authorization: `Bearer ${created.owner_token}` };
  let next = 0;
  const worker = async () => {
    while (next < created.part_count) {
      const n = next++;
      const bytes = await file.slice(n * partSize, Math.min(file.size, (n + 1) * partSize)).arrayBuffer();
      const sha256 = hex(await crypto.subtle.digest("SHA-256", bytes));
      const response = await fetch(`${api}/files/${created.id}/parts/${n}`, {
        method: "PUT",
        headers: { ...owner, "X-Content-SHA256": sha256, "Content-Type": "application/octet-stream" },
        body: bytes,
      });
      await (await ok(response, `part ${n}`)).arrayBuffer();
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  await ok(await fetch(`${api}/files/${created.id}/complete`, { method: "POST", headers: owner }), "complete");
  return { ms: performance.now() - started, id: created.id, auth, partCount: created.part_count };
}

/** Picks `path` in a hidden `<input type=file id=bench-file>` added to the page. */
export async function pickBenchFile(tab, path) {
  await tab.evaluate(() => {
    const input = document.createElement("input");
    input.type = "file";
    input.id = "bench-file";
    input.hidden = true;
    document.body.append(input);
  });
  await tab.setInputFiles("#bench-file", path);
}

/** In the page: clicks #download and times it until #saved (or an error) appears. */
export async function uiDownloadInPage(_, { waitFor }) {
  const started = performance.now();
  document.querySelector("#download").click();
  await waitFor("#saved, .error");
  const ms = performance.now() - started;
  const error = document.querySelector(".error");
  if (error) throw new Error(`the UI download failed: ${error.textContent}`);
  return { ms };
}

/**
 * In the page: takes a download ticket for a plain upload and opens its content URL in a hidden
 * frame, which the browser downloads (the benchmark turns `bench_ticket` into the request's
 * Authorization header).
 */
export async function plainDownloadInPage({ id, auth }) {
  const api = `${location.origin}/api/v1`;
  const ticketed = await fetch(`${api}/files/${id}/downloads`, { method: "POST", headers: { Authorization: `Bearer ${auth}` } });
  if (!ticketed.ok) throw new Error(`downloads: HTTP ${ticketed.status}`);
  const { ticket } = await ticketed.json();
  const frame = document.createElement("iframe");
  frame.hidden = true;
  frame.src = `${api}/files/${id}/content?bench_ticket=${ticket}`;
  document.body.append(frame);
}

/**
 * Gives the request for a plain download's content its ticket (see the header comment): pauses
 * requests for `.../content` in `tab` before they are sent and continues each with its
 * `bench_ticket` as the Authorization header.
 */
export async function ticketsAsHeaders(tab) {
  tab.onEvent(({ method, params }) => {
    if (method !== "Fetch.requestPaused") return;
    const ticket = new URL(params.request.url).searchParams.get("bench_ticket");
    const headers = Object.entries(params.request.headers).map(([name, value]) => ({ name, value }));
    if (ticket) headers.push({ name: "Authorization", value: `Bearer ${ticket}` });
    tab.send("Fetch.continueRequest", { requestId: params.requestId, headers }).catch((error) => log(`continueRequest: ${error.message}`));
  });
  await tab.send("Fetch.enable", { patterns: [{ urlPattern: "*/api/v1/files/*/content?bench_ticket=*", requestStage: "Request" }] });
}

/**
 * Runs `start()` (which starts one download in `tab`) and times it until the download manager
 * reports the file complete; checks the file's size and SHA-256 against `file` (untimed) and
 * deletes it. Returns the milliseconds.
 */
export async function timedDownload(tab, file, start) {
  const downloaded = tab.nextDownload();
  downloaded.catch(() => {}); // Awaited below, after `start()`.
  const started = performance.now();
  await start();
  const { path } = await downloaded;
  const ms = performance.now() - started;
  try {
    const { size } = statSync(path);
    if (size !== file.size) throw new Error(`the download has ${size} bytes, expected ${file.size}`);
    if ((await fileSha256(path)) !== file.sha256) throw new Error("the downloaded file differs from the upload");
  } finally {
    rmSync(path, { force: true });
  }
  return ms;
}

/** The SHA-256 (hex) of the file at `path`, read as a stream. */
async function fileSha256(path) {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk);
  return hash.digest("hex");
}

/** The median of some numbers (the upper one of the middle two for an even count). */
const median = (values) => [...values].sort((x, y) => x - y)[Math.floor(values.length / 2)];

/**
 * Runs `measure(side)` for each of `sides` over `rounds` rounds, reversing their order every
 * other round (on a VM a side that runs into freshly returned memory or a cold cache is
 * measured slower, so a fixed order would favour one side), each in a fresh tab; returns each
 * side's median ms, keyed by side.
 */
export async function alternate(rounds, measure, sides = ["encrypted", "plain"]) {
  const times = Object.fromEntries(sides.map((side) => [side, []]));
  for (let round = 0; round < rounds; round++) {
    for (const side of round % 2 === 0 ? sides : [...sides].reverse()) {
      const ms = await measure(side);
      log(`round ${round}: ${side} ${(ms / 1000).toFixed(2)} s`);
      times[side].push(ms);
    }
  }
  return Object.fromEntries(sides.map((side) => [side, median(times[side])]));
}

/**
 * Opens a fresh uninstrumented tab on `url`, runs `body(tab)` and closes the tab. Downloads are
 * saved as `downloads/<guid>` (see `openTab`).
 */
export async function inTab(browser, url, downloads, body) {
  const tab = await openTab(browser, url, { downloadDir: downloads, namedByGuid: true });
  try {
    return await body(tab);
  } finally {
    if (tab.problems.length) log(`page problems: ${tab.problems.join("; ")}`);
    await tab.close();
  }
}

async function benchUpload({ browser, origin, path, size, downloads, rounds }) {
  log(`upload: ${size} bytes, ${rounds} rounds`);
  const plainUpload = (tab) =>
    pickBenchFile(tab, path).then(() =>
      tab.evaluate(plainUploadInPage, { partSize: PLAINTEXT_PER_PART, inFlight: APP_UPLOAD_IN_FLIGHT }),
    );
  // Untimed warm-up of the server and the browser.
  const warm = await inTab(browser, origin + "/", downloads, plainUpload);
  const { encrypted, plain } = await alternate(rounds, (side) =>
    inTab(browser, origin + "/", downloads, async (tab) =>
      side === "encrypted" ? (await uiUpload(tab, path)).ms : (await plainUpload(tab)).ms,
    ),
  );
  return { encryptedMs: encrypted, plainMs: plain, parts: warm.partCount, inFlight: APP_UPLOAD_IN_FLIGHT };
}

async function benchDownload({ browser, origin, path, file, size, downloads, rounds }) {
  // Untimed set-up: the same file uploaded once through the UI and once plain.
  log(`download: set-up uploads of ${size} bytes (untimed), then ${rounds} rounds`);
  const { share } = await inTab(browser, origin + "/", downloads, (tab) => uiUpload(tab, path));
  const upload = await inTab(browser, origin + "/", downloads, async (tab) => {
    await pickBenchFile(tab, path);
    return tab.evaluate(plainUploadInPage, { partSize: PLAINTEXT_PER_PART, inFlight: APP_UPLOAD_IN_FLIGHT });
  });
  const expected = { size, sha256: file.sha256 };
  const { encrypted, plain } = await alternate(rounds, (side) => {
    if (side === "encrypted") {
      return inTab(browser, share, downloads, async (tab) => {
        await tab.waitFor("#download, .error");
        return timedDownload(tab, expected, () => tab.evaluate(uiDownloadInPage));
      });
    }
    return inTab(browser, origin + "/", downloads, async (tab) => {
      await ticketsAsHeaders(tab);
      return timedDownload(tab, expected, () => tab.evaluate(plainDownloadInPage, upload));
    });
  });
  return { encryptedMs: encrypted, plainMs: plain, parts: upload.partCount, inFlight: APP_DOWNLOAD_IN_FLIGHT };
}

async function main() {
  const which = process.argv[2];
  const run = { upload: benchUpload, download: benchDownload }[which];
  if (!run) throw new Error("usage: node e2e/bench/browser.mjs upload|download");
  const size = benchBytes();
  const file = randomFile(size);
  const downloads = mkdtempSync(join(tmpdir(), "bitstratus-bench-downloads-"));
  const rounds = benchRounds();
  const server = await startServer();
  const browser = await launchBrowser();
  try {
    const r = await run({ browser, origin: server.origin, path: file.path, file, size, downloads, rounds });
    const mbps = (ms) => size / 1e6 / (ms / 1000);
    const [encrypted, plain] = [mbps(r.encryptedMs), mbps(r.plainMs)];
    console.log(
      `browser-${which}: ratio=${(encrypted / plain).toFixed(3)} encrypted_MBps=${encrypted.toFixed(1)} ` +
        `plain_MBps=${plain.toFixed(1)} bytes=${size} parts=${r.parts} in_flight=${r.inFlight} rounds=${rounds}`,
    );
  } finally {
    await browser.close();
    await server.stop();
    rmSync(server.dataDir, { recursive: true, force: true });
    rmSync(file.dir, { recursive: true, force: true });
    rmSync(downloads, { recursive: true, force: true });
  }
}

// Only when run, not when another benchmark imports the helpers above.
if (import.meta.url === pathToFileURL(process.argv[1]).href) await main();
