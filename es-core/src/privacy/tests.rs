#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;

use super::*;

fn subject(id: &str) -> SubjectId {
    SubjectId::new(id).unwrap()
}

fn privacy() -> Privacy {
    Privacy::new(Arc::new(MemoryKeyStore::new()))
}

fn record(who: &SubjectId, name: &str) -> Value {
    json!({
        "customerId": who.as_str(),
        "name": Personal::new(who.clone(), name.to_owned()),
        "lines": [{"address": Personal::new(who.clone(), json!({"street": "1 Way"}))}],
        "total": 12.5,
    })
}

fn read<T: serde::de::DeserializeOwned>(value: &Value) -> Personal<T> {
    serde_json::from_value(value.clone()).unwrap()
}

#[tokio::test]
async fn protected_values_hold_no_plaintext_and_reveal_as_written() {
    let privacy = privacy();
    let ada = subject("c-1");
    let mut stored = record(&ada, "Ada Lovelace");
    assert_eq!(privacy.protect(&mut stored).await.unwrap(), 2);
    let text = stored.to_string();
    assert!(!text.contains("Ada") && !text.contains("1 Way"), "{text}");
    assert_eq!(stored["total"], 12.5);
    // Protecting again changes nothing: sealed values stay sealed.
    let again = stored.clone();
    assert_eq!(privacy.protect(&mut stored).await.unwrap(), 0);
    assert_eq!(stored, again);

    assert_eq!(privacy.reveal(&mut stored).await.unwrap(), 2);
    assert_eq!(stored, record(&ada, "Ada Lovelace"));
}

#[tokio::test]
async fn each_value_gets_a_fresh_nonce() {
    let privacy = privacy();
    let ada = subject("c-1");
    let mut one = json!(Personal::new(ada.clone(), "Ada"));
    let mut two = one.clone();
    privacy.protect(&mut one).await.unwrap();
    privacy.protect(&mut two).await.unwrap();
    assert_ne!(one["$personal"]["nonce"], two["$personal"]["nonce"]);
    assert_ne!(one["$personal"]["cipher"], two["$personal"]["cipher"]);
}

#[tokio::test]
async fn a_forgotten_subject_reads_as_forgotten_and_others_are_untouched() {
    let privacy = privacy();
    let (ada, bob) = (subject("c-1"), subject("c-2"));
    let mut stored = json!([record(&ada, "Ada"), record(&bob, "Bob")]);
    privacy.protect(&mut stored).await.unwrap();
    let forgetting = privacy.forget(&ada, "operator-1").await.unwrap();
    assert_eq!(
        (forgetting.by.as_str(), forgetting.already),
        ("operator-1", false)
    );
    assert!(privacy.keys().forget(&ada, "again").await.unwrap().already);

    let mut read_back = stored.clone();
    assert_eq!(privacy.reveal(&mut read_back).await.unwrap(), 2);
    let name: Personal<String> = read(&read_back[0]["name"]);
    assert!(name.is_forgotten());
    assert_eq!(name.subject(), &ada);
    assert_eq!(read_back[0]["total"], 12.5);
    let bob_name: Personal<String> = read(&read_back[1]["name"]);
    assert_eq!(bob_name.value().map(String::as_str), Some("Bob"));

    // Written after forgetting: stored as forgotten, never encrypted under a new key.
    let mut late = record(&ada, "Ada again");
    assert_eq!(privacy.protect(&mut late).await.unwrap(), 0);
    assert!(!late.to_string().contains("Ada again"));
    assert_eq!(
        late["name"],
        json!({"$personal": {"subject": "c-1", "forgotten": true}})
    );
}

#[tokio::test]
async fn altered_ciphertext_is_refused() {
    let privacy = privacy();
    let ada = subject("c-1");
    let mut stored = json!(Personal::new(ada, "Ada"));
    privacy.protect(&mut stored).await.unwrap();
    let cipher = stored["$personal"]["cipher"].as_str().unwrap().to_owned();
    let mut bytes = BASE64.decode(cipher).unwrap();
    bytes[0] ^= 1;
    stored["$personal"]["cipher"] = json!(BASE64.encode(bytes));
    let error = privacy.reveal(&mut stored).await.unwrap_err();
    assert!(matches!(error, PrivacyError::Tampered { .. }), "{error}");
}

