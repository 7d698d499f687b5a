//! Requests that cannot be served, and what the store holds that cannot be read.

use serde_json::json;

use super::*;

#[tokio::test]
async fn request_errors_are_clear() {
    let fx = Fixture::new();
    let cases: Vec<ErrorCase<'_>> = vec![
        (
            vec!["pair_stats:rides"],
            vec![("driver_id", vec![json!(1)])],
            "missing join key values for feature view `pair_stats`: `customer_id` (give them as entity columns)",
        ),
        (
            vec!["driver_stats:trips"],
            vec![("driver", vec![json!(1)])],
            "missing join key values for feature view `driver_stats`: `driver_id` (give them as entity columns)",
        ),
        (
            vec!["driver_stats:trips"],
            vec![("driver_id", vec![json!(1), json!("abc")])],
            "entity column `driver_id`, row 1: value `\"abc\"` cannot be read as `Int64`: expected an integer, an integral number or an integer string",
        ),
        (
            vec!["customer_profile:balance"],
            vec![("customer_id", vec![json!(true)])],
            "entity column `customer_id`, row 0: value `true` cannot be read as `String`: expected a string or a number",
        ),
        (
            vec!["driver_stats:trips", "customer_profile:trips"],
            vec![],
            "feature names collide: `trips` (set full_feature_names to get `view__feature` names)",
        ),
        (
            vec!["driver_stats:trips", "customer_profile:driver_id"],
            vec![],
            "output name `driver_id` is both a join key column and a feature (set full_feature_names to get `view__feature` names)",
        ),
        (
            vec!["archive:old"],
            vec![],
            "feature view `archive` is not online (`online: false`), so it has no online values",
        ),
        (
            vec!["driver_stats:speed"],
            vec![],
            "feature view `driver_stats` has no feature `speed` (its features: `conv_rate`, `trips`, `note`)",
        ),
    ];
    for (refs, entities, message) in cases {
        let err = fx.read(&refs, false, entities, T0).await.unwrap_err();
        assert_eq!(err.to_string(), message, "{refs:?}");
    }
    let err = fx.plan(&["adjusted:conv_plus"], false).unwrap_err();
    assert!(
        matches!(err, Error::Features(ResolveError::OnDemandNotSupported { ref view }) if view == "adjusted"),
        "{err:?}"
    );
    assert_eq!(fx.read_manys(), 0, "bad requests never reach the store");

    let err = EntityColumns::new(vec![
        ("driver_id".into(), vec![json!(1), json!(2)]),
        ("customer_id".into(), vec![json!("c")]),
    ])
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "entity column `customer_id` has 1 values, but column `driver_id` has 2"
    );
    let err = serde_json::from_str::<EntityColumns>(r#"{"a": [1], "a": [2]}"#).unwrap_err();
    assert!(
        err.to_string().contains("entity column `a` is given twice"),
        "{err}"
    );
    let err = EntityColumns::from_rows(vec![
        vec![("a".into(), json!(1)), ("b".into(), json!(2))],
        vec![("a".into(), json!(1))],
    ])
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "entity row 1 has the columns `a`, but the first row has `a`, `b`"
    );
}

#[tokio::test]
async fn corrupt_stored_values_are_errors() {
    let fx = Fixture::new();
    fx.write(
        "driver_stats",
        vec![(driver_key(1), T0, vec![Some(vec![0xff]), None, None])],
    )
    .await;
    let err = fx
        .read(
            &["driver_stats:conv_rate"],
            false,
            vec![("driver_id", vec![json!(1)])],
            T0,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Online(OnlineError::Corrupt { .. })),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("`driver_stats:conv_rate`"),
        "{err}"
    );
}

#[test]
fn entity_columns_keep_document_order() {
    let parsed: EntityColumns =
        serde_json::from_str(r#"{"z": [1, 2], "a": ["x", "y"]}"#).expect("parse");
    assert_eq!(parsed.num_rows(), 2);
    let names: Vec<&str> = parsed.columns().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["z", "a"]);
    let rows = EntityColumns::from_rows(vec![
        vec![("b".into(), json!(1)), ("a".into(), json!("x"))],
        vec![("a".into(), json!("y")), ("b".into(), json!(2))],
    ])
    .expect("rows");
    assert_eq!(rows.column("a"), Some(&[json!("x"), json!("y")][..]));
    assert_eq!(rows.columns()[0].0, "b");
}
