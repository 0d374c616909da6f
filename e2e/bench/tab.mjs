// A browser tab that Playwright does not instrument, driven over a raw DevTools session.
//
// Why: Playwright enables the DevTools Network domain on every page, worker and service worker
// it tracks, and Chromium then copies every fetch body made of bytes into a `requestWillBeSent`
// event (base64) for Playwright to parse. That caps a 4 MiB part upload at roughly 7-13 MB/s
// here, whoever sends it, so a benchmark through a Playwright page measures DevTools, not the
// app. Playwright (non-persistent launch) detaches from targets in the browser's default
// context, which it does not own; a tab created there with `Target.createTarget` runs with no
// instrumentation. We attach to it through the browser-level CDP session Playwright offers and
// talk to it with `Target.sendMessageToTarget`, enabling nothing but what we call.

const POLL_TIMEOUT_MS = 600_000;

/**
 * Request/response bookkeeping for one DevTools session reached through `post(json)`:
 * `send(method, params)` resolves with the result; `receive(message)` settles the matching
 * request (returns whether `message` was a response); `fail(error)` rejects whatever is pending.
 */
function messenger(post) {
  let nextId = 0;
  const pending = new Map();
  return {
    send(method, params = {}) {
      return new Promise((resolve, reject) => {
        const id = ++nextId;
        pending.set(id, { resolve, reject, method });
        Promise.resolve(post(JSON.stringify({ id, method, params }))).catch((error) => {
          pending.delete(id);
          reject(error);
        });
      });
    },
    receive(message) {
      if (message.id === undefined) return false;
      const request = pending.get(message.id);
      if (!request) return true;
      pending.delete(message.id);
      if (message.error) request.reject(new Error(`${request.method}: ${message.error.message}`));
      else request.resolve(message.result);
      return true;
    },
    fail(error) {
      for (const request of pending.values()) request.reject(error);
      pending.clear();
    },
  };
}

/**
 * Attaches to the target `targetId` (a service worker, say) through the browser-level CDP
 * session `cdp`, enabling nothing: returns `{ send(method, params), detach() }`.
 */
export async function attachTarget(cdp, targetId) {
  const { sessionId } = await cdp.send("Target.attachToTarget", { targetId, flatten: false });
  const session = messenger((message) => cdp.send("Target.sendMessageToTarget", { sessionId, message }));
  const onMessage = (event) => {
    if (event.sessionId === sessionId) session.receive(JSON.parse(event.message));
  };
  const onDetached = (event) => {
    if (event.sessionId !== sessionId) return;
    cdp.off("Target.receivedMessageFromTarget", onMessage);
    cdp.off("Target.detachedFromTarget", onDetached);
    session.fail(new Error(`target ${targetId} went away`));
  };
  cdp.on("Target.receivedMessageFromTarget", onMessage);
  cdp.on("Target.detachedFromTarget", onDetached);
  return {
    send: session.send,
    async detach() {
      await cdp.send("Target.detachFromTarget", { sessionId }).catch(() => {});
      onDetached({ sessionId });
    },
  };
}

/**
 * Opens `url` in an uninstrumented tab of `browser` (from `launchBrowser()`); downloads of
 * every tab in the default context go to `downloadDir`. With `namedByGuid`, each is saved as
 * `downloadDir/<guid>` and `nextDownload()` tells when the next one is complete.
 */
