// The download service worker: streams a decrypted file into the browser's download manager,
// so a download of any size needs only a few MiB of memory, and plays audio and video.
//
// Downloads: the page starts a download fetcher (app/fetcher.js, a dedicated worker that
// fetches and decrypts the parts), posts this worker a job ({token, name, size}) with two
// MessagePorts (events to the page; the fetcher's feed), then opens /stream/<token> in a hidden
// frame. This worker answers that request with a ReadableStream of the plaintext parts the
// feed brings, in one piece each (large writes, ~4 MiB), asking the fetcher for one more as it
// takes each. Its own thread does nothing else, so it refills the download manager's pipe as
// fast as that drains (see fetcher.js for the figures). Progress, retries, success and failure
// go back through the page's port. A truncated or tampered body errors the stream, so the
// browser marks the download failed instead of saving a damaged file.
//
// It also plays audio and video in the page: the page registers a media job and points a
// player at /media/<token>; each range request is answered from the records it covers.
//
// Event listeners must be added during this script's first evaluation, so they are set up
// here in JavaScript; the wasm loads in the background (media awaits it).

importScripts("/worker.js");
const wasmReady = wasm_bindgen("/worker_bg.wasm");
const jobs = new Map();

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

/** Files being played in a page: token -> job. Kept while the worker lives (the page pings it). */
const media = new Map();

self.addEventListener("message", (event) => {
  const job = event.data;
  if (job?.type === "ping") return; // Keeps this worker alive during long downloads and playback.
  if (typeof job?.token !== "string") return;
  if (job.type === "download" && event.ports[1]) jobs.set(job.token, job);
  else if (job.type === "media") media.set(job.token, job);
  else return;
  job.port = event.ports[0];
  job.feed = event.ports[1];
  // The page says "abort" when the download fetcher dies (see respond()).
  if (job.port) job.port.onmessage = (message) => (job.abort ? job.abort(message.data) : (job.aborted = message.data));
  job.port?.postMessage({ type: "registered" });
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (url.origin !== self.location.origin) return;
  if (url.pathname.startsWith("/media/")) {
    const job = media.get(url.pathname.slice("/media/".length));
    event.respondWith(job ? play(job, event.request.headers.get("Range")) : new Response("", { status: 404 }));
    return;
  }
  if (!url.pathname.startsWith("/stream/")) return;
  const job = jobs.get(url.pathname.slice("/stream/".length));
  if (!job) {
    event.respondWith(new Response("This download has expired. Go back and start it again.", { status: 404 }));
    return;
  }
  jobs.delete(job.token);
  event.respondWith(respond(job));
});

