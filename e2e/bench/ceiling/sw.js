// The download ceiling benchmark's service worker (see ../ceiling.mjs). It answers
// `/ceiling/<job>` with a stream into the download manager, in parts queued one at a time
// with a fresh copy of each, as app/sw.js does:
// - "stream": parts made here, copies of /block.bin: the stream alone, nothing fetched;
// - "fetched": parts a fetcher (fetcher.js) fetches from the server and passes through a
//   MessagePort, each answered with "more" once taken: app/sw.js with app/fetcher.js, minus
//   the decryption.

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

const jobs = new Map();

self.addEventListener("message", (event) => {
  const { job, kind, size } = event.data;
  const [ready, feed] = event.ports;
  const prepared = kind === "stream" ? fetch("/block.bin").then((r) => r.arrayBuffer()) : Promise.resolve(null);
  prepared.then((block) => {
    jobs.set(job, { kind, size, feed, block: block && new Uint8Array(block) });
    ready.postMessage("ready");
  });
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (!url.pathname.startsWith("/ceiling/")) return;
  const job = jobs.get(url.pathname.slice("/ceiling/".length));
  if (!job) return event.respondWith(new Response("no such job", { status: 404 }));
  jobs.delete(url.pathname.slice("/ceiling/".length));
  event.respondWith(
    new Response(job.kind === "stream" ? made(job) : fed(job), {
      headers: {
        "Content-Type": "application/octet-stream",
        "Content-Disposition": 'attachment; filename="ceiling.bin"',
        "Content-Length": String(job.size),
        "Cache-Control": "no-store",
      },
    }),
  );
});

/** `job.size` bytes of copies of the block, one block per pull. */
function made({ size, block }) {
  let left = size;
  return new ReadableStream(
    {
      pull(controller) {
        const n = Math.min(block.length, left);
        controller.enqueue(block.slice(0, n));
        left -= n;
        if (left === 0) controller.close();
      },
    },
    { highWaterMark: 1 },
  );
}

/** The parts `job.feed` brings, in order, until its `null`. */
function fed({ feed }) {
  const arrived = [];
  let wake = () => {};
  feed.onmessage = (event) => {
    arrived.push(event.data);
    wake();
  };
  return new ReadableStream(
    {
      async pull(controller) {
        while (!arrived.length) await new Promise((resolve) => (wake = resolve));
        const message = arrived.shift();
        if (message === null) return controller.close();
        // The fetcher's failure, as its message.
        if (typeof message === "string") return controller.error(new Error(message));
        controller.enqueue(message.slice());
        feed.postMessage("more");
      },
    },
    { highWaterMark: 1 },
  );
}
