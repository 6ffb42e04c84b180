// The report page while its report is being computed: ask the server every few seconds whether
// a newer report is stored, and reload the page when it is.
const page = document.getElementById("report");
const shown = page.dataset.computedAt;
const POLL_MS = 3000;

async function poll() {
  try {
    const response = await fetch(page.dataset.statusUrl, { headers: { Accept: "application/json" } });
    if (response.ok) {
      const status = await response.json();
      if (status.computed_at && status.computed_at !== shown) {
        window.location.reload();
        return;
      }
    }
  } catch (error) {
    // A failed poll (network, server restart) is tried again at the next tick.
  }
  window.setTimeout(poll, POLL_MS);
}

window.setTimeout(poll, POLL_MS);
