// Synchronized zoom, pan and loupe over every image of an item.
//
// One view state is shared by all panes and kept in image coordinates (fractions of the
// image's width and height), so the same detail stays under the same spot of every image
// whatever the pane size. zoom = 1 means "the whole image fits its pane".

const MIN_ZOOM = 1;
const MAX_ZOOM = 16;
const WHEEL_STEP = 1.0018; // per wheel delta pixel
const KEY_STEP = 1.25;
const PAN_STEP = 0.08; // fraction of the visible width per arrow key
const LOUPE_SIZE = 220;

export class SyncViewer {
  constructor({ onChange } = {}) {
    this.panes = [];
    this.zoom = 1;
    this.cx = 0.5;
    this.cy = 0.5;
    this.pointer = null; // {u, v}: where the loupe looks, in image fractions
    this.loupeToggled = false;
    this.loupeHeld = false;
    this.onChange = onChange || (() => {});
  }

  // panes: [{pane: HTMLElement, img: HTMLImageElement, loupe: HTMLElement}]
  attach(panes) {
    this.panes = panes;
    this.reset();
    for (const p of panes) this.#bind(p);
  }

  reset() {
    this.zoom = 1;
    this.cx = 0.5;
    this.cy = 0.5;
    this.render();
  }

  get loupeOn() {
    return this.loupeToggled || this.loupeHeld;
  }

  toggleLoupe() {
    this.loupeToggled = !this.loupeToggled;
    if (this.loupeToggled && !this.pointer) this.pointer = { u: this.cx, v: this.cy };
    this.render();
  }

  holdLoupe(held) {
    if (this.loupeHeld === held) return;
    this.loupeHeld = held;
    this.render();
  }

  zoomBy(factor, anchor = null) {
    // anchor: {pane, x, y} in pane pixels; the image point under it stays put.
    const geometry = this.#geometry(anchor ? anchor.pane : this.panes[0]);
    if (!geometry) return;
    const next = clamp(this.zoom * factor, MIN_ZOOM, MAX_ZOOM);
    if (anchor) {
      const u = (anchor.x - geometry.tx) / geometry.drawnW;
      const v = (anchor.y - geometry.ty) / geometry.drawnH;
      const drawnW = geometry.drawnW * (next / this.zoom);
      const drawnH = geometry.drawnH * (next / this.zoom);
      this.cx = (geometry.width / 2 - (anchor.x - u * drawnW)) / drawnW;
      this.cy = (geometry.height / 2 - (anchor.y - v * drawnH)) / drawnH;
    }
    this.zoom = next;
    this.render();
  }

  panBy(dxFraction, dyFraction) {
    this.cx += dxFraction / this.zoom;
    this.cy += dyFraction / this.zoom;
    this.render();
  }

  panStep(dx, dy) {
    this.panBy(dx * PAN_STEP, dy * PAN_STEP);
  }

  zoomStep(direction) {
    this.zoomBy(direction > 0 ? KEY_STEP : 1 / KEY_STEP);
  }

  // Native resolution: one image pixel per screen pixel.
  zoomNative() {
    const geometry = this.#geometry(this.panes[0]);
    if (!geometry) return;
    this.zoom = clamp(1 / geometry.fit, MIN_ZOOM, MAX_ZOOM);
    this.render();
  }

  render() {
    const first = this.#geometry(this.panes[0]);
    if (first) this.#clampCenter(first);
    for (const p of this.panes) this.#renderPane(p);
    const scale = first ? first.fit * this.zoom : null;
    this.onChange({ zoom: this.zoom, scale });
  }

