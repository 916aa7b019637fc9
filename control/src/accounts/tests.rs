use super::*;
use crate::store::embedded::EmbeddedStore;

fn actor() -> Actor {
    Actor::new("111111111111", "admin")
}

fn accounts(dir: &std::path::Path) -> Accounts {
    let store: Arc<dyn Store> = EmbeddedStore::open(&dir.join("s.redb")).unwrap();
    Accounts::new(store, AdminToken::from_value(&"a".repeat(40)).unwrap())
}

#[tokio::test]
async fn a_token_authenticates_until_revoked_and_only_its_hash_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let a = accounts(dir.path());
    a.create_account("admin", "111111111111", "one")
        .await
        .unwrap();
    let t = a
        .issue_token(&actor(), "111111111111", Some("ci".into()))
        .await
        .unwrap();
    assert_eq!(
        a.authenticate(&t.token).await.unwrap(),
        Some(Principal::Account {
            account: "111111111111".into(),
            token_id: t.info.id.clone()
        })
    );
    assert_eq!(
        a.authenticate(&"a".repeat(40)).await.unwrap(),
        Some(Principal::Admin)
    );
    assert_eq!(a.authenticate("trellis_nope").await.unwrap(), None);
    // Nothing stored holds the value.
    let (kvs, _) = a.store.range("/").await.unwrap();
    for kv in &kvs {
        assert!(!kv.key.contains(&t.token));
        assert!(!String::from_utf8_lossy(&kv.value).contains(&t.token));
    }
    assert_eq!(
        a.tokens("111111111111").await.unwrap(),
        vec![t.info.clone()]
    );
    a.revoke(&actor(), "111111111111", &t.info.id)
        .await
        .unwrap();
    assert_eq!(a.authenticate(&t.token).await.unwrap(), None);
    assert!(a.tokens("111111111111").await.unwrap().is_empty());
}

#[tokio::test]
async fn accounts_need_a_12_digit_id_a_name_and_a_free_id() {
    let dir = tempfile::tempdir().unwrap();
    let a = accounts(dir.path());
    let Err(AccountError::Invalid(e)) = a.create_account("admin", "12", "").await else {
        panic!("accepted a bad account")
    };
    let fields: Vec<_> = e.errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["id", "name"]);
    a.create_account("admin", "222222222222", "two")
        .await
        .unwrap();
    assert!(matches!(
        a.create_account("admin", "222222222222", "again").await,
        Err(AccountError::Exists(_))
    ));
    assert!(matches!(
        a.issue_token(&actor(), "333333333333", None).await,
        Err(AccountError::NotFound(_))
    ));
    assert_eq!(a.accounts().await.unwrap().len(), 1);
}