#[tokio::test]
async fn a_value_moved_to_another_subject_is_refused() {
    let keys = Arc::new(MemoryKeyStore::new());
    let privacy = Privacy::new(keys.clone());
    let (ada, bob) = (subject("c-1"), subject("c-2"));
    // Both subjects have keys; Bob's key is made to equal Ada's, so only the associated
    // data tells the two apart.
    let mut stored = json!(Personal::new(ada.clone(), "Ada"));
    privacy.protect(&mut stored).await.unwrap();
    let ada_key = keys.current_key(&ada).await.unwrap().unwrap();
    let same = Privacy::new(Arc::new(FixedKeys(ada_key)));
    stored["$personal"]["subject"] = json!(bob.as_str());
    let error = same.reveal(&mut stored).await.unwrap_err();
    assert!(matches!(error, PrivacyError::Tampered { subject } if subject == bob));
}

#[tokio::test]
async fn a_rotated_key_encrypts_new_values_and_old_versions_still_read() {
    let privacy = privacy();
    let ada = subject("c-1");
    let mut old = json!(Personal::new(ada.clone(), "old"));
    privacy.protect(&mut old).await.unwrap();
    assert_eq!(old["$personal"]["key"], 1);
    let rotated = privacy.rotate(&ada).await.unwrap().unwrap();
    assert_eq!(rotated.version(), 2);
    let mut new = json!(Personal::new(ada.clone(), "new"));
    privacy.protect(&mut new).await.unwrap();
    assert_eq!(new["$personal"]["key"], 2);
    // Relabelled with the other version: refused.
    let mut relabelled = old.clone();
    relabelled["$personal"]["key"] = json!(2);
    assert!(matches!(
        privacy.reveal(&mut relabelled).await,
        Err(PrivacyError::Tampered { .. })
    ));
    privacy.reveal(&mut old).await.unwrap();
    privacy.reveal(&mut new).await.unwrap();
    assert_eq!(
        read::<String>(&old).value().map(String::as_str),
        Some("old")
    );
    assert_eq!(
        read::<String>(&new).value().map(String::as_str),
        Some("new")
    );
}

#[tokio::test]
async fn malformed_markers_are_errors_not_panics() {
    let privacy = privacy();
    // c-1 has a key, so a sealed value of it is opened (not taken for forgotten).
    privacy
        .protect(&mut json!(Personal::new(subject("c-1"), 1)))
        .await
        .unwrap();
    for bad in [
        json!({"$personal": {"value": 1}}),
        json!({"$personal": {"subject": "", "value": 1}}),
        json!({"$personal": {"subject": "c-1", "cipher": "AA"}}),
        json!({"$personal": {"subject": "c-1", "key": 1, "nonce": "not base64!", "cipher": "AA"}}),
        json!({"$personal": {"subject": "c-1", "key": 1, "nonce": "AAAA", "cipher": "AA"}}),
    ] {
        let protected = privacy.protect(&mut bad.clone()).await;
        let revealed = privacy.reveal(&mut bad.clone()).await;
        assert!(
            matches!(protected, Err(PrivacyError::Malformed(_)))
                || matches!(revealed, Err(PrivacyError::Malformed(_))),
            "{bad}: {protected:?} {revealed:?}"
        );
    }
}

/// A key store that answers one key for every subject.
#[derive(Debug)]
struct FixedKeys(SubjectKey);

