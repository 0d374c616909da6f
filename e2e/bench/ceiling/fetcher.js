// The download ceiling benchmark's fetcher (see ../ceiling.mjs): app/fetcher.js without the
// decryption. It fetches a plain upload's parts with the download ticket (`prefetch` at a
// time), reads each with a BYOB reader through a 256 KiB scratch buffer into a part-sized
// buffer, and passes the parts in order, transferred, to the service worker, at most `credit`
// not yet taken. Each part goes out in a buffer of its own, as the app's plaintext does.

self.addEventListener("message", (event) => {
  pump(event.data, event.ports[0]).catch((error) => event.ports[0].postMessage(String(error?.message ?? error)));
});

async function fetchPart(job, n) {
  const start = n * job.partSize;
  const part = new Uint8Array(Math.min(job.partSize, job.size - start));
  const response = await fetch(`/api/v1/files/${job.id}/parts/${n}`, {
    headers: { Authorization: `Bearer ${job.ticket}` },
    cache: "no-store",
  });
  if (response.status !== 200) throw new Error(`part ${n}: HTTP ${response.status}`);
  const reader = response.body.getReader({ mode: "byob" });
  let scratch = new ArrayBuffer(256 * 1024);
  let at = 0;
  for (;;) {
    const { done, value } = await reader.read(new Uint8Array(scratch));
    if (done) break;
    scratch = value.buffer;
    if (at + value.byteLength > part.length) throw new Error(`part ${n} is too long`);
    part.set(value, at);
    at += value.byteLength;
  }
  if (at !== part.length) throw new Error(`part ${n} is too short`);
  return part;
}

async function pump(job, feed) {
  let credit = job.credit;
  let wake = () => {};
  feed.onmessage = () => {
    credit += 1;
    wake();
  };
  const count = Math.ceil(job.size / job.partSize);
  const fetches = [];
  let next = 0;
  const fetchAhead = () => {
    while (next < count && fetches.length < job.prefetch) {
      const part = fetchPart(job, next++);
      part.catch(() => {}); // Awaited in order below.
      fetches.push(part);
    }
  };
  while (fetches.length || next < count) {
    fetchAhead();
    const part = await fetches.shift();
    fetchAhead();
    while (credit === 0) await new Promise((resolve) => (wake = resolve));
    credit -= 1;
    feed.postMessage(part, [part.buffer]);
  }
  feed.postMessage(null);
}
