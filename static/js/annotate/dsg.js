// The DSG rule, for display only: the stored result is decided by annotation/voting.py
// (dsg_apply), and both are tested on tests/annotation/dsg_cases.json.
// A question counts as "no" when it is "no" or when a question it depends on (directly or
// through others) counts as "no"; a question on a dependency cycle is judged by its own answer.

// answers: {question: true | false}; parents: {question: [questions it depends on]}.
export function dsgApply(answers, parents) {
  const known = (id) => Object.prototype.hasOwnProperty.call(answers, id);
  const parentsOf = (id) => (parents[id] || []).filter((p) => known(String(p))).map(String);
  const onCycle = new Set();
  for (const question of Object.keys(answers)) {
    const stack = parentsOf(question);
    const seen = new Set();
    while (stack.length) {
      const current = stack.pop();
      if (current === question) { onCycle.add(question); break; }
      if (!seen.has(current)) { seen.add(current); stack.push(...parentsOf(current)); }
    }
  }
  const resolved = new Map();
  function effective(question) {
    if (!resolved.has(question)) {
      let value = Boolean(answers[question]);
      if (value && !onCycle.has(question)) value = parentsOf(question).every(effective);
      resolved.set(question, value);
    }
    return resolved.get(question);
  }
  return Object.fromEntries(Object.keys(answers).map((q) => [q, effective(q)]));
}
