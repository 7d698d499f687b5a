//! Reads: statuses and ttl, duplicates, names and order, services, key coercion, keys.

use serde_json::{Value as Json, json};

use super::*;

use FieldStatus::{NotFound, NullValue, OutsideMaxAge, Present};

#[tokio::test]
async fn statuses_ttl_boundary_nulls_and_missing() {
    let fx = Fixture::new();
    let now = T0 + 10 * HOUR;
    let fresh = now - HOUR; // exactly the ttl: still present
    let stale = now - HOUR - 1; // one µs beyond it
    // `null_val` (field 19) as Feast's Go SDK may write it.
    let null_val = vec![0x98, 0x01, 0x00];
    fx.write(
        "driver_stats",
        vec![
            (
                driver_key(1001),
                fresh,
                vec![
                    cell(Value::float(0.5)),
                    cell(Value::int64(7)),
                    cell(Value::string("a")),
                ],
            ),
            (
                driver_key(1002),
                stale,
                vec![cell(Value::float(0.25)), None, Some(Vec::new())],
            ),
            (
                driver_key(1004),
                fresh,
                vec![Some(null_val), cell(Value::int64(0)), None],
            ),
        ],
    )
    .await;
    let response = fx
        .read(
            &[
                "driver_stats:conv_rate",
                "driver_stats:trips",
                "driver_stats:note",
            ],
            false,
            vec![(
                "driver_id",
                vec![json!(1001), json!(1002), json!(1003), json!(1004)],
            )],
            now,
        )
        .await
        .expect("read");
    let zero = (Json::Null, NotFound, 0);
    check(
        &response,
        &[
            (
                "driver_id",
                vec![
                    (json!(1001), Present, 0),
                    (json!(1002), Present, 0),
                    (json!(1003), Present, 0),
                    (json!(1004), Present, 0),
                ],
            ),
            (
                "conv_rate",
                vec![
                    (json!(0.5), Present, fresh),
                    (json!(0.25), OutsideMaxAge, stale),
                    zero.clone(),
                    (Json::Null, NullValue, fresh),
                ],
            ),
            (
                "trips",
                vec![
                    (json!(7), Present, fresh),
                    zero.clone(),
                    zero.clone(),
                    (json!(0), Present, fresh),
                ],
            ),
            (
                "note",
                vec![
                    (json!("a"), Present, fresh),
                    (Json::Null, NullValue, stale),
                    zero.clone(),
                    zero,
                ],
            ),
        ],
    );
}

#[tokio::test]
async fn ttl_zero_is_unbounded() {
    let fx = Fixture::new();
    fx.write(
        "customer_profile",
        vec![(
            customer_key("c1"),
            T0,
            vec![cell(Value::double(1.5)), None, None],
        )],
    )
    .await;
    let response = fx
        .read(
            &["customer_profile:balance"],
            false,
            vec![("customer_id", vec![json!("c1")])],
            T0 + 10_000 * HOUR,
        )
        .await
        .expect("read");
    check(
        &response,
        &[
            ("customer_id", vec![(json!("c1"), Present, 0)]),
            ("balance", vec![(json!(1.5), Present, T0)]),
        ],
    );
}

#[tokio::test]
async fn duplicate_rows_are_read_once_and_fanned_out() {
    let fx = Fixture::new();
    fx.write(
        "driver_stats",
        vec![
            (
                driver_key(1),
                T0,
                vec![cell(Value::float(1.0)), None, cell(Value::string("one"))],
            ),
            (
                driver_key(2),
                T0,
                vec![cell(Value::float(2.0)), None, cell(Value::string("two"))],
            ),
        ],
    )
    .await;
    let ids = [1, 2, 1, 3, 1];
    let response = fx
        .read(
            &["driver_stats:note"],
            false,
            vec![("driver_id", ids.iter().map(|&i| json!(i)).collect())],
            T0,
        )
        .await
        .expect("read");
    let notes: Vec<Json> = response
        .column_at(1)
        .expect("column")
        .values
        .iter()
        .map(value_to_json)
        .collect();
    assert_eq!(
        notes,
        [
            json!("one"),
            json!("two"),
            json!("one"),
            Json::Null,
            json!("one")
        ]
    );
    assert_eq!(
        response.column_at(1).expect("column").statuses,
        [Present, Present, Present, NotFound, Present]
    );
    assert_eq!(*fx.store.keys_per_view.lock().expect("lock"), [3]);
}

