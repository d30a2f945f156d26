#!/usr/bin/python3
"""The workspace in a real browser: headless Chromium driven by Selenium.

Usage: Tests/browser/workspace_test.py [LODE_BINARY] [SCREENSHOT_DIR]

Starts two nodes of one cluster on loopback (berlin with the bundled
dataset, lyon syncing from it), then, as people in a browser:
sign in with `lode ui`, browse the datasets, filter a table, open a row,
annotate a cell, reply, resolve; the annotation appears in lyon's workspace
after sync, named after its person; a reader sees no write and the server
refuses one anyway; a conflict made at both nodes is resolved in the page
("keep this value") and converges everywhere; a used or foreign sign-in
link is refused. Keeps screenshots of the main pages in SCREENSHOT_DIR.
Needs Debian's chromium, chromium-driver and python3-selenium.
"""
import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait
from selenium.common.exceptions import StaleElementReferenceException

LODE = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".build/debug/lode")
SHOTS = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else ".build/browser-screenshots")
WORK = tempfile.mkdtemp(prefix="lode-browser-")
procs = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lode(*args, user="tess", check=True):
    env = dict(os.environ, LODE_USER=user)
    env.pop("LODE_DATA_DIR", None)
    r = subprocess.run([LODE, *args], env=env, capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"lode {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout.strip()


def serve(name, *extra):
    d = os.path.join(WORK, name)
    log = open(os.path.join(WORK, name + ".log"), "w")
    p = subprocess.Popen([LODE, "serve", "--data-dir", d, *extra], stdout=log, stderr=subprocess.STDOUT)
    procs.append(p)
    deadline = time.time() + 60
    while time.time() < deadline:
        if os.path.exists(os.path.join(d, "lode.sock")):
            try:
                lode("status", "--data-dir", d)
                return d
            except AssertionError:
                pass
        if p.poll() is not None:
            raise AssertionError(f"{name} stopped: {open(log.name).read()}")
        time.sleep(0.2)
    raise AssertionError(f"{name} did not start")


def sign_in(driver, link):
    """Opens a sign-in link and presses its button (opening it spends nothing)."""
    driver.get(link)
    wait(driver, lambda d: d.find_elements(By.ID, "sign-in"), "the sign-in button")
    driver.find_element(By.ID, "sign-in").click()


def browser():
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"]:
        o.add_argument(a)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)


def shot(driver, name):
    os.makedirs(SHOTS, exist_ok=True)
    driver.save_screenshot(os.path.join(SHOTS, name + ".png"))


def wait(driver, condition, what, seconds=20):
    # A page that navigates (a sign-in redirect, a form post) between finding
    # an element and reading it leaves a stale reference: look again.
    try:
        return WebDriverWait(driver, seconds, ignored_exceptions=(StaleElementReferenceException,)).until(condition)
    except Exception as e:
        shot(driver, "failed-" + what.replace(" ", "-"))
        raise AssertionError(f"waited for {what}: {e}; page: {driver.current_url}\n{driver.page_source[:2000]}")


def text_present(driver, text, what=None, seconds=20):
    wait(driver, lambda d: text in d.find_element(By.TAG_NAME, "body").text, what or f"'{text}'", seconds)


def ready(driver):
    """Waits until the page's script runs (it marks <html data-ready>)."""
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "html").get_attribute("data-ready") == "1", "the page's script")


def submit_and_reload(driver, form):
    """Submits a data-api form; the page reloads when the node accepts it."""
    ready(driver)
    driver.execute_script("window.lodeOldPage = true")
    form.find_element(By.TAG_NAME, "button").click()
    wait(
        driver,
        lambda d: d.execute_script("return window.lodeOldPage === undefined && document.documentElement.getAttribute('data-ready') === '1'"),
        "the page to reload after the write")


