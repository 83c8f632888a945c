// An unmodified co-wechat-api, pointed at the hub's gateway by its `prefix` alone.
//
// Fetches a token, makes a business call, has the token killed behind its back (another party
// fetches a new one straight from WeChat), waits until WeChat refuses the old one, and calls
// again. Any error the SDK throws fails the run. Prints one JSON line of what it saw.
'use strict';

const http = require('http');
const API = require('co-wechat-api');

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const GATEWAY = env('WXHUB_GATEWAY');
const WECHAT = env('WXHUB_WECHAT');
const APPID = env('WXHUB_APPID');
const KEY = env('WXHUB_KEY');
const REAL_SECRET = env('WXHUB_REAL_SECRET');

const wechatGet = (path) => new Promise((resolve, reject) => {
  http.get(WECHAT + path, (res) => {
    let body = '';
    res.on('data', (chunk) => { body += chunk; });
    res.on('end', () => resolve(JSON.parse(body)));
  }).on('error', reject);
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

(async () => {
  const api = new API(APPID, KEY);
  api.prefix = GATEWAY + '/cgi-bin/';
  const first = await api.getIp();
  const { accessToken } = await api.ensureAccessToken();

  await wechatGet(`/cgi-bin/token?grant_type=client_credential&appid=${APPID}&secret=${REAL_SECRET}`);
  const deadline = Date.now() + 10000;
  while (((await wechatGet(`/cgi-bin/getcallbackip?access_token=${accessToken}`)).errcode || 0) === 0) {
    if (Date.now() > deadline) throw new Error('the old token never died');
    await sleep(50);
  }

  const second = await api.getIp();
  console.log(JSON.stringify({ sdk: 'co-wechat-api', first: first.ip_list.length, second: second.ip_list.length }));
})().catch((e) => {
  console.error(`SDK error: ${e.name} ${e.code || ''} ${e.message}`);
  process.exit(1);
});
