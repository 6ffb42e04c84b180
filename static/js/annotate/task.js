// The work loop shared by every task page: fetch an item, show it, take the answer from the
// keyboard or the buttons, submit it in the background (with retries under the same UUID)
// while the next item, fetched and decoded ahead of time, is already on screen. Each
// submission asks for the following item in the same request ("next": true), so the
// fetch-ahead needs a request of its own only for the first items and after a failure.

import { AnnotateApi } from "./api.js";
import { SyncViewer } from "./viewer.js";

export class TaskPage {
  constructor({ config, kind }) {
    this.config = config; // {round, kind, urls: {next, submit, undo, skip, progress}, skip_reasons: [{code, label}]}
    this.kind = kind; // {mount(task, page) -> view}
    this.api = new AnnotateApi(config.urls);
    this.viewer = new SyncViewer({ onChange: (state) => this.#showZoom(state) });
    this.current = null; // {task, view, shownAt, visibleMs}
    this.queue = []; // tasks fetched ahead: leased, images decoded
    this.fetching = null; // the fetch-ahead in flight
    this.pending = new Map(); // client_uuid -> {task, done}: submissions on their way
    this.lastSubmitted = null; // {task, uuid, done, undoUntil}
    this.submitted = Promise.resolve(); // the chain of submissions, in order
    this.finished = false;
    this.$ = (id) => document.getElementById(id);
  }

  start() {
    this.#bindTools();
    document.addEventListener("keydown", (event) => this.#onKey(event));
    document.addEventListener("keyup", (event) => {
      if (event.key === "Shift") this.viewer.holdLoupe(false);
    });
    window.addEventListener("blur", () => this.viewer.holdLoupe(false));
    document.addEventListener("visibilitychange", () => this.#trackVisibility());
    window.addEventListener("resize", () => this.current && this.#relayout());
    window.addEventListener("beforeunload", (event) => {
      if (this.pending.size) event.preventDefault();
    });
    this.refreshProgress();
    this.#showNext();
  }

  // ---- tasks -----------------------------------------------------------------------

  #heldLeases() {
    const leases = this.queue.map((task) => task.lease);
    if (this.current) leases.push(this.current.task.lease);
    for (const { task } of this.pending.values()) leases.push(task.lease);
    return leases;
  }

  async #fetchTask() {
    const data = await this.api.next({ exclude: this.#heldLeases() });
    const task = data && data.task;
    if (!task) return null;
    if (task.kind !== this.config.kind) throw new Error("This round holds another kind of task.");
    await preloadImages(task.images);
    return task;
  }

  // Fetch one task ahead, once the submissions in flight have consumed their leases
  // (the server keeps at most two leases per annotator and round).
  #fetchAhead() {
    if (this.fetching || this.queue.length || this.finished) return this.fetching;
    this.fetching = (async () => {
      await Promise.allSettled([...this.pending.values()].map((p) => p.done));
      if (this.queue.length) return this.queue[0]; // a submission brought the next task along
      const task = await this.#fetchTask();
      if (task && !this.#heldLeases().includes(task.lease)) this.queue.push(task);
      return task;
    })().finally(() => { this.fetching = null; });
    this.fetching.catch(() => {});
    return this.fetching;
  }

  // A task that came with a submission's answer: decode its images, then keep it ready.
  async #queueTask(task) {
    if (!task || task.kind !== this.config.kind || this.finished) return;
    if (this.queue.length || this.#heldLeases().includes(task.lease)) return;
    await preloadImages(task.images);
    if (!this.queue.length && !this.#heldLeases().includes(task.lease)) this.queue.push(task);
  }

  #showNext() {
    this.advancing = this.#advance();
    return this.advancing;
  }

  async #advance() {
    this.#setBusy(true);
    // A task fetched ahead long ago (the annotator took a break) may have lost its lease.
    const soon = Date.now() + 30000;
    this.queue = this.queue.filter((task) => !task.expires_at || Date.parse(task.expires_at) > soon);
    try {
      // A fetch-ahead already in flight may have started before the last submission: if it
      // found nothing, ask again now that the submission is stored.
      if (!this.queue.length && this.fetching) await this.fetching;
      if (!this.queue.length) await this.#fetchAhead();
    } catch (error) {
      this.#setBusy(false);
      this.toast(error.message, { error: true, sticky: true });
      return;
    }
    const task = this.queue.shift();
    this.#setBusy(false);
    if (!task) {
      this.#showEmpty();
      return;
    }
    this.#show(task);
    this.#fetchAhead();
  }

  #setBusy(busy) {
    this.busy = busy;
    document.body.classList.toggle("busy", busy);
  }

  #show(task) {
    this.$("empty-state").hidden = true;
    this.$("task-body").hidden = false;
    const view = this.kind.mount(task, this);
    this.current = { task, view, shownAt: performance.now(), visibleMs: 0 };
    this.#relayout();
    this.viewer.attach(view.panes);
    this.#updateUndo();
    if (view.focus) view.focus();
  }

  #relayout() {
    this.current.view.layout();
    this.viewer.render();
  }

  #showEmpty() {
    this.finished = true;
    this.current = null;
    this.$("task-body").hidden = true;
    const empty = this.$("empty-state");
    empty.hidden = false;
    empty.querySelector("h2").focus();
    this.#updateUndo();
    this.refreshProgress();
  }

