# The local page's HTML (docs/web.md "Page"): server-rendered, Chinese by default and English by
# a cookie, one small stylesheet, no JavaScript; every message in the chosen language. A page is
# a few sections (a list of str) that web.py writes one by one, yielding between them.
import time

CSS = b"""body{font:16px/1.4 sans-serif;margin:0 auto;max-width:36em;padding:0 .6em;color:#222}
h1{font-size:1.3em;margin:.5em 0}h2{font-size:1.1em;margin:1em 0 .3em}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.25em;
text-align:left;vertical-align:top;font-size:.95em}th{white-space:nowrap}form{margin:.4em 0}
input,button,select{font-size:1em;padding:.35em;margin:.15em 0;max-width:100%}
button{min-width:6em}.msg{padding:.5em;background:#e8f4e8;border-left:4px solid #3a3}
.err{padding:.5em;background:#fbeaea;border-left:4px solid #c33}.bad{color:#c33;font-weight:bold}
nav{margin:.3em 0;display:flex;flex-wrap:wrap;align-items:center;gap:.3em 1em}
nav a{white-space:nowrap}nav form{margin:0 0 0 auto}
nav button{min-width:0}small{color:#666}pre{white-space:pre-wrap;font-size:.85em}
"""

# one key, two languages: (中文, English)
T = {
    "title": ("村响 终端", "cunxiang terminal"),
    "status": ("状态", "Status"), "log": ("日志", "Event log"), "log_nav": ("日志", "Log"),
    "password": ("密码", "Password"), "network": ("网络", "Network"),
    "change_password": ("修改密码", "Change password"),
    "logout": ("退出", "Log out"), "login": ("登录", "Log in"), "lang": ("English", "中文"),
    "link": ("线路", "Link"), "signal": ("4G 信号", "4G signal"),
    "backup": ("备用 4G 信号", "Backup 4G signal"), "volume": ("本地音量", "Local volume"),
    "sig_good": ("好", "good"), "sig_fair": ("中", "fair"), "sig_weak": ("弱", "weak"),
    "sig_none": ("无", "none"),
    "announcement": ("本地广播录音", "Announcement"), "stored": ("已存 %s", "stored, %s"),
    "k_alert": ("警报", "Warning"), "k_test": ("测试", "County test"),
    "k_cancel": ("取消警报", "Cancellation"), "k_selftest": ("自检", "Self-test"),
    "k_chime": ("测试铃声", "Test chime"), "k_announce": ("本地广播", "Local announcement"),
    "k_beeps": ("状态提示音", "State in beeps"), "k_unknown": ("无效消息", "Invalid message"),
    "lv1": ("红色 (1级)", "red (level 1)"), "lv2": ("橙色 (2级)", "orange (level 2)"),
    "lv3": ("黄色 (3级)", "yellow (level 3)"), "lv4": ("蓝色 (4级)", "blue (level 4)"),
    "playing": ("正在播放", "Playing"), "nothing": ("无", "nothing"),
    "alerts": ("最近的警报", "Last alerts"), "faults": ("故障", "Faults"),
    "none": ("无", "none"), "version": ("固件版本", "Firmware"), "uptime": ("运行时间", "Uptime"),
    "ip": ("村广播线路", "village line"), "4g": ("4G", "4G"), "offline": ("无连接", "no link"),
    "line_open": ("喇叭线路断开", "speaker line open"),
    "line_short": ("喇叭线路短路", "speaker line shorted"),
    "mains_lost": ("市电断开(电池供电)", "mains lost (on battery)"),
    "battery_low": ("电池电量低", "battery low"), "clock_unsynced": ("时钟未校准", "clock not set"),
    "accepted": ("已接收", "accepted"), "rejected": ("已拒绝", "rejected"),
    "playing_st": ("播放中", "playing"), "done": ("播完", "done"),
    "cancelled": ("已取消", "cancelled"), "preempted": ("被更高级警报打断", "preempted"),
    "ignored": ("不属于本村", "not for this village"),
    "set": ("设置", "Set"), "chime": ("测试铃声", "Test chime"),
    "upload": ("上传本地广播 (WAV)", "Upload the local announcement (WAV)"),
    "send": ("上传", "Upload"), "play": ("播放本地广播", "Play the announcement"),
    "stop": ("停止本地播放", "Stop local playback"),
    "old": ("旧密码", "Old password"), "new": ("新密码", "New password"),
    "again": ("再次输入新密码", "New password again"), "change": ("修改", "Change"),
    "mode": ("地址方式", "Addressing"), "dhcp": ("自动 (DHCP)", "automatic (DHCP)"),
    "static": ("固定地址", "static"), "address": ("地址", "Address"),
    "netmask": ("子网掩码", "Netmask"), "gateway": ("网关", "Gateway"), "dns": ("DNS", "DNS"),
    "save": ("保存", "Save"), "back": ("返回", "Back"),
    "unset": ("本终端的网页密码从未设置。请县级管理员用 cx fleet provision 设置密码。",
              ("This terminal's page password was never set. The county sets it with "
               "cx fleet provision.")),
    # messages (ok_*) and refusals
    "ok_volume": ("音量已设置。", "Volume set."), "ok_chime": ("测试铃声正在播放。", "Test chime playing."),
    "ok_play": ("本地广播正在播放。", "Announcement playing."),
    "ok_stop": ("本地播放已停止。", "Local playback stopped."),
    "ok_upload": ("本地广播已保存。", "Announcement stored."),
    "ok_password": ("密码已修改。", "Password changed."),
    "ok_network": ("网络设置已保存。", "Network settings stored."),
    "wrong": ("密码错误。", "Wrong password."),
    "locked": ("登录失败次数过多,已锁定 %d 秒。", "Too many failed logins: locked for %d s."),
    "busy": ("终端正忙,请稍后再试。", "The terminal is busy: try again in a moment."),
    "alert_playing": ("正在播放警报,这里不能停止或打断。",
                      "A warning is playing: it cannot be stopped or interrupted here."),
    "nothing_playing": ("现在没有本地播放。", "No local playback is on."),
    "no_announcement": ("还没有上传本地广播。", "No announcement has been uploaded yet."),
    "unavailable": ("这个功能暂时不可用。", "This action is not available right now."),
    "csrf": ("页面已过期,请重新打开再试。", "This page has expired: open it again and retry."),
    "cross_site": ("拒绝来自其他网站的请求。", "A request from another site was refused."),
    "login_first": ("请先登录。", "Please log in first."),
    "bad_request": ("请求格式错误。", "The request was malformed."),
    "bad_form": ("表单内容无效(需要 UTF-8 文字)。", "The form was invalid (text must be UTF-8)."),
    "line_long": ("请求地址太长。", "The request address is too long."),
    "header_long": ("请求头太长或太多。", "The request headers are too long or too many."),
    "too_large": ("上传的文件太大(最多 1 MB)。", "The upload is too large (at most 1 MB)."),
    "form_large": ("表单太大。", "The form is too large."),
    "cut": ("上传中断,没有保存任何内容。", "The upload was cut off: nothing was stored."),
    "timeout": ("请求超时。", "The request timed out."),
    "flash_full": ("存储空间已满,没有保存任何内容。", "The flash is full: nothing was stored."),
    "not_wav": ("文件不是本终端能播放的 WAV(16 位单声道 PCM)。",
                "The file is not a WAV this terminal plays (16-bit mono PCM)."),
    "flash_failed": ("保存设置失败(存储故障)。", "The setting could not be stored (flash fault)."),
    "no_file": ("请选择一个文件。", "Choose a file first."),
    "bad_volume": ("音量必须是 0 到 100。", "The volume must be 0 to 100."),
    "old_wrong": ("旧密码错误,密码未修改。", "The old password is wrong: nothing changed."),
    "pass_length": ("新密码需要 8 到 64 个字符。", "The new password needs 8 to 64 characters."),
    "pass_differ": ("两次输入的新密码不一致。", "The two new passwords differ."),
    "bad_address": ("IP 地址格式错误。", "An IP address is malformed."),
    "bad_netmask": ("子网掩码无效。", "The netmask is invalid."),
    "gw_subnet": ("网关必须和地址在同一个子网,否则终端会断网。",
                  "The gateway must be in the address's subnet, or the terminal is cut off."),
    "host_address": ("这个地址不能用作终端地址(网络号、广播地址或与网关相同)。",
                     "That address cannot be the terminal's (network, broadcast or the gateway)."),
    "cut_off": ("这个设置会让你失去与终端的连接,未保存。",
                "These settings would cut you off from the terminal: not stored."),
    "not_found": ("页面不存在。", "No such page."),
    "server": ("终端内部错误,请稍后再试。", "Internal error: try again later."),
}


