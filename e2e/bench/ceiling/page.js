// The download ceiling benchmark's page (see ../ceiling.mjs): registers the probe's service
// worker, marks the body `data-ready` once it controls the page, and starts the two streamed
// sides on request. Nothing of the app runs here.

navigator.serviceWorker
  .register("/sw.js")
  .then(() => navigator.serviceWorker.ready)
  .then(() =>
    navigator.serviceWorker.controller
      ? undefined
      : new Promise((resolve) => navigator.serviceWorker.addEventListener("controllerchange", resolve, { once: true })),
  )
  .then(() => {
    document.body.dataset.ready = "1";
  });

/** Fetchers kept alive here: a dedicated worker nothing refers to may be collected. */
const fetchers = [];

/**
 * Hands the service worker a job (`{job, kind, size}` and, for "fetched", the feed a fresh
 * fetcher fills), waits until it is ready, then opens `/ceiling/<job>` in a hidden frame: the
 * download the benchmark times.
 */
window.startStreamed = async ({ job, kind, id, auth, size, partSize, prefetch, window: credit }) => {
  const ready = new MessageChannel();
  const transfer = [ready.port2];
  let fetcherJob = null;
  if (kind === "fetched") {
    const api = `${location.origin}/api/v1`;
    const ticketed = await fetch(`${api}/files/${id}/downloads`, { method: "POST", headers: { Authorization: `Bearer ${auth}` } });
    if (!ticketed.ok) throw new Error(`downloads: HTTP ${ticketed.status}`);
    const { ticket } = await ticketed.json();
    const feed = new MessageChannel();
    transfer.push(feed.port1);
    fetcherJob = { port: feed.port2, job: { id, ticket, size, partSize, prefetch, credit } };
  }
  navigator.serviceWorker.controller.postMessage({ job, kind, size }, transfer);
  await new Promise((resolve) => (ready.port1.onmessage = resolve));
  if (fetcherJob) {
    const fetcher = new Worker("/fetcher.js");
    fetchers.push(fetcher);
    fetcher.postMessage(fetcherJob.job, [fetcherJob.port]);
  }
  const frame = document.createElement("iframe");
  frame.hidden = true;
  frame.src = `/ceiling/${job}`;
  document.body.append(frame);
};
