// Alignment: one image, its prompt and the prompt's yes/no questions. Y/N answers the
// current question and moves on; every question needs an answer before submitting.
// DSG: a "no" on a parent pre-answers its unanswered children "no" (still editable).

import { dsgApply } from "./dsg.js";
import { TaskPage, makePane, flash } from "./task.js";
import { fitGrid } from "./viewer.js";

const alignment = {
  mount(task, page) {
    const grid = document.getElementById("grid");
    const stage = document.getElementById("stage");
    const list = document.getElementById("questions");
    const status = document.getElementById("answers-status");
    const submitButton = document.getElementById("submit");
    document.getElementById("prompt").textContent = task.prompt;

    const pane = makePane({ image: task.images[0], label: "The image to check" });
    const wrap = document.createElement("div");
    wrap.className = "pane-wrap";
    wrap.append(pane.pane);
    grid.replaceChildren(wrap);
    const panes = [pane];

    // given: the annotator's own answer; answer: what is shown and sent (given, or an implied "no").
    const questions = task.questions.map((q, index) => ({ ...q, index, given: null, answer: null, implied: false }));
    const parents = Object.fromEntries(questions.map((q) => [String(q.id), q.parents.map(String)]));
    let current = 0;

    const rows = questions.map((q) => {
      const li = document.createElement("li");
      li.className = "question";
      li.id = `question-${q.index + 1}`;
      li.innerHTML =
        `<span class="num">${q.index + 1}.</span><span class="text"></span>` +
        `<span class="implied muted" hidden>(follows from a “no” above)</span>` +
        `<button type="button" class="yes" aria-pressed="false">Yes <kbd>Y</kbd></button>` +
        `<button type="button" class="no" aria-pressed="false">No <kbd>N</kbd></button>`;
      li.querySelector(".text").textContent = q.text;
      li.querySelector(".yes").setAttribute("aria-label", `Yes: ${q.text}`);
      li.querySelector(".no").setAttribute("aria-label", `No: ${q.text}`);
      li.querySelector(".yes").onclick = () => answer(q.index, "yes");
      li.querySelector(".no").onclick = () => answer(q.index, "no");
      li.addEventListener("click", (event) => {
        if (event.target.closest("button")) return;
        current = q.index;
        render();
      });
      return li;
    });
    list.replaceChildren(...rows);

    function applyImplied() {
      // Unanswered questions count as "yes" here, so only a given "no" reaches the others.
      const effective = dsgApply(Object.fromEntries(questions.map((q) => [String(q.id), q.given !== "no"])), parents);
      for (const q of questions) {
        q.implied = q.given === null && !effective[String(q.id)];
        q.answer = q.given ?? (q.implied ? "no" : null);
      }
    }

    function answer(index, value) {
      questions[index].given = value;
      applyImplied();
      flash(rows[index].querySelector(`.${value}`));
      // Move on to the next unanswered question after this one (or stay when none is left).
      const after = questions.slice(index + 1).concat(questions.slice(0, index)).find((other) => other.answer === null);
      current = after ? after.index : index;
      render();
      return true;
    }

    function render() {
      questions.forEach((q, index) => {
        const row = rows[index];
        row.classList.toggle("current", index === current);
        row.setAttribute("aria-current", index === current ? "true" : "false");
        row.querySelector(".yes").setAttribute("aria-pressed", String(q.answer === "yes"));
        row.querySelector(".no").setAttribute("aria-pressed", String(q.answer === "no"));
        row.querySelector(".implied").hidden = !q.implied;
      });
      rows[current].scrollIntoView({ block: "nearest" });
      const answered = questions.filter((q) => q.answer !== null).length;
      status.textContent = `${answered} of ${questions.length} answered`;
      submitButton.disabled = answered < questions.length;
    }

    function submit() {
      const missing = questions.find((q) => q.answer === null);
      if (missing) {
        current = missing.index;
        render();
        page.toast(`Answer question ${missing.index + 1} first.`);
        return true;
      }
      flash(submitButton);
      page.submit({ answers: questions.map((q) => ({ question: q.id, answer: q.answer })) });
      return true;
    }

    submitButton.onclick = submit;
    render();

    return {
      panes,
      layout: () => fitGrid(grid, stage, 1, { labelHeight: 0 }),
      handleKey: (event) => {
        if (event.shiftKey && event.key.startsWith("Arrow")) return false;
        const key = event.key.toLowerCase();
        if (key === "y") return answer(current, "yes");
        if (key === "n") return answer(current, "no");
        if (event.key === "ArrowDown") { current = Math.min(questions.length - 1, current + 1); render(); return true; }
        if (event.key === "ArrowUp") { current = Math.max(0, current - 1); render(); return true; }
        if (event.key === "Enter") return submit();
        return false;
      },
      focus: () => stage.focus({ preventScroll: true }),
    };
  },
};

const config = JSON.parse(document.getElementById("task-config").textContent);
new TaskPage({ config, kind: alignment }).start();
