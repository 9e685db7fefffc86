//! The secret-store conformance suite: what every [`SecretStore`] backend must do, written
//! once. A backend's test file provides a [`SecretHarness`] and expands
//! [`secret_conformance_suite!`](crate::secret_conformance_suite) with it.
//!
//! The cases follow Key Vault's behaviour, which the embedded `dir:` store imitates:
//! create never overwrites, names are case-insensitive, list carries tags and content type
//! but no values.

use std::collections::BTreeMap;
use std::sync::Arc;

use shared::secret::{CreateOutcome, SecretError, SecretStore, SecretValue, Tags};
use shared::Name;
use zeroize::Zeroizing;

/// What a backend provides to the suite.
pub trait SecretHarness: Send + Sync + 'static {
    /// A handle on an empty store, private to one test.
    fn store(&self) -> Arc<dyn SecretStore>;
    /// A second, independent handle (own connection / client) on the same store as the
    /// last one [`SecretHarness::store`] returned; used by the race test.
    fn open_another(&self) -> Arc<dyn SecretStore>;
}

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn value(s: &str) -> SecretValue {
    SecretValue::new(Zeroizing::new(s.to_string()))
}

fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub async fn create_then_get_returns_value_type_and_tags(h: &dyn SecretHarness) {
    let s = h.store();
    let t = tags(&[("address", "0xabc"), ("member", "0")]);
    let out = s
        .create_if_absent(&name("m0-v0"), &value("v-one"), Some("text/plain"), &t)
        .await
        .unwrap();
    assert_eq!(out, CreateOutcome::Created);
    let got = s.get(&name("m0-v0")).await.unwrap();
    assert_eq!(got.value.expose(), "v-one");
    assert_eq!(got.properties.name, name("m0-v0"));
    assert_eq!(got.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(got.properties.tags, t);
}

pub async fn create_never_overwrites_and_says_so(h: &dyn SecretHarness) {
    let s = h.store();
    let t = tags(&[("index", "1")]);
    s.create_if_absent(&name("m0-v1"), &value("first"), Some("a/b"), &t)
        .await
        .unwrap();
    let again = s
        .create_if_absent(
            &name("m0-v1"),
            &value("second"),
            Some("c/d"),
            &BTreeMap::new(),
        )
        .await
        .unwrap();
    match again {
        CreateOutcome::AlreadyExists(p) => {
            assert_eq!(p.name, name("m0-v1"));
            assert_eq!(p.content_type.as_deref(), Some("a/b"));
            assert_eq!(p.tags, t);
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(s.get(&name("m0-v1")).await.unwrap().value.expose(), "first");
}

pub async fn names_are_case_insensitive(h: &dyn SecretHarness) {
    let s = h.store();
    s.create_if_absent(&name("Mixed-Case"), &value("x"), None, &Tags::new())
        .await
        .unwrap();
    let again = s
        .create_if_absent(&name("mixed-case"), &value("y"), None, &Tags::new())
        .await
        .unwrap();
    assert!(
        matches!(again, CreateOutcome::AlreadyExists(_)),
        "{again:?}"
    );
    assert_eq!(
        s.get(&name("MIXED-CASE")).await.unwrap().value.expose(),
        "x"
    );
}

pub async fn get_of_a_missing_secret_is_not_found(h: &dyn SecretHarness) {
    let s = h.store();
    match s.get(&name("nope")).await {
        Err(SecretError::NotFound { name: n }) => assert_eq!(n, name("nope")),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

pub async fn list_carries_properties_sorted_without_values(h: &dyn SecretHarness) {
    let s = h.store();
    assert!(s.list().await.unwrap().is_empty());
    for (n, i) in [("m0-v2", "2"), ("m0-v0", "0"), ("m0-v1", "1")] {
        s.create_if_absent(
            &name(n),
            &value(&format!("secret-{i}")),
            Some("t/x"),
            &tags(&[("index", i)]),
        )
        .await
        .unwrap();
    }
    let listed = s.list().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["m0-v0", "m0-v1", "m0-v2"]);
    for (i, p) in listed.iter().enumerate() {
        assert_eq!(p.tags["index"], i.to_string());
        assert_eq!(p.content_type.as_deref(), Some("t/x"));
    }
}

pub async fn too_many_tags_are_refused_and_nothing_is_written(h: &dyn SecretHarness) {
    let s = h.store();
    let many: Tags = (0..16)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    let err = s
        .create_if_absent(&name("tagged"), &value("x"), None, &many)
        .await
        .unwrap_err();
    assert!(matches!(err, SecretError::Invalid(_)), "{err:?}");
    assert!(matches!(
        s.get(&name("tagged")).await,
        Err(SecretError::NotFound { .. })
    ));
}

/// N independent handles create one name with different values at once: exactly one
/// `Created`, and every reader then sees that creator's value.
pub async fn concurrent_creators_have_exactly_one_winner(h: &dyn SecretHarness) {
    const N: usize = 8;
    const ROUNDS: usize = 25;
    let first = h.store();
    let handles: Vec<Arc<dyn SecretStore>> = std::iter::once(first.clone())
        .chain((1..N).map(|_| h.open_another()))
        .collect();
    for round in 0..ROUNDS {
        let n = name(&format!("race-{round}"));
        let barrier = Arc::new(tokio::sync::Barrier::new(N));
        let tasks: Vec<_> = handles
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (s, n, barrier) = (s.clone(), n.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let v = value(&format!("writer-{i}"));
                    (
                        i,
                        s.create_if_absent(&n, &v, None, &Tags::new())
                            .await
                            .unwrap(),
                    )
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            let (i, out) = t.await.unwrap();
            if out == CreateOutcome::Created {
                winners.push(i);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let stored = first.get(&n).await.unwrap();
        assert_eq!(stored.value.expose(), format!("writer-{}", winners[0]));
    }
}

/// Expands to one `#[tokio::test]` per conformance case, each on a fresh store from
/// `$harness` (an expression building a [`SecretHarness`]).
#[macro_export]
macro_rules! secret_conformance_suite {
    ($harness:expr) => {
        $crate::secret_conformance_suite!(@cases $harness;
            create_then_get_returns_value_type_and_tags,
            create_never_overwrites_and_says_so,
            names_are_case_insensitive,
            get_of_a_missing_secret_is_not_found,
            list_carries_properties_sorted_without_values,
            too_many_tags_are_refused_and_nothing_is_written,
            concurrent_creators_have_exactly_one_winner,
        );
    };
    (@cases $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let harness = $harness;
                $crate::secret_conformance::$case(&harness).await;
            }
        )*
    };
}
