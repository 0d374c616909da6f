// `cargo xtask bench memory`: peak memory of the server and of the browser for a small and a
// big file, run as `node e2e/bench/memory.mjs` with BITSTRATUS_SERVER (the release server),
// BITSTRATUS_STATIC_DIR and CHROMIUM set. The goal: the big file's peaks within 1.2 times the
// small file's, for the server and for the tab.
//
// For each size (100 MiB, then BITSTRATUS_BENCH_BYTES, 4 GiB by default), with a fresh server,
// data directory and browser: a random file is uploaded through the real UI, the source file
// deleted, and the share link downloaded through the real UI (both sizes are >= 64 MiB, so the
// download streams through the service worker, app/sw.js, into the download directory); the
// saved file is checked (size and SHA-256) and deleted, then the data directory. A 4 GiB run
// needs about 8 GiB of temporary disk at a time (source + ciphertext, then ciphertext + copy).
// Meanwhile, every SAMPLE_MS:
// - server: the release server's resident set (VmRSS in /proc/PID/status); its peak is the
//   kernel's high-water mark, VmHWM, read at the end (the largest of the two is reported);
// - tab: through DevTools on the page target and on each of its dedicated workers (the crypto
//   workers and, while a file streams to disk, the download fetcher, attached with
//   Target.setAutoAttach), summed: `Runtime.getHeapUsage` usedSize (JS
//   heap) + backingStorageSize (ArrayBuffer backing stores, which does NOT include wasm memory)
//   + the size of the isolate's wasm memory, as the app's wasm reports it (`wasm_memory_bytes`);
// - sw: the same sum for the service worker target (Target.getTargets type "service_worker").
// Blob and download-manager memory in the browser process is in none of these.
//
// A peak is a maximum over moments, and both sizes go through the same moments (a few parts
// in flight, each in a worker, a request, a write), so they should see the same peak; but a
// 100 MiB run lasts about 3 s (some 15 samples) against a minute for 4 GiB (some 700), and
// memory swings by a few MiB from one moment to the next (parts arriving in a worker, buffers
// freed and allocated again), so a single short run mostly misses its own peak: one measured
// 15.3 MiB and the next 19.8 MiB of server peak, on the same build. The small file is therefore
// run BITSTRATUS_BENCH_SMALL_ROUNDS times (default 3), each time with a fresh server, browser
// and data directory, and its peaks are the highest of those runs; the big file runs once.
//
//   memory: ratio=<worst big/small of server and tab> server_peak_small_MiB=.. server_peak_big_MiB=..
//     tab_peak_small_MiB=.. tab_peak_big_MiB=.. sw_peak_small_MiB=.. sw_peak_big_MiB=..
//     small_bytes=.. big_bytes=.. small_rounds=.. samples_small=.. samples_big=..
//
// Not a test: see browser.mjs about file names.

