"""Drives the demo and admin pages in headless Chromium (Debian's chromium and chromium-driver,
through Python's selenium). Run by Tests/SwitchboardTests/BrowserTests.swift, which starts the
cluster; each scenario exits 0 when every check holds, or prints what failed and exits 1.

    python3 Tests/Browser/pages.py chat     --nodes URL1,URL2
    python3 Tests/Browser/pages.py recovery --nodes URL1,URL2
    python3 Tests/Browser/pages.py escape   --nodes URL1
    python3 Tests/Browser/pages.py client   --nodes URL1,URL2   (a cluster keeping 3 messages per stream)
    python3 Tests/Browser/pages.py admin    --nodes URL1,URL2,URL3 --kill-pid PID [--api-key KEY]
    python3 Tests/Browser/pages.py screenshots --nodes URL1,URL2 --out docs/images
"""

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 20  # seconds any one condition may take (a debug build on two loaded cores)


class Failed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failed(message)


def browser(width=1280, height=860):
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--disable-extensions", f"--window-size={width},{height}"):
        options.add_argument(argument)
    options.add_argument("--user-data-dir=" + tempfile.mkdtemp(prefix="sb-chromium-"))
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(options=options, service=service)


def wait(driver, what, condition, timeout=WAIT):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d))
    except TimeoutException:
        logs = "\n".join(entry["message"] for entry in driver.get_log("browser"))
        raise Failed(f"timed out waiting for {what}\nbrowser console:\n{logs}")


def join(driver, node, name, room):
    driver.get(node + "/")
    driver.find_element(By.ID, "name").send_keys(name)
    room_input = driver.find_element(By.ID, "room")
    room_input.clear()
    room_input.send_keys(room)
    driver.find_element(By.ID, "join").click()
    wait(driver, f"{name} to join {room}", lambda d: d.find_element(By.ID, "chat").is_displayed())
    check(driver.find_element(By.ID, "me").text == name, "the page shows who you are")


def say(driver, text):
    box = driver.find_element(By.ID, "text")
    box.send_keys(text)
    driver.find_element(By.ID, "send").click()


