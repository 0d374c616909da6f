// The download fetcher: a dedicated worker the download page starts for each file it streams
// to disk. It fetches the file's parts with the download ticket (a few ahead), decrypts them in
// order (`StreamDecryptor` from the worker bundle: WebCrypto, else wasm) and passes each part's
// plaintext (transferred, not copied) through a MessagePort to the service worker (app/sw.js),
// which only queues it into the response the download manager is reading.
//
// Why not in the service worker itself: it kept that worker's thread, which also refills the
// download manager's pipe, busy with fetching and decrypting. Measured on a 2-core machine
// (1 GiB, `cargo xtask bench browser-download`): 9.3-11.8 s in the service worker, 8.0-9.5 s
// here. What bounds it now is the browser moving every byte into a renderer and out again:
// `cargo xtask bench browser-ceiling` runs this path with the decryption left out, and on
// a 2-core AMD EPYC VM (2026-12-05) that took 5.8-6.2 s per GiB against 6.8-7.2 s for the
// app and 1.8-2.0 s for the plain download (see docs/ARCHITECTURE.md).
//
// Flow control: at most WINDOW parts are sent and not yet taken by the service worker (it
// answers each part with "more"), and PREFETCH encrypted parts are in flight: memory stays at a
// few parts whatever the file's size. A dropped connection or a server restart does not end the
// download: the part continues from the last byte received (see `fetchPart`). Retries and
// failures go through the port too; the service worker tells the page.
//
// Hand-over: a fetcher serves at most `job.handOverAfter` parts. Each part leaves garbage in
// this thread (promises of the fetch, the reads and WebCrypto's records), and the longer V8
// runs a thread the later it collects: measured in the memory benchmark, this worker's JS heap
// reached 14 MiB in a 4 GiB download against 1 MiB in a 100 MiB one. So once it has sent its
// last part, the fetcher hands the feed back to the page ({type: "handover", next, credit,
// header}, the feed transferred), and the page gives it to a fresh fetcher, which resumes the
// decryption at that part (`StreamDecryptor.skip_to`). The service worker sees one feed.

importScripts("/worker.js");
const wasmReady = wasm_bindgen("/worker_bg.wasm");

self.addEventListener("message", (event) => {
  const job = event.data;
  if (job?.type !== "download" || !event.ports[0]) return;
  pump(job, event.ports[0]);
});

/** Plaintext parts sent to the service worker and not yet taken by it. */
const WINDOW = 2;
/** Parts fetched ahead of the one being decrypted: keeps the network busy meanwhile. */
const PREFETCH = 3;
/** A part that fails this long without receiving a single byte ends the download. */
const GIVE_UP_MS = 10 * 60_000;

/** `[start, end)` of part `n` within the ciphertext body (docs/API.md, "Parts"). */
function partRange(job, n) {
  const start = n === 0 ? 0 : job.firstPartSize + (n - 1) * job.partSize;
  const end = Math.min(n === 0 ? job.firstPartSize : start + job.partSize, job.bodySize);
  return [start, end];
}

/** The length of the RFC 8188 header at the start of `body`: 21 bytes and the key id's. */
const headerLength = (body) => (body.length >= 21 ? 21 + body[20] : body.length);

/**
 * The index of the record part `n` starts with, from the body's `header` (its record size)
 * and the layout: part 0 holds the header, every part whole records.
 */
function recordAt(job, header, n) {
  const rs = new DataView(header.buffer, header.byteOffset, header.byteLength).getUint32(16);
  const records = (partRange(job, n)[0] - headerLength(header)) / rs;
  if (!Number.isInteger(records) || records < 0) throw final(`part ${n + 1} does not start on a record`, true);
  return records;
}

/** An error that retrying cannot fix; `damaged` when the server sent wrong bytes. */
const final = (message, damaged) => Object.assign(new Error(message), { final: true, network: !damaged });

/** The length of the largest part: every part's buffer has it, so any one can be reused. */
const partCapacity = (job) => Math.min(job.bodySize, Math.max(job.firstPartSize, job.partSize));

/**
 * Part `n`'s ciphertext, in a buffer from `spare` when there is one. Every byte received is
 * kept: after a dropped connection, a 5xx or a server restart, the rest of the part is asked
 * for with a byte range from where it stopped (records are verified only once the part is
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
        const longer = await readInto(response.body, part, received, (count) => {
          received += count;
          progressAt = Date.now();
          delay = 500;
        });
        if (longer) throw final(`part ${n + 1} is longer than its file says`, true);
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

/** Buffers for BYOB reads (see `readInto`), reused from part to part. */
const scratch = [];
const SCRATCH_BYTES = 256 * 1024;

