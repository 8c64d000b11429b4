"""Two unmodified ccxt binanceusdm clients against `perpcore serve` (run by run.sh).

Usage: smoke.py API_URL ADMIN_URL ADMIN_TOKEN. Exits non-zero at the first mismatch; the
last line counts the checks. Every request has a 10 s timeout (ccxt's and urllib's).

What is compared with what: ccxt's unified figures (floats, as any ccxt user sees them)
against values worked by hand below, and the raw Binance-shaped strings ccxt received
(`info`) against the engine's own report (`GET /admin/v1/report`, as `perpcore audit`
prints it), as exact decimals (Python's Decimal, never a float).

Figures (default.toml's BTCUSDT: maker fee 0.0002, taker fee 0.0005):
- T1: B buys 0.004 at 30000 from A's resting sell: cost 0.004 x 30000 = 120; B (taker)
  pays 120 x 0.0005 = 0.06, A (maker) 120 x 0.0002 = 0.024. B's wallet 100000 - 0.06 =
  99999.94; B's initial margin at the default leverage 20: 120 / 20 = 6.
- The mark moves to 30300: B's unrealized PnL (30300 - 30000) x 0.004 = 1.2.
- T2: A rests a buy of 0.002 at 30300, B sells 0.002 at market: cost 60.6. B closes 0.002
  of its long: realized (30300 - 30000) x 0.002 = 0.6, fee 60.6 x 0.0005 = 0.0303. A
  closes 0.002 of its short: realized -0.6, fee 60.6 x 0.0002 = 0.01212.
- B's income: +100000 (deposit), -0.06, +0.6, -0.0303; their sum 100000.5097 is B's
  wallet. A's: +100000, -0.024, -0.6, -0.01212; sum 99999.36388.
"""
import json
import sys
import urllib.request
from decimal import Decimal as D

import ccxt

from perpcore_urls import point

API, ADMIN, TOKEN = sys.argv[1], sys.argv[2], sys.argv[3]
SYM = "BTC/USDT:USDT"
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


def admin(path, body=None):
    req = urllib.request.Request(
        ADMIN + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"},
    )
    return json.load(urllib.request.urlopen(req, timeout=10))


def report(account):
    return admin(f"/admin/v1/report?account={account}")["report"]


def client(key, secret):
    return point(ccxt.binanceusdm({"apiKey": key, "secret": secret, "timeout": 10000}), API)


def refused(call, error, code):
    """`call` raises `error` whose body carries Binance's `code`."""
    try:
        call()
    except error as e:
        check(f'"code":{code}' in str(e).replace(" ", ""), f"code {code} in {e}")
        return
    raise AssertionError(f"expected {error.__name__} ({code})")


def usdt_of(assets, key="asset"):
    return next(a for a in assets if a[key] == "USDT")


def same_account(ex, account):
    """The account's balance and positions as ccxt read them equal the engine's report."""
    rep = report(account)
    info = ex.fetch_balance()["info"]
    mine, theirs = usdt_of(info["assets"]), usdt_of(rep["assets"])
    for binance, engine in [
        ("walletBalance", "wallet"),
        ("marginBalance", "margin_balance"),
        ("maintMargin", "maintenance_margin"),
        ("availableBalance", "available"),
        ("maxWithdrawAmount", "withdrawable"),
        ("positionInitialMargin", "initial_margin"),
        ("openOrderInitialMargin", "order_margin"),
    ]:
        check(D(mine[binance]) == D(theirs[engine]), f"{binance} {mine[binance]} != {engine} {theirs[engine]}")
    positions = ex.fetch_positions([SYM])
    check(len(positions) == len(rep["positions"]), f"{positions} vs {rep['positions']}")
    for p, r in zip(positions, rep["positions"]):
        i = p["info"]
        for binance, engine in [
            ("positionAmt", "size"),
            ("entryPrice", "entry_price"),
            ("markPrice", "mark_price"),
            ("unRealizedProfit", "unrealized_pnl"),
            ("notional", "notional"),
            ("maintMargin", "maintenance_margin"),
            ("liquidationPrice", "liquidation_price_tick"),
        ]:
            check(D(i[binance]) == D(r[engine] or "0"), f"{binance} {i[binance]} != {engine} {r[engine]}")
    return rep


for account in (1, 2):
    admin("/admin/v1/account", {"account": account})
    admin("/admin/v1/deposit", {"account": account, "asset": "USDT", "amount": "100000"})
admin("/admin/v1/markPrice", {"symbol": "BTCUSDT", "price": "30000"})

a = client("key-a", "secret-a-0123456789")
b = client("key-b", "secret-b-0123456789")
check(SYM in a.load_markets(), "markets")
b.load_markets()
check(a.fetch_time() > 1_600_000_000_000, "time")

# Leverage and margin mode.
check(a.set_leverage(10, SYM)["leverage"] == 10, "leverage")
refused(lambda: a.set_margin_mode("cross", SYM), ccxt.MarginModeAlreadySet, -4046)
b.set_margin_mode("isolated", SYM)
check(report(2)["positions"] == [], "no position yet")
b.set_margin_mode("cross", SYM)
refused(lambda: b.set_margin_mode("cross", SYM), ccxt.MarginModeAlreadySet, -4046)

