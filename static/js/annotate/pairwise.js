// Pairwise: two images of one prompt side by side, the prompt hidden; left, tie or right
// (and, for visual appeal, "cannot compare"). The answer names the winning image's id.

import { TaskPage, makePane, flash } from "./task.js";
import { fitGrid } from "./viewer.js";

const SIDES = ["Left image", "Right image"];
const KEYS = {
  1: "left", ArrowLeft: "left",
  2: "tie", ArrowDown: "tie",
  3: "right", ArrowRight: "right",
  r: "cannot_compare", R: "cannot_compare",
};

const pairwise = {
  mount(task, page) {
    const grid = document.getElementById("grid");
    const stage = document.getElementById("stage");
    // The question of each criterion comes from the server (task config), with the criteria enum.
    const criterion = page.config.criteria[task.criterion];
    document.getElementById("question").textContent = criterion ? criterion.question : "Which image is better?";
    const panes = task.images.map((image, index) => {
      const pane = makePane({ image, label: SIDES[index] });
      const wrap = document.createElement("div");
      wrap.className = "pane-wrap";
      const label = document.createElement("div");
      label.className = "pane-label";
      label.innerHTML = `<span class="name">${index === 0 ? "Left" : "Right"}</span>`;
      wrap.append(pane.pane, label);
      return { ...pane, wrap };
    });
    grid.replaceChildren(...panes.map((p) => p.wrap));

    const buttons = {};
    for (const choice of ["left", "tie", "right", "cannot_compare"]) {
      const button = document.getElementById(`choice-${choice}`);
      button.hidden = !task.choices.includes(choice);
      button.onclick = () => choose(choice);
      buttons[choice] = button;
    }

    function choose(choice) {
      if (!task.choices.includes(choice)) return false;
      flash(buttons[choice]);
      const answer =
        choice === "left" ? { outcome: "win", winner: task.images[0].id }
        : choice === "right" ? { outcome: "win", winner: task.images[1].id }
        : { outcome: choice };
      page.submit(answer);
      return true;
    }

    return {
      panes,
      layout: () => fitGrid(grid, stage, panes.length, { fixedColumns: panes.length }),
      handleKey: (event) => (event.shiftKey && event.key.startsWith("Arrow") ? false : KEYS[event.key] ? choose(KEYS[event.key]) : false),
      // Focus goes to the images, not a button: Space or Enter must not repeat the last choice.
      focus: () => stage.focus({ preventScroll: true }),
    };
  },
};

const config = JSON.parse(document.getElementById("task-config").textContent);
new TaskPage({ config, kind: pairwise }).start();
