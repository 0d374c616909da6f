// The download service worker: streams a file from the server, decrypting it on the way, into
// the browser's download manager, so a download of any size needs only a few MiB of memory.
//
// The download page posts a job ({token, id, ticket, ikm, partCount, bodySize, firstPartSize,
// partSize, name, size}) with a MessagePort, then opens /stream/<token> in a hidden frame. This
// worker answers that request with a ReadableStream that fetches parts with the ticket (a few
// ahead), decrypts them in order (`StreamDecryptor` from the worker bundle: WebCrypto, else
// wasm; WebCrypto reads the records straight from the fetched part) and enqueues each part's
// plaintext in one piece (large writes, ~4 MiB). A dropped connection or a
// server restart does not end the download: the part continues from the last byte received
// (see `fetchPart`). Progress, retries, success and failure go back through the port. A
// truncated or tampered body errors the stream, so the browser marks the download failed
// instead of saving a damaged file.
//
// It also plays audio and video in the page: the page registers a media job and points a
// player at /media/<token>; each range request is answered from the records it covers.
//
// Event listeners must be added during this script's first evaluation, so they are set up
// here in JavaScript; the wasm loads in the background and each stream awaits it.

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
  if (job.type === "download") jobs.set(job.token, job);
  else if (job.type === "media") media.set(job.token, job);
  else return;
  job.port = event.ports[0];
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

/** A part that fails this long without receiving a single byte ends the download. */
const GIVE_UP_MS = 10 * 60_000;

/** `[start, end)` of part `n` within the ciphertext body (docs/API.md, "Parts"). */
function partRange(job, n) {
  const start = n === 0 ? 0 : job.firstPartSize + (n - 1) * job.partSize;
  const end = Math.min(n === 0 ? job.firstPartSize : start + job.partSize, job.bodySize);
  return [start, end];
}

/** An error that retrying cannot fix; `damaged` when the server sent wrong bytes. */
const final = (message, damaged) => Object.assign(new Error(message), { final: true, network: !damaged });

/** The length of the largest part: every part's buffer has it, so any one can be reused. */
const partCapacity = (job) => Math.min(job.bodySize, Math.max(job.firstPartSize, job.partSize));

/**
 * Fetches part `n` whole, into a buffer from `spare` if there is one, resiliently: the bytes
 * are kept as they arrive, and after a dropped connection, a server restart or a 5xx the rest
 * is asked for with a byte range from where it stopped (the part's records are verified once
 * complete, so nothing received is wasted or trusted early). It retries with backoff (0.5 s
 * doubling to 30 s) for as long as bytes keep coming, and gives up after GIVE_UP_MS without
 * any; `report` hears of each retry.
 */
async function fetchPart(job, n, report, spare) {
  const [start, end] = partRange(job, n);
  const part = (spare.pop() ?? new Uint8Array(partCapacity(job))).subarray(0, end - start);
  let received = 0;
  let delay = 500;
  let progressAt = Date.now();
  for (let attempt = 1; ; attempt++) {
    try {
      const resumed = received > 0;
      const headers = { Authorization: `Bearer ${job.ticket}` };
      if (resumed) headers.Range = `bytes=${start + received}-${end - 1}`;
      const url = resumed ? `/api/v1/files/${job.id}/content` : `/api/v1/files/${job.id}/parts/${n}`;
      const response = await fetch(url, { headers, cache: "no-store" });
      if (response.status === (resumed ? 206 : 200)) {
        const reader = response.body.getReader();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          if (received + value.length > part.length) throw final(`part ${n + 1} is longer than its file says`, true);
          part.set(value, received);
          received += value.length;
          progressAt = Date.now();
          delay = 500;
        }
        // A body that ends cleanly was cut by the server itself (a dropped one errors above).
        if (received < part.length) throw final(`part ${n + 1} is shorter than its file says`, true);
        if (attempt > 1) report({ type: "resumed" });
        return part;
      } else if (response.status < 500 && response.status !== 408 && response.status !== 429) {
        throw final(`the server refused part ${n + 1} (HTTP ${response.status})`, false);
      }
    } catch (error) {
      if (error.final) throw error;
      // A dropped connection or a server that is not there: try again below.
    }
    if (Date.now() - progressAt >= GIVE_UP_MS) {
      throw Object.assign(new Error(`part ${n + 1} could not be fetched for ${GIVE_UP_MS / 60_000} minutes`), { network: true });
    }
    report({ type: "retrying", part: n, attempt, delay });
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 30_000);
  }
}

/** Parts fetched ahead of the one being decrypted: keeps the network busy meanwhile. */
const PREFETCH = 3;

async function respond(job) {
  await wasmReady;
  const decryptor = new wasm_bindgen.StreamDecryptor(job.ikm);
  const fetches = [];
  // The buffers of parts already decrypted, reused for the next ones: a fresh buffer of a part's
  // size costs the browser more to map and zero than filling it does (measured: ~0.5 s of this
  // worker's time per GiB). At most PREFETCH + 1 exist.
  const spare = [];
  let next = 0;
  const report = (message) => job.port?.postMessage(message);
  const fetchAhead = () => {
    while (next < job.partCount && fetches.length < PREFETCH) {
      const part = fetchPart(job, next++, report, spare);
      part.catch(() => {}); // Awaited in order below; this only silences an abandoned one.
      fetches.push(part);
    }
  };
  let done = 0;
  let written = 0;
  const stream = new ReadableStream(
    {
      async pull(controller) {
        try {
          fetchAhead();
          if (fetches.length) {
            const ciphertext = await fetches.shift();
            // The records are decrypted straight from the fetched part (no copy into wasm) into
            // one buffer of plaintext, enqueued whole.
            const plaintext = await decryptor.push(ciphertext);
            spare.push(new Uint8Array(ciphertext.buffer));
            fetchAhead();
            done += 1;
            written += plaintext.length;
            if (plaintext.length) controller.enqueue(plaintext);
            report({ type: "progress", part: done, written });
            return;
          }
          const rest = await decryptor.finish();
          written += rest.length;
          if (written !== job.size) throw new Error("the file is shorter or longer than its details say");
          if (rest.length) controller.enqueue(rest);
          controller.close();
          report({ type: "done", written });
        } catch (error) {
          report({ type: "failed", damaged: !error?.network, message: String(error?.message ?? error) });
          controller.error(error);
        }
      },
    },
    // One decrypted part queued at a time, PREFETCH encrypted parts in flight: memory stays at
    // a few parts whatever the file's size.
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
