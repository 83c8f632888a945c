//! `wxhub demo` works with nothing configured: the printed key reads a token that WeChat (the
//! mock) accepts.

use wxhub::demo::{
    self, DemoOptions, COMPONENT_APPID, DEMO_CORPS, LEGACY_APPID, PROVIDER_CORPID, RUNTIME_APPID,
    STABLE_APPID, SUITE_ID,
};

use crate::helpers::*;

#[tokio::test]
async fn the_demo_serves_working_tokens_with_its_printed_key() {
    let dir = tempfile::tempdir().unwrap();
    let demo = demo::start(DemoOptions {
        listen: any_port(),
        database: Some(dir.path().join("demo.db")),
    })
    .await
    .expect("demo starts");
    let instructions = demo.instructions();
    assert!(instructions.contains(&demo.consumer_key));
    let address = format!("http://{}", demo.app.address());
    assert!(instructions.contains(&address));
    let key = demo.consumer_key.clone();
    let gateway = demo
        .app
        .gateway_address(wxhub::gateway::Host::Official)
        .expect("the demo runs the gateway");
    assert!(instructions.contains(&format!("http://{gateway}/cgi-bin/token")));
    let runtime_secret = demo.runtime_secret.clone();
    assert!(instructions.contains(&format!("/v1/admin/apps/{RUNTIME_APPID}")));
    let mock = demo.mock.clone();
    assert_eq!(
        demo.push_url(),
        format!("{address}/wechat/components/{{component_appid}}/events"),
        "the mock pushes to the hub it runs with"
    );
    assert_eq!(
        demo.suite_push_url(),
        format!("{address}/wechat/suites/{{suite_id}}/events"),
        "the mock pushes the suite's events to the hub it runs with"
    );
    let first_corp = DEMO_CORPS[0].0;
    assert!(instructions.contains(&format!(
        "/v1/suites/{SUITE_ID}/corps/{first_corp}/access_token"
    )));
    assert!(instructions.contains(&format!("/v1/providers/{PROVIDER_CORPID}/access_token")));
    tokio::spawn(demo.run_until(std::future::pending()));

    let client = reqwest::Client::new();
    wait_until(
        std::time::Duration::from_secs(10),
        "the demo is ready",
        || async {
            client
                .get(format!("{address}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    for appid in [STABLE_APPID, LEGACY_APPID] {
        let answer: TokenAnswer = client
            .get(format!("{address}/v1/apps/{appid}/access_token"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(business_call(&client, &mock, &answer.access_token).await, 0);
    }
    let signature: serde_json::Value = client
        .post(format!("{address}/v1/apps/{STABLE_APPID}/jssdk/signature"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"url": "https://example.com/page#x"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(signature["appId"], STABLE_APPID);
    assert_eq!(signature["signature"].as_str().map(str::len), Some(40));

    // The printed runtime addition works as printed.
    let added = client
        .put(format!("{address}/v1/admin/apps/{RUNTIME_APPID}"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"secret": runtime_secret, "mode": "legacy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    let answer: TokenAnswer = client
        .get(format!("{address}/v1/apps/{RUNTIME_APPID}/access_token"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(business_call(&client, &mock, &answer.access_token).await, 0);
    let status = client
        .get(format!("{address}/status"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);

    // The demo platform's authorizers are recovered from the mock's list and served.
    for n in 1..=2 {
        let authorizer = wechat_mock::authorizer_appid(0, n);
        let url = format!(
            "{address}/v1/components/{COMPONENT_APPID}/authorizers/{authorizer}/access_token"
        );
        wait_until(
            std::time::Duration::from_secs(15),
            "a demo authorizer is served",
            || async {
                client
                    .get(&url)
                    .bearer_auth(&key)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            },
        )
        .await;
        let answer: TokenAnswer = client
            .get(&url)
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(business_call(&client, &mock, &answer.access_token).await, 0);
    }

    // The demo suite's token, its provider's, and both corps that install the suite once the hub
    // runs: each corp's token is served (fetched with the permanent code the hub stored from the
    // `create_auth` push) and works at Work WeChat.
    served(
        &client,
        &address,
        &key,
        &format!("/v1/suites/{SUITE_ID}/access_token"),
    )
    .await;
    served(
        &client,
        &address,
        &key,
        &format!("/v1/providers/{PROVIDER_CORPID}/access_token"),
    )
    .await;
    for (corpid, _) in DEMO_CORPS {
        let answer = served(
            &client,
            &address,
            &key,
            &format!("/v1/suites/{SUITE_ID}/corps/{corpid}/access_token"),
        )
        .await;
        assert_eq!(business_call(&client, &mock, &answer.access_token).await, 0);
    }
    let suite = mock.stats().suite(SUITE_ID);
    assert_eq!(suite.installs, 2);
    assert_eq!(suite.permanent_codes_issued, 2);

    // The printed gateway call, with the consumer key as the AppSecret.
    let answer: serde_json::Value = client
        .get(format!("http://{gateway}/cgi-bin/token"))
        .query(&[
            ("grant_type", "client_credential"),
            ("appid", LEGACY_APPID),
            ("secret", key.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = answer["access_token"]
        .as_str()
        .expect("a token")
        .to_string();
    assert_eq!(business_call(&client, &mock, &token).await, 0);
}

/// The token at `path` once the demo serves it.
async fn served(client: &reqwest::Client, address: &str, key: &str, path: &str) -> TokenAnswer {
    let url = format!("{address}{path}");
    wait_until(
        std::time::Duration::from_secs(15),
        &format!("{path} is served"),
        || async {
            client
                .get(&url)
                .bearer_auth(key)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    client
        .get(&url)
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
