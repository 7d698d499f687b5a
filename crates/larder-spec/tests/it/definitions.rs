//! Definition files → validated model, and every error a user can make, as data.

use std::path::PathBuf;

use larder_spec::{Definitions, LoadOptions, parse_definitions};

pub const DEMO: &str = r#"
entities:
  - name: driver
    join_keys: [driver_id]
    value_type: Int64
    description: A driver
  - name: customer
    join_keys: [customer_id]
    value_type: Int64
data_sources:
  - name: driver_stats_source
    type: file
    path: data/driver_stats.parquet
    timestamp_field: event_timestamp
    created_timestamp_column: created
  - name: driver_stats_push
    type: push
    batch_source: driver_stats_source
  - name: trip_request
    type: request
    schema:
      - {name: bonus, dtype: Float64}
feature_views:
  - name: driver_hourly_stats
    entities: [driver]
    ttl: 1d
    source: driver_stats_push
    schema:
      - {name: driver_id, dtype: Int64}
      - {name: conv_rate, dtype: Float32}
      - {name: avg_daily_trips, dtype: Int64}
      - {name: recent_ratings, dtype: Array(Float32)}
    tags: {team: drivers}
on_demand_feature_views:
  - name: conv_adjusted
    sources: [driver_hourly_stats, trip_request]
    schema:
      - {name: conv_plus_bonus, dtype: Float64, expression: "conv_rate + bonus"}
feature_services:
  - name: driver_activity_v1
    features:
      - driver_hourly_stats: [conv_rate, avg_daily_trips]
      - conv_adjusted: "*"
  - name: driver_activity_aliased
    features:
      - {feature_view: driver_hourly_stats, alias: origin_stats, features: [conv_rate], join_key_map: {driver_id: origin_driver_id}}
      - driver_hourly_stats: "*"
"#;

pub fn options() -> LoadOptions {
    LoadOptions {
        repo_dir: PathBuf::from("/nonexistent"),
        config_file: None,
        project: "demo".into(),
        project_description: None,
        validate_sources: false,
    }
}

pub fn parse(files: &[(&str, &str)]) -> Result<Definitions, Vec<String>> {
    let files: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), t.to_string()))
        .collect();
    parse_definitions(&files, &options()).map_err(|e| e.lines())
}

#[test]
fn demo_definitions_parse() {
    let defs = parse(&[("features.yaml", DEMO)]).expect("valid");
    assert_eq!(defs.project.name, "demo");
    assert_eq!(defs.entities.len(), 2);
    let view = &defs.feature_views["driver_hourly_stats"];
    assert_eq!(view.ttl.to_string(), "1day");
    assert_eq!(view.source.as_str(), "driver_stats_push");
    assert_eq!(view.batch_source.as_str(), "driver_stats_source");
    assert!(view.online && !view.offline);
    let features: Vec<&str> = view.features.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(features, ["conv_rate", "avg_daily_trips", "recent_ratings"]);
    assert_eq!(view.entity_columns.len(), 1);
    assert_eq!(view.entity_columns[0].name.as_str(), "driver_id");
    let service = &defs.feature_services["driver_activity_v1"];
    let refs: Vec<String> = service
        .feature_refs()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        refs,
        [
            "driver_hourly_stats:conv_rate",
            "driver_hourly_stats:avg_daily_trips",
            "conv_adjusted:conv_plus_bonus"
        ]
    );
    let aliased = &defs.feature_services["driver_activity_aliased"];
    let refs: Vec<String> = aliased
        .feature_refs()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(refs[0], "origin_stats:conv_rate");
    assert_eq!(
        aliased.projections[0].join_key_map["driver_id"],
        "origin_driver_id"
    );
    assert_eq!(refs.len(), 4);
}

#[test]
fn objects_may_spread_over_files_and_empty_files_are_fine() {
    let entities = "entities:\n  - {name: driver, join_keys: [driver_id], value_type: Int64}\n";
    let rest = DEMO.split("data_sources:").nth(1).unwrap();
    let rest = format!("data_sources:{rest}");
    let customer = "entities:\n  - {name: customer, join_keys: [customer_id], value_type: Int64}\n";
    let defs = parse(&[
        ("a.yaml", entities),
        ("b/c.yaml", &rest),
        ("d.yaml", customer),
        ("empty.yaml", "# nothing yet\n"),
    ])
    .expect("valid");
    assert_eq!(defs.entities.len(), 2);
    assert_eq!(defs.feature_services.len(), 2);
}

