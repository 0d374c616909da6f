// End to end through the real UI: upload in one browser profile, open the share link in
// another, download and compare bytes; passwords, missing and wrong keys, expiry, deletion;
// and finally the zero-knowledge check over everything the server stored.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { filesContaining, freshPage, launchBrowser, startProxy, startServer, tempFile } from "./harness.mjs";

const MiB = 1024 * 1024;
const GONE = "This file is not available";

let server;
let browser;
/** Everything that must never reach the server, collected as the tests run. */
const secrets = [];

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/**
 * Uploads `paths` through the upload page; returns `[{share, manage}]` in order. `on` is the
 * browser and `origin` the address the page is opened at (by default the shared browser and
 * the server's loopback address); with `copy`, the first link's copy button must say "Copied".
 */
async function upload(
  paths,
  {
    password = "",
    expiry = null,
    limit = null,
    prepare = null,
    expected = null,
    on = browser,
    origin = server.origin,
    copy = false,
  } = {},
) {
  const { context, page, problems } = await freshPage(on);
  const workers = [];
  page.on("worker", (worker) => workers.push(new URL(worker.url()).pathname));
  if (prepare) await prepare(page);
  await page.goto(origin + "/");
  await page.setInputFiles("#file-input", paths);
  if (password) await page.fill("#password", password);
  if (expiry) await page.selectOption("#expiry", String(expiry));
  if (limit) await page.selectOption("#limit", String(limit));
  await page.click("#upload");
  await page.waitForFunction(
    (n) => document.querySelectorAll(".share-link").length === n || document.querySelector(".job .error"),
    paths.length,
    { timeout: 300_000 },
  );
  const failure = await page.$(".job .error");
  assert.equal(failure && (await failure.textContent()), null, "an upload failed");
  if (copy) {
    await page.click(".copy");
    await page.waitForFunction(() => document.querySelector(".copy").textContent !== "Copy link");
    assert.equal(await page.textContent(".copy"), "Copied", "the copy button copied the share link");
  }
  const shares = await page.$$eval(".share-link", (inputs) => inputs.map((i) => i.value));
  const manages = await page.$$eval(".manage-link", (inputs) => inputs.map((i) => i.value));
  assert.equal(await page.locator(".qr svg").count(), paths.length, "each upload shows a QR code");
  assert.ok(workers.includes("/worker_loader.js"), "parts are encrypted in crypto workers, off the main thread");
  assert.deepEqual(expected ? problems.filter((p) => !expected.test(p)) : problems, []);
  await context.close();
  for (const link of [...shares, ...manages]) {
    for (const part of new URL(link).hash.slice(1).split(".")) secrets.push(part);
  }
  return shares.map((share, i) => ({ share, manage: manages[i] }));
}

/** Opens a share link in a fresh profile (of browser `on`); returns the page once it settled. */
async function open(link, on = browser) {
  const session = await freshPage(on);
  const response = await session.page.goto(link);
  await session.page.waitForSelector(".file-name, .error, #download-password");
  return { ...session, response };
}

async function downloadBytes(page) {
  const [download] = await Promise.all([page.waitForEvent("download", { timeout: 300_000 }), page.click("#download")]);
  await page.waitForSelector("#saved");
  return { name: download.suggestedFilename(), bytes: readFileSync(await download.path()) };
}

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

