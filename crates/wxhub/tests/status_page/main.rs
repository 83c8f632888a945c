//! The status page (`GET /status`) in a real browser: headless Chromium, driven over the DevTools
//! protocol, against a hub running on `wechat-mock`. Also the refresh history that the page
//! charts, as `/v1/credentials` lists it.

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

mod browser;
mod page;