#[tokio::test]
async fn one_store_round_trip_per_request() {
    let fx = Fixture::new();
    let refs = [
        "driver_stats:conv_rate",
        "customer_profile:balance",
        "pair_stats:rides",
        "driver_stats:trips",
    ];
    let entities = || {
        vec![
            ("driver_id", (0..50).map(|i| json!(i)).collect()),
            (
                "customer_id",
                (0..50).map(|i| json!(format!("c{i}"))).collect(),
            ),
        ]
    };
    fx.read(&refs, false, entities(), T0).await.expect("read");
    assert_eq!(fx.read_manys(), 1);
    assert_eq!(*fx.store.keys_per_view.lock().expect("lock"), [50, 50, 50]);
    fx.read(&refs, false, entities(), T0).await.expect("read");
    assert_eq!(fx.read_manys(), 2);
    // No rows: no round trip, empty columns.
    let response = fx
        .read(
            &refs,
            false,
            vec![("driver_id", vec![]), ("customer_id", vec![])],
            T0,
        )
        .await
        .expect("read");
    assert_eq!(fx.read_manys(), 2);
    assert_eq!(
        response.feature_names().collect::<Vec<_>>(),
        [
            "driver_id",
            "customer_id",
            "conv_rate",
            "trips",
            "balance",
            "rides"
        ]
    );
    assert!(response.columns().all(|c| c.is_empty()));
    let mut body = String::new();
    response.write_http_json(&mut body);
    assert_eq!(
        body,
        r#"{"metadata":{"feature_names":["driver_id","customer_id","conv_rate","trips","balance","rides"]},"results":[{},{},{},{},{},{}]}"#
    );
}

/// A request split over two threads (the SQLite store says splitting pays when no other
/// read runs) answers exactly as one read: values, statuses, timestamps, in row order,
/// with duplicates, unknown keys, a ttl and an odd row count across the halves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_read_answers_like_one_read() {
    let fx = Fixture::new();
    let driver_rows: Vec<StoredRow> = (0..80)
        .map(|i| {
            let trips = if i % 7 == 0 {
                None
            } else {
                cell(Value::int64(i))
            };
            let cells = vec![cell(Value::float(i as f32 / 10.0)), trips, Some(Vec::new())];
            // Every third row is older than the 1h ttl at T0.
            (
                driver_key(i),
                T0 - if i % 3 == 0 { 2 * HOUR } else { HOUR / 2 },
                cells,
            )
        })
        .collect();
    fx.write("driver_stats", driver_rows).await;
    let customer_rows: Vec<StoredRow> = (0..40)
        .map(|i| {
            let cells = vec![cell(Value::double(i as f64)), None, None];
            (customer_key(&format!("c{i}")), T0 - HOUR, cells)
        })
        .collect();
    fx.write("customer_profile", customer_rows).await;

    let refs = [
        "driver_stats:conv_rate",
        "driver_stats:trips",
        "driver_stats:note",
        "customer_profile:balance",
    ];
    // 101 rows: keys 0..=95 (16 of them unknown to the store), then repeats.
    let ids: Vec<i64> = (0..96).chain([5, 5, 90, 0, 17]).collect();
    let entities = || {
        vec![
            ("driver_id", ids.iter().map(|&i| json!(i)).collect()),
            (
                "customer_id",
                ids.iter().map(|&i| json!(format!("c{}", i / 2))).collect(),
            ),
        ]
    };
    let whole = fx
        .read(&refs, false, entities(), T0)
        .await
        .expect("one read");
    assert_eq!(fx.read_manys(), 1);
    fx.store.split.store(true, Ordering::SeqCst);
    let split = fx
        .read(&refs, false, entities(), T0)
        .await
        .expect("split read");
    assert_eq!(fx.read_manys(), 3, "one read_many per half");
    assert_eq!(split, whole);
    assert_eq!(split.column_at(2).expect("column").len(), ids.len());
    // Spot checks against the stored rows.
    let trips = &split.column_at(3).expect("column");
    assert_eq!(trips.statuses[7], NotFound, "7 % 7 == 0: not stored");
    assert_eq!(
        (&trips.values[8], trips.statuses[8]),
        (&Value::int64(8), Present)
    );
    assert_eq!(trips.statuses[9], OutsideMaxAge);
    assert_eq!(trips.statuses[85], NotFound, "unknown key");
    assert_eq!(trips.values[96], Value::int64(5));
    assert_eq!(split.column_at(4).expect("column").statuses[10], NullValue);
}

#[tokio::test]
async fn names_follow_views_in_first_reference_then_request_order() {
    let fx = Fixture::new();
    let entities = || {
        vec![
            ("unrelated", vec![json!("x")]),
            ("customer_id", vec![json!("c1")]),
            ("driver_id", vec![json!(1)]),
        ]
    };
    let refs = [
        "driver_stats:note",
        "customer_profile:balance",
        "driver_stats:conv_rate",
    ];
    let response = fx.read(&refs, false, entities(), T0).await.expect("read");
    // Join keys in request order (unknown columns dropped), then views by first reference.
    assert_eq!(
        response.feature_names().collect::<Vec<_>>(),
        ["customer_id", "driver_id", "note", "conv_rate", "balance"]
    );
    let response = fx.read(&refs, true, entities(), T0).await.expect("read");
    assert_eq!(
        response.feature_names().collect::<Vec<_>>(),
        [
            "customer_id",
            "driver_id",
            "driver_stats__note",
            "driver_stats__conv_rate",
            "customer_profile__balance"
        ]
    );
}

