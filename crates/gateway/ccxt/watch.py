"""ccxt.pro watchers against `perpcore serve` (run by run.sh after smoke.py).

Usage: watch.py API_URL ADMIN_URL ADMIN_TOKEN. Exits non-zero on the first mismatch.
Accounts 1 (key-a) and 2 (key-b) exist with USDT (smoke.py made them); the BTCUSDT mark
is 30000. Only the URLs are overridden: REST as in smoke.py, and the websocket base
`urls['api']['ws']['linear']`, which must end in /ws (ccxt.pro turns it into /public/ws,
/market/ws and /private/ws?listenKey=..., all served).

1. watch_order_book: A rests a sell of 0.003 at 31000; the watched book shows it. B buys
   0.001 at 31000 (taking from A's order): the book shows 0.003 - 0.001 = 0.002 left.
2. watch_orders: B's stream shows that buy closed (filled 0.001 at 31000), then a bid of
   0.001 at 29000 open, then canceled. A's orders never appear on B's stream.
"""
import asyncio
import sys

import ccxt.pro as ccxtpro

from perpcore_urls import point

API, ADMIN, TOKEN = sys.argv[1], sys.argv[2], sys.argv[3]
SYM = "BTC/USDT:USDT"
WAIT = 15  # seconds any one watch may take


def client(key, secret):
    return point(ccxtpro.binanceusdm({"apiKey": key, "secret": secret, "timeout": 10000}), API)


async def book_until(ex, pred, what):
    """watch_order_book until pred(book) holds (bounded: WAIT seconds, 200 updates)."""
    async def go():
        for _ in range(200):
            book = await ex.watch_order_book(SYM)
            if pred(book):
                return book
        raise AssertionError(f"book never showed {what}")
    return await asyncio.wait_for(go(), WAIT)


async def orders_until(ex, seen, pred, what):
    """watch_orders until an update satisfies pred (bounded: WAIT seconds, 200 updates)."""
    async def go():
        for _ in range(200):
            for o in await ex.watch_orders(SYM):
                seen.append(o)
                if pred(o):
                    return o
        raise AssertionError(f"orders never showed {what}")
    return await asyncio.wait_for(go(), WAIT)


async def seen_after(watch, action):
    """Start `watch` (a coroutine awaiting the next update), then run `action`: an update
    published before a watch is awaiting is not delivered to it by ccxt.pro, so the
    watcher must be waiting first."""
    task = asyncio.ensure_future(watch)
    await asyncio.sleep(0.3)
    result = await action()
    return result, await task


async def main():
    a = client("key-a", "secret-a-0123456789")
    b = client("key-b", "secret-b-0123456789")
    try:
        await a.load_markets()
        await b.load_markets()

        # The book: subscribed and synced from the REST snapshot before the orders.
        first = await asyncio.wait_for(a.watch_order_book(SYM), WAIT)
        assert [31000.0, 0.003] not in first["asks"], first["asks"]
        sell, _ = await seen_after(
            book_until(a, lambda bk: [31000.0, 0.003] in bk["asks"], "A's ask"),
            lambda: a.create_order(SYM, "limit", "sell", 0.003, 31000),
        )
        # B's order stream: the first watch_orders authenticates (POST /fapi/v1/listenKey)
        # and connects to /private/ws?listenKey=...; give it a second before B trades.
        seen = []
        watcher = asyncio.ensure_future(
            orders_until(b, seen, lambda o: o["status"] == "closed", "B's filled buy")
        )
        await asyncio.sleep(1.0)
        buy, _ = await seen_after(
            book_until(a, lambda bk: [31000.0, 0.002] in bk["asks"], "A's ask after the fill"),
            lambda: b.create_order(SYM, "limit", "buy", 0.001, 31000),
        )
        filled = await watcher
        assert (filled["id"], filled["filled"], filled["average"]) == (buy["id"], 0.001, 31000.0), filled

        bid_open = lambda o: o["side"] == "buy" and o["price"] == 29000.0 and o["status"] == "open"
        bid, opened = await seen_after(
            orders_until(b, seen, bid_open, "B's bid open"),
            lambda: b.create_order(SYM, "limit", "buy", 0.001, 29000),
        )
        assert opened["id"] == bid["id"], (opened, bid)
        await seen_after(
            orders_until(b, seen, lambda o: o["id"] == bid["id"] and o["status"] == "canceled", "B's bid canceled"),
            lambda: b.cancel_order(bid["id"], SYM),
        )
        assert all(o["id"] != sell["id"] for o in seen), "A's order on B's stream"
        await a.cancel_order(sell["id"], SYM)
    finally:
        await a.close()
        await b.close()
    print("ccxt.pro watchers: 1 passed, 0 failed")


asyncio.run(main())
