// The annotator endpoints, with the session cookie and the CSRF header on every POST.
// A submission carries a client-generated UUID, so retrying it after a network error or a
// server hiccup is harmless: the server stores it at most once.

export class ApiError extends Error {
  constructor(message, { status = 0, body = null, retryable = false, retryAfterMs = null } = {}) {
    super(message);
    this.status = status;
    this.body = body;
    this.code = body && typeof body.code === "string" ? body.code : null;
    this.retryable = retryable;
    this.retryAfterMs = retryAfterMs;
  }
}

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  if (match) return decodeURIComponent(match[1]);
  const input = document.querySelector("input[name=csrfmiddlewaretoken]");
  return input ? input.value : "";
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class AnnotateApi {
  constructor(urls) {
    this.urls = urls;
  }

  async #request(method, url, body) {
    let response;
    try {
      response = await fetch(url, {
        method,
        credentials: "same-origin",
        headers: {
          Accept: "application/json",
          ...(body !== undefined ? { "Content-Type": "application/json", "X-CSRFToken": csrfToken() } : {}),
        },
        body: body !== undefined ? JSON.stringify(body) : undefined,
      });
    } catch (error) {
      throw new ApiError("The server could not be reached.", { retryable: true });
    }
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      data = null;
    }
    if (!response.ok) {
      if (response.status === 403 && data && /login|credentials/i.test(data.detail || "")) {
        window.location.assign(`/accounts/login/?next=${encodeURIComponent(window.location.pathname + window.location.search)}`);
      }
      const retryable = response.status >= 500 || response.status === 429 || response.status === 408;
      const seconds = Number(response.headers.get("Retry-After"));
      const retryAfterMs = Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : null;
      throw new ApiError(errorMessage(data, response.status), { status: response.status, body: data, retryable, retryAfterMs });
    }
    return data;
  }

  // Retries retryable failures with backoff; the same body (and UUID) goes out every time.
  async #withRetries(call, { attempts = 5, onRetry = () => {} } = {}) {
    let delay = 400;
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await call();
      } catch (error) {
        if (!(error instanceof ApiError) || !error.retryable || attempt >= attempts) throw error;
        onRetry(error, attempt);
        await sleep(error.retryAfterMs ?? delay);
        delay = Math.min(delay * 2, 8000);
      }
    }
  }

  // Leases the next item of the round; `exclude` names the leases this page already holds.
  next({ exclude = [] } = {}) {
    return this.#withRetries(() => this.#request("POST", this.urls.next, { exclude }), { attempts: 3 });
  }

  submit(payload, options = {}) {
    return this.#withRetries(() => this.#request("POST", this.urls.submit, payload), options);
  }

  // Declines the leased item with a reason; repeating it changes nothing, so it is retried like submit.
  skip(payload, options = {}) {
    return this.#withRetries(() => this.#request("POST", this.urls.skip, payload), options);
  }

  undo(judgment) {
    return this.#request("POST", this.urls.undo, { judgment });
  }

  progress() {
    return this.#request("GET", this.urls.progress);
  }
}

function errorMessage(data, status) {
  if (data && typeof data.detail === "string") return data.detail;
  if (data && typeof data === "object") {
    const first = Object.entries(data)[0];
    if (first) return `${first[0]}: ${Array.isArray(first[1]) ? first[1].join(" ") : first[1]}`;
  }
  return `The server answered ${status}.`;
}