  #geometry(p) {
    if (!p) return null;
    const natW = p.img.naturalWidth;
    const natH = p.img.naturalHeight;
    if (!natW || !natH) return null;
    const width = p.pane.clientWidth;
    const height = p.pane.clientHeight;
    const fit = Math.min(width / natW, height / natH);
    const scale = fit * this.zoom;
    const drawnW = natW * scale;
    const drawnH = natH * scale;
    const tx = width / 2 - this.cx * drawnW;
    const ty = height / 2 - this.cy * drawnH;
    return { natW, natH, width, height, fit, scale, drawnW, drawnH, tx, ty };
  }

  #clampCenter(g) {
    // Keep the image covering the pane when zoomed in, centred when it is smaller.
    const halfU = g.width / 2 / g.drawnW;
    const halfV = g.height / 2 / g.drawnH;
    this.cx = halfU >= 0.5 ? 0.5 : clamp(this.cx, halfU, 1 - halfU);
    this.cy = halfV >= 0.5 ? 0.5 : clamp(this.cy, halfV, 1 - halfV);
  }

  #renderPane(p) {
    const g = this.#geometry(p);
    if (!g) return;
    p.img.style.width = `${g.natW}px`;
    p.img.style.height = `${g.natH}px`;
    p.img.style.transform = `translate(${g.tx}px, ${g.ty}px) scale(${g.scale})`;
    p.pane.classList.toggle("pixelated", g.scale >= 2);
    p.pane.classList.toggle("loupe-on", this.loupeOn);
    const loupe = p.loupe;
    if (!loupe) return;
    if (!this.loupeOn || !this.pointer) {
      loupe.classList.remove("placed");
      return;
    }
    // The loupe magnifies twice the current view, and never shows less than native pixels.
    const magnification = Math.max(1, 2 * g.scale);
    const { u, v } = this.pointer;
    loupe.classList.add("placed");
    loupe.style.left = `${g.tx + u * g.drawnW}px`;
    loupe.style.top = `${g.ty + v * g.drawnH}px`;
    loupe.style.backgroundImage = `url("${p.img.currentSrc || p.img.src}")`;
    loupe.style.backgroundSize = `${g.natW * magnification}px ${g.natH * magnification}px`;
    loupe.style.backgroundPosition =
      `${LOUPE_SIZE / 2 - u * g.natW * magnification}px ${LOUPE_SIZE / 2 - v * g.natH * magnification}px`;
    loupe.classList.toggle("pixelated", magnification >= 2);
  }

  #pointerAt(p, event) {
    const rect = p.pane.getBoundingClientRect();
    return { pane: p, x: event.clientX - rect.left, y: event.clientY - rect.top };
  }

  #bind(p) {
    const pane = p.pane;
    const active = new Map(); // pointerId -> {x, y}
    let pinchDistance = null;

    pane.addEventListener("wheel", (event) => {
      event.preventDefault();
      const delta = event.deltaMode === 1 ? event.deltaY * 16 : event.deltaY;
      this.zoomBy(Math.pow(WHEEL_STEP, -delta), this.#pointerAt(p, event));
      this.#trackPointer(p, event);
    }, { passive: false });

    pane.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      pane.setPointerCapture(event.pointerId);
      active.set(event.pointerId, { x: event.clientX, y: event.clientY });
      if (active.size === 1) pane.classList.add("dragging");
      if (active.size === 2) pinchDistance = distance([...active.values()]);
      p.moved = 0;
    });

    pane.addEventListener("pointermove", (event) => {
      this.#trackPointer(p, event);
      const last = active.get(event.pointerId);
      if (!last) return;
      const g = this.#geometry(p);
      if (!g) return;
      const current = { x: event.clientX, y: event.clientY };
      if (active.size === 1) {
        const dx = current.x - last.x;
        const dy = current.y - last.y;
        p.moved += Math.abs(dx) + Math.abs(dy);
        this.cx -= dx / g.drawnW;
        this.cy -= dy / g.drawnH;
        active.set(event.pointerId, current);
        this.render();
      } else if (active.size === 2) {
        active.set(event.pointerId, current);
        const points = [...active.values()];
        const d = distance(points);
        if (pinchDistance) {
          const rect = pane.getBoundingClientRect();
          const mid = { pane: p, x: (points[0].x + points[1].x) / 2 - rect.left, y: (points[0].y + points[1].y) / 2 - rect.top };
          this.zoomBy(d / pinchDistance, mid);
        }
        pinchDistance = d;
        p.moved += 10;
      }
    });

    const end = (event) => {
      active.delete(event.pointerId);
      if (active.size < 2) pinchDistance = null;
      if (active.size === 0) pane.classList.remove("dragging");
    };
    pane.addEventListener("pointerup", end);
    pane.addEventListener("pointercancel", end);
    pane.addEventListener("dblclick", (event) => {
      if (this.zoom > 1.01) this.reset();
      else this.zoomBy(3, this.#pointerAt(p, event));
    });
  }

  #trackPointer(p, event) {
    const g = this.#geometry(p);
    if (!g) return;
    const at = this.#pointerAt(p, event);
    this.pointer = {
      u: clamp((at.x - g.tx) / g.drawnW, 0, 1),
      v: clamp((at.y - g.ty) / g.drawnH, 0, 1),
    };
    if (this.loupeOn) this.render();
  }
}

function clamp(x, lo, hi) {
  return Math.min(hi, Math.max(lo, x));
}

function distance([a, b]) {
  return Math.hypot(a.x - b.x, a.y - b.y);
}

// Lay N square panes out in the area of `stage` so that they are as large as possible.
// fixedColumns forces one row (pairwise: left and right must stay left and right).
export function fitGrid(grid, stage, count, { fixedColumns = null, labelHeight = 34, gap = 12 } = {}) {
  const width = stage.clientWidth;
  const height = stage.clientHeight;
  let best = { cols: fixedColumns || count, size: 0 };
  const options = fixedColumns ? [fixedColumns] : Array.from({ length: count }, (_, i) => i + 1);
  for (const cols of options) {
    const rows = Math.ceil(count / cols);
    const size = Math.floor(Math.min(
      (width - gap * (cols - 1)) / cols,
      (height - rows * labelHeight - gap * (rows - 1)) / rows,
    ));
    if (size > best.size) best = { cols, size };
  }
  grid.style.setProperty("--cols", best.cols);
  grid.style.setProperty("--pane", `${Math.max(120, best.size)}px`);
  grid.style.setProperty("--gap", `${gap}px`);
}
