"""Headless Chromium for the browser tests: Debian's `chromium` driven through Debian's
`chromium-driver` by Selenium (scripts/bootstrap installs both), never a browser or driver that
something downloads.

Selenium Manager (the part of Selenium that fetches browsers and drivers) never runs: the driver's
path is given to Service, and SE_OFFLINE / SE_MANAGER_PATH make any attempt fail instead of
reaching out.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

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
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

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