  #elapsedMs() {
    const c = this.current;
    const running = c.shownAt !== null ? performance.now() - c.shownAt : 0;
    return Math.max(0, Math.round(c.visibleMs + running));
  }

  // Time with the tab hidden is not time spent judging.
  #trackVisibility() {
    const c = this.current;
    if (!c) return;
    if (document.visibilityState === "hidden" && c.shownAt !== null) {
      c.visibleMs += performance.now() - c.shownAt;
      c.shownAt = null;
    } else if (document.visibilityState === "visible" && c.shownAt === null) {
      c.shownAt = performance.now();
    }
  }

  // ---- answers ---------------------------------------------------------------------

  // Called by a kind's view with a complete answer, in image ids (never screen positions).
  submit(answer) {
    if (!this.current || this.busy) return;
    const { task } = this.current;
    const uuid = crypto.randomUUID();
    const payload = { client_uuid: uuid, lease: task.lease, elapsed_ms: this.#elapsedMs(), answer, next: true };
    const record = { task, uuid, undoUntil: null };
    // Submissions go out one after another, so the server stores them in the order given
    // (undo takes back the latest) while the next item is already on screen.
    record.done = this.submitted
      .then(() => {
        // The leases this page holds when the request leaves (the same body goes out on a retry).
        payload.exclude = this.#heldLeases().filter((lease) => lease !== task.lease);
        return this.api.submit(payload, { onRetry: () => this.toast("Connection trouble: retrying your last answer…") });
      })
      .then(async (response) => {
        record.undoUntil = response && response.undo_until ? Date.parse(response.undo_until) : null;
        await this.#queueTask(response && response.next);
        this.refreshProgress();
        return response;
      })
      .catch((error) => {
        const why = error.code === "lease_expired"
          ? "the item expired before your answer arrived and went to someone else."
          : error.message;
        this.toast(`Your last answer was not saved: ${why}`, { error: true, sticky: true });
        if (this.lastSubmitted === record) this.lastSubmitted = null;
        throw error;
      })
      .finally(() => {
        this.pending.delete(uuid);
        this.#updateUndo();
      });
    this.submitted = record.done.catch(() => {});
    this.pending.set(uuid, record);
    this.lastSubmitted = record;
    this.current = null;
    this.#showNext();
  }

  // ---- skip ------------------------------------------------------------------------

  #skipOpen() {
    return !this.$("skip-chooser").hidden;
  }

  openSkip() {
    if (!this.current || this.busy) return;
    this.$("skip-chooser").hidden = false;
    this.$("skip-title").focus();
  }

  closeSkip() {
    this.$("skip-chooser").hidden = true;
    if (this.current && this.current.view.focus) this.current.view.focus();
  }

  // Declines the item on screen: like a submission it goes out in order, in the background,
  // and brings the next task along; the item is never shown to this annotator again.
  skip(reason) {
    this.$("skip-chooser").hidden = true;
    if (!this.current || this.busy) return;
    const { task } = this.current;
    const key = `skip-${task.lease}`;
    const payload = { lease: task.lease, reason, next: true };
    const label = (this.config.skip_reasons.find((r) => r.code === reason) || { label: reason }).label;
    const record = { task };
    record.done = this.submitted
      .then(() => {
        payload.exclude = this.#heldLeases().filter((lease) => lease !== task.lease);
        return this.api.skip(payload, { onRetry: () => this.toast("Connection trouble: retrying your skip…") });
      })
      .then(async (response) => {
        await this.#queueTask(response && response.next);
        this.refreshProgress();
        return response;
      })
      .catch((error) => {
        this.toast(`The skip was not saved: ${error.message}`, { error: true, sticky: true });
        throw error;
      })
      .finally(() => this.pending.delete(key));
    this.submitted = record.done.catch(() => {});
    this.pending.set(key, record);
    this.current = null;
    this.toast(`Skipped: ${label}.`);
    this.#showNext();
  }

  async undo() {
    await this.advancing; // let the item switch that the submission started finish first
    const record = this.lastSubmitted;
    if (!record || this.undoing) return;
    this.undoing = true;
    try {
      await this.#undo(record);
    } finally {
      this.undoing = false;
    }
  }

  async #undo(record) {
    try {
      await record.done;
    } catch (error) {
      return;
    }
    if (record.undoUntil && Date.now() > record.undoUntil) {
      this.toast("Too late to undo that answer.", { error: true });
      this.lastSubmitted = null;
      this.#updateUndo();
      return;
    }
    let response;
    try {
      response = await this.api.undo(record.uuid);
    } catch (error) {
      this.toast(`Undo failed: ${error.message}`, { error: true });
      this.lastSubmitted = null;
      this.#updateUndo();
      return;
    }
    this.lastSubmitted = null;
    this.refreshProgress();
    const again = response.task;
    await preloadImages(again.images);
    // The item on screen stays leased: it comes right after the undone one.
    if (this.current) this.queue.unshift(this.current.task);
    this.finished = false;
    this.#show(again);
    this.toast("Answer undone: judge this item again.");
  }

  #updateUndo() {
    const button = this.$("undo");
    if (!button) return;
    const record = this.lastSubmitted;
    const open = Boolean(record) && (record.undoUntil === null || Date.now() < record.undoUntil);
    button.disabled = !open;
    clearTimeout(this.undoTimer);
    if (open && record.undoUntil) {
      this.undoTimer = setTimeout(() => this.#updateUndo(), Math.max(0, record.undoUntil - Date.now()) + 50);
    }
  }

  // ---- chrome ----------------------------------------------------------------------

  async refreshProgress() {
    const element = this.$("progress");
    if (!element) return;
    try {
      const data = await this.api.progress();
      const round = (data.rounds || []).find((r) => r.id === this.config.round);
      element.textContent = round
        ? `${round.judged_by_me} done here · ${round.available_to_me} left · ${data.judged_today} today`
        : `${data.judged_today} judged today`;
    } catch (error) {
      element.textContent = "";
    }
  }

  toast(message, { error = false, sticky = false } = {}) {
    const element = this.$("toast");
    element.textContent = message;
    element.classList.toggle("error", error);
    element.hidden = false;
    clearTimeout(this.toastTimer);
    if (!sticky) this.toastTimer = setTimeout(() => { element.hidden = true; }, 3500);
  }

  #showZoom({ scale }) {
    const readout = this.$("zoom-readout");
    if (readout) readout.textContent = scale ? `${Math.round(scale * 100)}%` : "";
    const loupe = this.$("loupe-toggle");
    if (loupe) loupe.setAttribute("aria-pressed", String(this.viewer.loupeToggled));
  }

  #bindTools() {
    const on = (id, handler) => {
      const element = this.$(id);
      if (element) element.addEventListener("click", handler);
    };
    on("zoom-in", () => this.viewer.zoomStep(1));
    on("zoom-out", () => this.viewer.zoomStep(-1));
    on("zoom-reset", () => this.viewer.reset());
    on("zoom-native", () => this.viewer.zoomNative());
    on("loupe-toggle", () => this.viewer.toggleLoupe());
    on("undo", () => this.undo());
    on("skip", () => this.openSkip());
    on("skip-cancel", () => this.closeSkip());
    for (const button of document.querySelectorAll(".skip-reason")) {
      button.addEventListener("click", () => this.skip(button.dataset.reason));
    }
    on("toast", () => { this.$("toast").hidden = true; });
  }

  #onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return; // leave browser shortcuts alone
    const target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable)) return;
    const key = event.key;
    if (this.#skipOpen()) {
      // The reason chooser is modal: its number keys and Escape, nothing else.
      const reason = this.config.skip_reasons[Number(key) - 1];
      if (/^[1-9]$/.test(key) && reason) this.skip(reason.code);
      else if (key === "Escape") this.closeSkip();
      event.preventDefault();
      return;
    }
    if (key === "s" || key === "S") {
      this.openSkip();
      event.preventDefault();
      return;
    }
    if (key === "Shift") {
      if (!event.repeat) this.viewer.holdLoupe(true);
      return;
    }
    if (event.shiftKey && key.startsWith("Arrow")) {
      const step = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] }[key];
      this.viewer.panStep(...step);
      event.preventDefault();
      return;
    }
    const global = {
      "+": () => this.viewer.zoomStep(1),
      "=": () => this.viewer.zoomStep(1),
      "-": () => this.viewer.zoomStep(-1),
      "_": () => this.viewer.zoomStep(-1),
      "0": () => this.viewer.reset(),
      l: () => this.viewer.toggleLoupe(),
      L: () => this.viewer.toggleLoupe(),
      u: () => this.undo(),
      U: () => this.undo(),
    };
    if (this.current && this.current.view.handleKey(event)) {
      event.preventDefault();
      return;
    }
    if (global[key]) {
      global[key]();
      event.preventDefault();
    }
  }
}

export function preloadImages(images) {
  return Promise.all(
    images.map((image) => {
      const element = new Image();
      element.decoding = "async";
      element.src = image.url;
      image.preloaded = element; // keeps the decoded image alive until it is shown
      return element.decode().catch(() => {});
    }),
  );
}

// A pane: the viewport that clips an image, with a loupe on top.
export function makePane({ image, label }) {
  const pane = document.createElement("div");
  pane.className = "pane";
  const img = document.createElement("img");
  img.src = image.url;
  img.alt = label;
  img.draggable = false;
  const loupe = document.createElement("div");
  loupe.className = "loupe";
  loupe.setAttribute("aria-hidden", "true");
  pane.append(img, loupe);
  return { pane, img, loupe };
}

export function flash(button) {
  if (!button) return;
  button.classList.add("flash");
  setTimeout(() => button.classList.remove("flash"), 180);
}
