"""Headless Chromium for the browser tests, and the terminal's page as an operator uses it: Debian's `chromium` driven through Debian's
`chromium-driver` by Selenium (scripts/bootstrap installs both), never a browser or driver that
something downloads.

Selenium Manager (the part of Selenium that fetches browsers and drivers) never runs: the driver's
path is given to Service, and SE_OFFLINE / SE_MANAGER_PATH make any attempt fail instead of
reaching out.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

os.environ["SE_OFFLINE"] = "true"
os.environ["SE_MANAGER_PATH"] = "/bin/false"  # if Selenium ever tried its manager, it fails here


@dataclass(frozen=True)
class Screen:
    """A window the page is looked at in: CSS pixels, and the device pixel ratio."""

    name: str
    width: int
    height: int
    scale: float = 1.0
    mobile: bool = False


# An ordinary phone (CSS 390x844 at 3x, as most phones the operators have) and a laptop.
PHONE = Screen("phone", 390, 844, 3.0, mobile=True)
DESKTOP = Screen("desktop", 1280, 900)


def available() -> bool:
    return os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)


class Browser:
    """One headless Chromium with a profile of its own in a temporary folder; `.driver` is the
    Selenium WebDriver. A phone screen is Chromium's mobile emulation (viewport, pixel ratio,
    touch, a phone's user agent), so the page's meta viewport and media queries apply."""

    def __init__(self, screen: Screen = PHONE, lang: str = "zh-CN") -> None:
        self.screen = screen
        self.profile = Path(tempfile.mkdtemp(prefix="cx-chromium-"))
        o = webdriver.ChromeOptions()
        o.binary_location = CHROMIUM
        for a in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage",
                  "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                  "--disable-background-networking", "--disable-sync", "--metrics-recording-only",
                  "--disable-component-update", "--hide-scrollbars",
                  f"--user-data-dir={self.profile}", f"--lang={lang}"):
            o.add_argument(a)
        if os.geteuid() == 0:
            o.add_argument("--no-sandbox")  # Chromium refuses to start its sandbox as root
        o.add_experimental_option("prefs", {"intl.accept_languages": lang})
        if screen.mobile:
            o.add_experimental_option("mobileEmulation", {
                "deviceMetrics": {"width": screen.width, "height": screen.height,
                                  "pixelRatio": screen.scale, "touch": True},
                "userAgent": ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
                              "(KHTML, like Gecko) Chrome/156.0 Mobile Safari/537.36"),
            })
        else:
            o.add_argument(f"--window-size={screen.width},{screen.height}")
        self.log = self.profile.with_suffix(".driver.log")
        service = Service(executable_path=CHROMEDRIVER, log_output=str(self.log))
        try:
            self.driver = webdriver.Chrome(service=service, options=o)
        except Exception:
            shutil.rmtree(self.profile, ignore_errors=True)
            raise
        self.driver.set_page_load_timeout(30)

    def screenshot(self, path: Path) -> Path:
        """The whole page (not only the viewport) as a PNG at the screen's pixel ratio."""
        d = self.driver
        h = int(d.execute_script(
            "return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)"))
        metrics = {"width": self.screen.width, "height": max(h, self.screen.height),
                   "deviceScaleFactor": self.screen.scale, "mobile": self.screen.mobile}
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(d.get_screenshot_as_png())
        finally:
            if self.screen.mobile:
                d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                    "width": self.screen.width, "height": self.screen.height,
                    "deviceScaleFactor": self.screen.scale, "mobile": True})
            else:
                d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        return path

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.log.unlink(missing_ok=True)


def web_pass(password: str, iterations: int = 4096) -> str:
    """`web.pass` as docs/web.md defines it, computed here apart from the project's own tools:
    pbkdf2-sha256$<iterations>$<salt>$<hash>, unpadded base64url, 16-byte salt, 32-byte hash;
    4,096 iterations is what `cx fleet provision` writes."""
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations, 32)

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")

    return f"pbkdf2-sha256${iterations}${b64(salt)}${b64(digest)}"


class Page:
    """The page as an operator uses it: forms found by their action (docs/web.md routes), each
    submitted with its own button, every wait on the page's elements (WebDriverWait)."""

    def __init__(self, b: Browser, base: str, wait_s: float = 30) -> None:
        self.b = b
        self.d = b.driver
        self.base = base.rstrip("/")
        self.wait = WebDriverWait(self.d, wait_s)

    def open(self, path: str = "/") -> None:
        self.d.get(self.base + path)
        self._loaded()

    def _loaded(self) -> None:
        self.wait.until(lambda d: d.execute_script("return document.readyState") == "complete")

    def path(self) -> str:
        return self.d.execute_script("return location.pathname")

    def text(self) -> str:
        return self.d.find_element(By.TAG_NAME, "body").text

    def message(self) -> str | None:
        """The page's message (`role=status`), if it shows one."""
        els = self.d.find_elements(By.CSS_SELECTOR, "[role=status]")
        return els[0].text if els else None

    def error(self) -> str | None:
        """The page's error or refusal (`role=alert`), if it shows one."""
        els = self.d.find_elements(By.CSS_SELECTOR, "[role=alert]")
        return els[0].text if els else None

    def table(self, tid: str) -> dict[str, str]:
        """A two-column table (by id) as {heading: value}."""
        out = {}
        for tr in self.d.find_elements(By.CSS_SELECTOR, f"table#{tid} tr"):
            th, td = tr.find_elements(By.TAG_NAME, "th"), tr.find_elements(By.TAG_NAME, "td")
            if th and td:
                out[th[0].text] = td[0].text
        return out

    def form(self, action: str) -> WebElement:
        forms = [f for f in self.d.find_elements(By.TAG_NAME, "form")
                 if (f.get_attribute("action") or "").split("?")[0].endswith(action)]
        assert forms, f"no form for {action} on {self.path()}: {self.text()[:400]}"
        return forms[0]

    def has_form(self, action: str) -> bool:
        return any((f.get_attribute("action") or "").split("?")[0].endswith(action)
                   for f in self.d.find_elements(By.TAG_NAME, "form"))

    def submit(self, action: str, fields: dict[str, str] | None = None,
               files: dict[str, Path] | None = None) -> None:
        """Fill `fields` (by name) and `files` of the form for `action`, press its button, and
        wait until the answer page has replaced this one."""
        f = self.form(action)
        for name, value in (fields or {}).items():
            el = f.find_element(By.NAME, name)
            if el.tag_name == "select" or el.get_attribute("type") in ("range", "hidden"):
                self.d.execute_script("arguments[0].value = arguments[1]", el, value)
            else:
                el.clear()
                el.send_keys(value)
        for name, p in (files or {}).items():
            f.find_element(By.NAME, name).send_keys(str(p))
        self.d.execute_script("window.cxOld = true")  # gone once the answer page has replaced it
        buttons = f.find_elements(By.CSS_SELECTOR, "button, input[type=submit]")
        if buttons:
            buttons[0].click()
        else:
            f.submit()
        self.wait.until(_replaced)

    def login(self, password: str) -> None:
        if not self.has_form("/login"):
            self.open("/login")
        f = self.form("/login")
        name = f.find_element(By.CSS_SELECTOR, "input[type=password]").get_attribute("name")
        self.submit("/login", {name: password})


def _replaced(d: webdriver.Chrome) -> bool:
    try:
        return bool(d.execute_script(
            "return window.cxOld === undefined && document.readyState === 'complete'"))
    except WebDriverException:  # asked in the middle of the navigation
        return False