def main():
    berlin_port, berlin_web, lyon_port, lyon_web = free_port(), free_port(), free_port(), free_port()
    berlin = serve("berlin", "--listen", f"127.0.0.1:{berlin_port}", "--web", f"127.0.0.1:{berlin_web}")
    lode("init", "--site", "lyon", "--ca", os.path.join(berlin, "dev-ca"), "--data-dir", os.path.join(WORK, "lyon"))
    lyon = serve("lyon", "--listen", f"127.0.0.1:{lyon_port}", "--web", f"127.0.0.1:{lyon_web}", "--peer", f"127.0.0.1:{berlin_port}")
    lode("sync", "--wait", "--timeout", "60", "--data-dir", lyon)
    reader_link = lode("user", "add", "rui", "--role", "reader", "--data-dir", berlin).splitlines()[-1]

    d = browser()
    try:
        # Sign in with a link from `lode ui`, as ana at berlin.
        link = lode("ui", "--data-dir", berlin, user="ana")
        assert link.startswith(f"http://127.0.0.1:{berlin_web}/signin?token="), link
        sign_in(d, link)
        text_present(d, "ana · editor at", "the signed-in person")
        text_present(d, "rare-earths")
        shot(d, "1-datasets")
        # A used link does not work twice; a link of another node does not work here.
        d2 = browser()
        try:
            d2.get(link)
            text_present(d2, "This sign-in link does not work", "a used link refused")
            foreign = lode("ui", "--data-dir", lyon, user="bo")
            d2.get(foreign.replace(f":{lyon_web}/", f":{berlin_web}/"))
            text_present(d2, "This sign-in link does not work", "a foreign link refused")
            shot(d2, "6-link-refused")
        finally:
            d2.quit()

        # Browse and filter a table.
        d.find_element(By.LINK_TEXT, "facilities").click()
        text_present(d, "mountain-pass")
        d.find_element(By.TAG_NAME, "summary").click()
        box = d.find_element(By.NAME, "f.country")
        box.send_keys("United States")
        d.find_element(By.CSS_SELECTOR, "form.filters button").click()
        wait(d, lambda d: "f.country=United" in d.current_url, "the filtered page")
        rows = d.find_elements(By.CSS_SELECTOR, "table.rows tbody tr")
        assert rows and all("United States" in r.text for r in rows), [r.text for r in rows]
        shot(d, "2-table-filtered")

        # Open a row, annotate a cell, reply, resolve.
        d.find_element(By.LINK_TEXT, "mountain-pass").click()
        text_present(d, "History")
        form = d.find_element(By.CSS_SELECTOR, "form.annotate")
        Select(form.find_element(By.NAME, "column")).select_by_value("capacity_t_per_year")
        form.find_element(By.NAME, "text").send_keys("Capacity <b>unconfirmed</b> for 2025")
        form.find_element(By.NAME, "tags").send_keys("check, capacity")
        submit_and_reload(d, form)
        text_present(d, "Capacity <b>unconfirmed</b> for 2025", "the annotation, as text")
        assert d.find_elements(By.CSS_SELECTOR, "tr.marked th") and "capacity_t_per_year" in d.find_element(By.CSS_SELECTOR, "tr.marked th").text
        reply = d.find_element(By.CSS_SELECTOR, "form.reply-form")
        reply.find_element(By.NAME, "text").send_keys("Asked the operator")
        submit_and_reload(d, reply)
        text_present(d, "Asked the operator")
        shot(d, "3-row-annotated")
        submit_and_reload(d, d.find_element(By.CSS_SELECTOR, "form.status"))
        wait(d, lambda d: d.find_element(By.CSS_SELECTOR, "article.annotation .status").text == "resolved", "resolved")
        assert "by ana" in d.find_element(By.CSS_SELECTOR, "article.annotation .resolved-by").text
        assert "Reopen" in d.find_element(By.CSS_SELECTOR, "form.status button").text

        # The annotation reaches lyon, named after ana at berlin.
        lode("sync", "--wait", "--timeout", "60", "--data-dir", lyon)
        notes = json.loads(lode("annotations", "rare-earths", "--format", "json", "--data-dir", lyon))
        mine = [n for n in notes if n["text"] == "Capacity <b>unconfirmed</b> for 2025"]
        assert mine and mine[0].get("person") == "ana" and mine[0]["status"] == "resolved", notes
        d3 = browser()
        try:
            sign_in(d3, lode("ui", "--data-dir", lyon, user="bo"))
            text_present(d3, "bo · editor at lyon")
            d3.get(f"http://127.0.0.1:{lyon_web}/d/rare-earths/t/facilities/r/mountain-pass")
            text_present(d3, "Capacity <b>unconfirmed</b> for 2025", "the annotation at lyon")
            person = d3.find_element(By.CSS_SELECTOR, "article.annotation .person").text
            assert person == "ana", person
            resolver = d3.find_element(By.CSS_SELECTOR, "article.annotation .resolved-by").text
            assert resolver.startswith("by ana at "), resolver
            shot(d3, "4-row-at-lyon")
        finally:
            d3.quit()

        # A reader: no write offered, and a write refused by the server anyway.
        d4 = browser()
        try:
            sign_in(d4, reader_link)
            text_present(d4, "rui · reader at")
            d4.get(f"http://127.0.0.1:{berlin_web}/d/rare-earths/t/facilities/r/mountain-pass")
            text_present(d4, "History")
            ready(d4)
            assert not d4.find_elements(By.CSS_SELECTOR, "form[data-api^='/v1']"), "a reader's page offers a write"
            status = d4.execute_async_script(
                """
                const done = arguments[arguments.length - 1];
                fetch('/v1/datasets/rare-earths/annotations', {method: 'POST', credentials: 'same-origin',
                  headers: {'Content-Type': 'application/json',
                            'X-CSRF-Token': document.querySelector('meta[name="csrf-token"]').content},
                  body: JSON.stringify({table: 'facilities', pk: 'mountain-pass', text: 'sneaky', tags: []})})
                  .then(r => done(r.status), e => done(String(e)));
                """
            )
            assert status == 403, status
        finally:
            d4.quit()

        # A conflict: both nodes write one cell while apart, then meet.
        lode("peers", "remove", f"127.0.0.1:{berlin_port}", "--data-dir", lyon)
        time.sleep(1)
        lode("exec", "rare-earths", "UPDATE facilities SET status = 'paused' WHERE id = 'mountain-pass'", "--data-dir", berlin, user="ana")
        lode("exec", "rare-earths", "UPDATE facilities SET status = 'expanding' WHERE id = 'mountain-pass'", "--data-dir", lyon, user="bo")
        lode("peers", "add", f"127.0.0.1:{berlin_port}", "--data-dir", lyon)
        lode("sync", "--wait", "--timeout", "60", "--data-dir", lyon)
        d.get(f"http://127.0.0.1:{berlin_web}/d/rare-earths/conflicts")
        text_present(d, "mountain-pass", "the conflict")
        shot(d, "5-conflicts")
        losers = d.find_elements(By.CSS_SELECTOR, "td.loser form.keep")
        assert losers, "no keep button for the other value"
        kept = d.find_element(By.CSS_SELECTOR, "td.loser").text.split("\n")[0]
        submit_and_reload(d, losers[0])
        text_present(d, "No conflicts.", "the conflict gone at berlin")
        lode("sync", "--wait", "--timeout", "60", "--data-dir", lyon)
        for node in (berlin, lyon):
            assert json.loads(lode("conflicts", "rare-earths", "--format", "json", "--data-dir", node)) == [], node
            got = lode("query", "rare-earths", "SELECT status FROM facilities WHERE id = 'mountain-pass'", "--format", "csv", "--data-dir", node)
            assert got.splitlines()[-1] == kept, (node, got, kept)
        # The operator's people page: add a person; the page shows their one-time link.
        d.get(f"http://127.0.0.1:{berlin_web}/people")
        text_present(d, "rui", "the people page")
        ready(d)
        form = d.find_element(By.CSS_SELECTOR, "form.add-person")
        form.find_element(By.NAME, "name").send_keys("cleo")
        Select(form.find_element(By.NAME, "role")).select_by_visible_text("annotator")
        form.find_element(By.TAG_NAME, "button").click()
        wait(d, lambda d: "/signin?token=" in d.find_element(By.CSS_SELECTOR, "form.add-person output").text, "the new person's link")
        shot(d, "7-people")
        assert "cleo,annotator," in lode("user", "list", "--format", "csv", "--data-dir", berlin)

        # A CSV file imported from the table page, with progress, then the result.
        csv = os.path.join(WORK, "more-elements.csv")
        with open(csv, "w") as f:
            f.write("symbol,name,atomic_number\n" + "".join(f"x{i},Made-up element {i},{200 + i}\n" for i in range(3000)))
        before_import = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        time.sleep(0.05)
        d.get(f"http://127.0.0.1:{berlin_web}/d/rare-earths/t/elements")
        ready(d)
        d.find_element(By.CSS_SELECTOR, "details.import summary").click()
        d.find_element(By.CSS_SELECTOR, "details.import input[type=file]").send_keys(csv)
        d.find_element(By.CSS_SELECTOR, "details.import button").click()
        wait(d, lambda d: "imported:" in d.find_element(By.CSS_SELECTOR, "details.import output").text, "the import's result", 60)
        assert "3000 rows changed" in d.find_element(By.CSS_SELECTOR, "details.import output").text
        shot(d, "8-import")
        got = lode("query", "rare-earths", "SELECT count(*) FROM elements WHERE symbol LIKE 'x%'", "--format", "csv", "--data-dir", berlin)
        assert got.splitlines()[-1] == "3000", got
        history = json.loads(lode("history", "rare-earths", "elements", "x7", "--format", "json", "--data-dir", berlin))
        assert history and all(h.get("person") == "ana" for h in history), history
        # The table as it stood before the import, from the history: the
        # form's "as of" field, kept while paging; back to now after.
        d.get(f"http://127.0.0.1:{berlin_web}/d/rare-earths/t/elements?q=x7")
        ready(d)
        assert d.find_elements(By.CSS_SELECTOR, 'tr[data-pk="x7"]'), "x7 is in the table now"
        form = d.find_element(By.CSS_SELECTOR, "form.filters")
        form.find_element(By.NAME, "asof").send_keys(before_import)
        form.find_element(By.TAG_NAME, "button").click()
        text_present(d, "As it stood at", "the as-of banner")
        ready(d)
        assert before_import in d.find_element(By.CSS_SELECTOR, "p.asof").text
        assert not d.find_elements(By.CSS_SELECTOR, 'tr[data-pk="x7"]'), "x7 was not there before the import"
        assert not d.find_elements(By.CSS_SELECTOR, "details.import"), "no import into the past"
        d.get(f"http://127.0.0.1:{berlin_web}/d/rare-earths/t/elements?asof={urllib.parse.quote(before_import)}")
        ready(d)
        rows = d.find_elements(By.CSS_SELECTOR, "table.rows tbody tr")
        assert rows and not any(r.get_attribute("data-pk").startswith("x") for r in rows), "only the elements before the import"
        shot(d, "9-as-of")
        print(f"PASS workspace in a browser (screenshots in {SHOTS})")
    finally:
        d.quit()


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(WORK, ignore_errors=True)
