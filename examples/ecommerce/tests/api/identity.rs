//! Sign-in, refresh rotation and client credentials.

use std::time::Instant;

use axum::http::StatusCode;
use ecommerce::identity::SignInLimits;
use serde_json::json;

use crate::on_both_backends;
use crate::support::{TestApp, assert_problem};

on_both_backends!(
    login_checks_the_password,
    refresh_tokens_rotate_and_reuse_revokes_the_family,
    concurrent_refreshes_of_one_token_yield_one_pair,
    client_credentials_grant_scoped_machine_tokens,
    sign_ins_are_rate_limited_per_account,
);

async fn login_checks_the_password(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let wrong = app.login(&ada.email, "not-the-password").await;
    assert_problem(&wrong, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.headers["www-authenticate"], "Bearer");
    let unknown = app.login("nobody@example.com", "secret-password").await;
    assert_problem(&unknown, StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong.body["detail"], unknown.body["detail"],
        "never says which was wrong"
    );
    // The email matches whatever its case.
    let upper = app
        .login(&ada.email.to_uppercase(), "secret-password")
        .await;
    assert_eq!(upper.status, StatusCode::OK, "{:?}", upper.body);
    assert_eq!(upper.body["expiresIn"], 900);
    assert_eq!(upper.body["tokenType"], "Bearer");
}

async fn refresh_tokens_rotate_and_reuse_revokes_the_family(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let refresh = |token: String| {
        let app = &app;
        async move {
            app.post(
                "/api/v2/accounts/refresh",
                None,
                json!({ "refreshToken": token }),
            )
            .await
        }
    };
    let first = refresh(ada.refresh_token.clone()).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    let second_token = first.body["refreshToken"].as_str().unwrap().to_owned();
    assert_ne!(second_token, ada.refresh_token);
    let details = app
        .get(
            "/api/v2/customers/details",
            first.body["accessToken"].as_str(),
        )
        .await;
    assert_eq!(details.status, StatusCode::OK);

    // The spent token presented again at once (as a concurrent refresh would): refused,
    // and its family kept.
    let concurrent = refresh(ada.refresh_token.clone()).await;
    assert_problem(&concurrent, StatusCode::UNAUTHORIZED);
    // Presented again after the grace (a copy someone else holds): refused, and its family
    // is revoked.
    tokio::time::sleep(std::time::Duration::from_millis(2_200)).await;
    let reused = refresh(ada.refresh_token.clone()).await;
    assert_problem(&reused, StatusCode::UNAUTHORIZED);
    let after_reuse = refresh(second_token).await;
    assert_problem(&after_reuse, StatusCode::UNAUTHORIZED);

    // Another sign-in starts a new family.
    let again = app.login(&ada.email, "secret-password").await;
    let fresh = refresh(again.body["refreshToken"].as_str().unwrap().to_owned()).await;
    assert_eq!(fresh.status, StatusCode::OK, "{:?}", fresh.body);

    // An access token is not a refresh token, and garbage is refused.
    assert_problem(
        &refresh(ada.access_token.clone()).await,
        StatusCode::UNAUTHORIZED,
    );
    assert_problem(
        &refresh("garbage".to_owned()).await,
        StatusCode::UNAUTHORIZED,
    );
}

