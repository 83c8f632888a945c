"""An unmodified wechatpy, pointed at the hub's gateway by its base URL and its token URL.

Fetches a token, makes a business call, has the token killed behind its back (another party
fetches a new one straight from WeChat), waits until WeChat refuses the old one, and calls again.
Any error the SDK raises fails the run. Prints one JSON line of what it saw.
"""
import json
import os
import time
import urllib.request

from wechatpy import WeChatClient

GATEWAY = os.environ["WXHUB_GATEWAY"]
WECHAT = os.environ["WXHUB_WECHAT"]
APPID = os.environ["WXHUB_APPID"]
KEY = os.environ["WXHUB_KEY"]
REAL_SECRET = os.environ["WXHUB_REAL_SECRET"]


class HubClient(WeChatClient):
    # The business calls' base URL ...
    API_BASE_URL = GATEWAY + "/cgi-bin/"

    # ... and the token URL, which wechatpy keeps as a literal.
    def fetch_access_token(self):
        return self._fetch_access_token(
            url=GATEWAY + "/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
        )


def wechat_get(path):
    with urllib.request.urlopen(WECHAT + path) as answer:
        return json.loads(answer.read())


client = HubClient(APPID, KEY)
first_ips = client.misc.get_wechat_ips()
token = client.access_token

wechat_get(
    "/cgi-bin/token?grant_type=client_credential&appid=%s&secret=%s" % (APPID, REAL_SECRET)
)
deadline = time.time() + 10
while wechat_get("/cgi-bin/getcallbackip?access_token=" + token).get("errcode", 0) == 0:
    if time.time() > deadline:
        raise SystemExit("the old token never died")
    time.sleep(0.05)

second_ips = client.misc.get_wechat_ips()
print(json.dumps({"sdk": "wechatpy", "first": len(first_ips), "second": len(second_ips)}))
