// Best/worst: the N images of one prompt in a grid, the prompt shown. The annotator marks
// the best and the worst image (never the same one) and submits; the answer names image ids.

import { TaskPage, makePane, flash } from "./task.js";
import { fitGrid } from "./viewer.js";

const bestWorst = {
  mount(task, page) {
    const grid = document.getElementById("grid");
    const stage = document.getElementById("stage");
    const status = document.getElementById("marks-status");
    const submitButton = document.getElementById("submit");
    document.getElementById("prompt").textContent = task.prompt;
    const count = task.images.length;
    const state = { selected: 0, best: null, worst: null };

    const panes = task.images.map((image, index) => {
      const label = `Image ${index + 1} of ${count}`;
      const pane = makePane({ image, label });
      const wrap = document.createElement("div");
      wrap.className = "pane-wrap";
      const bar = document.createElement("div");
      bar.className = "pane-label";
      bar.innerHTML =
        `<span class="name"><kbd>${index + 1}</kbd> Image ${index + 1}</span><span class="spacer"></span>` +
        `<button type="button" class="mark-best" aria-pressed="false" aria-label="Mark image ${index + 1} as best">Best</button>` +
        `<button type="button" class="mark-worst" aria-pressed="false" aria-label="Mark image ${index + 1} as worst">Worst</button>`;
      bar.querySelector(".mark-best").onclick = () => { state.selected = index; mark("best"); };
      bar.querySelector(".mark-worst").onclick = () => { state.selected = index; mark("worst"); };
      // A click selects; a drag pans and does not.
      pane.pane.addEventListener("click", () => {
        if (panes[index].moved > 5) return;
        state.selected = index;
        render();
      });
      wrap.append(pane.pane, bar);
      return { ...pane, wrap, bar };
    });
    grid.replaceChildren(...panes.map((p) => p.wrap));

    function mark(which) {
      const other = which === "best" ? "worst" : "best";
      const index = state.selected;
      state[which] = state[which] === index ? null : index; // pressing again clears the mark
      if (state[other] === index) state[other] = null; // one image cannot be both
      render();
      flash(panes[index].bar.querySelector(`.mark-${which}`));
      return true;
    }

    function render() {
      panes.forEach((p, index) => {
        p.pane.classList.toggle("selected", index === state.selected);
        p.pane.classList.toggle("is-best", index === state.best);
        p.pane.classList.toggle("is-worst", index === state.worst);
        p.bar.querySelector(".mark-best").setAttribute("aria-pressed", String(index === state.best));
        p.bar.querySelector(".mark-worst").setAttribute("aria-pressed", String(index === state.worst));
      });
      const name = (i) => (i === null ? "not marked" : `image ${i + 1}`);
      status.textContent = `Selected: image ${state.selected + 1} · Best: ${name(state.best)} · Worst: ${name(state.worst)}`;
      submitButton.disabled = state.best === null || state.worst === null;
    }

    function submit() {
      if (state.best === null || state.worst === null) {
        page.toast("Mark one best and one worst image first.");
        return true;
      }
      flash(submitButton);
      page.submit({ best: task.images[state.best].id, worst: task.images[state.worst].id });
      return true;
    }

    function select(index) {
      state.selected = (index + count) % count;
      render();
      return true;
    }

    submitButton.onclick = submit;
    document.getElementById("mark-best").onclick = () => mark("best");
    document.getElementById("mark-worst").onclick = () => mark("worst");
    render();

    return {
      panes,
      layout: () => fitGrid(grid, stage, count),
      handleKey: (event) => {
        const key = event.key;
        if (/^[1-9]$/.test(key) && Number(key) <= count) return select(Number(key) - 1);
        if (event.shiftKey) return false;
        if (key === "b" || key === "B") return mark("best");
        if (key === "w" || key === "W") return mark("worst");
        if (key === "ArrowLeft") return select(state.selected - 1);
        if (key === "ArrowRight") return select(state.selected + 1);
        if (key === "Enter") return submit();
        if (key === "Escape") {
          state.best = state.worst = null;
          render();
          return true;
        }
        return false;
      },
      focus: () => stage.focus({ preventScroll: true }),
    };
  },
};

const config = JSON.parse(document.getElementById("task-config").textContent);
new TaskPage({ config, kind: bestWorst }).start();
