//! Secrets: inline, `${ENV}` or `*_file`, exactly one way, and never shown.

use super::*;

#[test]
fn secrets_come_exactly_one_way() {
    let env = env_of(&[("APP_SECRET", "from-env\n"), ("EMPTY", "")]);
    let settings = parse_with(
        "[[apps]]\nappid = \"wx1\"\nsecret = \"${APP_SECRET}\"\n[[apps]]\nappid = \"wx2\"\nsecret = \"inline-secret\"\n",
        &env,
    )
    .unwrap();
    assert_eq!(settings.apps[0].secret.expose(), "from-env");
    assert_eq!(settings.apps[1].secret.expose(), "inline-secret");
    assert_eq!(settings.apps[1].secret.source(), &SecretSource::Inline);

    fails_at(
        "[[apps]]\nappid = \"wx1\"\nsecret = \"${NOT_SET}\"\n",
        3,
        "apps[0].secret",
        "environment variable NOT_SET is not set",
    );
    fails_at_with(
        "[[apps]]\nappid = \"wx1\"\nsecret = \"${EMPTY}\"\n",
        &env,
        3,
        "apps[0].secret",
        "environment variable EMPTY is empty",
    );
    fails_at(
        "[[apps]]\nappid = \"wx1\"\nsecret = \"${BAD NAME}\"\n",
        3,
        "apps[0].secret",
        "malformed environment reference",
    );
    fails_at(
        "[[apps]]\nappid = \"wx1\"\n",
        1,
        "apps[0].secret",
        "required key is missing",
    );
    fails_at(
        "[[apps]]\nappid = \"wx1\"\nsecret = \"s\"\nsecret_file = \"f\"\n",
        4,
        "apps[0].secret_file",
        "not both",
    );
    fails_at(
        "[[apps]]\nappid = \"wx1\"\nsecret = \"  \"\n",
        3,
        "apps[0].secret",
        "must not be empty",
    );
}

#[test]
fn secret_files_are_read_relative_to_the_config_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good"), "s3cr3t-from-file\r\n").unwrap();
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    let config = dir.path().join("wxhub.toml");
    let run = |text: &str| Settings::parse(text, &config, &|_| None);

    let settings =
        run("[[corps]]\ncorpid = \"ww1\"\nagentid = 1000002\nsecret_file = \"good\"\n").unwrap();
    assert_eq!(settings.corps[0].secret.expose(), "s3cr3t-from-file");
    assert_eq!(settings.corps[0].agentid, "1000002");

    let err = run("[[apps]]\nappid = \"wx1\"\nsecret_file = \"missing\"\n").unwrap_err();
    let shown = err.to_string();
    assert_eq!(err.line(), Some(3));
    assert!(
        shown.contains("apps[0].secret_file: cannot read secret file"),
        "{shown}"
    );
    assert!(
        shown.contains(&dir.path().join("missing").display().to_string()),
        "{shown}"
    );
    assert!(shown.contains("os error"), "{shown}");

    let err = run("[[apps]]\nappid = \"wx1\"\nsecret_file = \"empty\"\n").unwrap_err();
    assert_eq!(err.line(), Some(3));
    assert!(err.to_string().contains("is empty"), "{err}");
}

#[test]
fn secrets_never_show() {
    let corp = "[[corps]]\ncorpid = \"ww1\"\nagentid = 7\nsecret = \"inline-corp-secret\"\n";
    let text = example().replace(
        "kind = \"sqlite\"                 # memory | sqlite | redis\npath = \"wxhub.db\"",
        "kind = \"redis\"\nurl = \"redis://user:redis-password@10.0.0.1:6379/0\"\n#",
    ) + corp;
    assert!(text.contains("redis-password"));
    let settings = parse(&text).unwrap();
    let secrets = [WX_SECRET, WW_SECRET, "inline-corp-secret", "redis-password"];

    let rendered = settings.render_masked();
    let debug = format!("{settings:?}");
    let pretty = format!("{settings:#?}");
    for secret in secrets {
        assert!(!rendered.contains(secret), "{secret} in {rendered}");
        assert!(!debug.contains(secret), "{secret} in {debug}");
        assert!(!pretty.contains(secret), "{secret} in {pretty}");
    }
    assert_eq!(format!("{}", settings.apps[0].secret), "***");
    assert_eq!(format!("{:?}", settings.apps[0].secret), "***");
    assert!(rendered.contains("secret = \"***\"  # from environment variable WX_SECRET_MAIN"));
    assert!(
        rendered.contains("redis://user:***@10.0.0.1:6379/0"),
        "{rendered}"
    );
    let full_hash = consumer_key_sha256(ORDERS_KEY);
    assert!(!rendered.contains(&full_hash));
    assert!(rendered.contains(&full_hash[..8]));

    // A secret that fails validation later is not echoed either.
    let err = parse("[[apps]]\nappid = \"wx1\"\nsecret = \"${half-open\"\n").unwrap_err();
    assert!(!err.to_string().contains("half-open"), "{err}");
}