import { createHash } from "node:crypto";
import { createReadStream, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, statfsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { launchBrowser, startServer } from "../harness.mjs";
import { benchBytes, log, randomFile, uiDownloadInPage, uiUpload } from "./browser.mjs";
import { attachTarget, openTab } from "./tab.mjs";

const MiB = 1024 * 1024;
const SMALL = 100 * MiB;
const BIG = 4096 * MiB;
const SAMPLE_MS = 200;
/** How often the page's progress is logged. */
const PROGRESS_MS = 15_000;
/** Runs of the small file (BITSTRATUS_BENCH_SMALL_ROUNDS): see the header. */
const SMALL_ROUNDS = Number(process.env.BITSTRATUS_BENCH_SMALL_ROUNDS ?? 3);
if (!Number.isInteger(SMALL_ROUNDS) || SMALL_ROUNDS < 1) throw new Error("BITSTRATUS_BENCH_SMALL_ROUNDS: expected a whole number >= 1");

/** A field of /proc/PID/status in bytes (0 once the process is gone). */
function procStatus(pid, field) {
  try {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/**
 * JS memory of one isolate reached through `send`: heap used + ArrayBuffer backing stores +
 * its wasm memory, which the app's wasm reports itself (`wasm_memory_bytes`, exported by the
 * page's bundle as `window.wasmBindings` and by the worker bundle as `wasm_bindgen`; 0 before
 * the wasm is loaded). This used to search the heap with `Runtime.queryObjects`, which forces
 * a full garbage collection each time it looks and was the prime suspect for runs in which the
 * page stopped answering DevTools altogether.
 */
async function isolateBytes(send) {
  const { usedSize, backingStorageSize } = await send("Runtime.getHeapUsage");
  const { result } = await send("Runtime.evaluate", {
    // `wasm_bindgen` is a global `let` of the worker bundle, not a property of `self`.
    expression:
      "(() => { for (const get of [() => wasmBindings, () => wasm_bindgen]) { try { return get().wasm_memory_bytes(); } catch {} } return 0; })()",
    returnByValue: true,
  });
  return { js: usedSize, buffers: backingStorageSize, wasm: Number(result?.value) || 0 };
}

const total = (m) => m.js + m.buffers + m.wasm;
const ZERO = { js: 0, buffers: 0, wasm: 0 };

/**
 * Samples the server, the tab and its service worker every SAMPLE_MS until `stop()`; `phase`
 * names what runs, for the breakdown of the tab's peaks on stderr.
 */
function startSampler({ server, tab, cdp }) {
  const peaks = { serverRss: 0, tab: 0, sw: 0, samples: 0, phases: {} };
  let sw = null;
  let running = true;
  const sampleSw = async () => {
    if (!sw) {
      const { targetInfos } = await cdp.send("Target.getTargets");
      const target = targetInfos.find((t) => t.type === "service_worker" && t.url.startsWith(server.origin));
      if (!target) return ZERO;
      sw = await attachTarget(cdp, target.targetId);
    }
    try {
      return await isolateBytes(sw.send);
    } catch {
      sw.detach();
      sw = null; // Stopped or replaced: found again next time.
      return ZERO;
    }
  };
  const loop = (async () => {
    while (running) {
      const next = new Promise((r) => setTimeout(r, SAMPLE_MS));
      peaks.serverRss = Math.max(peaks.serverRss, procStatus(server.pid, "VmRSS"));
      const [pageBytes, workerBytes, swBytes] = await Promise.all([
        isolateBytes(tab.send).catch(() => ZERO),
        Promise.all(tab.workers().map((w) => isolateBytes(w.send).catch(() => ZERO))),
        sampleSw().catch(() => ZERO),
      ]);
      const workerParts = workerBytes.reduce(
        (sum, m) => ({ js: sum.js + m.js, buffers: sum.buffers + m.buffers, wasm: sum.wasm + m.wasm }),
        ZERO,
      );
      const workers = total(workerParts);
      const tabBytes = total(pageBytes) + workers;
      peaks.tab = Math.max(peaks.tab, tabBytes);
      peaks.sw = Math.max(peaks.sw, total(swBytes));
      peaks.samples += 1;
      const phase = (peaks.phases[sampler.phase] ??= { tab: 0 });
      if (tabBytes > phase.tab) Object.assign(phase, { tab: tabBytes, page: pageBytes, workers, workerParts, count: workerBytes.length });
      await next;
    }
  })();
  const sampler = {
    phase: "start",
    async stop() {
      running = false;
      await loop;
      await sw?.detach();
      return peaks;
    },
  };
  return sampler;
}

/**
 * Logs what the page shows every PROGRESS_MS until the returned function is called: the job
 * row's text and whether the page is visible, so a run that stops moving says where it stopped.
 */
function logProgress(tab, label) {
  const timer = setInterval(() => {
    const shown = tab.evaluate(() => ({
      shown: (document.querySelector(".job, main")?.innerText ?? "").replace(/\s+/g, " ").slice(0, 200),
      visibility: document.visibilityState,
    }));
    const silent = new Promise((_, reject) => setTimeout(() => reject(new Error("no answer within 5 s")), 5000));
    Promise.race([shown, silent])
      .then(({ shown, visibility }) => log(`memory: ${label}: [${visibility}] ${shown}`))
      .catch((error) => log(`memory: ${label}: the page did not answer: ${error.message}`));
  }, PROGRESS_MS);
  return () => clearInterval(timer);
}

/** Waits for the finished download (no `.crdownload` left) of `size` bytes in `dir`. */
async function savedFile(dir, size) {
  for (const started = Date.now(); Date.now() - started < 120_000; ) {
    const names = readdirSync(dir);
    const done = names.filter((n) => !n.endsWith(".crdownload"));
    if (done.length === 1 && !names.some((n) => n.endsWith(".crdownload"))) {
      const path = join(dir, done[0]);
      if (statSync(path).size === size) return path;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no complete download of ${size} bytes in ${dir}: ${readdirSync(dir).join(", ")}`);
}

async function fileSha256(path) {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 16 * MiB })) hash.update(chunk);
  return hash.digest("hex");
}

/** One size: upload then download through the UI, sampled; returns the peaks in bytes. */
async function measure(size) {
  log(`memory: ${size} bytes: writing the source file`);
  const file = randomFile(size);
  const downloads = mkdtempSync(join(tmpdir(), "bitstratus-bench-downloads-"));
  const server = await startServer();
  const browser = await launchBrowser();
  let tab;
  let sampler;
  try {
    log(`memory: ${size} bytes: server and browser started; opening the tab`);
    tab = await openTab(browser, server.origin + "/", { downloadDir: downloads });
    await tab.trackWorkers();
    const cdp = await browser.newBrowserCDPSession();
    log(`memory: ${size} bytes: tab open; uploading`);
    sampler = startSampler({ server, tab, cdp });
    sampler.phase = "upload";
    const stopUploadLog = logProgress(tab, `${size} bytes: upload`);
    const upload = await uiUpload(tab, file.path).finally(stopUploadLog);
    log(`memory: ${size} bytes: uploaded in ${(upload.ms / 1000).toFixed(1)} s`);
    rmSync(file.dir, { recursive: true, force: true });

    sampler.phase = "download";
    await tab.goto(upload.share);
    await tab.waitFor("#download, .error");
    const stopDownloadLog = logProgress(tab, `${size} bytes: download`);
    const download = await tab.evaluate(uiDownloadInPage).finally(stopDownloadLog);
    const saved = await savedFile(downloads, size);
    // Streamed by the service worker: the page itself fetched no part.
    const pageFetches = await tab.evaluate(() => performance.getEntriesByType("resource").filter((e) => e.name.includes("/parts/")).length);
    if (pageFetches) throw new Error(`the page fetched ${pageFetches} parts itself: the download did not stream`);
    log(`memory: ${size} bytes: downloaded in ${(download.ms / 1000).toFixed(1)} s`);
    const peaks = await sampler.stop();
    sampler = null;
    peaks.server = Math.max(peaks.serverRss, procStatus(server.pid, "VmHWM"));
    if ((await fileSha256(saved)) !== file.sha256) throw new Error("the downloaded file differs from the upload");
    if (peaks.tab === 0 || peaks.sw === 0) throw new Error("the tab or its service worker was never measured");
    const mib = (b) => (b / MiB).toFixed(1);
    log(`memory: ${size} bytes: peaks server ${mib(peaks.server)} MiB, tab ${mib(peaks.tab)} MiB, sw ${mib(peaks.sw)} MiB`);
    for (const [name, p] of Object.entries(peaks.phases)) {
      log(
        `memory: ${size} bytes: tab peak during ${name} ${mib(p.tab)} MiB: page js ${mib(p.page.js)} + buffers ` +
          `${mib(p.page.buffers)} + wasm ${mib(p.page.wasm)}, ${p.count} workers ${mib(p.workers)}: js ` +
          `${mib(p.workerParts.js)} + buffers ${mib(p.workerParts.buffers)} + wasm ${mib(p.workerParts.wasm)}`,
      );
    }
    return peaks;
  } finally {
    await sampler?.stop();
    if (tab?.problems.length) log(`page problems: ${tab.problems.join("; ")}`);
    await tab?.close();
    await browser.close();
    await server.stop();
    rmSync(server.dataDir, { recursive: true, force: true });
    rmSync(file.dir, { recursive: true, force: true });
    rmSync(downloads, { recursive: true, force: true });
  }
}

async function main() {
  const big = benchBytes(BIG);
  // Two copies at a time (source + ciphertext, then ciphertext + download), and some room.
  const { bavail, bsize } = statfsSync(tmpdir());
  const needed = 2 * big + 1024 * MiB;
  if (bavail * bsize < needed) {
    throw new Error(
      `${tmpdir()} has ${(bavail * bsize / MiB).toFixed(0)} MiB free; a ${big}-byte run needs about ` +
        `${(needed / MiB).toFixed(0)} MiB: set BITSTRATUS_BENCH_BYTES lower (1GiB, 256MiB, ...)`,
    );
  }
  // The small file is measured SMALL_ROUNDS times (fresh server, browser and data each time)
  // and its peaks are the highest seen: see the header.
  let small = null;
  for (let round = 0; round < SMALL_ROUNDS; round++) {
    const peaks = await measure(SMALL);
    small = small
      ? {
          server: Math.max(small.server, peaks.server),
          tab: Math.max(small.tab, peaks.tab),
          sw: Math.max(small.sw, peaks.sw),
          samples: small.samples + peaks.samples,
        }
      : peaks;
  }
  const large = await measure(big);
  const ratio = Math.max(large.server / small.server, large.tab / small.tab);
  const mib = (b) => (b / MiB).toFixed(1);
  console.log(
    `memory: ratio=${ratio.toFixed(2)} server_peak_small_MiB=${mib(small.server)} server_peak_big_MiB=${mib(large.server)} ` +
      `tab_peak_small_MiB=${mib(small.tab)} tab_peak_big_MiB=${mib(large.tab)} ` +
      `sw_peak_small_MiB=${mib(small.sw)} sw_peak_big_MiB=${mib(large.sw)} ` +
      `small_bytes=${SMALL} big_bytes=${big} small_rounds=${SMALL_ROUNDS} samples_small=${small.samples} samples_big=${large.samples}`,
  );
}

await main();
