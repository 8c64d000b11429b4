"""Two unmodified ccxt binanceusdm clients against `perpcore serve` (run by run.sh).

Usage: smoke.py API_URL ADMIN_URL ADMIN_TOKEN. Exits non-zero on the first mismatch.
Expected figures: account B buys 0.004 BTC at 30000 from A (cost 0.004 x 30000 = 120 USDT,
taker fee 120 x 0.0005 = 0.06 with default.toml's BTCUSDT fees, so B's wallet is
100000 - 0.06 = 99999.94; initial margin at the default leverage 20 is 120 / 20 = 6).
"""
import json
import sys
import urllib.request

import ccxt

API, ADMIN, TOKEN = sys.argv[1], sys.argv[2], sys.argv[3]
SYM = "BTC/USDT:USDT"


def admin(path, body):
    req = urllib.request.Request(
        ADMIN + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"},
    )
    return json.load(urllib.request.urlopen(req, timeout=10))


def client(key, secret):
    ex = ccxt.binanceusdm({"apiKey": key, "secret": secret, "timeout": 10000})
    for k in ("fapiPublic", "fapiPublicV2", "fapiPublicV3", "fapiPrivate", "fapiPrivateV2", "fapiPrivateV3"):
        version = {"fapiPublic": "v1", "fapiPrivate": "v1"}.get(k, "v" + k[-1])
        ex.urls["api"][k] = f"{API}/fapi/{version}"
    ex.options["fetchCurrencies"] = False
    return ex


def refused(call, error):
    try:
        call()
    except error:
        return
    raise AssertionError(f"expected {error.__name__}")


for account in (1, 2):
    admin("/admin/v1/account", {"account": account})
    admin("/admin/v1/deposit", {"account": account, "asset": "USDT", "amount": "100000"})
admin("/admin/v1/markPrice", {"symbol": "BTCUSDT", "price": "30000"})

a = client("key-a", "secret-a-0123456789")
b = client("key-b", "secret-b-0123456789")
assert SYM in a.load_markets()
b.load_markets()
assert a.fetch_time() > 1_600_000_000_000
assert a.set_leverage(10, SYM)["leverage"] == 10
refused(lambda: a.set_margin_mode("cross", SYM), ccxt.MarginModeAlreadySet)

o = a.create_order(SYM, "limit", "sell", 0.01, 30000)
assert o["status"] == "open" and o["amount"] == 0.01, o
assert a.fetch_order_book(SYM)["asks"] == [[30000.0, 0.01]]
f = b.create_order(SYM, "limit", "buy", 0.004, 30000)
assert (f["status"], f["filled"], f["average"], f["cost"]) == ("closed", 0.004, 30000.0, 120.0), f
assert [(x["id"], x["filled"], x["remaining"]) for x in a.fetch_open_orders(SYM)] == [(o["id"], 0.004, 0.006)]
e = a.edit_order(o["id"], SYM, "limit", "sell", 0.008, 30100)
assert (e["price"], e["amount"], e["status"]) == (30100.0, 0.008, "open"), e
refused(lambda: b.cancel_order(o["id"], SYM), ccxt.OrderNotFound)
refused(lambda: b.create_order(SYM, "limit", "buy", 0.001, 30100, {"postOnly": True}), ccxt.InvalidOrder)
assert a.cancel_order(o["id"], SYM)["status"] == "canceled"
usdt = b.fetch_balance()["USDT"]
assert (usdt["total"], usdt["used"], usdt["free"]) == (99999.94, 6.0, 99993.94), usdt
pos = b.fetch_positions([SYM])
assert [(p["symbol"], p["contracts"], p["side"], p["entryPrice"]) for p in pos] == [(SYM, 0.004, "long", 30000.0)], pos
refused(lambda: client("key-a", "wrong-secret").fetch_balance(), ccxt.AuthenticationError)
print("ccxt smoke: 1 passed, 0 failed")