/**
 * Copies `body` into `part` from offset `at`, calling `got(count)` after each read; resolves
 * to whether the body had more bytes than fit. Where the browser offers a BYOB reader, reads go
 * into a reused scratch buffer, so a long download leaves no chunk objects for the garbage
 * collector (they were tens of MiB at a time); the part's own buffer is never handed to the
 * stream, since a failed read would take it, and the bytes already received, along.
 */
async function readInto(body, part, at, got) {
  let reader = null;
  try {
    reader = body.getReader({ mode: "byob" });
  } catch {
    // No byte stream here: the default reader below.
  }
  if (reader) {
    let buffer = scratch.pop() ?? new ArrayBuffer(SCRATCH_BYTES);
    for (;;) {
      const { done, value } = await reader.read(new Uint8Array(buffer));
      // The read took the buffer; `value` views it again (none once a stream ends, in some
      // browsers).
      buffer = value?.buffer;
      if (done) break;
      if (at + value.byteLength > part.length) return true;
      part.set(value, at);
      at += value.byteLength;
      got(value.byteLength);
    }
    if (buffer?.byteLength === SCRATCH_BYTES) scratch.push(buffer);
    return false;
  }
  reader = body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return false;
    if (at + value.length > part.length) return true;
    part.set(value, at);
    at += value.length;
    got(value.length);
  }
}

/**
 * Fetches, decrypts and sends every part of `job` through `feed`: `{type: "part", data}` in
 * order, then `{type: "end", data}` with what `finish()` returned, or `{type: "failed"}`.
 */
async function pump(job, feed) {
  let credit = job.credit ?? WINDOW;
  let cancelled = false;
  let wake = () => {};
  feed.onmessage = (event) => {
    if (event.data?.type === "more") credit += 1;
    else if (event.data?.type === "cancel") cancelled = true;
    wake();
  };
  const report = (message) => feed.postMessage(message);
  try {
    await wasmReady;
    const decryptor = new wasm_bindgen.StreamDecryptor(job.ikm);
    const from = job.from ?? 0;
    // The body's header, read from part 0, or given by the fetcher this one took over from.
    let header = job.header ?? null;
    if (from > 0) {
      if (!header) throw final("the download was handed over without the file's header", true);
      await decryptor.push(header);
      decryptor.skip_to(recordAt(job, header, from));
    }
    // This fetcher's parts: `from` up to `end` (exclusive), then it hands over (see the top).
    const end = job.handOverAfter > 0 ? Math.min(job.partCount, from + job.handOverAfter) : job.partCount;
    const fetches = [];
    // The buffers of parts already decrypted, reused for the next ones: a fresh buffer of a
    // part's size costs the browser more to map and zero than filling it does. At most
    // PREFETCH + 1 exist.
    const spare = [];
    let next = from;
    const fetchAhead = () => {
      while (next < end && fetches.length < PREFETCH) {
        const part = fetchPart(job, next++, report, spare);
        part.catch(() => {}); // Awaited in order below; this only silences an abandoned one.
        fetches.push(part);
      }
    };
    while (fetches.length || next < end) {
      fetchAhead();
      const ciphertext = await fetches.shift();
      if (!header) header = ciphertext.slice(0, headerLength(ciphertext));
      // The records are decrypted straight from the fetched part into one buffer.
      const plaintext = await decryptor.push(ciphertext);
      spare.push(new Uint8Array(ciphertext.buffer));
      fetchAhead();
      while (credit === 0 && !cancelled) await new Promise((resolve) => (wake = resolve));
      if (cancelled) return;
      credit -= 1;
      feed.postMessage({ type: "part", data: plaintext }, [plaintext.buffer]);
    }
    if (end < job.partCount) {
      feed.onmessage = null;
      self.postMessage({ type: "handover", next: end, credit, header }, [feed]);
      return;
    }
    const rest = await decryptor.finish();
    feed.postMessage({ type: "end", data: rest }, [rest.buffer]);
  } catch (error) {
    report({ type: "failed", damaged: !error?.network, message: String(error?.message ?? error) });
  }
}
