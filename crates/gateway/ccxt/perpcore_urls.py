"""How the check scripts point ccxt at `perpcore serve`: only URLs and one option change.

`point(ex, api)` takes a ccxt or ccxt.pro `binanceusdm` and the REST base
(`http://127.0.0.1:PORT`): the six `fapi*` bases, and for ccxt.pro the websocket streams'
base (must end in /ws; ccxt.pro turns it into /public/ws, /market/ws and
/private/ws?listenKey=..., all served) and the WebSocket API's URL (Binance's
wss://ws-fapi.binance.com/ws-fapi/v1). `fetchCurrencies` is off: with a key set,
load_markets would otherwise call the spot /sapi endpoints first.
"""


def point(ex, api):
    for k in ("fapiPublic", "fapiPublicV2", "fapiPublicV3", "fapiPrivate", "fapiPrivateV2", "fapiPrivateV3"):
        version = {"fapiPublic": "v1", "fapiPrivate": "v1"}.get(k, "v" + k[-1])
        ex.urls["api"][k] = f"{api}/fapi/{version}"
    ws = ex.urls["api"].get("ws")
    if isinstance(ws, dict):
        base = api.replace("http://", "ws://", 1)
        ws["linear"] = base + "/ws"
        ws.setdefault("ws-api", {})["linear"] = base + "/ws-fapi/v1"
    ex.options["fetchCurrencies"] = False
    return ex