/** RFC 6266 attachment header; the file name travels only as UTF-8 percent-encoding. */
function disposition(name) {
  const encoded = encodeURIComponent(name).replace(/['()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
  return `attachment; filename="download"; filename*=UTF-8''${encoded}`;
}

/** Frees `buffer`'s bytes now, not at the next garbage collection (ES2024 `transfer(0)`). */
const release = (buffer) => buffer.byteLength && buffer.transfer?.(0);

/**
 * The response for a download job: the plaintext parts `job.feed` brings (see fetcher.js),
 * queued one at a time, each answered with "more" once taken.
 */
function respond(job) {
  const report = (message) => job.port?.postMessage(message);
  const arrived = [];
  let wake = () => {};
  const arrive = (message) => {
    if (message?.type === "retrying" || message?.type === "resumed") report(message);
    else arrived.push(message);
    wake();
  };
  job.feed.onmessage = (event) => arrive(event.data);
  // What the page sends when the fetcher dies: the stream then fails like any other failure.
  job.abort = (message) => arrive({ type: "failed", damaged: false, message: message?.message });
  if (job.aborted) job.abort(job.aborted);
  let done = 0;
  let written = 0;
  const stream = new ReadableStream(
    {
      async pull(controller) {
        while (!arrived.length) await new Promise((resolve) => (wake = resolve));
        const message = arrived.shift();
        try {
          if (message?.type === "part") {
            done += 1;
            written += message.data.length;
            // A copy made here, and the fetcher's buffer freed at once: this worker's garbage
            // collector does not count buffers made in another thread, so it let them pile up
            // (measured in a 1 GiB download: 154 MiB; 78 MiB with copies and the fetcher's BYOB reads).
            if (message.data.length) controller.enqueue(message.data.slice());
            release(message.data.buffer);
            job.feed.postMessage({ type: "more" });
            report({ type: "progress", part: done, written });
          } else if (message?.type === "end") {
            written += message.data.length;
            if (written !== job.size) throw new Error("the file is shorter or longer than its details say");
            if (message.data.length) controller.enqueue(message.data);
            controller.close();
            report({ type: "done", written });
          } else {
            throw Object.assign(new Error(message?.message ?? "the download fetcher stopped"), { network: !message?.damaged });
          }
        } catch (error) {
          report({ type: "failed", damaged: !error?.network, message: String(error?.message ?? error) });
          controller.error(error);
        }
      },
      cancel() {
        job.feed.postMessage({ type: "cancel" });
      },
    },
    // One plaintext part queued here, at most two more on their way from the fetcher: memory
    // stays at a few parts whatever the file's size.
    { highWaterMark: 1 },
  );
  return new Response(stream, {
    headers: {
      "Content-Type": "application/octet-stream",
      "Content-Disposition": disposition(job.name),
      "Content-Length": String(job.size),
      "Cache-Control": "no-store",
    },
  });
}

/** The longest plaintext span one media response carries; players ask again for the rest. */
const MEDIA_CHUNK = 4 * 1024 * 1024;

/** Bytes `start..=end` of the ciphertext body, through the ticket-gated content endpoint. */
async function fetchBody(job, start, end) {
  const response = await fetch(`/api/v1/files/${job.id}/content`, {
    headers: { Authorization: `Bearer ${job.ticket}`, Range: `bytes=${start}-${end}` },
    cache: "no-store",
  });
  if (response.status !== 206) throw new Error(`the server answered ${response.status} to a range request`);
  return new Uint8Array(await response.arrayBuffer());
}

/**
 * Answers a player's range request: only the records covering the range are fetched and
 * decrypted (`MediaReader`, which checks every record's place in the file, so a server cannot
 * move, drop or end records unnoticed).
 */
async function play(job, rangeHeader) {
  try {
    await wasmReady;
    if (!job.reader) {
      const header = await fetchBody(job, 0, Math.min(job.bodySize, 21 + 255) - 1);
      job.reader = new wasm_bindgen.MediaReader(job.ikm, header, job.bodySize);
    }
    const base = { "Content-Type": job.mime || "application/octet-stream", "Accept-Ranges": "bytes", "Cache-Control": "no-store" };
    if (job.size === 0) return new Response(new Uint8Array(0), { status: 200, headers: base });
    const match = /^bytes=(\d*)-(\d*)$/.exec(rangeHeader ?? "bytes=0-");
    let start = match && match[1] !== "" ? Number(match[1]) : null;
    let end = match && match[2] !== "" ? Number(match[2]) : null;
    if (start === null && end !== null) [start, end] = [Math.max(0, job.size - end), job.size - 1];
    if (!match || start === null || start >= job.size || (end !== null && end < start)) {
      return new Response("", { status: 416, headers: { ...base, "Content-Range": `bytes */${job.size}` } });
    }
    end = Math.min(end ?? job.size - 1, job.size - 1, start + MEDIA_CHUNK - 1);
    const chunk = job.reader.chunk_len();
    const first = Math.floor(start / chunk);
    const last = Math.floor(end / chunk);
    const [from, to] = job.reader.body_range(first, last);
    const plaintext = job.reader.open(first, await fetchBody(job, from, to - 1));
    const body = plaintext.subarray(start - first * chunk, end - first * chunk + 1);
    return new Response(body, {
      status: 206,
      headers: { ...base, "Content-Range": `bytes ${start}-${end}/${job.size}`, "Content-Length": String(body.length) },
    });
  } catch (error) {
    return new Response(`This part of the file could not be decrypted: ${error?.message ?? error}`, { status: 502 });
  }
}
