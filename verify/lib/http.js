// Every request the verifier makes to the site: anonymous (no cookie, no token), JSON or raw bytes.

// A site that stops answering is a network error, not a hang.
const TIMEOUT_MS = 120_000;

export class UsageError extends Error {}

/** The site or the chain could not be reached (exit 2), as opposed to answering something wrong (exit 1). */
export class NetworkError extends Error {}

/** The site answered with a status other than 2xx: a FAIL of whatever needed that document. */
export class HttpError extends Error {
  constructor(url, status) {
    super(`GET ${url} answered HTTP ${status}`);
    this.status = status;
  }
}

export class Site {
  constructor(base) {
    const url = new URL(base);
    this.origin = url.origin;
  }

  /** An absolute URL on this site for `path` (a path, or a full URL the site gave, kept on this origin). */
  url(path) {
    const url = new URL(path, this.origin);
    return this.origin + url.pathname + url.search;
  }

  async get(path, accept) {
    const url = this.url(path);
    let response;
    try {
      response = await fetch(url, {
        headers: { Accept: accept },
        redirect: "manual",
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
    } catch (e) {
      throw new NetworkError(`GET ${url}: ${e.cause?.message ?? e.message}`);
    }
    if (response.status < 200 || response.status >= 300) throw new HttpError(url, response.status);
    return response;
  }

  async json(path) {
    const response = await this.get(path, "application/json");
    const text = await response.text();
    try {
      return JSON.parse(text);
    } catch {
      throw new HttpError(this.url(path), `${response.status} with a body that is not JSON`);
    }
  }

  async bytes(path) {
    const response = await this.get(path, "*/*");
    return new Uint8Array(await response.arrayBuffer());
  }

  /** Every item of a list endpoint: a plain array, or DRF's pages ({results, next}) followed to the end. */
  async all(path) {
    const items = [];
    let next = path;
    while (next) {
      const page = await this.json(next);
      if (Array.isArray(page)) return items.concat(page);
      items.push(...(page.results ?? []));
      next = page.next;
    }
    return items;
  }
}
