// `cargo xtask bench browser-background`: does an upload keep its speed when its tab is in the
// background? Run as `node e2e/bench/background.mjs` with BITSTRATUS_SERVER (the release
// server), BITSTRATUS_STATIC_DIR and CHROMIUM set. Not a test (see browser.mjs about names).
//
// Browsers throttle hidden tabs: timers slow to once a second or less, rendering stops, and
// peers' uploads are known to collapse there (ANCHORS.md: timvisee/send #170). BitStratus
// encrypts in workers and drives its transfers from promises, not timers, so it should not.
//
// The same file (BITSTRATUS_BENCH_BYTES, default 256 MiB) is uploaded through the real UI in
// fresh uninstrumented tabs (tab.mjs) of one browser, alternately with the uploading tab in
// front and with another tab brought to the front, which makes the uploading one hidden
// (`document.visibilityState` is checked to be "hidden" from the click to the share link).
// Each side's figure is its median over BITSTRATUS_BENCH_ROUNDS rounds (default 3):
//
//   browser-background: ratio=<background/foreground> background_MBps=.. foreground_MBps=.. bytes=.. rounds=..

import { rmSync } from "node:fs";

import { launchBrowser, startServer } from "../harness.mjs";
import { benchBytes, benchRounds, log, randomFile } from "./browser.mjs";
import { openTab } from "./tab.mjs";

/**
 * In the page: clicks #upload and times it until the share link appears, like browser.mjs,
 * noting every visibility state the tab was in meanwhile.
 */
async function uploadWatchingVisibility(_, { waitFor }) {
  const states = new Set([document.visibilityState]);
  const onChange = () => states.add(document.visibilityState);
  document.addEventListener("visibilitychange", onChange);
  const started = performance.now();
  document.querySelector("#upload").click();
  await waitFor(".share-link, .job .error");
  const ms = performance.now() - started;
  document.removeEventListener("visibilitychange", onChange);
  states.add(document.visibilityState);
  const error = document.querySelector(".job .error");
  if (error) throw new Error(`the UI upload failed: ${error.textContent}`);
  return { ms, states: [...states] };
}

/** One upload through the UI of a fresh tab, in front or hidden behind another tab. */
async function uploadOnce(browser, origin, path, hidden) {
  const tab = await openTab(browser, origin + "/");
  let cover;
  try {
    await tab.waitFor("#file-input");
    await tab.setInputFiles("#file-input", path);
    await tab.waitFor(".job");
    if (hidden) {
      cover = await openTab(browser, "about:blank");
      await cover.send("Page.bringToFront");
    } else {
      await tab.send("Page.bringToFront");
    }
    const result = await tab.evaluate(uploadWatchingVisibility);
    const expected = hidden ? "hidden" : "visible";
    if (result.states.length !== 1 || result.states[0] !== expected) {
      throw new Error(`the uploading tab was ${result.states.join(" then ")}, not only ${expected}`);
    }
    return result.ms;
  } finally {
    if (tab.problems.length) log(`page problems: ${tab.problems.join("; ")}`);
    await cover?.close();
    await tab.close();
  }
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

async function main() {
  const size = benchBytes();
  const rounds = benchRounds();
  const file = randomFile(size);
  const server = await startServer();
  const browser = await launchBrowser();
  try {
    const times = { foreground: [], background: [] };
    // A first, untimed upload warms the server, the page cache and the browser.
    await uploadOnce(browser, server.origin, file.path, false);
    for (let round = 0; round < rounds; round++) {
      // Alternate which side goes first, so neither always runs on a warmer machine.
      for (const hidden of round % 2 === 0 ? [true, false] : [false, true]) {
        const ms = await uploadOnce(browser, server.origin, file.path, hidden);
        log(`background: round ${round}: ${hidden ? "hidden " : "in front"} ${(ms / 1000).toFixed(2)} s`);
        times[hidden ? "background" : "foreground"].push(ms);
      }
    }
    const mbps = (ms) => size / 1e6 / (ms / 1000);
    const [background, foreground] = [mbps(median(times.background)), mbps(median(times.foreground))];
    console.log(
      `browser-background: ratio=${(background / foreground).toFixed(3)} background_MBps=${background.toFixed(1)} ` +
        `foreground_MBps=${foreground.toFixed(1)} bytes=${size} rounds=${rounds}`,
    );
  } finally {
    await browser.close();
    await server.stop();
    rmSync(server.dataDir, { recursive: true, force: true });
    rmSync(file.dir, { recursive: true, force: true });
  }
}

await main();