def messages(driver):
    """The texts of the room's messages, in the order shown."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#messages li[data-kind=message]')].map(li => li.dataset.text)")


def presence(driver):
    return driver.execute_script("return [...document.querySelectorAll('#presence li')].map(li => li.dataset.user)")


def node_of(driver):
    return driver.find_element(By.ID, "node").text


# MARK: Scenarios

def chat(nodes):
    """Two pages on two nodes chat in a room and see each other in presence."""
    alice, bob = browser(), browser()
    try:
        join(alice, nodes[0], "alice", "lobby")
        join(bob, nodes[1], "bob", "lobby")
        check(node_of(alice) != node_of(bob), f"the pages are on two nodes ({node_of(alice)}, {node_of(bob)})")
        wait(alice, "alice to see bob in presence", lambda d: presence(d) == ["alice", "bob"])
        wait(bob, "bob to see alice in presence", lambda d: presence(d) == ["alice", "bob"])
        say(alice, "hello from alice")
        wait(bob, "bob to get alice's message", lambda d: messages(d) == ["hello from alice"])
        say(bob, "hi alice")
        wait(alice, "alice to get bob's reply", lambda d: messages(d) == ["hello from alice", "hi alice"])
        wait(bob, "bob to see both", lambda d: messages(d) == ["hello from alice", "hi alice"])
        who = bob.execute_script("return document.querySelector('#messages li .who').textContent")
        check(who == f"alice ({node_of(alice)})", f"a message names its sender's node: {who!r}")
        bob.get("about:blank")  # bob leaves: alice sees it
        wait(alice, "alice to see bob leave", lambda d: presence(d) == ["alice"])
    finally:
        alice.quit()
        bob.quit()


def recovery(nodes):
    """A page's connection is killed while the other keeps sending: it ends with every message
    once, in order."""
    sender, reader = browser(), browser()
    count = 40
    try:
        join(sender, nodes[0], "sender", "recovery")
        join(reader, nodes[1], "reader", "recovery")
        say(sender, "m0")
        wait(reader, "the first message", lambda d: messages(d) == ["m0"])
        reader.execute_script(
            "window.reconnects = 0; window.demo.client.addEventListener('open', () => window.reconnects++)")
        missed = 0  # messages sent while the reader had no connection
        for index in range(1, count + 1):
            if index == 5:
                reader.find_element(By.ID, "kill").click()  # back after 2 s
                wait(reader, "the connection to drop", lambda d: d.execute_script("return window.demo.client.state") != "open")
            say(sender, f"m{index}")
            if reader.execute_script("return window.demo.client.state") != "open":
                missed += 1
        check(missed > 0, "some messages were sent while the reader was away")
        expected = [f"m{index}" for index in range(0, count + 1)]
        wait(sender, "the sender to see its own messages", lambda d: messages(d) == expected)
        wait(reader, "the reader to have every message", lambda d: len(messages(d)) >= len(expected))
        got = messages(reader)
        check(got == expected, f"every message once, in order; got {got}")
        check(reader.execute_script("return window.reconnects") >= 1, "the reader reconnected")
        check("Reconnected" in reader.find_element(By.ID, "recovery").text, "the page says it reconnected")
        notes = reader.execute_script(
            "return [...document.querySelectorAll('#messages li[data-kind=note]')].map(li => li.textContent)")
        check(notes == [], f"nothing was reported lost: {notes}")
        offsets = reader.execute_script(
            "return [...document.querySelectorAll('#messages li[data-kind=message]')].map(li => Number(li.dataset.offset))")
        check(offsets == list(range(offsets[0], offsets[0] + len(offsets))), f"consecutive offsets: {offsets}")
    finally:
        sender.quit()
        reader.quit()


def escape(nodes):
    """A message whose text is markup shows as text and runs nothing."""
    page = browser()
    try:
        join(page, nodes[0], "mallory", "xss")
        payload = '<img src=x onerror="window.pwned=1">'
        say(page, payload)
        wait(page, "the message", lambda d: messages(d) == [payload])
        shown = page.execute_script("return document.querySelector('#messages li[data-kind=message] .body').textContent")
        check(shown == payload, f"shown as text: {shown!r}")
        check(page.execute_script("return document.querySelectorAll('#messages img').length") == 0, "no element made")
        check(page.execute_script("return window.pwned === undefined"), "no script ran")
    finally:
        page.quit()


CLIENT_SCRIPT = """
const [nodeA, nodeB, done] = arguments;
const wsURL = (base) => base.replace(/^http/, "ws") + "/ws";
const report = {};
(async () => {
  const { Switchboard, SwitchboardError } = await import("/switchboard.js");
  const ann = new Switchboard({ user: "ann", url: wsURL(nodeA) });
  const ben = new Switchboard({ user: "ben", url: [wsURL(nodeB), wsURL(nodeA)], minDelay: 50 });
  const got = [];
  const lost = [];
  ben.addEventListener("message", (event) => got.push(event.detail));
  ben.addEventListener("notrecovered", (event) => lost.push(event.detail));
  const until = async (what, condition) => {
    for (let i = 0; i < 200 && !condition(); i++) await new Promise((r) => setTimeout(r, 50));
    if (!condition()) throw new Error("timed out waiting for " + what);
  };
  report.welcome = (await ann.connect()).node !== (await ben.connect()).node;
  await ben.join("r");
  await ann.publish("r", { n: 1 });
  await ann.send("ben", { n: 2 });
  await ann.broadcast({ n: 3 });
  await until("three messages", () => got.length === 3);
  report.kinds = got.map((m) => [m.data.n, m.room ?? null, m.to ?? null, m.broadcast ?? false]);
  report.presence = await ann.presence("r");
  const history = await ann.history("r", 3);
  report.history = [history.offset, history.messages.map((m) => m.data.n)];
  try { await ann.join("bad name!"); report.badName = "accepted"; } catch (e) { report.badName = e instanceof SwitchboardError ? e.code : String(e); }
  report.pong = (await ann.ping()).type;

  // Away for a moment: two direct messages (the history keeps 3) come back on the inbox;
  // five room messages do not fit, and the app is told. (Ben's other connection keeps him
  // online, so that `send` is accepted: to a user with no connection it is `offline`.)
  const benElsewhere = new Switchboard({ user: "ben", url: wsURL(nodeA) });
  await benElsewhere.connect();
  ben.dropConnection(1500);
  await until("ben to be away", () => ben.state !== "open");
  for (const n of [10, 11]) await ann.send("ben", { n });
  for (const n of [20, 21, 22, 23, 24]) await ann.publish("r", { n });
  report.awayWhileSent = ben.state !== "open";
  await until("ben back", () => ben.state === "open");
  await until("the inbox replayed", () => got.some((m) => m.data.n === 11));
  report.inbox = got.filter((m) => m.to === "ben").map((m) => m.data.n);
  report.lost = lost.map((l) => l.room ?? (l.inbox ? "inbox" : "?"));
  await ann.publish("r", { n: 30 });
  await until("live again", () => got.some((m) => m.data.n === 30));
  report.roomAfter = got.filter((m) => m.room === "r").map((m) => m.data.n);
  ann.close();
  ben.close();
  benElsewhere.close();
  try { await ben.publish("r", 1); report.afterClose = "sent"; } catch (e) { report.afterClose = e.code; }
  done(JSON.stringify(report));
})().catch((error) => done("ERROR " + error.message));
"""


def client(nodes):
    """switchboard.js on its own: every command, the inbox resumed, and an unrecoverable room
    reported (the cluster keeps 3 messages per stream)."""
    page = browser()
    try:
        page.set_script_timeout(60)
        page.get(nodes[0] + "/")
        answer = page.execute_async_script(CLIENT_SCRIPT, nodes[0], nodes[1])
        check(not answer.startswith("ERROR"), answer)
        report = json.loads(answer)
        check(report["welcome"], "two clients on two nodes")
        check(report["kinds"] == [[1, "r", None, False], [2, None, "ben", False], [3, None, None, True]],
              f"publish, send and broadcast arrive as such: {report['kinds']}")
        check(report["presence"] == ["ben"], f"presence: {report['presence']}")
        check(report["history"] == [1, [1]], f"history: {report['history']}")
        check(report["badName"] == "invalid_name", f"a bad room name is refused: {report['badName']}")
        check(report["pong"] == "pong", "ping")
        check(report["awayWhileSent"], "the messages were sent while ben was away")
        check(report["inbox"] == [2, 10, 11], f"the inbox resumed, once each: {report['inbox']}")
        check(report["lost"] == ["r"], f"the room that could not be recovered is reported, the inbox not: {report['lost']}")
        check(report["roomAfter"] == [1, 30], f"no partial replay, live again after: {report['roomAfter']}")
        check(report["afterClose"] == "closed", f"a closed client refuses: {report['afterClose']}")
    finally:
        page.quit()


def admin(nodes, kill_pid, api_key):
    """The admin page lists every node and updates when one is killed; a wrong key is refused."""
    page = browser(1400, 900)
    try:
        page.get(nodes[0] + "/admin")
        if api_key:
            wait(page, "the key form", lambda d: d.find_element(By.ID, "key-card").is_displayed())
            page.find_element(By.ID, "key").send_keys("wrong-key")
            page.find_element(By.ID, "key-submit").click()
            wait(page, "the wrong key to be refused",
                 lambda d: d.find_element(By.ID, "key-error").is_displayed()
                 and "refused" in d.find_element(By.ID, "key-error").text)
            check(not page.find_element(By.ID, "dashboard").is_displayed(), "nothing shown with a wrong key")
            check("wrong-key" not in page.current_url, "the key is not in the URL")
            page.find_element(By.ID, "key").send_keys(api_key)
            page.find_element(By.ID, "key-submit").click()
            check(api_key not in page.current_url, "the key is not in the URL")
        ids = [f"n{index + 1}" for index in range(len(nodes))]

        def states(d):
            return d.execute_script(
                "return Object.fromEntries([...document.querySelectorAll('#nodes tbody tr')]"
                ".map(tr => [tr.dataset.node, tr.dataset.state]))")

        wait(page, f"every node ready: {ids}", lambda d: states(d) == {node: "ready" for node in ids})
        os.kill(kill_pid, signal.SIGKILL)
        victim = ids[-1]
        wait(page, f"{victim} shown down after its kill",
             lambda d: states(d).get(victim) in ("down", "unreachable")
             and all(states(d).get(node) == "ready" for node in ids[:-1]), timeout=40)
    finally:
        page.quit()


def screenshots(nodes, out):
    os.makedirs(out, exist_ok=True)
    alice, bob = browser(1200, 760), browser(1200, 760)
    try:
        join(alice, nodes[0], "alice", "lobby")
        join(bob, nodes[1], "bob", "lobby")
        wait(alice, "presence", lambda d: presence(d) == ["alice", "bob"])
        for text, page in (("Hi Bob, I am on the first node.", alice), ("Hello Alice! Second node here.", bob),
                           ("Kill your connection and watch it recover.", alice)):
            say(page, text)
            time.sleep(0.2)  # a natural order for the picture, not a correctness wait
        wait(bob, "three messages", lambda d: len(messages(d)) == 3)
        bob.save_screenshot(os.path.join(out, "demo.png"))
        admin_page = browser(1400, 820)
        try:
            admin_page.get(nodes[0] + "/admin")
            wait(admin_page, "the dashboard", lambda d: len(d.find_elements(By.CSS_SELECTOR, "#nodes tbody tr")) >= 2)
            for page in (alice, bob):  # some traffic, so that the rates show
                page.execute_script(
                    "setInterval(() => window.demo.client.publish('lobby', {text: 'tick'}).catch(() => {}), 50)")
            time.sleep(8)  # a few refreshes, so the rates and the chart have points
            admin_page.save_screenshot(os.path.join(out, "admin.png"))
        finally:
            admin_page.quit()
    finally:
        alice.quit()
        bob.quit()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["chat", "recovery", "escape", "client", "admin", "screenshots"])
    parser.add_argument("--nodes", required=True, help="the nodes' HTTP base URLs, comma-separated")
    parser.add_argument("--kill-pid", type=int)
    parser.add_argument("--api-key")
    parser.add_argument("--out", default="docs/images")
    arguments = parser.parse_args()
    nodes = arguments.nodes.split(",")
    try:
        if arguments.scenario == "chat":
            chat(nodes)
        elif arguments.scenario == "recovery":
            recovery(nodes)
        elif arguments.scenario == "escape":
            escape(nodes)
        elif arguments.scenario == "client":
            client(nodes)
        elif arguments.scenario == "admin":
            admin(nodes, arguments.kill_pid, arguments.api_key)
        else:
            screenshots(nodes, arguments.out)
    except Failed as failure:
        print(f"FAILED {arguments.scenario}: {failure}", file=sys.stderr)
        sys.exit(1)
    print(f"passed {arguments.scenario}")


if __name__ == "__main__":
    main()
