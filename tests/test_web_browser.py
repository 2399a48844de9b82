"""The web gallery in a real browser: Debian's headless Chromium driven by Selenium.

One browser for the module; the server runs on 127.0.0.1 (a free port) in a thread, over a
gallery seeded through storage's API with real PNGs. Checks what a visitor sees: the grid
of shared images, search narrowing it, the copy button putting the prompt on the
clipboard, the image page's parameters and lineage, and a removed share's 404.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import urllib.request
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from bot.web import WebOptions
from tests.web_seed import GUILD_B, Seeded, ServerThread, seed_filler, seed_gallery

CHROMIUM = os.environ.get("TESSERA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TESSERA_CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver")
FILLER = 34  # with the castle, 35 shares in GUILD_B: more than one page
SCREENSHOT = os.environ.get("TESSERA_WEB_SCREENSHOT")  # set to a path to save the README's screenshot


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Seeded, ServerThread]]:
    data_dir = tmp_path_factory.mktemp("web") / "data"
    seeded = asyncio.run(seed_gallery(data_dir))
    asyncio.run(seed_filler(data_dir, FILLER))
    with ServerThread(data_dir, WebOptions(rate_per_s=1000, rate_burst=1000)) as server:
        yield seeded, server


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1200,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def cards(browser: webdriver.Chrome) -> list[str]:
    return [card.get_attribute("href").rsplit("/", 1)[1] for card in browser.find_elements(By.CSS_SELECTOR, "#grid .card")]


def test_grid_shows_the_shared_images_and_search_narrows_it(browser: webdriver.Chrome,
                                                            gallery: tuple[Seeded, ServerThread]) -> None:
    seeded, server = gallery
    browser.get(server.url + "/")
    visible = {str(seeded.shares[k].id) for k in ("fox", "upscale", "lighthouse", "variation", "castle")}
    browser.get(server.url + "/?q=fox+OR+lighthouse+OR+castle")
    assert set(cards(browser)) == visible
    WebDriverWait(browser, 10).until(lambda b: all(
        b.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
        for img in b.find_elements(By.CSS_SELECTOR, "#grid img")))  # every thumbnail loaded and decoded
    titles = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#grid .title")]
    assert "a castle on a hill <script>alert(1)</script>" in titles  # shown as text, never run
    if SCREENSHOT:
        browser.save_screenshot(SCREENSHOT)
    box = browser.find_element(By.ID, "q")
    box.clear()
    box.send_keys("lighthouse")
    box.submit()
    WebDriverWait(browser, 10).until(lambda b: "q=lighthouse" in b.current_url)
    assert set(cards(browser)) == {str(seeded.shares["lighthouse"].id), str(seeded.shares["variation"].id)}
    browser.get(server.url + '/?q="red+fox')
    assert "no closing one" in browser.find_element(By.CSS_SELECTOR, ".error").text


def test_infinite_scroll_loads_the_next_pages_through_the_api(browser: webdriver.Chrome,
                                                              gallery: tuple[Seeded, ServerThread]) -> None:
    seeded, server = gallery
    from bot.web import server as web_server

    with urllib.request.urlopen(f"{server.url}/g/{GUILD_B}") as response:  # what the server renders
        assert response.read().count(b'class="card"') == web_server.PAGE_SIZE < FILLER + 1
    browser.get(f"{server.url}/g/{GUILD_B}")
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    WebDriverWait(browser, 10).until(lambda b: len(cards(b)) == FILLER + 1)  # the rest, from /api/shares
    every = cards(browser)
    assert len(set(every)) == FILLER + 1
    assert every[-1] == str(seeded.shares["castle"].id)  # the oldest of this server, last
    assert not browser.find_elements(By.ID, "more")  # nothing more to load
    browser.get(server.url + "/?sort=likes")
    assert cards(browser)[0] == str(seeded.shares["lighthouse"].id)  # the most liked first


def test_image_page_copy_button_parameters_and_lineage(browser: webdriver.Chrome,
                                                       gallery: tuple[Seeded, ServerThread]) -> None:
    seeded, server = gallery
    browser.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": server.url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    browser.get(server.url + "/?q=fox")
    browser.find_element(By.CSS_SELECTOR, f'a.card[href="/s/{seeded.shares["upscale"].id}"]').click()
    WebDriverWait(browser, 10).until(expected_conditions.presence_of_element_located((By.ID, "parameters")))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Fox, larger"
    parameters = dict(zip([dt.text for dt in browser.find_elements(By.CSS_SELECTOR, "#parameters dt")],
                          [dd.text for dd in browser.find_elements(By.CSS_SELECTOR, "#parameters dd")], strict=True))
    assert parameters["seed (--seed)"] == "1235" and parameters["steps"] == "25"
    assert parameters["model"] == "dreamy-v2.safetensors" and parameters["negative (--no)"] == "blurry"
    lineage = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#lineage li")]
    assert lineage[0].startswith(f"Job {seeded.jobs['upscale'].id}: upscale ×2 of image 2 of job {seeded.jobs['fox'].id}")
    browser.find_element(By.ID, "copy").click()
    WebDriverWait(browser, 10).until(lambda b: b.find_element(By.ID, "copy").text == "Copied!")
    copied = browser.execute_async_script("navigator.clipboard.readText().then(arguments[0], "
                                          "e => arguments[0]('failed: ' + e))")
    assert copied == "a red fox in the snow, watercolor --ar 3:2 --seed 1235"
    # The shared source in the lineage is a link to its own page.
    browser.find_element(By.CSS_SELECTOR, f'#lineage a[href="/s/{seeded.shares["fox"].id}"]').click()
    WebDriverWait(browser, 10).until(lambda b: b.current_url.endswith(f"/s/{seeded.shares['fox'].id}"))
    WebDriverWait(browser, 10).until(lambda b: b.execute_script(
        "const i = document.getElementById('full'); return i.complete && i.naturalWidth > 0"))
    assert "Full size (144×96 PNG)" in browser.find_element(By.TAG_NAME, "figcaption").text


def test_a_removed_share_is_a_404_page(browser: webdriver.Chrome, gallery: tuple[Seeded, ServerThread]) -> None:
    seeded, server = gallery
    browser.get(f"{server.url}/s/{seeded.shares['removed'].id}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Error 404"
    assert "removed robot" not in browser.page_source
    status = browser.execute_async_script(
        f"fetch('/s/{seeded.shares['removed'].id}').then(r => arguments[0](r.status))")
    assert status == 404

