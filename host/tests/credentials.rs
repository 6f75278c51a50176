//! Instance credentials over IMDSv2 against the simulation's mock IMDS (`sim/src/imds.rs`, compiled
//! in here so that the host's tests do not depend on the whole simulation crate).

#[path = "../../sim/src/imds.rs"]
mod imds;

use std::time::Duration;

use sealed_host::credentials::{CredentialProvider, CredentialsError, unix_now};
use sealed_wire::ErrorCode;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY";
const TOKEN: &str = "IQoJb3JpZ2luX2VjEMOCK-SESSION-TOKEN";

async fn start_imds(lifetime: Duration) -> (String, imds::ImdsConfig, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = imds::ImdsConfig::new("ASIAMOCKHOSTROLE0001", SECRET, TOKEN);
    config.credential_lifetime = lifetime;
    let task = tokio::spawn(imds::serve(listener, config.clone()));
    (format!("http://{addr}"), config, task)
}

#[tokio::test]
async fn fetches_instance_credentials_with_a_session_token_and_caches_them() {
    let (url, config, _task) = start_imds(Duration::from_secs(6 * 3600)).await;
    let provider = CredentialProvider::imds(Some(&url), Duration::from_secs(300)).unwrap();
    assert!(provider.is_configured());

    let creds = provider.get().await.unwrap();
    assert_eq!(creds.access_key_id, "ASIAMOCKHOSTROLE0001");
    assert_eq!(creds.secret_access_key.as_str(), SECRET);
    assert_eq!(
        creds.session_token.as_deref().map(String::as_str),
        Some(TOKEN)
    );
    let expires_at = creds.expires_at.unwrap();
    assert!(expires_at > unix_now() + 5 * 3600, "{expires_at}");
    creds.validate().unwrap();
    // The IMDSv2 flow: a token first, then the credentials; nothing was refused.
    assert!(config.stats.tokens_issued() >= 1);
    assert_eq!(config.stats.credentials_served(), 1);
    assert_eq!(config.stats.unauthorized(), 0);

    // Fresh credentials come from the cache.
    let again = provider.get().await.unwrap();
    assert_eq!(again, creds);
    assert_eq!(config.stats.credentials_served(), 1);
    assert_eq!(provider.fetch_count(), 1);

    // Nothing secret in Debug output.
    let shown = format!("{creds:?}");
    assert!(!shown.contains(SECRET) && !shown.contains(TOKEN), "{shown}");
}

#[tokio::test]
async fn refreshes_credentials_before_they_expire() {
    // Credentials that live 10 minutes against a 15-minute refresh margin are always due for
    // refresh: each load fetches again, although none has expired.
    let (url, config, _task) = start_imds(Duration::from_secs(600)).await;
    let provider = CredentialProvider::imds(Some(&url), Duration::from_secs(900)).unwrap();
    let first = provider.get().await.unwrap();
    assert!(first.expires_at.unwrap() > unix_now());
    provider.get().await.unwrap();
    provider.get().await.unwrap();
    assert_eq!(config.stats.credentials_served(), 3);
    assert_eq!(provider.fetch_count(), 3);

    // The same lifetime with a 5-minute margin is fresh: fetched once.
    let (url, config, _task) = start_imds(Duration::from_secs(600)).await;
    let provider = CredentialProvider::imds(Some(&url), Duration::from_secs(300)).unwrap();
    provider.get().await.unwrap();
    provider.get().await.unwrap();
    assert_eq!(config.stats.credentials_served(), 1);
}

#[tokio::test]
async fn the_mock_requires_a_session_token() {
    let (url, config, _task) = start_imds(Duration::from_secs(3600)).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let creds_url = format!("{url}/latest/meta-data/iam/security-credentials/");

    // IMDSv1 (no token) is refused.
    let r = http.get(&creds_url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(&creds_url)
        .header("x-aws-ec2-metadata-token", "made-up")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(config.stats.unauthorized(), 2);

    // A token needs a TTL in 1..=21600, and is not handed out through a proxy.
    let token_url = format!("{url}/latest/api/token");
    assert_eq!(http.put(&token_url).send().await.unwrap().status(), 400);
    let r = http
        .put(&token_url)
        .header("x-aws-ec2-metadata-token-ttl-seconds", "21601")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .put(&token_url)
        .header("x-aws-ec2-metadata-token-ttl-seconds", "60")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let r = http
        .put(&token_url)
        .header("x-aws-ec2-metadata-token-ttl-seconds", "60")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aws-ec2-metadata-token-ttl-seconds"], "60");
    let token = r.text().await.unwrap();

    let get = |path: String| {
        http.get(path)
            .header("x-aws-ec2-metadata-token", &token)
            .send()
    };
    let role = get(creds_url.clone()).await.unwrap().text().await.unwrap();
    assert_eq!(role, "sealed-host-role");
    let body: serde_json::Value = get(format!("{creds_url}{role}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["Code"], "Success");
    assert_eq!(body["Type"], "AWS-HMAC");
    assert_eq!(body["AccessKeyId"], "ASIAMOCKHOSTROLE0001");
    let expiration = body["Expiration"].as_str().unwrap();
    let parsed =
        time::OffsetDateTime::parse(expiration, &time::format_description::well_known::Rfc3339)
            .unwrap();
    assert!(parsed.unix_timestamp() as u64 > unix_now());
    assert!(expiration.ends_with('Z'), "{expiration}");
    assert_eq!(
        get(format!("{creds_url}other-role"))
            .await
            .unwrap()
            .status(),
        404
    );
    let region = get(format!("{url}/latest/meta-data/placement/region"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(region, "us-east-1");
}

#[tokio::test]
async fn an_unreachable_imds_is_a_retryable_kms_unavailable() {
    // A port with nothing listening.
    let port = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let provider = CredentialProvider::imds(
        Some(&format!("http://127.0.0.1:{port}")),
        Duration::from_secs(300),
    )
    .unwrap();
    let err = provider.get().await.unwrap_err();
    assert!(matches!(err, CredentialsError::Imds(_)), "{err}");
    assert_eq!(err.code(), ErrorCode::KmsUnavailable);
}
