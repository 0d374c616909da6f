// `cargo xtask bench browser-crypto`: the two AES-GCM engines of the crypto worker side by side,
// run as `node e2e/bench/crypto.mjs` with BITSTRATUS_SERVER, BITSTRATUS_STATIC_DIR and CHROMIUM
// set (the release server and app).
//
// One uninstrumented headless Chromium tab (see tab.mjs) opens the real server's page and starts
// ONE crypto worker from /worker_loader.js, as the app does, waiting for its `{ready: true}`.
// For each record size (16 KiB, 64 KiB = the frozen RECORD_SIZE, 256 KiB, 1 MiB), each engine
// (`webcrypto`, `wasm`) and each direction it posts `{op: "bench", engine, direction, rs, bytes}`
// (app/src/bin/worker.rs), which encrypts or decrypts about `bytes` part by part (64 records a
// part, as the app) inside the worker and answers the time it took, taken with the worker's own
// clock; a decrypt op encrypts its input first, untimed. About 64 MiB per op for WebCrypto and
// 16 MiB for the ~15 times slower wasm engine; whole parts, so at 1 MiB records (64 MiB parts)
// both do 64 MiB. One untimed warm-up op per engine, then the best of RUNS. MB/s with
// MB = 10^6 bytes of plaintext. Prints one line on stdout (progress goes to stderr):
//
//   browser-crypto: ratio=<webcrypto/wasm, encrypt, 64 KiB> webcrypto_enc_16k=.. wasm_enc_16k=..
//     webcrypto_dec_16k=.. wasm_dec_16k=.. ... (the same for 64k, 256k, 1m) runs=3
//
// Not a test: see browser.mjs about file names.

import { rmSync } from "node:fs";

import { launchBrowser, startServer } from "../harness.mjs";
import { log } from "./browser.mjs";
import { openTab } from "./tab.mjs";

const MiB = 1024 * 1024;
const RECORD_SIZES = [
  ["16k", 16 * 1024],
  ["64k", 64 * 1024],
  ["256k", 256 * 1024],
  ["1m", MiB],
];
const BYTES = { webcrypto: 64 * MiB, wasm: 16 * MiB };
const RUNS = 3;

/** In the page: starts the crypto worker and waits for its `{ready: true}`. */
async function startWorkerInPage() {
  const worker = new Worker("/worker_loader.js");
  await new Promise((resolve, reject) => {
    worker.onerror = (event) => reject(new Error(`the worker failed to load: ${event.message}`));
    worker.onmessage = (event) => event.data?.ready && resolve();
  });
  let job = 0;
  // One op at a time: the benchmark awaits each before posting the next.
  window.benchOp = (op) =>
    new Promise((resolve, reject) => {
      const id = ++job;
      worker.onmessage = ({ data }) => {
        if (data.job !== id) return;
        if (data.error) reject(new Error(data.error));
        else resolve({ ms: data.ms, bytes: data.bytes });
      };
      worker.postMessage({ job: id, op: "bench", ...op });
    });
}

async function main() {
  const server = await startServer();
  const browser = await launchBrowser();
  let tab;
  try {
    tab = await openTab(browser, server.origin + "/");
    await tab.evaluate(startWorkerInPage);
    const op = (engine, direction, rs) =>
      tab.evaluate((o) => window.benchOp(o), { engine, direction, rs, bytes: BYTES[engine] });
    for (const engine of ["webcrypto", "wasm"]) await op(engine, "encrypt", 64 * 1024);
    const figures = [];
    let ratio;
    for (const [label, rs] of RECORD_SIZES) {
      const best = {};
      for (const direction of ["encrypt", "decrypt"]) {
        for (const engine of ["webcrypto", "wasm"]) {
          let mbps = 0;
          for (let run = 0; run < RUNS; run++) {
            const { ms, bytes } = await op(engine, direction, rs);
            mbps = Math.max(mbps, bytes / 1e6 / (ms / 1000));
          }
          best[`${engine}_${direction.slice(0, 3)}`] = mbps;
          log(`crypto: ${engine} ${direction} ${label} records: ${mbps.toFixed(0)} MB/s`);
        }
      }
      for (const [name, mbps] of Object.entries(best)) figures.push(`${name}_${label}=${mbps.toFixed(0)}`);
      if (rs === 64 * 1024) ratio = best.webcrypto_enc / best.wasm_enc;
    }
    console.log(`browser-crypto: ratio=${ratio.toFixed(2)} ${figures.join(" ")} runs=${RUNS}`);
  } finally {
    if (tab?.problems.length) log(`page problems: ${tab.problems.join("; ")}`);
    await tab?.close();
    await browser.close();
    await server.stop();
    rmSync(server.dataDir, { recursive: true, force: true });
  }
}

await main();