test("three files (small, 50 MiB, empty) round-trip through the browser, byte-identical, under their names", async () => {
  const small = Buffer.from("Zero knowledge: the server never reads this sentence.\n".repeat(40));
  const big = randomBytes(50 * MiB + 12345);
  const smallName = "notes <img src=x onerror=alert(1)> été ✓.txt";
  const bigName = "archive.bin";
  const links = await upload([tempFile(smallName, small), tempFile(bigName, big), tempFile("empty.txt", Buffer.alloc(0))], {
    copy: true,
  });

  for (const [link, name, bytes, type] of [
    [links[0].share, smallName, small, "text/plain"],
    [links[1].share, bigName, big, "application/octet-stream"],
    [links[2].share, "empty.txt", Buffer.alloc(0), "text/plain"],
  ]) {
    const { context, page, problems, response } = await open(link);
    const headers = response.headers();
    assert.match(headers["content-security-policy"], /script-src 'self' 'wasm-unsafe-eval' 'sha256-/);
    assert.equal(headers["referrer-policy"], "no-referrer");
    assert.equal(new URL(page.url()).hash, "", "the key is removed from the address bar");
    assert.equal(await page.textContent(".file-name"), name, "the name is shown as text, decrypted");
    assert.match(await page.textContent(".file-type"), new RegExp(type.split("/")[0]));
    const got = await downloadBytes(page);
    // Chromium replaces characters that are unsafe in file names (here `<` and `>`) with `_`.
    assert.equal(got.name, name.replace(/[<>]/g, "_"));
    assert.equal(got.bytes.length, bytes.length);
    assert.equal(sha256(got.bytes), sha256(bytes), `${name} downloads byte-identical`);
    assert.deepEqual(problems, []);
    await context.close();
  }
  secrets.push(smallName, bigName, small.subarray(0, 64), big.subarray(1000, 1064), big.subarray(40 * MiB, 40 * MiB + 64));
});

test("an image previews inline after decryption", async () => {
  // A 1x1 PNG.
  const png = Buffer.from(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360f80f0000010101005a4d6a2a0000000049454e44ae426082",
    "hex",
  );
  const [{ share }] = await upload([tempFile("pixel.png", png)]);
  const { context, page, problems } = await open(share);
  const got = await downloadBytes(page);
  assert.equal(sha256(got.bytes), sha256(png));
  const width = await page.$eval("img.preview", (img) => img.complete && img.naturalWidth);
  assert.equal(width, 1, "the decrypted image is shown");
  assert.deepEqual(problems, []);
  await context.close();
});

test("a password link refuses the wrong password and opens with the right one", async () => {
  const content = Buffer.from("password-protected content 7f3a\n");
  const password = "correct horse battery staple";
  const [{ share }] = await upload([tempFile("secret-plan.txt", content)], { password });
  secrets.push(password, "secret-plan.txt");

  const { context, page, problems } = await open(share);
  await page.fill("#download-password", "wrong password");
  await page.click("#unlock");
  await page.waitForSelector(".error");
  assert.match(await page.textContent(".error"), /Wrong password/);

  await page.fill("#download-password", password);
  await page.click("#unlock");
  await page.waitForSelector(".file-name");
  assert.equal(await page.textContent(".file-name"), "secret-plan.txt");
  const got = await downloadBytes(page);
  assert.equal(got.bytes.toString(), content.toString());
  // The wrong password's 401 from /metadata is logged by Chromium by design; nothing else may be.
  assert.deepEqual(problems.filter((p) => !/status of 401 .* at http:\/\/[^ ]+\/metadata$/.test(p)), []);
  await context.close();
});

test("missing and wrong keys get clear messages", async () => {
  const [{ share }] = await upload([tempFile("keyed.txt", Buffer.from("keyed"))]);
  const url = new URL(share);

  let session = await open(url.origin + url.pathname);
  assert.match(await session.page.textContent(".error"), /missing its key/);
  await session.context.close();

  const otherKey = randomBytes(32).toString("base64url");
  session = await open(`${url.origin}${url.pathname}#${otherKey}`);
  assert.match(await session.page.textContent(".error"), /key does not match/);
  await session.context.close();

  session = await open(`${url.origin}${url.pathname}#not-a-key`);
  assert.match(await session.page.textContent(".error"), /damaged/);
  await session.context.close();
});

test("an expired link, an exhausted link and a deleted file say the file is not available", async () => {
  const links = await upload([tempFile("expiring.txt", Buffer.from("soon gone")), tempFile("deleted.txt", Buffer.from("bye"))]);
  const limited = await upload([tempFile("once.txt", Buffer.from("only once"))], { limit: 1 });

  // Expiry: move the file's expiry into the past, as time passing would.
  const id = new URL(links[0].share).pathname.split("/").pop();
  execFileSync("python3", [
    "-c",
    "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('UPDATE files SET expires_at = 1 WHERE id = ?', (sys.argv[2],)); c.commit()",
    join(server.dataDir, "bitstratus.db"),
    id,
  ]);
  let session = await open(links[0].share);
  assert.match(await session.page.textContent(".error"), new RegExp(GONE));
  await session.context.close();

  // Download limit: the first download works, the next visitor is told it is gone.
  session = await open(limited[0].share);
  assert.equal((await downloadBytes(session.page)).bytes.toString(), "only once");
  await session.context.close();
  session = await open(limited[0].share);
  assert.match(await session.page.textContent(".error"), new RegExp(GONE));
  await session.context.close();

  // Deletion through the private manage link.
  session = await freshPage(browser);
  await session.page.goto(links[1].manage);
  await session.page.waitForSelector(".file-name");
  assert.equal(await session.page.textContent(".file-name"), "deleted.txt");
  assert.equal(new URL(session.page.url()).hash, "", "the owner token is removed from the address bar");
  await session.page.click("#delete");
  await session.page.waitForSelector("#deleted");
  await session.context.close();
  session = await open(links[1].share);
  assert.match(await session.page.textContent(".error"), new RegExp(GONE));
  await session.context.close();
});

test("a dropped part upload is retried and the file arrives intact", async () => {
  const bytes = randomBytes(9 * MiB);
  let dropped = 0;
  const [{ share }] = await upload([tempFile("flaky.bin", bytes)], {
    prepare: (page) =>
      page.route("**/parts/1", (route) => {
        if (route.request().method() === "PUT" && dropped++ === 0) return route.abort("connectionreset");
        return route.continue();
      }),
    expected: /ERR_CONNECTION_RESET at http:\/\/[^ ]+\/parts\/1$/,
  });
  assert.equal(dropped, 2, "part 1 was dropped once, then sent again");
  const { context, page } = await open(share);
  assert.equal(sha256((await downloadBytes(page)).bytes), sha256(bytes));
  await context.close();
});

for (const [how, crash] of [
  ["fails with an uncaught error", "throw new Error(\"injected worker crash\")"],
  ["goes silent", "/* swallowed: no answer, no error */"],
]) {
  test(`a crypto worker that ${how} mid-upload is replaced and its part encrypted again`, async () => {
    const bytes = randomBytes(9 * MiB);
    const isCrypto = (worker) => worker.url().endsWith("/worker_loader.js");
    let started = 0;
    let pool = 0;
    const [{ share }] = await upload([tempFile("crash.bin", bytes)], {
      prepare: (page) => {
        page.on("worker", (worker) => (started += isCrypto(worker)));
        // Once the workers are up (the pool starts before the file is created), the first one
        // is made to swallow its next job and then fail or say nothing.
        return page.route("**/api/v1/files", async (route) => {
          const workers = page.workers().filter(isCrypto);
          pool = workers.length;
          await workers[0].evaluate(`{
            const serve = self.onmessage;
            self.onmessage = () => {
              self.onmessage = serve;
              ${crash};
            };
          }`);
          return route.continue();
        });
      },
      expected: /injected worker crash/,
    });
    assert.ok(pool > 0, "the crypto workers were running when the file was created");
    assert.equal(started, pool + 1, "one fresh worker replaced the lost one");
    const { context, page } = await open(share);
    assert.equal(sha256((await downloadBytes(page)).bytes), sha256(bytes));
    await context.close();
  });
}

test("an interrupted download resumes from the failed part without counting again", async () => {
  const bytes = randomBytes(13 * MiB);
  const [{ share }] = await upload([tempFile("resumable.bin", bytes)], { limit: 1 });
  const { context, page } = await open(share);
  let refused = 0;
  // A proxy refuses part 2 once with an error that is not worth retrying automatically.
  await page.route("**/parts/2", (route) =>
    refused++ === 0 ? route.fulfill({ status: 400, body: "refused by proxy" }) : route.continue(),
  );
  await page.click("#download");
  await page.waitForSelector("#resume");
  assert.match(await page.textContent(".error"), /download stopped/);
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#resume")]);
  await page.waitForSelector("#saved");
  assert.equal(sha256(readFileSync(await download.path())), sha256(bytes));
  await context.close();
});

test("the manage page changes the download limit and rejects a malformed one", async () => {
  const [{ share, manage }] = await upload([tempFile("managed.txt", Buffer.from("managed"))], { limit: 1 });
  const session = await freshPage(browser);
  await session.page.goto(manage);
  await session.page.waitForSelector("#manage-limit");
  assert.equal(await session.page.inputValue("#manage-limit"), "1");
  await session.page.fill("#manage-limit", "two");
  await session.page.click("#save");
  await session.page.waitForSelector(".notice");
  assert.match(await session.page.textContent(".notice"), /whole number/);
  await session.page.fill("#manage-limit", "2");
  await session.page.click("#save");
  await session.page.waitForFunction(() => document.querySelector(".notice")?.textContent === "Saved.");
  assert.match(await session.page.textContent(".file-facts"), /of 2/);
  await session.context.close();

  // Two downloads now work; the third visitor is told the file is gone.
  for (let i = 0; i < 2; i++) {
    const { context, page } = await open(share);
    assert.equal((await downloadBytes(page)).bytes.toString(), "managed");
    await context.close();
  }
  const { context, page } = await open(share);
  assert.match(await page.textContent(".error"), new RegExp(GONE));
  await context.close();
});

/**
 * Starts uploading `path` in `page` with every part from `failFrom` on refused (so the upload
 * stops with an error after the earlier parts are stored); returns how many parts got stored.
 */
async function failedAttempt(page, path, failFrom) {
  let stored = 0;
  let earlierStored;
  const allEarlierStored = new Promise((resolve) => (earlierStored = resolve));
  // Later parts are refused only once every earlier part is stored, so the attempt always
  // leaves parts 0..failFrom-1 on the server, whatever order the parts finish in.
  const refuse = async (route) => {
    if (Number(new URL(route.request().url()).pathname.split("/").pop()) < failFrom) return route.continue();
    await allEarlierStored;
    return route.fulfill({
      status: 400,
      contentType: "application/json",
      body: '{"error":{"code":"refused","message":"refused by the test"}}',
    });
  };
  await page.route("**/parts/*", refuse);
  const count = (response) => {
    if (response.request().method() === "PUT" && response.status() === 200 && ++stored === failFrom) earlierStored();
  };
  page.on("response", count);
  await page.goto(server.origin + "/");
  await page.setInputFiles("#file-input", path);
  await page.click("#upload");
  await page.waitForSelector(".job .error", { timeout: 120_000 });
  page.off("response", count);
  await page.unroute("**/parts/*", refuse);
  return stored;
}

test("an upload interrupted by a server crash resumes after a page reload, sending only the missing parts", async () => {
  // 18 parts, 17 of them stored by the first attempt: their plaintext hashes span two of the
  // browser's record blocks (16 parts each, app/src/resume.rs), and resuming needs them all.
  const bytes = randomBytes(71 * MiB);
  const path = tempFile("resume-me.bin", bytes);
  const { context, page } = await freshPage(browser);
  const stored = await failedAttempt(page, path, 17);
  assert.equal(stored, 17, "the first attempt stored parts 0 to 16");

  await server.restart();
  await page.reload();
  const sent = [];
  page.on("request", (request) => {
    if (request.method() === "PUT") sent.push(Number(new URL(request.url()).pathname.split("/").pop()));
  });
  await page.setInputFiles("#file-input", path);
  await page.click("#upload");
  await page.waitForSelector(".share-link", { timeout: 120_000 });
  const parts = Math.ceil(bytes.length / (64 * 65519));
  assert.equal(sent.length, parts - stored, `only the ${parts - stored} missing parts were sent (sent ${sent})`);
  assert.deepEqual(sent, [17], "stored parts are not sent again");
  const share = await page.inputValue(".share-link");
  await context.close();

  const recipient = await open(share);
  assert.equal(sha256((await downloadBytes(recipient.page)).bytes), sha256(bytes));
  await recipient.context.close();
});

test("resuming a file that changed since the first attempt is refused, then it uploads anew", async () => {
  const bytes = randomBytes(20 * MiB);
  const path = tempFile("changing.bin", bytes);
  // A whole-second modification time, so that restoring it later is exact to the millisecond.
  const mtime = new Date(1_700_000_000_000);
  utimesSync(path, mtime, mtime);
  const { context, page } = await freshPage(browser);
  await failedAttempt(page, path, 2);

  // Same name, size and modification time, different bytes in part 0, which the server holds.
  const changed = Buffer.from(bytes);
  changed.fill(0x55, 1 * MiB, 2 * MiB);
  writeFileSync(path, changed);
  utimesSync(path, mtime, mtime);
  await page.reload();
  await page.setInputFiles("#file-input", path);
  await page.click("#upload");
  await page.waitForSelector(".job .error, .share-link", { timeout: 120_000 });
  assert.match(await page.textContent(".job"), /changed since the earlier upload attempt/);

  // Chosen again, it is a new upload (new key) and arrives intact.
  await page.reload();
  await page.setInputFiles("#file-input", path);
  await page.click("#upload");
  await page.waitForSelector(".share-link", { timeout: 120_000 });
  const share = await page.inputValue(".share-link");
  await context.close();
  const recipient = await open(share);
  assert.equal(sha256((await downloadBytes(recipient.page)).bytes), sha256(changed));
  await recipient.context.close();
});

test("a file deleted from disk mid-upload stops with a message that says so", async () => {
  const bytes = randomBytes(24 * MiB);
  const path = tempFile("vanishing.bin", bytes);
  const { context, page } = await freshPage(browser);
  // The file is deleted while part 1 is on its way: the crypto workers, which read each part
  // from the file themselves, cannot read the later parts.
  await page.route("**/parts/1", (route) => {
    if (route.request().method() === "PUT") rmSync(path, { force: true });
    return route.continue();
  });
  await page.goto(server.origin + "/");
  await page.setInputFiles("#file-input", path);
  await page.click("#upload");
  await page.waitForSelector(".job .error, .share-link", { timeout: 120_000 });
  assert.match(await page.textContent(".job"), /could not read the file \(was it moved or deleted\?\)/);
  await context.close();
});

test("a large file streams to disk through the service worker, byte-identical", async () => {
  const bytes = randomBytes(100 * MiB + 777);
  const [{ share }] = await upload([tempFile("streamed.bin", bytes)]);
  const { context, page, problems } = await open(share);
  const streams = [];
  page.on("request", (request) => {
    if (new URL(request.url()).pathname.startsWith("/stream/")) streams.push(request.url());
  });
  const fetchers = [];
  page.on("worker", (worker) => worker.url().endsWith("/fetcher.js") && fetchers.push(worker));
  const got = await downloadBytes(page);
  assert.equal(streams.length, 1, "the file went through the streaming service worker");
  assert.equal(fetchers.length, 1, "a download fetcher fetched and decrypted it");
  assert.equal(got.name, "streamed.bin");
  assert.equal(sha256(got.bytes), sha256(bytes));
  assert.deepEqual(problems, []);
  await context.close();
  secrets.push("streamed.bin", bytes.subarray(70 * MiB, 70 * MiB + 64));
});

test("over plain http to a LAN name (no WebCrypto, no service worker) files round-trip, a large one without its bytes in the page", async () => {
  // A name that is not localhost makes an insecure context even on loopback, as a LAN address
  // would: no crypto.subtle (the wasm AES-GCM engine works alone) and no service worker (so no
  // streaming to disk: every download is decrypted in the page).
  const lan = await launchBrowser(["--host-resolver-rules=MAP bitstratus-lan.test 127.0.0.1"]);
  try {
    const origin = server.origin.replace("127.0.0.1", "bitstratus-lan.test");
    // Chromium says, as a console error, that it ignores the COOP header on plain http.
    const insecure = /Cross-Origin-Opener-Policy header has been ignored/;
    const small = randomBytes(3 * MiB + 11);
    const large = randomBytes(160 * MiB + 5);
    const links = await upload([tempFile("lan-clip.mp3", small), tempFile("lan-large.bin", large)], {
      on: lan,
      origin,
      expected: insecure,
      // No Clipboard API over plain http: the button falls back to the copy command.
      copy: true,
    });
    for (const [{ share }, bytes, name] of [
      [links[0], small, "lan-clip.mp3"],
      [links[1], large, "lan-large.bin"],
    ]) {
      assert.ok(share.startsWith(`${origin}/d/`), `the link names the address the page was opened at: ${share}`);
      const { context, page, problems } = await open(share, lan);
      assert.deepEqual(
        await page.evaluate(() => [isSecureContext, "serviceWorker" in navigator, !!globalThis.crypto?.subtle]),
        [false, false, false],
        "the page is an insecure context, without service workers or WebCrypto",
      );
      assert.equal(await page.locator("#download").count(), 1, "the download page opened");
      // Playing in the page needs the service worker: not offered, even for audio.
      assert.equal(await page.locator("#play").count(), 0, `${name}: no "Play here" without a service worker`);
      // The page's JS heap and ArrayBuffers, sampled while it downloads: decrypted parts go
      // into blobs at once, so they never add up to the file in the page.
      const cdp = await context.newCDPSession(page);
      let peak = 0;
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          const { usedSize, backingStorageSize } = await cdp.send("Runtime.getHeapUsage");
          peak = Math.max(peak, usedSize + backingStorageSize);
          await new Promise((r) => setTimeout(r, 100));
        }
      })();
      const got = await downloadBytes(page).finally(() => (sampling = false));
      await sampler;
      assert.equal(got.name, name);
      assert.equal(sha256(got.bytes), sha256(bytes), `${name} arrives byte-identical`);
      if (bytes === large) {
        assert.ok(peak < 96 * MiB, `the page held ${(peak / MiB).toFixed(0)} MiB at most while decrypting 160 MiB`);
        console.log(`# 160 MiB over plain http: page JS memory peak ${(peak / MiB).toFixed(1)} MiB`);
      }
      assert.deepEqual(problems.filter((p) => !insecure.test(p)), []);
      await context.close();
    }
    secrets.push("lan-clip.mp3", "lan-large.bin", large.subarray(100 * MiB, 100 * MiB + 64));
  } finally {
    await lan.close();
  }
});

