"""ccxt.pro's WebSocket API calls against `perpcore serve` (run by run.sh after smoke.py).

Usage: ws_api.py API_URL ADMIN_URL ADMIN_TOKEN. Exits non-zero on the first mismatch.
Accounts 1 (key-a) and 2 (key-b) exist with USDT (smoke.py made them); the BTCUSDT mark
is 30000. Only URLs are overridden: REST as in smoke.py, and the WebSocket API's
`urls['api']['ws']['ws-api']['linear']` (Binance's wss://ws-fapi.binance.com/ws-fapi/v1).
ccxt signs these requests itself (its `sign_params`: the parameters sorted by name).

1. Both accounts' open orders are cancelled over REST first (earlier scripts leave some).
2. A places a sell of 0.002 at 31200 with create_order_ws; fetch_order_ws shows it open;
   edit_order_ws moves it to 31300.
3. B may not cancel it: cancel_order_ws raises OrderNotFound (Binance -2011).
4. B buys 0.001 at 31300 IOC with create_order_ws: filled 0.001 (closed). A's order,
   read over REST, has 0.001 filled and 0.001 left; A cancels it with cancel_order_ws.
5. fetch_balance_ws and fetch_positions_ws of B equal fetch_balance and fetch_positions
   over REST (nothing moves in between: the mark is fixed, no orders are open).
6. A request signed with the wrong secret raises AuthenticationError (Binance -1022).
"""
import asyncio
import sys

import ccxt
import ccxt.pro as ccxtpro

from perpcore_urls import point

API, ADMIN, TOKEN = sys.argv[1], sys.argv[2], sys.argv[3]
SYM = "BTC/USDT:USDT"
WAIT = 15  # seconds any one call may take


def client(key, secret):
    return point(ccxtpro.binanceusdm({"apiKey": key, "secret": secret, "timeout": 10000}), API)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def timed(coro):
    return await asyncio.wait_for(coro, WAIT)


async def main():
    a = client("key-a", "secret-a-0123456789")
    b = client("key-b", "secret-b-0123456789")
    wrong = client("key-a", "not-the-secret-of-key-a")
    checks = 0
    try:
        for ex in (a, b, wrong):
            await ex.load_markets()
        for ex in (a, b):
            await ex.cancel_all_orders(SYM)

        sell = await timed(a.create_order_ws(SYM, "limit", "sell", 0.002, 31200))
        check(sell["status"] == "open" and sell["price"] == 31200.0 and sell["amount"] == 0.002, sell)
        got = await timed(a.fetch_order_ws(sell["id"], SYM))
        check(got["id"] == sell["id"] and got["status"] == "open" and got["remaining"] == 0.002, got)
        moved = await timed(a.edit_order_ws(sell["id"], SYM, "limit", "sell", 0.002, 31300))
        check(moved["id"] == sell["id"] and moved["price"] == 31300.0, moved)
        checks += 3

        try:
            await timed(b.cancel_order_ws(sell["id"], SYM))
            raise AssertionError("B cancelled A's order")
        except ccxt.OrderNotFound:
            checks += 1

        buy = await timed(b.create_order_ws(SYM, "limit", "buy", 0.001, 31300, {"timeInForce": "IOC"}))
        check(buy["status"] == "closed" and buy["filled"] == 0.001, buy)
        rest = await a.fetch_order(sell["id"], SYM)
        check(rest["filled"] == 0.001 and rest["remaining"] == 0.001 and rest["status"] == "open", rest)
        gone = await timed(a.cancel_order_ws(sell["id"], SYM))
        check(gone["status"] == "canceled", gone)
        check(await a.fetch_open_orders(SYM) == [], "A has open orders left")
        checks += 4

        bal_ws = await timed(b.fetch_balance_ws())
        bal = await b.fetch_balance()
        check(bal_ws["USDT"] == bal["USDT"], (bal_ws["USDT"], bal["USDT"]))
        pos_ws = [p for p in await timed(b.fetch_positions_ws([SYM])) if p["contracts"]]
        pos = [p for p in await b.fetch_positions([SYM]) if p["contracts"]]
        key = lambda p: (p["symbol"], p["side"], p["contracts"], p["entryPrice"], p["unrealizedPnl"])
        check(len(pos) == 1 and [key(p) for p in pos_ws] == [key(p) for p in pos], (pos_ws, pos))
        checks += 2

        try:
            await timed(wrong.create_order_ws(SYM, "limit", "buy", 0.001, 29000))
            raise AssertionError("a wrong signature was accepted")
        except ccxt.AuthenticationError:
            checks += 1
    finally:
        for ex in (a, b, wrong):
            await ex.close()
    print(f"ccxt ws-api: {checks} checks passed")


asyncio.run(main())
