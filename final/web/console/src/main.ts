// The cache's web console. Every call goes through the Connect protocol to
// a replica's -http-addr listener, which hands it to the same grpc.Server
// that native clients use: the same token check, quotas, limits and errors.
import { createClient, ConnectError, Code, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { Cache } from "./gen/cache_pb";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  QuotaFailureSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb";

const timeoutMs = 10_000;
const replicaHeader = "x-replica";

function $<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing`);
  return el as T;
}

const tokenInput = $<HTMLInputElement>("token");
const replicaSelect = $<HTMLSelectElement>("replica");
const result = $<HTMLDivElement>("result");
const log = $<HTMLOListElement>("log");

const clients = new Map<string, Client<typeof Cache>>();

// client is the Cache client for one replica's base URL. Other replicas
// are other origins: their listeners must list this page's origin in
// -cors-origins.
function client(baseUrl: string): Client<typeof Cache> {
  let c = clients.get(baseUrl);
  if (!c) {
    c = createClient(Cache, createConnectTransport({ baseUrl }));
    clients.set(baseUrl, c);
  }
  return c;
}

// headers carry the bearer token (as native clients send it in metadata)
// and ask the replica to name itself.
function headers(extra: Record<string, string> = {}): HeadersInit {
  const h: Record<string, string> = { [replicaHeader]: "?", ...extra };
  const token = tokenInput.value.trim();
  if (token) h["authorization"] = `Bearer ${token}`;
  return h;
}

function logCall(text: string, failed: boolean) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  if (failed) li.className = "err";
  log.prepend(li);
}

function show(kind: "ok" | "err", lines: string[]) {
  result.className = `result ${kind}`;
  result.replaceChildren();
  lines.forEach((line, i) => {
    const div = document.createElement("div");
    if (i > 0) div.className = "detail";
    div.textContent = line;
    result.append(div);
  });
}

const codeNames: Record<number, string> = Object.fromEntries(
  Object.entries(Code)
    .filter(([, v]) => typeof v === "number")
    .map(([k, v]) => [v as number, k]),
);

// describe renders an error with the status details the server attached:
// the same QuotaFailure, RetryInfo, BadRequest and ErrorInfo that Go and
// Python clients read.
function describe(err: unknown): string[] {
  const ce = ConnectError.from(err);
  const lines = [`${codeNames[ce.code] ?? ce.code}: ${ce.rawMessage}`];
  for (const q of ce.findDetails(QuotaFailureSchema)) {
    for (const v of q.violations) {
      lines.push(`quota: ${v.subject}: ${v.description}`);
      const limit = /at most (\d+)/.exec(v.description);
      if (limit) $("quota-limit").textContent = `${limit[1]} keys (${v.subject})`;
    }
  }
  for (const r of ce.findDetails(RetryInfoSchema)) {
    const d = r.retryDelay;
    if (d) lines.push(`retry after ${Number(d.seconds) * 1000 + Math.round(d.nanos / 1e6)} ms`);
  }
  for (const b of ce.findDetails(BadRequestSchema)) {
    for (const v of b.fieldViolations) lines.push(`field ${v.field}: ${v.description}`);
  }
  for (const e of ce.findDetails(ErrorInfoSchema)) {
    lines.push(`reason ${e.reason}${e.domain ? ` (${e.domain})` : ""}`);
  }
  return lines;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

async function store(ev: SubmitEvent) {
  ev.preventDefault();
  const key = $<HTMLInputElement>("store-key").value;
  const val = $<HTMLInputElement>("store-val").value;
  const dryRun = $<HTMLInputElement>("dry-run").checked;
  let replica = "?";
  try {
    await client(replicaSelect.value).store(
      { key, val: enc.encode(val) },
      {
        headers: headers(dryRun ? { "dry-run": "1" } : {}),
        timeoutMs,
        onHeader: (h) => (replica = h.get(replicaHeader) ?? replica),
      },
    );
    const verb = dryRun ? "Would store" : "Stored";
    show("ok", [`${verb} ${key} (replica ${replica})`]);
    logCall(`Store ${JSON.stringify(key)} -> ok, replica ${replica}`, false);
  } catch (err) {
    const lines = describe(err);
    show("err", lines);
    logCall(`Store ${JSON.stringify(key)} -> ${lines[0]}`, true);
  }
}

async function get(ev: SubmitEvent) {
  ev.preventDefault();
  const key = $<HTMLInputElement>("get-key").value;
  let replica = "?";
  try {
    const resp = await client(replicaSelect.value).get(
      { key },
      { headers: headers(), timeoutMs, onHeader: (h) => (replica = h.get(replicaHeader) ?? replica) },
    );
    show("ok", [dec.decode(resp.val), `replica ${replica}`]);
    logCall(`Get ${JSON.stringify(key)} -> ${resp.val.length} bytes, replica ${replica}`, false);
  } catch (err) {
    const lines = describe(err);
    show("err", lines);
    logCall(`Get ${JSON.stringify(key)} -> ${lines[0]}`, true);
  }
}

let dumpAbort: AbortController | undefined;

// dump streams the tenant's items, adding rows as they arrive. One call is
// enough: the replica it reaches gathers every replica's items (forwarding),
// so the console asks only the replica selected above.
async function dump() {
  const body = $<HTMLTableElement>("dump-table").tBodies[0];
  const status = $("dump-status");
  const button = $<HTMLButtonElement>("dump");
  const stop = $<HTMLButtonElement>("dump-stop");
  body.replaceChildren();
  dumpAbort = new AbortController();
  const signal = dumpAbort.signal;
  button.disabled = true;
  stop.disabled = false;
  const baseUrl = replicaSelect.value;
  let replica = baseUrl;
  let count = 0;
  const update = (done: boolean) => {
    status.textContent = `${count} items from every replica, through ${replica}${done ? "" : ", streaming…"}`;
  };
  update(false);
  try {
    const stream = client(baseUrl).dump(
      {},
      { headers: headers(), timeoutMs, signal, onHeader: (h) => (replica = h.get(replicaHeader) ?? replica) },
    );
    for await (const item of stream) {
      const tr = document.createElement("tr");
      for (const text of [item.key, dec.decode(item.val), replica]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      body.append(tr);
      count++;
      if (count % 100 === 0) update(false);
    }
    update(true);
    $("quota-used").textContent = `${count}`;
    logCall(`Dump -> ${count} items through ${replica}`, false);
  } catch (err) {
    update(true);
    const lines = describe(err);
    show("err", ["Dump failed", ...lines]);
    logCall(`Dump -> ${count} items, then ${lines[0]}`, true);
  }
  button.disabled = false;
  stop.disabled = true;
}

async function init() {
  tokenInput.value = sessionStorage.getItem("token") ?? "";
  tokenInput.addEventListener("change", () => sessionStorage.setItem("token", tokenInput.value));
  let replicas: string[] = [];
  try {
    const resp = await fetch("config.json");
    replicas = ((await resp.json()) as { replicas?: string[] }).replicas ?? [];
  } catch {
    // Served without a configuration: this replica only.
  }
  if (replicas.length === 0) replicas = [location.origin];
  for (const url of replicas) {
    const opt = document.createElement("option");
    opt.value = url;
    opt.textContent = url === location.origin ? `${url} (this page)` : url;
    opt.selected = url === location.origin;
    replicaSelect.append(opt);
  }
  $<HTMLFormElement>("store-form").addEventListener("submit", store);
  $<HTMLFormElement>("get-form").addEventListener("submit", get);
  $("dump").addEventListener("click", dump);
  $("dump-stop").addEventListener("click", () => dumpAbort?.abort());
  document.body.dataset.ready = "true";
}

void init();
