// Drives Strata's web UI in headless Chromium for the failover test in
// cli/tests/browser.rs. Arguments: a standby master's URL, the screenshot
// directory. Prints "leader HOST:PORT" once the page shows a leading
// master's state (the standby redirected it there), waits for a line on
// stdin (the leader was killed), then prints "moved HOST:PORT" once the
// page shows another master's state. Any failure exits non-zero.
import { chromium } from "playwright-core";
import readline from "node:readline";

const [url, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});

/** The page's host and its master line, once it shows a master's state
 * and `accept(host)` holds; the page may navigate meanwhile. */
async function showing(page, accept, seconds) {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    try {
      const host = new URL(page.url()).host;
      const meta = (await page.textContent("#meta", { timeout: 1000 })) || "";
      if (/epoch \d+/.test(meta) && accept(host)) return host;
    } catch (e) { /* navigating */ }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`the page did not show a master's state in ${seconds} s (at ${page.url()})`);
}

try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  await page.goto(`${url}/#/`);
  const first = await showing(page, () => true, 60);
  console.log(`leader ${first}`);
  await page.screenshot({ path: `${shots}/ha-leader.png` });
  const input = readline.createInterface({ input: process.stdin });
  await new Promise((resolve) => input.once("line", resolve));
  const moved = await showing(page, (host) => host !== first, 90);
  await page.screenshot({ path: `${shots}/ha-moved.png` });
  console.log(`moved ${moved}`);
  input.close();
} catch (error) {
  console.error(error);
  process.exitCode = 1;
} finally {
  await browser.close();
}