/// Each case: a file's text and the exact errors it must produce (all of them, in order).
#[test]
fn definition_errors_table() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown top-level key",
            "entities: []\nfeature_tables: []\n",
            &[
                "f.yaml:2: unknown field `feature_tables`, expected one of project, entities, data_sources, feature_views, on_demand_feature_views, feature_services",
            ],
        ),
        (
            "bad yaml",
            "entities:\n  - name: [unclosed\n",
            &["f.yaml:2: expected string scalar"],
        ),
        (
            "unknown key in an entity",
            "entities:\n  - name: driver\n    value_type: Int64\n    joinkeys: [x]\n",
            &["f.yaml:4: unknown field `joinkeys`"],
        ),
        (
            "entity without type, two join keys, bad type",
            "entities:\n  - name: a\n  - name: b\n    join_keys: [x, y]\n    value_type: Int64\n  - name: c\n    value_type: Float32\n  - name: d\n    value_type: Integer\n",
            &[
                "f.yaml:2: entity `a`: `value_type` is required (e.g. `value_type: Int64`)",
                "f.yaml:4: entity `b`: an entity has exactly one join key, found 2; define one entity per key",
                "f.yaml:7: entity `c`: `value_type` Float32 cannot be a join key type (use Int32, Int64, String, Bytes or UnixTimestamp)",
                "f.yaml:9: entity `d`: `value_type`: unknown type `Integer` (expected one of Int32, Int64, Float32, Float64, String, Bytes, Bool, UnixTimestamp or Array(T) of those)",
            ],
        ),
        (
            "duplicate names",
            "entities:\n  - {name: e, value_type: Int64}\n  - {name: e, value_type: String}\n",
            &["f.yaml:3: entity `e`: the name is already used by the entity defined at f.yaml:2"],
        ),
        (
            "invalid names",
            "entities:\n  - {name: 'my entity', value_type: Int64}\n",
            &[
                "f.yaml:2: entity `my entity`: invalid entity name `my entity` has the character ` `; use letters, digits, `_`, `-` or `.` (not first)",
            ],
        ),
        (
            "data source problems",
            "data_sources:\n  - name: a\n  - name: b\n    type: kafka\n  - name: c\n    type: file\n    path: x.parquet\n  - name: d\n    type: push\n    batch_source: nope\n  - name: e\n    type: file\n    path: x.txt\n    file_format: orc\n    timestamp_field: ts\n  - name: f\n    type: push\n    batch_source: a2\n    path: y.parquet\n  - name: g\n    type: postgres\n    timestamp_field: ts\n",
            &[
                "f.yaml:2: data source `a`: `type` is required (one of file, postgres, push, request)",
                "f.yaml:4: data source `b`: unknown type `kafka` (expected one of file, postgres, push, request)",
                "f.yaml:5: data source `c`: `timestamp_field` is required for a file source",
                "f.yaml:8: data source `d`: `batch_source` `nope` is not a defined data source (known: `d`)",
                "f.yaml:14: data source `e`: unknown `file_format` `orc` (expected parquet or csv)",
                "f.yaml:19: data source `f`: `path` does not apply to a push source (allowed: batch_source)",
                "f.yaml:20: data source `g`: give exactly one of `table` and `query` for a postgres source",
            ],
        ),
        (
            "feature view problems",
            "entities:\n  - {name: driver, join_keys: [driver_id], value_type: Int64}\ndata_sources:\n  - {name: s, type: file, path: s.parquet, timestamp_field: ts}\n  - {name: r, type: request, schema: [{name: x, dtype: Int64}]}\nfeature_views:\n  - name: v1\n    source: missing\n    entities: [driver, rider]\n    schema:\n      - {name: a, dtype: Float32}\n  - name: v2\n    source: s\n    entities: [driver]\n    ttl: soon\n    schema:\n      - {name: driver_id, dtype: String}\n      - {name: a, dtype: Float33}\n      - {name: a, dtype: Float32}\n  - name: v3\n    source: r\n    schema:\n      - {name: a, dtype: Float32, expression: 'x + 1'}\n  - name: v4\n    source: s\n    entities: [driver]\n    schema:\n      - {name: driver_id, dtype: Int64}\n",
            &[
                "f.yaml:8: feature view `v1`: `source` `missing` is not a defined data source (known: `r`, `s`)",
                "f.yaml:9: feature view `v1`: entity `rider` is not defined (known: `driver`)",
                "f.yaml:15: feature view `v2`: `ttl` `soon` is not a duration (expected number at 0); write e.g. `1d`, `12h`, `90m` or `0`",
                "f.yaml:17: feature view `v2`: field `driver_id` is the join key of an entity of type Int64 but is declared String",
                "f.yaml:18: feature view `v2`: field `a`: unknown type `Float33` (expected one of Int32, Int64, Float32, Float64, String, Bytes, Bool, UnixTimestamp or Array(T) of those)",
                "f.yaml:21: feature view `v3`: `source` `r` is a request source; request data feeds on-demand feature views only",
                "f.yaml:23: feature view `v3`: field `a` has an `expression`; only on-demand feature views compute fields",
                "f.yaml:28: feature view `v4`: `schema` lists no features (only join keys)",
            ],
        ),
        (
            "on-demand view problems",
            "data_sources:\n  - {name: s, type: file, path: s.parquet, timestamp_field: ts}\n  - {name: r, type: request, schema: [{name: bonus, dtype: Float64}]}\nfeature_views:\n  - name: v\n    source: s\n    schema: [{name: a, dtype: Float32}]\non_demand_feature_views:\n  - name: o\n    sources: [v, r, s]\n    schema:\n      - {name: x, dtype: Float64, expression: 'a + bonus'}\n  - name: p\n    sources: [v, r]\n    schema:\n      - {name: x, dtype: Float64, expression: 'a + b'}\n      - {name: y, dtype: Float64}\n      - {name: z, dtype: Float64, expression: 'abs(a'}\n  - name: v\n    sources: [v]\n    schema: [{name: q, dtype: Float64, expression: a}]\n",
            &[
                "f.yaml:10: on demand feature view `o`: source `s` is neither a feature view nor a request source (known: `v`, `r`)",
                "f.yaml:16: on demand feature view `p`: field `x`: expression uses `b`, which no source provides (known: `a`, `bonus`, `v__a`)",
                "f.yaml:17: on demand feature view `p`: field `y` needs an `expression` computing it from the sources",
                "f.yaml:18: on demand feature view `p`: field `z`: expression `abs(a`: a `(` is not closed",
                "f.yaml:19: on demand feature view `v`: the name is already used by the feature view defined at f.yaml:5",
            ],
        ),
        (
            "feature service problems",
            "entities:\n  - {name: driver, join_keys: [driver_id], value_type: Int64}\ndata_sources:\n  - {name: s, type: file, path: s.parquet, timestamp_field: ts}\nfeature_views:\n  - name: v\n    source: s\n    entities: [driver]\n    schema: [{name: a, dtype: Float32}, {name: b, dtype: Int64}]\nfeature_services:\n  - name: fs1\n    features:\n      - v: [a, c]\n      - w: '*'\n  - name: fs2\n    features:\n      - v: '*'\n      - v: [a]\n  - name: fs3\n    features:\n      - {feature_view: v, alias: v2, join_key_map: {rider_id: x}}\n  - name: fs4\n    features:\n      - v: all\n  - name: fs5\n    features: []\n",
            &[
                "f.yaml:13: feature service `fs1`: feature view `v` has no feature `c` (known: `a`, `b`)",
                "f.yaml:14: feature service `fs1`: feature view `w` is not defined (known: `v`)",
                "f.yaml:18: feature service `fs2`: `v` is projected twice; give one projection an `alias`",
                "f.yaml:21: feature service `fs3`: `join_key_map` maps `rider_id`, which is not a join key of `v` (known: `driver_id`)",
                "f.yaml:24: feature service `fs4`: the features of `v` are `all`; write \"*\" for all or a list of names",
                "f.yaml:25: feature service `fs5`: `features` is empty",
            ],
        ),
        (
            "a broken object is reported once, not again by its users",
            "entities:\n  - {name: driver, value_type: Float32}\ndata_sources:\n  - {name: s, type: file, path: s.parquet}\nfeature_views:\n  - name: v\n    source: s\n    entities: [driver]\n    schema: [{name: a, dtype: Float32}]\nfeature_services:\n  - name: fs\n    features: [{v: '*'}]\n",
            &[
                "f.yaml:2: entity `driver`: `value_type` Float32 cannot be a join key type",
                "f.yaml:4: data source `s`: `timestamp_field` is required for a file source",
            ],
        ),
        (
            "project block must match the config",
            "project:\n  name: other\n  description: d\n",
            &[
                "f.yaml:2: project `demo`: the project block names `other` but feature_store.yaml says `demo`",
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (title, text, expected) in cases {
        let errors = parse(&[("f.yaml", text)]).expect_err(title);
        let matches = errors.len() == expected.len()
            && errors
                .iter()
                .zip(expected.iter())
                .all(|(g, w)| g.starts_with(w));
        if !matches {
            failures.push(format!("{title}:\n got: {errors:#?}\nwant: {expected:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn errors_from_every_file_are_reported_together() {
    let errors = parse(&[
        ("a.yaml", "entities:\n  - {name: x}\n"),
        ("b.yaml", "bogus: 1\n"),
        ("c.yaml", "feature_views:\n  - name: v\n    source: nope\n    schema: [{name: f, dtype: Int64}]\n"),
    ])
    .unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].starts_with("a.yaml:2: entity `x`"));
    assert!(errors[1].starts_with("b.yaml:1: unknown field `bogus`"));
    assert!(errors[2].starts_with("c.yaml:3: feature view `v`: `source` `nope`"));
}