async fn concurrent_refreshes_of_one_token_yield_one_pair(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let body = json!({ "refreshToken": ada.refresh_token });
    let replies = futures::future::join_all(
        (0..4).map(|_| app.post("/api/v2/accounts/refresh", None, body.clone())),
    )
    .await;
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let refused = replies
        .iter()
        .filter(|r| r.status == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!((ok, refused), (1, 3), "{replies:?}");
    // The losers did not revoke the winner's family: its new token still works.
    let winner = replies.iter().find(|r| r.status == StatusCode::OK).unwrap();
    let next = winner.body["refreshToken"].as_str().unwrap();
    let again = app
        .post(
            "/api/v2/accounts/refresh",
            None,
            json!({ "refreshToken": next }),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
}

async fn client_credentials_grant_scoped_machine_tokens(app: TestApp) {
    let request = |secret: &str, scope: Option<&str>, grant: &str| {
        json!({
            "grantType": grant,
            "clientId": ecommerce::config::DEVELOPMENT_CLIENT_ID,
            "clientSecret": secret,
            "scope": scope,
        })
    };
    let secret = ecommerce::config::DEVELOPMENT_CLIENT_SECRET;
    let all = app
        .post(
            "/api/v2/accounts/token",
            None,
            request(secret, None, "client_credentials"),
        )
        .await;
    assert_eq!(all.status, StatusCode::OK, "{:?}", all.body);
    assert_eq!(all.body["scope"], "read write delete keys");
    let claims = app
        .keys()
        .verify_access(all.body["accessToken"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims.role, ecommerce::auth::Role::M2MAccess);

    let read = app
        .post(
            "/api/v2/accounts/token",
            None,
            request(secret, Some("read"), "client_credentials"),
        )
        .await;
    assert_eq!(read.body["scope"], "read");

    let wrong = app
        .post(
            "/api/v2/accounts/token",
            None,
            request("nope", None, "client_credentials"),
        )
        .await;
    assert_problem(&wrong, StatusCode::UNAUTHORIZED);
    let scope = app
        .post(
            "/api/v2/accounts/token",
            None,
            request(secret, Some("admin"), "client_credentials"),
        )
        .await;
    assert_problem(&scope, StatusCode::FORBIDDEN);
    let grant = app
        .post(
            "/api/v2/accounts/token",
            None,
            request(secret, None, "password"),
        )
        .await;
    assert_problem(&grant, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(grant.body["errors"]["grantType"].is_array());
}

/// Past the account's burst of attempts a sign-in answers 429 with `Retry-After`, whatever
/// the password; another account is not affected.
async fn sign_ins_are_rate_limited_per_account(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let bob = app.customer("Bob Babbage").await;
    let burst = SignInLimits::default().per_account_per_minute;
    // Registration signed each in once.
    for _ in 1..burst {
        let wrong = app.login(&ada.email, "not-the-password").await;
        assert_problem(&wrong, StatusCode::UNAUTHORIZED);
    }
    let limited = app.login(&ada.email, "secret-password").await;
    assert_problem(&limited, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let other = app.login(&bob.email, "secret-password").await;
    assert_eq!(other.status, StatusCode::OK);
}

/// The process's peak resident memory, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// 150 anonymous sign-ins at once (each an Argon2 hash of 19 MiB): a few hash at a time on
/// the hashing threads, the others wait a bounded time and answer 503 with `Retry-After`; the
/// process's peak memory grows by what the hashing threads' allocator keeps (measured about
/// 220 MiB with two threads, for 150 or 400 sign-ins alike), not by 150 hashes (2.8 GiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_anonymous_sign_ins_keeps_memory_bounded() {
    let app = TestApp::memory().await;
    let before = peak_rss_kib();
    let started = Instant::now();
    let replies = futures::future::join_all((0..150).map(|i| {
        let email = format!("nobody-{i}@example.com");
        let app = &app;
        async move { app.login(&email, "secret-password").await }
    }))
    .await;
    let elapsed = started.elapsed();
    let growth_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    let (mut refused, mut busy) = (0, 0);
    for reply in &replies {
        match reply.status {
            StatusCode::UNAUTHORIZED => refused += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(reply.headers.contains_key("retry-after"));
                busy += 1;
            }
            other => panic!("a sign-in answered {other}: {:?}", reply.body),
        }
    }
    let slots = SignInLimits::default().hashing as u64;
    eprintln!(
        "150 sign-ins: {refused} answered 401, {busy} answered 503 in {elapsed:?}; peak memory grew {growth_mib} MiB ({slots} hashing slots)"
    );
    assert!(refused > 0, "some sign-ins were answered");
    assert!(
        growth_mib <= slots * 96 + 128,
        "peak memory grew {growth_mib} MiB with {slots} hashing slots"
    );
}

/// Past the address's attempts a sign-in from it answers 429 with `Retry-After`, whichever
/// accounts it tries; another address is not affected.
#[tokio::test]
async fn sign_ins_are_rate_limited_per_client_address() {
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::{Request, header};
    use ecommerce::app::AppConfig;
    use ecommerce::identity::IdentityConfig;

    let per_address = 3;
    let app = TestApp::with(AppConfig {
        identity: IdentityConfig {
            sign_in: SignInLimits {
                per_address_per_minute: per_address,
                ..SignInLimits::default()
            },
            ..IdentityConfig::development()
        },
        ..AppConfig::embedded()
    })
    .await;
    let sign_in = |from: [u8; 4], email: String| {
        let mut request = Request::post("/api/v2/accounts/login")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({ "email": email, "password": "not-the-password" }).to_string(),
            ))
            .unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(std::net::SocketAddr::from((from, 40_000))));
        request
    };
    let attacker = [203, 0, 113, 7];
    // Every attempt names another account: only the address limit applies.
    for i in 0..per_address {
        let reply = app
            .send(
                crate::support::Listener::Public,
                sign_in(attacker, format!("victim{i}@example.com")),
            )
            .await;
        assert_problem(&reply, StatusCode::UNAUTHORIZED);
    }
    let limited = app
        .send(
            crate::support::Listener::Public,
            sign_in(attacker, "victim-next@example.com".to_owned()),
        )
        .await;
    assert_problem(&limited, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers.contains_key("retry-after"));
    let neighbour = app
        .send(
            crate::support::Listener::Public,
            sign_in([198, 51, 100, 1], "victim-next@example.com".to_owned()),
        )
        .await;
    assert_problem(&neighbour, StatusCode::UNAUTHORIZED);
}