test("a streamed download whose fetcher cannot start fails with a message and saves nothing", async () => {
  const bytes = randomBytes(64 * MiB + 5);
  const [{ share }] = await upload([tempFile("unfetched.bin", bytes)]);
  // The fetcher's script is missing (as after a bad deployment): the page starts it from a
  // URL that does not exist.
  const { context, page } = await freshPage(browser);
  await page.addInitScript(() => {
    const Real = self.Worker;
    self.Worker = class extends Real {
      constructor(url, options) {
        super(String(url).endsWith("/fetcher.js") ? "/no-such-fetcher.js" : url, options);
      }
    };
  });
  await page.goto(share);
  await page.waitForSelector("#download");
  const downloads = [];
  page.on("download", (download) => downloads.push(download));
  await page.click("#download");
  await page.waitForSelector(".error", { timeout: 60_000 });
  assert.match(await page.textContent(".error"), /The download stopped \(the download worker stopped\)/);
  for (const download of downloads) assert.ok(await download.failure(), "no file is saved as complete");
  await context.close();
});

test("a streamed download survives a dropped connection and a server restart, continuing where it stopped", async () => {
  const bytes = randomBytes(70 * MiB + 333);
  const [{ share }] = await upload([tempFile("survivor.bin", bytes)]);
  // The recipient reaches the server through a slow, unreliable network.
  const proxy = await startProxy(server.origin, { bytesPerSecond: 16 * MiB });
  try {
    const { context, page } = await open(share.replace(server.origin, proxy.origin));
    const id = new URL(share).pathname.split("/").pop();
    const downloaded = page.waitForEvent("download", { timeout: 300_000 });
    const reconnecting = page.waitForSelector(".notice", { timeout: 120_000 });
    const cutAt = 1536 * 1024;
    const cut = proxy.cutMidResponse(cutAt, `/api/v1/files/${id}/parts/`);
    await page.click("#download");
    const { path } = await cut;
    // The server goes away meanwhile too, and comes back on the same port and data.
    await server.restart();
    assert.match(await (await reconnecting).textContent(), /Connection lost; reconnecting/);
    const download = await downloaded;
    await page.waitForSelector("#saved", { timeout: 300_000 });
    assert.equal(download.suggestedFilename(), "survivor.bin");
    assert.equal(sha256(readFileSync(await download.path())), sha256(bytes), "byte-identical after the failures");

    // The cut part was not fetched again from its start: the rest came as a byte range from
    // where the cut left it.
    const n = Number(path.split("/").pop());
    const partStart = n === 0 ? 0 : 21 + 64 * 65536 + (n - 1) * 64 * 65536;
    const resumedFrom = proxy.requests
      .filter((r) => r.path === `/api/v1/files/${id}/content`)
      .map((r) => Number(/\nrange: bytes=(\d+)-/.exec(r.head)?.[1]))
      .filter((start) => start > partStart && start < partStart + 64 * 65536);
    assert.ok(resumedFrom.length >= 1, `part ${n} continued from a byte range: ${JSON.stringify(proxy.requests.map((r) => r.path))}`);
    assert.equal(proxy.requests.filter((r) => r.path === path).length, 1, `part ${n} was not fetched again from its start`);
    await context.close();
  } finally {
    await proxy.stop();
  }
  secrets.push("survivor.bin", bytes.subarray(50 * MiB, 50 * MiB + 64));
});