export async function openTab(browser, url, { downloadDir, namedByGuid = false } = {}) {
  const cdp = await browser.newBrowserCDPSession();
  if (downloadDir) {
    await cdp.send("Browser.setDownloadBehavior", {
      behavior: namedByGuid ? "allowAndName" : "allow",
      downloadPath: downloadDir,
      eventsEnabled: namedByGuid,
    });
  }
  const { targetId } = await cdp.send("Target.createTarget", { url: "about:blank" });
  const { sessionId } = await cdp.send("Target.attachToTarget", { targetId, flatten: false });
  const problems = [];
  const page = messenger((message) => cdp.send("Target.sendMessageToTarget", { sessionId, message }));
  /** The page's dedicated workers (once `trackWorkers()` is called): session id -> messenger. */
  const workers = new Map();
  /** Listeners of the page's DevTools events (see `onEvent`). */
  const listeners = new Set();
  cdp.on("Target.receivedMessageFromTarget", (event) => {
    if (event.sessionId !== sessionId) return;
    const message = JSON.parse(event.message);
    if (page.receive(message)) return;
    for (const listener of listeners) listener(message);
    if (message.method === "Runtime.exceptionThrown") {
      problems.push(message.params.exceptionDetails.exception?.description ?? message.params.exceptionDetails.text);
    } else if (message.method === "Target.attachedToTarget" && message.params.targetInfo.type === "worker") {
      const worker = message.params.sessionId;
      workers.set(
        worker,
        messenger((inner) => page.send("Target.sendMessageToTarget", { sessionId: worker, message: inner })),
      );
    } else if (message.method === "Target.receivedMessageFromTarget") {
      workers.get(message.params.sessionId)?.receive(JSON.parse(message.params.message));
    } else if (message.method === "Target.detachedFromTarget") {
      workers.get(message.params.sessionId)?.fail(new Error("the worker went away"));
      workers.delete(message.params.sessionId);
    }
  });
  const send = page.send;

  /**
   * Runs `fn(arg, { waitFor })` in the page (awaiting its promise) and returns its JSON-able
   * result; `waitFor(selector)` resolves once `selector` matches.
   */
  async function evaluate(fn, arg) {
    const { result, exceptionDetails } = await send("Runtime.evaluate", {
      expression: `(${fn})(${JSON.stringify(arg ?? null)}, { waitFor: (selector) => (${waitInPage})(selector, ${POLL_TIMEOUT_MS}) })`,
      awaitPromise: true,
      returnByValue: true,
    });
    if (exceptionDetails) throw new Error(exceptionDetails.exception?.description ?? exceptionDetails.text);
    return result.value;
  }

  /** Resolves once `selector` matches in the page. */
  async function waitFor(selector) {
    return evaluate((selector, page) => page.waitFor(selector), selector);
  }

  async function goto(target) {
    await send("Page.enable");
    const loaded = new Promise((resolve) => {
      const onEvent = (event) => {
        if (event.sessionId === sessionId && JSON.parse(event.message).method === "Page.loadEventFired") {
          cdp.off("Target.receivedMessageFromTarget", onEvent);
          resolve();
        }
      };
      cdp.on("Target.receivedMessageFromTarget", onEvent);
    });
    await send("Page.navigate", { url: target });
    await loaded;
  }

  /** Picks the file at `path` in the `<input type=file>` matching `selector` (fires `change`). */
  async function setInputFiles(selector, path) {
    const { result } = await send("Runtime.evaluate", { expression: `document.querySelector(${JSON.stringify(selector)})` });
    if (!result.objectId) throw new Error(`no ${selector} on the page`);
    await send("DOM.enable");
    await send("DOM.setFileInputFiles", { files: [path], objectId: result.objectId });
  }

  await send("Runtime.enable");
  await goto(url);
  return {
    evaluate,
    waitFor,
    goto,
    setInputFiles,
    problems,
    /** Sends a DevTools command to the page itself. */
    send,
    /**
     * From now on, attaches (enabling nothing) to the page's dedicated workers, present and
     * future; `workers()` lists them as `{ send(method, params) }`.
     */
    async trackWorkers() {
      await send("Target.setAutoAttach", { autoAttach: true, waitForDebuggerOnStart: false, flatten: false });
    },
    workers: () => [...workers.values()].map(({ send }) => ({ send })),
    /** Calls `listener({ method, params })` for each DevTools event of the page. */
    onEvent: (listener) => listeners.add(listener),
    /**
     * Resolves with `{ guid, path }` when the next download ends complete in `downloadDir`
     * (only with `namedByGuid`), rejects if it is cancelled.
     */
    nextDownload() {
      return new Promise((resolve, reject) => {
        const onProgress = (event) => {
          if (event.state === "inProgress") return;
          cdp.off("Browser.downloadProgress", onProgress);
          if (event.state === "completed") resolve({ guid: event.guid, path: `${downloadDir}/${event.guid}` });
          else reject(new Error(`the download was ${event.state}`));
        };
        cdp.on("Browser.downloadProgress", onProgress);
      });
    },
    async close() {
      await cdp.send("Target.closeTarget", { targetId }).catch(() => {});
      await cdp.detach().catch(() => {});
    },
  };
}

/**
 * In the page: resolves when `selector` matches, rejects after `timeout` ms. Watched with a
 * MutationObserver, so it reacts at once and does not depend on timer throttling.
 */
function waitInPage(selector, timeout) {
  return new Promise((resolve, reject) => {
    if (document.querySelector(selector)) return resolve(true);
    const observer = new MutationObserver(() => {
      if (document.querySelector(selector)) {
        observer.disconnect();
        clearTimeout(timer);
        resolve(true);
      }
    });
    observer.observe(document, { childList: true, subtree: true, attributes: true });
    const timer = setTimeout(() => {
      observer.disconnect();
      reject(new Error(`${selector} did not appear within ${timeout} ms`));
    }, timeout);
  });
}