/// Behind a trusted proxy (the gateway) the address limit applies to the address it forwarded
/// for; a client that is not a trusted proxy cannot choose its address by the header.
#[tokio::test]
async fn behind_a_trusted_proxy_sign_ins_are_limited_per_forwarded_address() {
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::{Request, header};
    use ecommerce::app::AppConfig;
    use ecommerce::identity::IdentityConfig;

    let gateway = std::net::IpAddr::from([10, 0, 0, 1]);
    let app = TestApp::with(AppConfig {
        identity: IdentityConfig {
            sign_in: SignInLimits {
                per_address_per_minute: 2,
                ..SignInLimits::default()
            },
            ..IdentityConfig::development()
        },
        trusted_proxies: vec![gateway],
        ..AppConfig::embedded()
    })
    .await;
    let sign_in = |peer: std::net::IpAddr, forwarded_for: Option<&str>, n: usize| {
        let mut request = Request::post("/api/v2/accounts/login")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(forwarded_for) = forwarded_for {
            request = request.header("x-forwarded-for", forwarded_for);
        }
        let mut request = request
            .body(Body::from(
                json!({ "email": format!("victim{n}@example.com"), "password": "wrong-password" })
                    .to_string(),
            ))
            .unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(std::net::SocketAddr::new(peer, 40_000)));
        request
    };
    let public = crate::support::Listener::Public;
    // Through the gateway, one client uses its two attempts, and is limited...
    for n in 0..2 {
        let reply = app
            .send(public, sign_in(gateway, Some("203.0.113.7"), n))
            .await;
        assert_problem(&reply, StatusCode::UNAUTHORIZED);
    }
    let limited = app
        .send(
            public,
            sign_in(gateway, Some("198.51.100.9, 203.0.113.7"), 2),
        )
        .await;
    assert_problem(&limited, StatusCode::TOO_MANY_REQUESTS);
    // ...while another client through the same gateway is not.
    let other = app
        .send(public, sign_in(gateway, Some("203.0.113.8"), 3))
        .await;
    assert_problem(&other, StatusCode::UNAUTHORIZED);
    // A client that is not the gateway names another address in vain: its own counts.
    let direct = std::net::IpAddr::from([192, 0, 2, 5]);
    for n in 4..6 {
        let reply = app
            .send(public, sign_in(direct, Some(&format!("203.0.113.{n}")), n))
            .await;
        assert_problem(&reply, StatusCode::UNAUTHORIZED);
    }
    let forged = app
        .send(public, sign_in(direct, Some("203.0.113.99"), 6))
        .await;
    assert_problem(&forged, StatusCode::TOO_MANY_REQUESTS);
}
