"""The request-weight limit as a ccxt client meets it (run by run.sh, last: it spends the
request weight of 127.0.0.1 for the rest of the minute).

Usage: limits.py API_URL ADMIN_URL ADMIN_TOKEN WEIGHT_LIMIT, with WEIGHT_LIMIT what
run.sh passed to `perpcore serve --weight-limit`. exchangeInfo must list it; order books
of 1000 levels (weight 20 each, ccxt's own throttle off) are fetched until the gateway
answers HTTP 429 with code -1003, each answer's X-MBX-USED-WEIGHT-1M growing by 20 (or
starting again at 20 if a new minute began). Bounded: at most 2 x WEIGHT_LIMIT / 20 + 2
requests.
"""
import sys

import ccxt

API, LIMIT = sys.argv[1], int(sys.argv[4])
SYM = "BTC/USDT:USDT"
ex = ccxt.binanceusdm({"timeout": 10000, "enableRateLimit": False})
ex.urls["api"]["fapiPublic"] = f"{API}/fapi/v1"
ex.options["fetchCurrencies"] = False

info = ex.fapiPublicGetExchangeInfo()
weights = [r for r in info["rateLimits"] if r["rateLimitType"] == "REQUEST_WEIGHT"]
assert weights == [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": LIMIT}], info["rateLimits"]
ex.load_markets()


def used():
    return int({k.lower(): v for k, v in ex.last_response_headers.items()}["x-mbx-used-weight-1m"])


before, checks = used(), 2
# Twice the budget: enough even if a new minute starts half-way.
for _ in range(2 * (LIMIT // 20) + 2):
    try:
        ex.fetch_order_book(SYM, 1000)
    except ccxt.DDoSProtection as e:
        # ccxt maps HTTP 429 to DDoSProtection before reading the body.
        text = str(e).replace(" ", "")
        assert "429" in text and '"code":-1003' in text, e
        assert f"currentlimitis{LIMIT}requestsperminute" in text, e
        checks += 1
        break
    now = used()
    assert now in (before + 20, 20), (before, now)
    before = now
    checks += 1
else:
    raise AssertionError(f"no 429 within {2 * (LIMIT // 20) + 2} requests of weight 20")
print(f"ccxt limits: {checks} passed, 0 failed")
