// The annotator's dashboard: every open round with this annotator's own counts.
// Round names are researchers' words and may name models, so annotators see kinds and numbers only.

import { AnnotateApi } from "./api.js";

const KINDS = {
  pairwise: { path: "pairwise", title: "Pairwise" },
  best_worst: { path: "best-worst", title: "Best and worst of 5" },
  alignment: { path: "alignment", title: "Text alignment" },
};

function titleOf(round, criteria) {
  const title = KINDS[round.kind].title;
  const criterion = round.criterion && criteria[round.criterion];
  return criterion ? `${title}: ${criterion.label.toLowerCase()}` : title;
}

function card(round, criteria) {
  const article = document.createElement("article");
  article.className = "task-card";
  const available = round.available_to_me;
  if (!available) article.classList.add("empty");
  const percent = round.items_total ? Math.round((100 * round.items_complete) / round.items_total) : 0;
  article.innerHTML = `
    <h2></h2>
    <div class="muted">Round ${round.id}</div>
    <div class="numbers"><strong>${round.judged_by_me}</strong> judged by you · <strong>${available}</strong> available</div>
    <div class="meter" role="meter" aria-valuemin="0" aria-valuemax="100" aria-valuenow="${percent}" aria-label="Round completion"><span style="width:${percent}%"></span></div>
    <div class="muted numbers">${round.items_complete} of ${round.items_total} items complete</div>
    <div class="actions"></div>`;
  article.querySelector("h2").textContent = titleOf(round, criteria);
  const actions = article.querySelector(".actions");
  const link = document.createElement("a");
  link.href = `/annotate/${KINDS[round.kind].path}/${round.id}/`;
  if (available) {
    link.className = "button primary";
    link.textContent = round.judged_by_me ? "Continue" : "Start";
  } else {
    // An item this annotator holds right now is not counted as available: keep the way back open.
    link.className = "button";
    link.textContent = "Open";
    const note = document.createElement("span");
    note.className = "muted";
    note.textContent = " Nothing new for you here.";
    actions.append(link, note);
  }
  link.setAttribute("aria-label", `${link.textContent}: ${titleOf(round, criteria)}, round ${round.id}`);
  if (available) actions.append(link);
  return article;
}

async function main() {
  const config = JSON.parse(document.getElementById("dashboard-config").textContent);
  const api = new AnnotateApi({ progress: config.progress });
  const totals = document.getElementById("totals");
  const list = document.getElementById("rounds");
  let data;
  try {
    data = await api.progress();
  } catch (error) {
    totals.textContent = `Could not load your rounds: ${error.message}`;
    return;
  }
  const rounds = data.rounds.filter((round) => KINDS[round.kind]);
  totals.textContent = `You judged ${data.judged_today} items today, ${data.judged_total} in all.`;
  if (!rounds.length) {
    list.innerHTML = '<p class="card">No open rounds right now. Check back later.</p>';
    return;
  }
  // Rounds with work first.
  rounds.sort((a, b) => (b.available_to_me > 0) - (a.available_to_me > 0) || a.id - b.id);
  list.replaceChildren(...rounds.map((round) => card(round, config.criteria)));
}

main();