#[tokio::test]
async fn service_with_alias_and_join_key_map() {
    let fx = Fixture::new();
    fx.write(
        "driver_stats",
        vec![(
            driver_key(7),
            T0,
            vec![cell(Value::float(0.5)), cell(Value::int64(3)), None],
        )],
    )
    .await;
    fx.write(
        "customer_profile",
        vec![(
            customer_key("c"),
            T0,
            vec![cell(Value::double(9.0)), None, None],
        )],
    )
    .await;
    let selection = FeatureSelection::Service("svc".into());
    let entities = columns(vec![
        ("customer_id", vec![json!("c")]),
        ("origin_driver_id", vec![json!(7)]),
    ]);
    for (full, names) in [
        (
            true,
            [
                "customer_id",
                "origin_driver_id",
                "origin__trips",
                "origin__conv_rate",
                "customer_profile__balance",
            ],
        ),
        (
            false,
            [
                "customer_id",
                "origin_driver_id",
                "trips",
                "conv_rate",
                "balance",
            ],
        ),
    ] {
        let plan = OnlinePlan::new(&fx.defs, &selection, full).expect("plan");
        assert_eq!(
            plan.join_key_columns().collect::<Vec<_>>(),
            ["origin_driver_id", "customer_id"]
        );
        let response = fx
            .reader
            .read(&plan, &entities, at(T0))
            .await
            .expect("read");
        assert_eq!(response.feature_names().collect::<Vec<_>>(), names);
        let values: Vec<Json> = response
            .columns()
            .map(|v| value_to_json(&v.values[0]))
            .collect();
        assert_eq!(
            values,
            [json!("c"), json!(7), json!(3), json!(0.5), json!(9.0)]
        );
    }
    // The alias's view needs `origin_driver_id`, not `driver_id`.
    let plan = OnlinePlan::new(&fx.defs, &selection, true).expect("plan");
    let err = fx
        .reader
        .read(
            &plan,
            &columns(vec![
                ("customer_id", vec![json!("c")]),
                ("driver_id", vec![json!(7)]),
            ]),
            at(T0),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "missing join key values for feature view `driver_stats`: `origin_driver_id` (give them as entity columns)"
    );
}

#[tokio::test]
async fn join_keys_are_coerced_to_the_entity_type() {
    let fx = Fixture::new();
    fx.write(
        "driver_stats",
        vec![(
            driver_key(1001),
            T0,
            vec![cell(Value::float(0.5)), None, None],
        )],
    )
    .await;
    fx.write(
        "customer_profile",
        vec![(
            customer_key("5"),
            T0,
            vec![cell(Value::double(2.5)), None, None],
        )],
    )
    .await;
    let response = fx
        .read(
            &["driver_stats:conv_rate", "customer_profile:balance"],
            false,
            vec![
                ("driver_id", vec![json!("1001"), json!(1001), json!(1001.0)]),
                ("customer_id", vec![json!(5), json!("5"), json!(5)]),
            ],
            T0,
        )
        .await
        .expect("read");
    check(
        &response,
        &[
            ("driver_id", vec![(json!(1001), Present, 0); 3]),
            ("customer_id", vec![(json!("5"), Present, 0); 3]),
            ("conv_rate", vec![(json!(0.5), Present, T0); 3]),
            ("balance", vec![(json!(2.5), Present, T0); 3]),
        ],
    );
}

#[tokio::test]
async fn multi_key_and_entityless_views() {
    let fx = Fixture::new();
    // Keys are serialized with join keys sorted by name, whatever the request order.
    let pair = serialize_entity_key(
        &EntityKey::new([
            ("driver_id", Value::int64(1)),
            ("customer_id", Value::string("c")),
        ]),
        KeyVersion::V3,
    )
    .expect("key");
    fx.write("pair_stats", vec![(pair, T0, vec![cell(Value::int64(42))])])
        .await;
    let dummy = serialize_entity_key(
        &EntityKey::new([("__dummy_id", Value::string(""))]),
        KeyVersion::V3,
    )
    .expect("key");
    fx.write(
        "global_stats",
        vec![(dummy, T0, vec![cell(Value::int64(9))])],
    )
    .await;
    let response = fx
        .read(
            &["pair_stats:rides", "global_stats:total"],
            false,
            vec![
                ("driver_id", vec![json!(1), json!(2)]),
                ("customer_id", vec![json!("c"), json!("c")]),
            ],
            T0,
        )
        .await
        .expect("read");
    check(
        &response,
        &[
            (
                "driver_id",
                vec![(json!(1), Present, 0), (json!(2), Present, 0)],
            ),
            (
                "customer_id",
                vec![(json!("c"), Present, 0), (json!("c"), Present, 0)],
            ),
            (
                "rides",
                vec![(json!(42), Present, T0), (Json::Null, NotFound, 0)],
            ),
            (
                "total",
                vec![(json!(9), Present, T0), (json!(9), Present, T0)],
            ),
        ],
    );
}
