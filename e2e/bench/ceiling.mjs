// Download ceiling: `cargo xtask bench browser-ceiling`, which builds the release server and runs
// `node e2e/bench/ceiling.mjs` with BITSTRATUS_SERVER and CHROMIUM set.
//
// Not a test (see browser.mjs for the naming rule). It asks how fast the browser can stream a
// download that script writes, whatever the script does, so that `browser-download`'s ratio
// can be read against what this browser and machine allow. It serves the probe pages in
// `ceiling/` (not the app) from the release server, uploads a random file plain (as
// `browser-download`'s plain side does) and times three sides in fresh tabs, each from the
// page's request until the download manager reports the file complete, over
// BITSTRATUS_BENCH_ROUNDS rounds (default 3) that reverse their order every other round:
//
// - plain: the browser saves the plain upload's content itself (`browser-download`'s plain
//   side, the same request);
// - fetched: the app's streamed-download path minus the decryption: a dedicated worker fetches
//   the parts (3 at a time, BYOB reads) and passes them to a service worker, which streams
//   them into the download manager (one part per write, 2 on their way);
// - stream: that service worker's stream alone, fed from parts it makes itself.
//
// Every downloaded file is checked (size and SHA-256, untimed) and deleted. It prints, MB being
// 10^6 bytes of the file:
//
//   browser-ceiling: ratio=<fetched/plain> fetched_MBps=.. stream_MBps=.. plain_MBps=.. bytes=.. parts=.. in_flight=3 rounds=3
//
// `ratio` is the most `browser-download` could show on this machine with decryption free.
// BITSTRATUS_BENCH_BYTES sets the file size (default 256 MiB, as `browser-download`).

import { copyFileSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { launchBrowser, startServer } from "../harness.mjs";
import {
  APP_DOWNLOAD_IN_FLIGHT,
  APP_UPLOAD_IN_FLIGHT,
  PLAINTEXT_PER_PART,
  alternate,
  benchBytes,
  benchRounds,
  inTab,
  log,
  pickBenchFile,
  plainDownloadInPage,
  plainUploadInPage,
  randomFile,
  ticketsAsHeaders,
  timedDownload,
} from "./browser.mjs";

/** Parts the app's service worker lets its fetcher send ahead: `WINDOW` in app/fetcher.js. */
const APP_DOWNLOAD_WINDOW = 2;

/** A static directory holding the probe pages and the block the "stream" side repeats. */
function probeSite(block) {
  const dir = mkdtempSync(join(tmpdir(), "bitstratus-ceiling-site-"));
  const pages = join(dirname(fileURLToPath(import.meta.url)), "ceiling");
  for (const name of readdirSync(pages)) copyFileSync(join(pages, name), join(dir, name));
  writeFileSync(join(dir, "block.bin"), block);
  return dir;
}

/** `{size, sha256}` of `size` bytes made of copies of `block` (the "stream" side's file). */
function repeated(block, size) {
  const hash = createHash("sha256");
  for (let left = size; left > 0; left -= block.length) hash.update(block.subarray(0, Math.min(block.length, left)));
  return { size, sha256: hash.digest("hex") };
}

async function main() {
  const size = benchBytes();
  const rounds = benchRounds();
  const file = randomFile(size);
  const expected = { size, sha256: file.sha256 };
  const block = randomBytes(PLAINTEXT_PER_PART);
  const site = probeSite(block);
  const downloads = mkdtempSync(join(tmpdir(), "bitstratus-bench-downloads-"));
  process.env.BITSTRATUS_STATIC_DIR = site;
  const server = await startServer();
  const browser = await launchBrowser();
  const page = server.origin + "/";
  try {
    log(`ceiling: plain upload of ${size} bytes (untimed), then ${rounds} rounds`);
    const upload = await inTab(browser, page, downloads, async (tab) => {
      await pickBenchFile(tab, file.path);
      return tab.evaluate(plainUploadInPage, { partSize: PLAINTEXT_PER_PART, inFlight: APP_UPLOAD_IN_FLIGHT });
    });
    let jobs = 0;
    const streamed = (kind, expected) =>
      inTab(browser, page, downloads, async (tab) => {
        await tab.waitFor("body[data-ready]");
        const job = {
          job: `j${jobs++}`,
          kind,
          id: upload.id,
          auth: upload.auth,
          size,
          partSize: PLAINTEXT_PER_PART,
          prefetch: APP_DOWNLOAD_IN_FLIGHT,
          window: APP_DOWNLOAD_WINDOW,
        };
        return timedDownload(tab, expected, () => tab.evaluate((job) => window.startStreamed(job), job));
      });
    const times = await alternate(
      rounds,
      (side) => {
        if (side === "fetched") return streamed("fetched", expected);
        if (side === "stream") return streamed("stream", repeated(block, size));
        return inTab(browser, page, downloads, async (tab) => {
          await ticketsAsHeaders(tab);
          return timedDownload(tab, expected, () => tab.evaluate(plainDownloadInPage, upload));
        });
      },
      ["fetched", "stream", "plain"],
    );
    const mbps = (ms) => size / 1e6 / (ms / 1000);
    const [fetched, stream, plain] = [mbps(times.fetched), mbps(times.stream), mbps(times.plain)];
    console.log(
      `browser-ceiling: ratio=${(fetched / plain).toFixed(3)} fetched_MBps=${fetched.toFixed(1)} ` +
        `stream_MBps=${stream.toFixed(1)} plain_MBps=${plain.toFixed(1)} bytes=${size} parts=${upload.partCount} ` +
        `in_flight=${APP_DOWNLOAD_IN_FLIGHT} rounds=${rounds}`,
    );
  } finally {
    await browser.close();
    await server.stop();
    for (const dir of [server.dataDir, file.dir, downloads, site]) rmSync(dir, { recursive: true, force: true });
  }
}

await main();
