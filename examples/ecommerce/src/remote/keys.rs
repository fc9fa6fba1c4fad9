//! [`HttpKeyStore`]: the data subjects' keys of the service that owns them (customers), for a
//! service split apart that seals or opens personal data. It passes the key-store contract
//! (`tests/api/keys.rs`); keys are not cached, so a forgetting holds for it as soon as the
//! owner committed it.

use std::collections::HashMap;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use es_core::privacy::{Forgetting, KeyStore, KeyStoreError, SubjectId, SubjectKey};
use hyper::{Method, StatusCode};
use serde_json::json;

use super::{RemoteError, ServiceClient};
use crate::customers::keys::{ForgettingView, Found, KeyView, SubjectStatus};

/// The key store of another service, over its internal routes (a machine token with the
/// `keys` scope).
#[derive(Debug, Clone)]
pub struct HttpKeyStore(pub ServiceClient);

fn storage(error: RemoteError) -> KeyStoreError {
    KeyStoreError::Storage(error.into())
}

fn key_of(view: &KeyView) -> Result<SubjectKey, KeyStoreError> {
    let bytes = BASE64
        .decode(&view.key)
        .map_err(|e| KeyStoreError::Storage(e.into()))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
        KeyStoreError::Storage(format!("the key of {} is not 32 bytes", view.subject).into())
    })?;
    Ok(SubjectKey::new(view.version, bytes))
}

impl HttpKeyStore {
    /// POSTs `body` to `/api/v2/internal/keys/{action}`; `None` for a 410 (forgotten).
    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        action: &str,
        body: serde_json::Value,
    ) -> Result<Option<T>, KeyStoreError> {
        // Reads, the current key (made once per subject) and forgetting are safe to send
        // twice; a rotation is not (a second one would make another version).
        let reply = self
            .0
            .call(
                Method::POST,
                &format!("/api/v2/internal/keys/{action}"),
                Some(&body),
                action != "rotate",
            )
            .await
            .map_err(storage)?;
        if reply.status == StatusCode::GONE {
            return Ok(None);
        }
        reply
            .expect(self.0.service(), StatusCode::OK)
            .map(Some)
            .map_err(storage)
    }
}

#[async_trait]
impl KeyStore for HttpKeyStore {
    async fn current_key(&self, subject: &SubjectId) -> Result<Option<SubjectKey>, KeyStoreError> {
        let view: Option<KeyView> = self
            .post("current", json!({ "subject": subject.as_str() }))
            .await?;
        view.as_ref().map(key_of).transpose()
    }

    async fn key(
        &self,
        subject: &SubjectId,
        version: u32,
    ) -> Result<Option<SubjectKey>, KeyStoreError> {
        let found = self.keys(&[(subject.clone(), version)]).await?;
        Ok(found.into_values().next())
    }

    async fn keys(
        &self,
        wanted: &[(SubjectId, u32)],
    ) -> Result<HashMap<(SubjectId, u32), SubjectKey>, KeyStoreError> {
        let mut found = HashMap::with_capacity(wanted.len());
        let asked: HashMap<(&str, u32), &SubjectId> = wanted
            .iter()
            .map(|(subject, version)| ((subject.as_str(), *version), subject))
            .collect();
        for chunk in wanted.chunks(1000) {
            let body = json!({
                "keys": chunk
                    .iter()
                    .map(|(subject, version)| json!({ "subject": subject.as_str(), "version": version }))
                    .collect::<Vec<_>>(),
            });
            let answer: Option<Found> = self.post("lookup", body).await?;
            for view in answer.map(|a| a.keys).unwrap_or_default() {
                let Some(subject) = asked.get(&(view.subject.as_str(), view.version)) else {
                    continue;
                };
                found.insert(((*subject).clone(), view.version), key_of(&view)?);
            }
        }
        Ok(found)
    }

    async fn rotate(&self, subject: &SubjectId) -> Result<Option<SubjectKey>, KeyStoreError> {
        let view: Option<KeyView> = self
            .post("rotate", json!({ "subject": subject.as_str() }))
            .await?;
        view.as_ref().map(key_of).transpose()
    }

    async fn forget(&self, subject: &SubjectId, by: &str) -> Result<Forgetting, KeyStoreError> {
        let view: ForgettingView = self
            .post("forget", json!({ "subject": subject.as_str(), "by": by }))
            .await?
            .ok_or_else(|| KeyStoreError::Storage("forgetting answered 410".into()))?;
        Ok(Forgetting {
            subject: subject.clone(),
            by: view.by,
            at: view.at,
            already: view.already,
        })
    }

    async fn is_forgotten(&self, subject: &SubjectId) -> Result<bool, KeyStoreError> {
        let status: SubjectStatus = self
            .post("status", json!({ "subject": subject.as_str() }))
            .await?
            .ok_or_else(|| KeyStoreError::Storage("the status answered 410".into()))?;
        Ok(status.forgotten)
    }
}
