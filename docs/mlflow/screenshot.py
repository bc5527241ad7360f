"""Headless Chromium via the DevTools protocol: open a URL, run optional JS (clicks), screenshot."""
import base64, json, os, subprocess, sys, time, urllib.request
# websocket-client: pip install --target DIR websocket-client, then WEBSOCKET_CLIENT_PATH=DIR
sys.path.insert(0, os.environ.get("WEBSOCKET_CLIENT_PATH", ""))
import websocket

url, out = sys.argv[1], sys.argv[2]
js = sys.argv[3] if len(sys.argv) > 3 else ""
wait = float(sys.argv[4]) if len(sys.argv) > 4 else 8
port = 9333
p = subprocess.Popen(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      f"--remote-debugging-port={port}", "--window-size=1600,1100", "about:blank"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(50):
        try:
            tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
            break
        except Exception:
            time.sleep(0.2)
    ws = websocket.create_connection([t for t in tabs if t["type"] == "page"][0]["webSocketDebuggerUrl"], suppress_origin=True)
    n = [0]
    def call(method, **params):
        n[0] += 1
        ws.send(json.dumps({"id": n[0], "method": method, "params": params}))
        while True:
            m = json.loads(ws.recv())
            if m.get("id") == n[0]:
                return m.get("result", {})
    call("Emulation.setDeviceMetricsOverride", width=1600, height=1100, deviceScaleFactor=1, mobile=False)
    call("Page.navigate", url=url)
    time.sleep(wait)
    if js:
        r = call("Runtime.evaluate", expression=js, awaitPromise=True, returnByValue=True)
        print("js:", r.get("result", {}).get("value"))
        time.sleep(wait)
    data = call("Page.captureScreenshot", format="png")["data"]
    open(out, "wb").write(base64.b64decode(data))
    print("wrote", out)
finally:
    p.kill()
