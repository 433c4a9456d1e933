# The local page's routes (docs/web.md "Page"): every state-changing one behind guarded(): the
# same site, a session and its CSRF token; actions go to the Local API (firmware/local.py).
import asyncio

import webauth
import webnet
import webpage as P
from microdot import Response
from micropython import const
from web import COOKIE, HTTPError, _maybe, _tail

LOG_ROWS = const(16)  # log lines rendered between two yields


def routes(app):
    auth = app.auth

    def session(req):
        return auth.session(req.cookies.get(COOKIE))

    def guarded(f):
        # every state-changing route: same site, a session and its CSRF token
        async def g(req):
            lang = app.lang(req)
            if not auth.has_password:
                return app.html(P.login(lang, "", unset=True), 403)
            if not app.same_site(req):
                raise HTTPError(403, "cross_site")
            s = session(req)
            if s is None:
                return app.html(P.login(lang, auth.login_token(), P.t(lang, "login_first")), 403)
            if req.g.rd.left > 0 and req.path != "/upload":
                raise HTTPError(400, "bad_request")
            fm = app.form(req) if req.path != "/upload" else {}
            if req.path != "/upload" and not webauth.same(fm.get("csrf") or "", s[2]):
                raise HTTPError(403, "csrf")
            return await f(req, lang, s, fm)
        return g

    @app.errorhandler(HTTPError)
    async def _err(req, e):
        return await app.error(req, e)

    @app.errorhandler(404)
    async def _nf(req):
        return await app.error(req, HTTPError(404, "not_found"))

    @app.get("/style.css")
    def css(req):
        return Response(P.CSS, 200, {"Content-Type": "text/css", "Cache-Control": "max-age=86400"})

    @app.get("/")
    async def index(req):
        lang = app.lang(req)
        if not auth.has_password:
            return app.html(P.login(lang, "", unset=True))
        s = session(req)
        if s is None:
            return Response.redirect("/login", 303)
        return app.html(await app.status_page(lang, s[2]))

    @app.get("/login")
    def login_form(req):
        lang = app.lang(req)
        return app.html(P.login(lang, auth.login_token(), unset=not auth.has_password))

    @app.post("/login")
    async def login(req):
        lang = app.lang(req)
        if not auth.has_password:
            return app.html(P.login(lang, "", unset=True), 403)
        if not app.same_site(req):
            raise HTTPError(403, "cross_site")
        fm = app.form(req)
        if not auth.take_login_token(fm.get("csrf")):
            return app.html(P.login(lang, auth.login_token(), P.t(lang, "csrf")), 403)
        r = await auth.check(fm.get("password") or "")
        if r != "ok":
            err = P.t(lang, r)
            if r == "locked":
                err = err % auth.locked_for()
            return app.html(P.login(lang, auth.login_token(), err), 403)
        res = Response.redirect("/", 303)
        res.set_cookie(COOKIE, auth.open_session(), path="/", http_only=True)
        res.headers["Set-Cookie"][-1] += "; SameSite=Strict"
        return res

    @app.post("/logout")
    @guarded
    async def logout(req, lang, s, fm):
        auth.close_session(req.cookies.get(COOKIE))
        res = Response.redirect("/login", 303)
        res.delete_cookie(COOKIE, path="/", http_only=True)
        return res

    @app.post("/lang")
    async def lang_(req):
        # before a login too (the login form's token); after it, the session's
        if not app.same_site(req):
            raise HTTPError(403, "cross_site")
        fm = app.form(req)
        s = session(req)
        ok = webauth.same(fm.get("csrf") or "", s[2]) if s else auth.take_login_token(fm.get("csrf"))
        if not ok:
            raise HTTPError(403, "csrf")
        res = Response.redirect("/" if s else "/login", 303)
        res.set_cookie("lang", "en" if fm.get("lang") == "en" else "zh", path="/",
                       max_age=31536000)
        res.headers["Set-Cookie"][-1] += "; SameSite=Strict"
        return res

    async def done(lang, s, why, ok):
        if why is None:
            return app.html(await app.status_page(lang, s[2], msg=P.t(lang, ok)))
        return app.html(await app.status_page(lang, s[2], err=P.t(lang, why)), 409)

    def local():
        if app.local is None:
            raise HTTPError(503, "unavailable")
        return app.local

    @app.post("/volume")
    @guarded
    async def volume(req, lang, s, fm):
        v = fm.get("volume") or ""
        if not v.isdigit() or int(v) > 100:
            raise HTTPError(400, "bad_volume")
        return await done(lang, s, await _maybe(local().set_volume(int(v))), "ok_volume")

    def action(path, name):
        # a Local action without arguments: POST /chime, /play, /stop
        @app.post(path)
        @guarded
        async def run(req, lang, s, fm):
            return await done(lang, s, await _maybe(getattr(local(), name)()), "ok_" + name)

    for name in ("chime", "play", "stop"):
        action("/" + name, name)

    @app.post("/upload")
    @guarded
    async def upload(req, lang, s, fm):
        import webupload

        return await done(lang, s, await webupload.receive(app, req, s, local()), "ok_upload")

    @app.get("/log")
    async def log_page(req):
        s = session(req)
        if s is None:
            return Response.redirect("/login", 303)
        lines = _tail(app.log.path, 6144)
        lines.reverse()
        rows = []
        for i in range(0, len(lines), LOG_ROWS):  # rendered a few rows at a time, yielding
            await asyncio.sleep_ms(0)
            rows.append(P.log_rows(lines[i:i + LOG_ROWS]))
        return app.html(P.log(app.lang(req), s[2], rows))

    @app.route("/password", methods=["GET", "POST"])
    async def password(req):
        lang = app.lang(req)
        s = session(req)
        if s is None and app.recovery:
            # recovery mode: the technician at the terminal sets a password without a login or
            # the old one (physical presence is the proof, docs/web.md "Recovery mode")
            if req.method == "GET":
                return app.html(P.password(lang, auth.login_token(), True))
            if not app.same_site(req):
                raise HTTPError(403, "cross_site")
            fm = app.form(req)
            if not auth.take_login_token(fm.get("csrf")):
                raise HTTPError(403, "csrf")
            return await _set(lang, auth.login_token(), fm)
        if req.method == "GET":
            if s is None:
                return Response.redirect("/login", 303)
            return app.html(P.password(lang, s[2], app.recovery))
        return await change(req)  # type: ignore (guarded() supplies the rest)

    @guarded
    async def change(req, lang, s, fm):
        return await _set(lang, s[2], fm)

    async def _set(lang, csrf, fm):
        new = fm.get("new") or ""

        def out(err=None, msg=None):
            if err == "locked":
                err = P.t(lang, err) % auth.locked_for()
            elif err:
                err = P.t(lang, err)
            return app.html(P.password(lang, csrf, app.recovery, msg, err), 409 if err else 200)

        if new != (fm.get("again") or ""):
            return out("pass_differ")
        if not app.recovery:
            r = await auth.check(fm.get("old") or "")
            if r != "ok":
                return out("old_wrong" if r == "wrong" else r)
        why = await auth.set_password(new)
        if why is None and app.recovery:
            auth.unlock()
        return out(why, None if why else P.t(lang, "ok_password"))

    @app.route("/network", methods=["GET", "POST"])
    async def network(req):
        lang = app.lang(req)
        if req.method == "GET":
            s = session(req)
            if s is None:
                return Response.redirect("/login", 303)
            return app.html(P.network(lang, s[2], webnet.load()))
        return await net_save(req)  # type: ignore (guarded() supplies the rest)

    @guarded
    async def net_save(req, lang, s, fm):
        net = {k: (fm.get(k) or "").strip() for k in ("mode", "address", "netmask", "gateway",
                                                       "dns")}
        why = webnet.check(net, req.g.peer)
        if why is None:
            why = webnet.store(net, app.log)
        if why is not None:
            return app.html(P.network(lang, s[2], net, err=P.t(lang, why)), 409)
        return app.html(P.network(lang, s[2], net, msg=P.t(lang, "ok_network")))