#[async_trait::async_trait]
impl KeyStore for FixedKeys {
    async fn current_key(&self, _: &SubjectId) -> Result<Option<SubjectKey>, KeyStoreError> {
        Ok(Some(self.0.clone()))
    }
    async fn key(&self, _: &SubjectId, _: u32) -> Result<Option<SubjectKey>, KeyStoreError> {
        Ok(Some(self.0.clone()))
    }
    async fn rotate(&self, _: &SubjectId) -> Result<Option<SubjectKey>, KeyStoreError> {
        Ok(Some(self.0.clone()))
    }
    async fn forget(&self, subject: &SubjectId, by: &str) -> Result<Forgetting, KeyStoreError> {
        Ok(Forgetting {
            subject: subject.clone(),
            by: by.to_owned(),
            at: chrono::Utc::now(),
            already: false,
        })
    }
    async fn is_forgotten(&self, _: &SubjectId) -> Result<bool, KeyStoreError> {
        Ok(false)
    }
}

#[test]
fn master_keys_wrap_subject_keys_for_their_subject_only() {
    let master = MasterKey::new(1, [7; KEY_LEN]);
    let other = MasterKey::new(2, [8; KEY_LEN]);
    let (ada, bob) = (subject("c-1"), subject("c-2"));
    let key = SubjectKey::generate(3);
    let wrapped = master.wrap(&ada, &key);
    assert_eq!(wrapped.master_version, 1);
    assert!(!wrapped.sealed.windows(KEY_LEN).any(|w| w == key.bytes()));
    assert_eq!(master.unwrap(&ada, 3, &wrapped), Some(key));
    assert_eq!(master.unwrap(&bob, 3, &wrapped), None);
    assert_eq!(master.unwrap(&ada, 4, &wrapped), None);
    assert_eq!(other.unwrap(&ada, 3, &wrapped), None);
    assert!(!format!("{master:?}").contains('7'));

    let text = BASE64.encode([9_u8; KEY_LEN]);
    assert!(MasterKey::from_base64(1, &text).is_ok());
    assert_eq!(
        MasterKey::from_base64(1, "c2hvcnQ=").unwrap_err(),
        InvalidMasterKey::Length
    );
    let keys = MasterKeys::new(master.clone(), vec![other.clone()]).unwrap();
    assert_eq!(keys.get(2).map(MasterKey::version), Some(2));
    assert!(keys.get(3).is_none());
    assert_eq!(
        MasterKeys::new(master, vec![MasterKey::new(1, [0; KEY_LEN])]).unwrap_err(),
        InvalidMasterKey::DuplicateVersion(1)
    );
}

#[tokio::test]
async fn presented_records_show_values_and_the_placeholder() {
    let privacy = privacy();
    let (ada, bob) = (subject("c-1"), subject("c-2"));
    let mut stored = json!([record(&ada, "Ada"), record(&bob, "Bob")]);
    privacy.protect(&mut stored).await.unwrap();
    privacy.keys().forget(&bob, "test").await.unwrap();
    let mut sealed = stored.clone();
    present(&mut sealed);
    assert_eq!(sealed[0]["name"], FORGOTTEN);
    privacy.reveal(&mut stored).await.unwrap();
    present(&mut stored);
    assert_eq!(stored[0]["name"], "Ada");
    assert_eq!(stored[0]["lines"][0]["address"], json!({"street": "1 Way"}));
    assert_eq!(stored[1]["name"], FORGOTTEN);
    assert_eq!(stored[1]["total"], 12.5);
}

#[tokio::test]
async fn a_key_kept_for_writing_after_a_forgetting_elsewhere_writes_nothing_readable() {
    let keys = Arc::new(MemoryKeyStore::new());
    let here = Privacy::new(keys.clone());
    let elsewhere = Privacy::new(keys);
    let ada = subject("c-1");
    here.protect(&mut record(&ada, "Ada")).await.unwrap();
    // Forgotten by another process: this one still encrypts with the key it keeps...
    elsewhere.forget(&ada, "operator").await.unwrap();
    let mut late = record(&ada, "Ada late");
    assert_eq!(here.protect(&mut late).await.unwrap(), 2);
    assert!(!late.to_string().contains("Ada late"));
    // ...which no longer exists: the value reads as forgotten everywhere.
    for privacy in [&here, &elsewhere] {
        let mut read_back = late.clone();
        privacy.reveal(&mut read_back).await.unwrap();
        assert!(read::<String>(&read_back["name"]).is_forgotten());
    }
}
