// Drives the web console in Debian's Chromium (playwright-core never
// downloads a browser). The Go test TestConsoleInChromium starts the
// deployment and runs this with CONSOLE_URL set; see final/README.md.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const url = process.env.CONSOLE_URL;
const bulkKeys = Number(process.env.CONSOLE_BULK_KEYS ?? "1000");
const timeout = 30_000;

let browser;
let page;

before(async () => {
  assert.ok(url, "CONSOLE_URL is not set: run this through go test -run TestConsoleInChromium ./final/web/");
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--no-first-run",
    ],
  });
  page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.setDefaultTimeout(timeout);
  page.on("pageerror", (err) => console.error("page error:", err));
  await page.goto(url);
  await page.waitForSelector("body[data-ready=true]");
});

after(async () => {
  await browser?.close();
});

async function useToken(token) {
  await page.getByTestId("token").fill(token);
}

async function store(key, val) {
  await page.getByTestId("store-key").fill(key);
  await page.getByTestId("store-val").fill(val);
  await page.getByTestId("store").click();
}

async function resultText(expect) {
  const result = page.getByTestId("result");
  await result.filter({ hasText: expect }).waitFor();
  return result.innerText();
}

test("store and get a key, naming the replica that answered", async () => {
  await useToken("inconshreveable");
  await store("gopher", "con");
  assert.match(await resultText("Stored gopher"), /Stored gopher \(replica cache-\d\)/);
  await page.getByTestId("get-key").fill("gopher");
  await page.getByTestId("get").click();
  // Wait for the Get's answer itself: the Store's, still shown, names a
  // replica too.
  const result = page.getByTestId("result");
  await result.filter({ hasNotText: "Stored gopher" }).waitFor();
  assert.match(await result.innerText(), /^con\n/);
});

test("a key with / and % in it round-trips", async () => {
  await store("a/b%c", "odd");
  await resultText("Stored a/b%c");
  await page.getByTestId("get-key").fill("a/b%c");
  await page.getByTestId("get").click();
  assert.match(await resultText("odd"), /^odd\n/);
});

test(`a dump of ${bulkKeys} keys streams into the page`, async () => {
  await useToken("bulk");
  await page.getByTestId("dump").click();
  const status = page.getByTestId("dump-status");
  await status.filter({ hasText: new RegExp(`^${bulkKeys} items from every replica, through \\S+$`) }).waitFor();
  assert.equal(await page.locator("[data-testid=dump-table] tbody tr").count(), bulkKeys);
  assert.equal(await page.getByTestId("quota-used").innerText(), String(bulkKeys));
});

test("a quota refusal shows its limit from the QuotaFailure detail", async () => {
  await useToken("gopher");
  for (const key of ["q1", "q2", "q3"]) {
    await store(key, "v");
    await resultText(`Stored ${key}`);
  }
  await store("q4", "v");
  const text = await resultText("FailedPrecondition");
  assert.match(text, /quota: tenant:gopher: at most 3 keys across all replicas/);
  assert.match(await page.getByTestId("quota-limit").innerText(), /^3 keys/);
  if (process.env.SCREENSHOT) {
    await page.getByTestId("dump").click(); // fill the dump table for the picture
    await page.getByTestId("dump-status").filter({ hasText: /^3 items/ }).waitFor();
    await store("q4", "v");
    await resultText("FailedPrecondition");
    await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
  }
});

test("an unknown token is refused", async () => {
  await useToken("nobody");
  await page.getByTestId("get-key").fill("gopher");
  await page.getByTestId("get").click();
  assert.match(await resultText("Unauthenticated"), /Unauthenticated: unknown account token/);
});
