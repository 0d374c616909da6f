// Test harness: starts the real `bitstratus-server` on a free loopback port with a fresh data
// directory, and the system's Chromium (headless) through playwright-core.
// `cargo xtask test` sets BITSTRATUS_SERVER, BITSTRATUS_STATIC_DIR and CHROMIUM.

import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the end-to-end tests through \`cargo xtask test\``);
  return value;
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Starts the server on `port` with `dataDir`; resolves once it answers HTTP. */
async function spawnServer(port, dataDir) {
  const origin = `http://127.0.0.1:${port}`;
  const child = spawn(
    required("BITSTRATUS_SERVER"),
    ["--listen", `127.0.0.1:${port}`, "--data-dir", dataDir, "--static-dir", required("BITSTRATUS_STATIC_DIR")],
    { stdio: ["ignore", "inherit", "inherit"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" } },
  );
  const exited = new Promise((resolve) => child.once("exit", resolve));
  let code = null;
  exited.then((c) => (code = c ?? "a signal"));
  for (let i = 0; ; i++) {
    if (code !== null) throw new Error(`bitstratus-server exited with ${code} before answering`);
    if (i === 300) throw new Error("bitstratus-server did not answer within 30 s");
    try {
      if ((await fetch(`${origin}/`)).ok) break;
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    pid: child.pid,
    async stop() {
      if (code === null) child.kill("SIGKILL");
      await exited;
    },
  };
}

/**
 * Starts the server on a free port with a fresh data directory. `restart()` kills it (no
 * graceful shutdown, as a crash would) and starts it again on the same port and data.
 */
export async function startServer() {
  const dataDir = mkdtempSync(join(tmpdir(), "bitstratus-e2e-"));
  const port = await freePort();
  let process = await spawnServer(port, dataDir);
  return {
    origin: `http://127.0.0.1:${port}`,
    dataDir,
    /** The running server's process id (it changes on `restart()`). */
    get pid() {
      return process.pid;
    },
    async restart() {
      await process.stop();
      process = await spawnServer(port, dataDir);
    },
    async stop() {
      await process.stop();
    },
  };
}

/** Launches headless Chromium with the flags proven on this kind of machine, and `extraArgs`. */
export async function launchBrowser(extraArgs = []) {
  return chromium.launch({
    executablePath: required("CHROMIUM"),
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      ...extraArgs,
    ],
  });
}

/**
 * A fresh browser context (its own profile: no shared storage) with one page that records
 * console errors and uncaught exceptions, so CSP violations and panics fail the test.
 */
export async function freshPage(browser) {
  const context = await browser.newContext({ acceptDownloads: true });
  const page = await context.newPage();
  const problems = [];
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console error: ${message.text()} at ${message.location().url}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  return { context, page, problems };
}

/** Writes `bytes` to a new temporary file called `name`; returns its path. */
export function tempFile(name, bytes) {
  const dir = mkdtempSync(join(tmpdir(), "bitstratus-file-"));
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

/** Every regular file under `dir`, recursively. */
export function filesUnder(dir) {
  const out = [];
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    const stat = statSync(path);
    if (stat.isDirectory()) out.push(...filesUnder(path));
    else if (stat.isFile()) out.push(path);
  }
  return out;
}

/** The stored files under `dir` that contain `needle` (a Buffer), as paths. */
export function filesContaining(dir, needle) {
  return filesUnder(dir).filter((path) => readFileSync(path).includes(needle));
}

/**
 * A TCP proxy in front of `target` (an origin such as the server's) that plays a bad network:
 * it limits the speed of responses to `bytesPerSecond` (all connections together), records
 * each request's head, and on `cutMidResponse(bytes, pathPrefix)` drops the first connection
 * whose response to a request for a path under `pathPrefix` passes `bytes`, mid-body, as a
 * lost connection would. The browser talks to `origin`, a different port of 127.0.0.1.
 */
export async function startProxy(target, { bytesPerSecond }) {
  const { port: targetPort } = new URL(target);
  const requests = [];
  const sockets = new Set();
  let cut = null;
  let nextFree = 0;
  const server = createServer((client) => {
    const upstream = connect(Number(targetPort), "127.0.0.1");
    sockets.add(client).add(upstream);
    const close = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    let path = "";
    let sent = 0;
    client.on("data", (chunk) => {
      const head = /^([A-Z]+) (\S+) HTTP\/1\.1\r\n/.exec(chunk.toString("latin1", 0, 2048));
      if (head) {
        const text = chunk.toString("latin1", 0, Math.max(0, chunk.indexOf("\r\n\r\n")));
        requests.push({ method: head[1], path: head[2], head: text.toLowerCase() });
        path = head[2];
        sent = 0;
      }
      upstream.write(chunk);
    });
    upstream.on("data", (chunk) => {
      const armed = cut && path.startsWith(cut.pathPrefix) && sent + chunk.length > cut.bytes ? cut : null;
      if (armed) cut = null;
      const piece = armed ? chunk.subarray(0, armed.bytes - sent) : chunk;
      sent += piece.length;
      const now = Date.now();
      nextFree = Math.max(now, nextFree) + (piece.length * 1000) / bytesPerSecond;
      upstream.pause();
      setTimeout(() => {
        if (armed) {
          client.write(piece, close);
          armed.resolve({ path });
          return;
        }
        client.write(piece);
        upstream.resume();
      }, nextFree - now);
    });
    client.on("error", close).on("close", close);
    upstream.on("error", close).on("close", close);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    origin: `http://127.0.0.1:${server.address().port}`,
    /** Every request head seen so far: `{method, path, head}` (`head` lower-cased). */
    requests,
    /** Resolves with `{path}` once a response under `pathPrefix` was cut after `bytes`. */
    cutMidResponse(bytes, pathPrefix) {
      return new Promise((resolve) => {
        cut = { bytes, pathPrefix, resolve };
      });
    },
    async stop() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
