//! Sign-in, refresh rotation and client credentials.

use axum::http::StatusCode;
use serde_json::json;

use crate::on_both_backends;
use crate::support::{TestApp, assert_problem};

on_both_backends!(
    login_checks_the_password,
    refresh_tokens_rotate_and_reuse_revokes_the_family,
    concurrent_refreshes_of_one_token_yield_one_pair,
    client_credentials_grant_scoped_machine_tokens,
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

    // The spent token presented again: refused, and its family is revoked.
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
    assert_eq!(all.body["scope"], "read write delete");
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