# Place, trade, amend, cancel.
o = a.create_order(SYM, "limit", "sell", 0.01, 30000)
check(o["status"] == "open" and o["amount"] == 0.01, o)
check(a.fetch_order_book(SYM)["asks"] == [[30000.0, 0.01]], "book")
f = b.create_order(SYM, "limit", "buy", 0.004, 30000)
check((f["status"], f["filled"], f["average"], f["cost"]) == ("closed", 0.004, 30000.0, 120.0), f)
check([(x["id"], x["filled"], x["remaining"]) for x in a.fetch_open_orders(SYM)] == [(o["id"], 0.004, 0.006)], "open")
e = a.edit_order(o["id"], SYM, "limit", "sell", 0.008, 30100)
check((e["price"], e["amount"], e["status"]) == (30100.0, 0.008, "open"), e)
# Another account's order: not found, to cancel (-2011) or to query (-2013).
refused(lambda: b.cancel_order(o["id"], SYM), ccxt.OrderNotFound, -2011)
refused(lambda: b.fetch_order(o["id"], SYM), ccxt.OrderNotFound, -2013)
refused(lambda: b.create_order(SYM, "limit", "buy", 0.001, 30100, {"postOnly": True}), ccxt.InvalidOrder, -5022)
check(a.cancel_order(o["id"], SYM)["status"] == "canceled", "cancel")
check(a.fetch_order(o["id"], SYM)["status"] == "canceled", "query")

# Balances and positions: ccxt's figures, and the raw strings against the engine.
usdt = b.fetch_balance()["USDT"]
check((usdt["total"], usdt["used"], usdt["free"]) == (99999.94, 6.0, 99993.94), usdt)
pos = b.fetch_positions([SYM])
check([(p["symbol"], p["contracts"], p["side"], p["entryPrice"]) for p in pos] == [(SYM, 0.004, "long", 30000.0)], pos)
same_account(b, 2)
same_account(a, 1)
admin("/admin/v1/markPrice", {"symbol": "BTCUSDT", "price": "30300"})
check(b.fetch_positions([SYM])[0]["unrealizedPnl"] == 1.2, "uPnL")
same_account(b, 2)

# T1 in the account trades of both.
tb = b.fetch_my_trades(SYM)
check([(t["order"], t["side"], t["price"], t["amount"], t["cost"], t["takerOrMaker"], t["fee"]["cost"], t["fee"]["currency"])
       for t in tb] == [(f["id"], "buy", 30000.0, 0.004, 120.0, "taker", 0.06, "USDT")], tb)
ta = a.fetch_my_trades(SYM)
check([(t["id"], t["side"], t["takerOrMaker"], t["fee"]["cost"]) for t in ta] == [(tb[0]["id"], "sell", "maker", 0.024)], ta)

# T2 closes part of both positions: realized PnL and income.
a.create_order(SYM, "limit", "buy", 0.002, 30300)
m = b.create_order(SYM, "market", "sell", 0.002)
check((m["status"], m["filled"], m["average"]) == ("closed", 0.002, 30300.0), m)
t2 = b.fetch_my_trades(SYM)[-1]
check((t2["info"]["realizedPnl"], t2["info"]["commission"], t2["info"]["quoteQty"]) == ("0.60000000", "0.03030000", "60.6"), t2["info"])
for ex, account, flows in [
    (b, 2, [("TRANSFER", "100000.00000000"), ("COMMISSION", "-0.06000000"),
            ("REALIZED_PNL", "0.60000000"), ("COMMISSION", "-0.03030000")]),
    (a, 1, [("TRANSFER", "100000.00000000"), ("COMMISSION", "-0.02400000"),
            ("REALIZED_PNL", "-0.60000000"), ("COMMISSION", "-0.01212000")]),
]:
    ledger = ex.fetch_ledger("USDT")
    got = [(x["info"]["incomeType"], x["info"]["income"]) for x in ledger]
    check(got == flows, got)
    wallet = usdt_of(report(account)["assets"])["wallet"]
    check(sum(D(x) for _, x in got) == D(wallet), f"income sum vs wallet {wallet}")
    same_account(ex, account)

# Refusals: a bad signature (-1022), a timestamp a minute old (-1021).
refused(lambda: client("key-a", "wrong-secret").fetch_balance(), ccxt.AuthenticationError, -1022)
late = client("key-a", "secret-a-0123456789")
late.milliseconds = lambda: ccxt.Exchange.milliseconds() - 60_000
refused(lambda: late.fetch_balance(), ccxt.InvalidNonce, -1021)

used = {k.lower(): v for k, v in b.last_response_headers.items()}.get("x-mbx-used-weight-1m")
print(f"request weight used by 127.0.0.1 this minute: {used}")
print(f"ccxt smoke: {checks} passed, 0 failed")
