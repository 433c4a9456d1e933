# The local page's HTML (docs/web.md "Page"): server-rendered, Chinese by default and English by
# a cookie, one small stylesheet, no JavaScript; every message in the chosen language.

CSS = b"""body{font:16px/1.4 sans-serif;margin:0 auto;max-width:36em;padding:0 .6em;color:#222}
h1{font-size:1.3em;margin:.5em 0}h2{font-size:1.1em;margin:1em 0 .3em}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.25em;
text-align:left;vertical-align:top;font-size:.95em}form{margin:.4em 0}
input,button,select{font-size:1em;padding:.35em;margin:.15em 0;max-width:100%}
button{min-width:6em}.msg{padding:.5em;background:#e8f4e8;border-left:4px solid #3a3}
.err{padding:.5em;background:#fbeaea;border-left:4px solid #c33}.bad{color:#c33;font-weight:bold}
nav a{margin-right:1em}pre{white-space:pre-wrap;font-size:.85em}
"""

# one key, two languages: (中文, English)
T = {
    "title": ("村响 终端", "cunxiang terminal"),
    "status": ("状态", "Status"), "log": ("日志", "Event log"),
    "password": ("密码", "Password"), "network": ("网络", "Network"),
    "logout": ("退出", "Log out"), "login": ("登录", "Log in"), "lang": ("English", "中文"),
    "link": ("线路", "Link"), "signal": ("4G 信号", "4G signal"), "volume": ("本地音量", "Local volume"),
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


def page(lang, title, body, csrf=None, msg=None, err=None):
    out = [head(lang, t(lang, "title") + " · " + title)]
    if csrf is not None:
        out.append('<nav><a href="/">%s</a><a href="/log">%s</a><a href="/password">%s</a>'
                   '<a href="/network">%s</a></nav>' % (t(lang, "status"), t(lang, "log"),
                                                        t(lang, "password"), t(lang, "network")))
    out.append("<h1>%s</h1>" % esc(title))
    if msg:
        out.append('<p class="msg" role="status">%s</p>' % esc(msg))
    if err:
        out.append('<p class="err" role="alert">%s</p>' % esc(err))
    out.append(body)
    if csrf is not None:
        out.append(_lang_form(lang, csrf))
        out.append('<form method="post" action="/logout"><input type="hidden" name="csrf" '
                   'value="%s"><button>%s</button></form>' % (csrf, t(lang, "logout")))
    out.append("</body></html>")
    return "".join(out)


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
            '<form method="post" action="/lang"><input type="hidden" name="lang" value="%s">'
            '<input type="hidden" name="csrf" value="%s"><button>%s</button></form>'
            % (token, t(lang, "password"), t(lang, "login"), "zh" if lang == "en" else "en",
               token, t(lang, "lang")))
    return page(lang, t(lang, "login"), body, err=err)


def _uptime(lang, s):
    return "%d%s %02d:%02d:%02d" % (s // 86400, "d" if lang == "en" else "天", s // 3600 % 24,
                                    s // 60 % 60, s % 60)


def _receipt(lang, st):
    # "status" or "status:reason": the status in words, the reason code as the fleet sees it
    p = st.split(":", 1)
    word = t(lang, "playing_st" if p[0] == "playing" else p[0])
    return word + (" (%s)" % p[1] if len(p) > 1 else "")


def status(lang, csrf, st, msg=None, err=None):
    """st: link, rssi, volume, playing, alerts [(id, [statuses])], faults [names], v, up."""
    rows = [
        (t(lang, "link"), t(lang, st["link"]) if st["link"] in T else st["link"]),
        (t(lang, "signal"), "-" if st["rssi"] is None else  # CSQ 0..31: -113 dBm + 2 per step
         "%d/31 (%d dBm)" % (st["rssi"], 2 * st["rssi"] - 113)),
        (t(lang, "volume"), "%d %%" % st["volume"]),
        (t(lang, "playing"), st["playing"] or t(lang, "nothing")),
        (t(lang, "faults"), ", ".join(t(lang, f) for f in st["faults"]) or t(lang, "none")),
        (t(lang, "version"), st["v"]), (t(lang, "uptime"), _uptime(lang, st["up"])),
    ]
    out = ['<table id="status">']
    for k, v in rows:
        cls = ' class="bad"' if k == t(lang, "faults") and st["faults"] else ""
        out.append("<tr><th>%s</th><td%s>%s</td></tr>" % (k, cls, esc(v)))
    out.append("</table><h2>%s</h2><table id=\"alerts\">" % t(lang, "alerts"))
    for aid, sts in st["alerts"]:
        out.append("<tr><td>%s</td><td>%s</td></tr>" % (esc(aid), esc(" → ".join(_receipt(lang, x) for x in sts))))
    if not st["alerts"]:
        out.append("<tr><td>%s</td></tr>" % t(lang, "none"))
    out.append("</table><h2>%s</h2>" % t(lang, "volume"))
    out.append(_post("/volume", csrf, '<input type="number" name="volume" min="0" max="100" '
                     'value="%d" required> ' % st["volume"], t(lang, "set")))
    out.append(_post("/chime", csrf, "", t(lang, "chime")))
    out.append(_post("/play", csrf, "", t(lang, "play")))
    out.append(_post("/stop", csrf, "", t(lang, "stop")))
    out.append("<h2>%s</h2>" % t(lang, "upload"))
    out.append(_post("/upload", csrf, '<input type="file" name="file" accept=".wav,audio/wav" '
                     'required> ', t(lang, "send"), "multipart/form-data"))
    return page(lang, t(lang, "status"), "".join(out), csrf, msg, err)


def log(lang, csrf, lines):
    out = ["<table id=\"log\">"]
    for ln in lines:
        out.append("<tr><td><pre>%s</pre></td></tr>" % esc(ln))
    out.append("</table>")
    return page(lang, t(lang, "log"), "".join(out), csrf)


def password(lang, csrf, recovery, msg=None, err=None):
    inner = "" if recovery else ('<p><label>%s <input type="password" name="old" required>'
                                 '</label></p>' % t(lang, "old"))
    inner += ('<p><label>%s <input type="password" name="new" minlength="8" maxlength="64" '
              'autocomplete="new-password" required></label></p><p><label>%s <input '
              'type="password" name="again" required></label></p>' % (t(lang, "new"),
                                                                     t(lang, "again")))
    return page(lang, t(lang, "password"), _post("/password", csrf, inner, t(lang, "change")),
                csrf, msg, err)


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
