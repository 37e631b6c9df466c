// Drives Strata's web UI in headless Chromium for cli/tests/browser.rs.
// Arguments: the UI's URL, the screenshot directory, the task id to follow.
// Prints "ready", "running", "finished" and "output" as it gets there; the
// Rust test launches the task after "ready" and lets it end after
// "running". Any failure exits non-zero with the reason.
import { chromium } from "playwright-core";

const [url, shots, taskId] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  page.setDefaultTimeout(30_000);
  // The page follows the operator API's event stream.
  let subscribed = 0;
  page.on("request", (request) => {
    if (request.method() === "POST" && request.url().endsWith("/api/v1")
        && (request.postData() || "").includes("SUBSCRIBE")) subscribed += 1;
  });
  await page.goto(`${url}/#/`);
  await page.getByText("Resources").waitFor();
  // The overview counts the agent once it has registered.
  await page.getByText("1 active of 1").waitFor();
  // Marks this document: a reload would lose it.
  await page.evaluate(() => { window.sameDocument = true; });
  console.log("ready");

  await page.click('#nav a[data-page="tasks"]');
  const state = page.locator(`tr[data-task="${taskId}"] .task-state`);
  await state.filter({ hasText: "RUNNING" }).waitFor({ timeout: 60_000 });
  await page.screenshot({ path: `${shots}/tasks-running.png`, fullPage: true });
  await page.click('#nav a[data-page="overview"]');
  await page.getByText("Running tasks").waitFor();
  await page.screenshot({ path: `${shots}/overview.png`, fullPage: true });
  // The running task's page shows what it uses, from its agent.
  await page.click('#nav a[data-page="tasks"]');
  await page.click(`tr[data-task="${taskId}"] a`);
  await page.locator("#usage").filter({ hasText: "CPU time" }).waitFor();
  await page.screenshot({ path: `${shots}/task-usage.png`, fullPage: true });
  await page.click('#nav a[data-page="tasks"]');
  console.log("running");

  await state.filter({ hasText: "FINISHED" }).waitFor({ timeout: 60_000 });
  await page.screenshot({ path: `${shots}/tasks-finished.png`, fullPage: true });
  console.log("finished");

  await page.click(`tr[data-task="${taskId}"] a`);
  await page.locator("#log").filter({ hasText: "hello from the browser test" }).waitFor();
  await page.screenshot({ path: `${shots}/task.png`, fullPage: true });
  await page.click('#nav a[data-page="agents"]');
  await page.locator("table").first().waitFor();
  await page.screenshot({ path: `${shots}/agents.png`, fullPage: true });
  if (!(await page.evaluate(() => window.sameDocument === true))) {
    throw new Error("the page reloaded; it should update in place");
  }
  if (subscribed < 1) throw new Error("the page did not follow the operator event stream");
  console.log("output");
} finally {
  await browser.close();
}