/** A PCM WAV header (mono, 16-bit) for `dataLength` bytes of samples at `rate` Hz. */
function wavHeader(dataLength, rate) {
  const header = Buffer.alloc(44);
  header.write("RIFF", 0);
  header.writeUInt32LE(36 + dataLength, 4);
  header.write("WAVEfmt ", 8);
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20);
  header.writeUInt16LE(1, 22);
  header.writeUInt32LE(rate, 24);
  header.writeUInt32LE(rate * 2, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write("data", 36);
  header.writeUInt32LE(dataLength, 40);
  return header;
}

test("audio plays in the page and seeks, decrypted from only the records it covers", async () => {
  const seconds = 70;
  const rate = 8000;
  const samples = randomBytes(seconds * rate * 2);
  const wav = Buffer.concat([wavHeader(samples.length, rate), samples]);
  const [{ share }] = await upload([tempFile("noise.wav", wav)]);
  const { context, page, problems } = await open(share);
  await page.click("#play");
  await page.waitForSelector("audio.player");
  // Functions, not strings: the page's CSP forbids eval.
  const duration = await page.$eval(
    "audio.player",
    (audio) =>
      new Promise((resolve, reject) => {
        if (audio.readyState >= 1) return resolve(audio.duration);
        audio.addEventListener("loadedmetadata", () => resolve(audio.duration));
        audio.addEventListener("error", () => reject(new Error(`media error ${audio.error?.code}`)));
      }),
  );
  assert.ok(Math.abs(duration - seconds) < 0.5, `the player sees ${duration} s`);
  const position = await page.$eval(
    "audio.player",
    (audio) =>
      new Promise((resolve, reject) => {
        audio.addEventListener("seeked", () => resolve(audio.currentTime));
        audio.addEventListener("error", () => reject(new Error(`media error ${audio.error?.code}`)));
        audio.currentTime = 50;
      }),
  );
  assert.ok(Math.abs(position - 50) < 1, `the player seeked to ${position} s`);

  // Any span, across record boundaries (every 65519 bytes) and up to the end, is the file's.
  const src = await page.$eval("audio.player", (audio) => audio.src);
  for (const [start, end] of [[0, 99], [65_500, 65_600], [131_000, 400_000], [1_000_000, wav.length - 1]]) {
    const got = await page.evaluate(async ([url, start, end]) => {
      const response = await fetch(url, { headers: { Range: `bytes=${start}-${end}` } });
      return { status: response.status, bytes: Array.from(new Uint8Array(await response.arrayBuffer())) };
    }, [src, start, end]);
    assert.equal(got.status, 206);
    assert.ok(Buffer.from(got.bytes).equals(wav.subarray(start, end + 1)), `bytes ${start}-${end} match`);
  }
  assert.deepEqual(problems, []);
  await context.close();
  secrets.push("noise.wav", samples.subarray(500_000, 500_064));
});