def t(lang, key):
    v = T.get(key)
    return key if v is None else v[1 if lang == "en" else 0]


def esc(s):
    s = str(s)
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def head(lang, title):
    return ('<!DOCTYPE html><html lang="%s"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            '<title>%s</title><link rel="stylesheet" href="/style.css"></head><body>'
            % ("en" if lang == "en" else "zh-CN", esc(title)))


def _lang_form(lang, csrf):
    return ('<form method="post" action="/lang"><input type="hidden" name="csrf" value="%s">'
            '<input type="hidden" name="lang" value="%s"><button>%s</button></form>'
            % (csrf, "zh" if lang == "en" else "en", t(lang, "lang")))


_NAV = {}  # lang: the navigation's links (they never change)


def _nav(lang):
    n = _NAV.get(lang)
    if n is None:
        n = _NAV[lang] = ('<a href="/">%s</a><a href="/log">%s</a><a href="/password">%s</a>'
                          '<a href="/network">%s</a>' % (t(lang, "status"), t(lang, "log_nav"),
                                                         t(lang, "password"), t(lang, "network")))
    return n


def page(lang, title, body, csrf=None, msg=None, err=None, token=None):
    """The sections of a page (body: a str or a list of str), to be written one by one. The
    navigation and the language switch at the top (before a login: the switch alone, its form
    carrying the login token)."""
    top = [head(lang, t(lang, "title") + " · " + title)]
    if csrf is not None:
        top.append("<nav>" + _nav(lang) + _lang_form(lang, csrf) + "</nav>")
    elif token is not None:
        top.append("<nav>" + _lang_form(lang, token) + "</nav>")
    top.append("<h1>%s</h1>" % esc(title))
    if msg:
        top.append('<p class="msg" role="status">%s</p>' % esc(msg))
    if err:
        top.append('<p class="err" role="alert">%s</p>' % esc(err))
    out = ["".join(top)]
    if isinstance(body, list):
        out.extend(body)
    else:
        out.append(body)
    end = "</body></html>"
    if csrf is not None:
        end = ('<form method="post" action="/logout"><input type="hidden" name="csrf" '
               'value="%s"><button>%s</button></form>' % (csrf, t(lang, "logout"))) + end
    out.append(end)
    return out


