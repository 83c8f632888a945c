"""An unmodified wechatpy WeChatComponent (a third-party platform), pointed at the hub's gateway
by its base URL, with a consumer key in place of the component_appsecret.

Runs the SDK's normal flow: the component token, a pre-auth code for the authorization link, the
account owner authorizing (played on the mock; WeChat's redirect carries the code, its push does
not reach the hub in this run), query_auth with the code, the authorizer's token refreshed twice
(answered by the hub: WeChat sees no fetch), a business call, the authorizer's token killed
behind the hub's back (another party fetches a new one straight from WeChat), and a business call
again. Any error the SDK raises fails the run. Prints one JSON line of what it saw.
"""
import json
import os
import time
import urllib.request

from wechatpy import WeChatComponent

GATEWAY = os.environ["WXHUB_GATEWAY"]
WECHAT = os.environ["WXHUB_WECHAT"]
COMPONENT = os.environ["WXHUB_COMPONENT"]
KEY = os.environ["WXHUB_KEY"]


class HubComponent(WeChatComponent):
    # Every call of the platform's, its token's included, goes to this base URL.
    API_BASE_URL = GATEWAY + "/cgi-bin"


def wechat(path, body=None):
    """A call straight to WeChat (the mock): what the account owner or another party does."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(WECHAT + path, data=data)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request) as answer:
        return json.loads(answer.read())


def authorizer_token_fetches():
    """The api_authorizer_token calls WeChat has answered so far."""
    calls = wechat("/mock/stats")["calls"]
    return sum(calls.get("/cgi-bin/component/api_authorizer_token", {}).values())


# The hub receives WeChat's pushes; this SDK parses none, so its message token and key are unused.
component = HubComponent(COMPONENT, KEY, "unused", "a" * 43)

pre_auth_code = component.create_preauthcode()["pre_auth_code"]
granted = wechat("/mock/authorize", {"component_appid": COMPONENT, "pre_auth_code": pre_auth_code})
assert not granted["push"]["acknowledged"], granted

result = component.query_auth(granted["authorization_code"])
authorizer = result["authorization_info"]["authorizer_appid"]
client = component.get_client_by_appid(authorizer)
# The authorizer's business calls: the same gateway.
client.API_BASE_URL = GATEWAY + "/cgi-bin/"
token = client.access_token
refresh_token = client.refresh_token

fetches = authorizer_token_fetches()
first = client.fetch_access_token()
second = client.fetch_access_token()
assert first["authorizer_access_token"] == token, "the hub's token"
assert second["authorizer_access_token"] == token, "the hub's token, again"
assert authorizer_token_fetches() == fetches, "WeChat fetched no authorizer token"
assert client.refresh_token == refresh_token

first_ips = client.misc.get_wechat_ips()

# Another party fetches the authorizer's token straight from WeChat, with WeChat's refresh token
# (the holder of a component token can list those); the SDK's dies after its overlap.
listed = wechat(
    "/cgi-bin/component/api_get_authorizer_list?component_access_token=" + component.access_token,
    {"component_appid": COMPONENT, "offset": 0, "count": 500},
)
wechats = next(a["refresh_token"] for a in listed["list"] if a["authorizer_appid"] == authorizer)
assert wechats and wechats != refresh_token, "the SDK holds a stand-in, not WeChat's refresh token"
wechat(
    "/cgi-bin/component/api_authorizer_token?component_access_token=" + component.access_token,
    {"component_appid": COMPONENT, "authorizer_appid": authorizer, "authorizer_refresh_token": wechats},
)
deadline = time.time() + 10
while wechat("/cgi-bin/getcallbackip?access_token=" + token).get("errcode", 0) == 0:
    if time.time() > deadline:
        raise SystemExit("the old token never died")
    time.sleep(0.05)

second_ips = client.misc.get_wechat_ips()
print(json.dumps({
    "sdk": "wechatpy",
    "authorizer": authorizer,
    "token": token,
    "refresh_token": refresh_token,
    "first": len(first_ips),
    "second": len(second_ips),
}))