/**
 * Runs the `bitstratus` command-line client (built by `cargo xtask test`) with a configuration
 * directory of its own; returns its standard output as bytes.
 */
function cli(args, env = {}) {
  const binary = process.env.BITSTRATUS_CLI;
  assert.ok(binary, "BITSTRATUS_CLI is not set: run the end-to-end tests through `cargo xtask test`");
  const config = mkdtempSync(join(tmpdir(), "bitstratus-cli-"));
  return execFileSync(binary, ["--config-dir", config, ...args], {
    env: { PATH: process.env.PATH, HOME: config, ...env },
    maxBuffer: 64 * MiB,
  });
}

test("a file uploaded with the command-line client opens in the browser, password and all", async () => {
  const bytes = randomBytes(9 * MiB + 123);
  const password = "cli to browser";
  const path = tempFile("from the cli.bin", bytes);
  const report = JSON.parse(cli(["--json", "--server", server.origin, "upload", path], { BITSTRATUS_PASSWORD: password }));
  assert.equal(report.name, "from the cli.bin");
  for (const part of new URL(report.share_link).hash.slice(1).split(".")) secrets.push(part);
  secrets.push(password, "from the cli.bin", bytes.subarray(5 * MiB, 5 * MiB + 64));

  const { context, page } = await open(report.share_link);
  await page.fill("#download-password", password);
  await page.click("#unlock");
  await page.waitForSelector(".file-name");
  assert.equal(await page.textContent(".file-name"), "from the cli.bin");
  const got = await downloadBytes(page);
  assert.equal(got.name, "from the cli.bin");
  assert.equal(sha256(got.bytes), sha256(bytes));
  await context.close();
});