def _post(action, csrf, inner, label, enctype=None):
    return ('<form method="post" action="%s"%s><input type="hidden" name="csrf" value="%s">%s'
            '<button>%s</button></form>' % (action, ' enctype="%s"' % enctype if enctype else "",
                                             csrf, inner, label))


def login(lang, token, err=None, unset=False):
    if unset:
        return page(lang, t(lang, "title"), "<p>%s</p>" % t(lang, "unset"))
    body = ('<form method="post" action="/login"><input type="hidden" name="csrf" value="%s">'
            '<label>%s <input type="password" name="password" autocomplete="current-password" '
            'required></label> <button>%s</button></form>'
            % (token, t(lang, "password"), t(lang, "login")))
    return page(lang, t(lang, "login"), body, err=err, token=token)


def _uptime(lang, s):
    return "%d%s %02d:%02d:%02d" % (s // 86400, "d" if lang == "en" else "天", s // 3600 % 24,
                                    s // 60 % 60, s % 60)


def _signal(lang, csq):
    # CSQ 0..31 (-113 dBm + 2 per step) in words: >= 15 good, >= 10 fair, >= 1 weak
    if not csq:
        return t(lang, "sig_none")
    return t(lang, "sig_good" if csq >= 15 else "sig_fair" if csq >= 10 else "sig_weak")


def what(lang, kind, level=None, sub=None):
    """What an item is, in words: a warning with its level, a test, a local item (sub: chime,
    announce, beeps)."""
    if kind == "local":
        return t(lang, "k_" + (sub or "announce"))
    w = t(lang, "k_" + kind) if ("k_" + str(kind)) in T else t(lang, "k_unknown")
    if kind == "alert" and level in (1, 2, 3, 4):
        w += " · " + t(lang, "lv%d" % level)
    return w


def _when(lang, ts):
    # the receipt's time in China Standard Time (UTC+8); a clock never set shows nothing
    if not isinstance(ts, (int, float)) or ts < 1577836800:
        return "-"
    y, mo, d, h, mi = time.gmtime(int(ts) + 28800)[:5]
    if lang == "en":
        return "%02d:%02d <small>%d-%02d-%02d</small>" % (h, mi, y, mo, d)
    return "%02d:%02d <small>%d月%d日</small>" % (h, mi, mo, d)


def _final(lang, st):
    # "status" or "status:reason": the last status in words, the fleet's reason code small
    p = st.split(":", 1)
    word = esc(t(lang, "playing_st" if p[0] == "playing" else p[0]))
    return word + (" <small>(%s)</small>" % esc(p[1]) if len(p) > 1 else "")


def _mss(s):
    return "%d:%02d" % (s // 60, s % 60)


def status(lang, csrf, st, msg=None, err=None):
    """st: link, rssi (CSQ), volume, playing (None or (kind, level, what)), announce (seconds or
    None), alerts [(t, kind, level, final status)], faults [names], v, up."""
    link = st["link"]
    sig = _signal(lang, st["rssi"])
    p = st["playing"]
    rows = [
        (t(lang, "link"), t(lang, link) if link in T else link),
        # the path in use first; the 4G signal as the backup's state when on the village line
        (t(lang, "signal" if link == "4g" else "backup"), sig),
        (t(lang, "volume"), "%d %%" % st["volume"]),
        (t(lang, "playing"), t(lang, "nothing") if p is None else what(lang, *p)),
        (t(lang, "announcement"), t(lang, "none") if st["announce"] is None
         else t(lang, "stored") % _mss(st["announce"])),
        (t(lang, "faults"), ", ".join(t(lang, f) for f in st["faults"]) or t(lang, "none")),
        (t(lang, "version"), st["v"]), (t(lang, "uptime"), _uptime(lang, st["up"])),
    ]
    out = ['<table id="status">']
    for k, v in rows:
        cls = ' class="bad"' if k == t(lang, "faults") and st["faults"] else ""
        out.append("<tr><th>%s</th><td%s>%s</td></tr>" % (k, cls, esc(v)))
    out.append("</table>")
    a = ["<h2>%s</h2><table id=\"alerts\">" % t(lang, "alerts")]
    for ts, kind, level, final in st["alerts"]:
        a.append("<tr><td>%s</td><td>%s</td><td>%s</td></tr>" % (
            _when(lang, ts), esc(what(lang, kind, level)), _final(lang, final)))
    if not st["alerts"]:
        a.append("<tr><td>%s</td></tr>" % t(lang, "none"))
    a.append("</table>")
    f = ["<h2>%s</h2>" % t(lang, "volume"),
         _post("/volume", csrf, '<input type="number" name="volume" min="0" max="100" '
               'value="%d" required> ' % st["volume"], t(lang, "set")),
         _post("/chime", csrf, "", t(lang, "chime")), _post("/play", csrf, "", t(lang, "play")),
         _post("/stop", csrf, "", t(lang, "stop")), "<h2>%s</h2>" % t(lang, "upload"),
         _post("/upload", csrf, '<input type="file" name="file" accept=".wav,audio/wav" '
               'required> ', t(lang, "send"), "multipart/form-data")]
    return page(lang, t(lang, "status"), ["".join(out), "".join(a), "".join(f)], csrf, msg, err)


def log_rows(lines):
    """Log lines (bytes, as read) as table rows: one section of the log page."""
    return "".join("<tr><td><pre>%s</pre></td></tr>" % esc(ln.decode()) for ln in lines)


def log(lang, csrf, sections):
    return page(lang, t(lang, "log"), ['<table id="log">'] + sections + ["</table>"], csrf)


def password(lang, csrf, recovery, msg=None, err=None):
    inner = "" if recovery else ('<p><label>%s <input type="password" name="old" required>'
                                 '</label></p>' % t(lang, "old"))
    inner += ('<p><label>%s <input type="password" name="new" minlength="8" maxlength="64" '
              'autocomplete="new-password" required></label></p><p><label>%s <input '
              'type="password" name="again" required></label></p>' % (t(lang, "new"),
                                                                     t(lang, "again")))
    return page(lang, t(lang, "change_password"), _post("/password", csrf, inner,
                                                        t(lang, "change")), csrf, msg, err)


def network(lang, csrf, net, msg=None, err=None):
    static = net.get("mode") == "static"
    inner = ('<p><label>%s <select name="mode"><option value="dhcp"%s>%s</option>'
             '<option value="static"%s>%s</option></select></label></p>'
             % (t(lang, "mode"), "" if static else " selected", t(lang, "dhcp"),
                " selected" if static else "", t(lang, "static")))
    for k in ("address", "netmask", "gateway", "dns"):
        inner += ('<p><label>%s <input name="%s" value="%s" inputmode="decimal"></label></p>'
                  % (t(lang, k), k, esc(net.get(k) or "")))
    return page(lang, t(lang, "network"), _post("/network", csrf, inner, t(lang, "save")),
                csrf, msg, err)
