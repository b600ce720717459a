// Types of @leadscore/sdk (hand-written: the SDK itself is plain JavaScript with no build-time types).

export interface LeadscoreOptions {
  /** A publishable key (`lsp_…`) of a project that lists this page's origin in allowedOrigins. */
  key: string;
  /** leadscore's address, e.g. "https://leadscore.example.com" (default: this page's origin). */
  host?: string;
  /** ms a first event waits for company before its batch is sent (1000). */
  flushInterval?: number;
  /** events per request (50; the server takes up to 1,000). */
  maxBatch?: number;
  /** resends of a batch before it is given up (8). */
  maxRetries?: number;
  /** ms of the first backoff, doubled per attempt (1000). */
  retryBase?: number;
  /** ms, the longest backoff (30000); a Retry-After from the server is honoured as is. */
  retryCap?: number;
  /** ms before an unanswered request is abandoned and retried (10000). */
  timeout?: number;
  /** events kept while leadscore cannot be reached; beyond it the oldest are dropped (1000). */
  maxQueue?: number;
}

export type Properties = Record<string, unknown>;

export interface Leadscore {
  init(options: LeadscoreOptions): Leadscore;
  /** Queue an event; `eventType` must match /^[A-Za-z0-9_.:-]{1,64}$/. Returns its eventId. */
  track(eventType: string, properties?: Properties): string;
  /** A page_view with url, path, title and referrer (the given properties win). */
  page(properties?: Properties): string;
  /** An identify event with the e-mail and traits (name, company, …). */
  identify(email: string, traits?: Properties): string;
  /** Send what is queued now. */
  flush(): Promise<void>;
  /** This browser's id, the lead key of its events. */
  anonymousId(): string;
  /** Events not yet acknowledged. */
  pending(): number;
}

/** What a browser provides, replaceable (tests pass fakes). */
export interface LeadscoreEnvironment {
  fetch?: typeof fetch;
  storage?: Pick<Storage, "getItem" | "setItem">;
  navigator?: { sendBeacon?(url: string, body: string): boolean };
  document?: unknown;
  window?: unknown;
  setTimeout?(fn: () => void, ms: number): unknown;
  clearTimeout?(id: unknown): void;
  random?(): number;
  now?(): number;
  crypto?: Partial<Pick<Crypto, "randomUUID" | "getRandomValues">>;
  warn?(...message: unknown[]): void;
}

export function createLeadscore(env?: LeadscoreEnvironment): Leadscore;
export default createLeadscore;

declare global {
  /** The script-tag build's instance, with `create` for another one. */
  var leadscore: Leadscore & { create: typeof createLeadscore };
}