test("a file uploaded in the browser downloads with the command-line client", async () => {
  const bytes = randomBytes(9 * MiB + 321);
  const [{ share }] = await upload([tempFile("from the browser.bin", bytes)]);
  const out = mkdtempSync(join(tmpdir(), "bitstratus-cli-out-"));
  const report = JSON.parse(cli(["--json", "download", share, "-o", out]));
  assert.equal(report.name, "from the browser.bin");
  assert.equal(sha256(readFileSync(join(out, "from the browser.bin"))), sha256(bytes));
  // And to standard output, as a pipe would take it.
  const piped = cli(["download", share, "-o", "-"]);
  assert.equal(sha256(piped), sha256(bytes));
  secrets.push("from the browser.bin", bytes.subarray(7 * MiB, 7 * MiB + 64));
});

test("the server stored no plaintext, no file name, no key and no password", () => {
  assert.ok(secrets.length > 10, "the earlier tests recorded what to look for");
  for (const secret of secrets) {
    const needles = [Buffer.isBuffer(secret) ? secret : Buffer.from(secret)];
    if (typeof secret === "string" && /^[A-Za-z0-9_-]{43}$/.test(secret)) needles.push(Buffer.from(secret, "base64url"));
    for (const needle of needles) {
      assert.deepEqual(filesContaining(server.dataDir, needle), [], `found ${JSON.stringify(String(secret).slice(0, 40))}`);
    }
  }
});
