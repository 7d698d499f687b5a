//! `larder <kind> list|describe`: what the registry holds for the project.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Result, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use larder::registry::{ProjectState, Stored};
use larder::spec::{SourceKind, Tags};
use serde::Serialize;
use serde_json::{Value, json};

use crate::cli::ObjectCommand;
use crate::print;

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Entity,
    DataSource,
    FeatureView,
    OnDemandFeatureView,
    FeatureService,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Entity => "entity",
            Kind::DataSource => "data source",
            Kind::FeatureView => "feature view",
            Kind::OnDemandFeatureView => "on demand feature view",
            Kind::FeatureService => "feature service",
        }
    }
}

/// One listed object: its table cells, tags, and full JSON form.
struct Row {
    name: String,
    cells: Vec<String>,
    tags: Tags,
    json: Value,
}

fn stored_json<T: Serialize>(stored: &Stored<T>) -> Value {
    serde_json::to_value(stored).unwrap_or(Value::Null)
}

fn rows(kind: Kind, state: &ProjectState) -> (Vec<&'static str>, Vec<Row>) {
    match kind {
        Kind::Entity => (
            vec!["NAME", "JOIN KEY", "TYPE", "DESCRIPTION"],
            state
                .entities
                .iter()
                .map(|(name, e)| Row {
                    name: name.to_string(),
                    cells: vec![
                        name.to_string(),
                        e.spec.join_key.to_string(),
                        e.spec.value_type.to_string(),
                        e.spec.description.clone(),
                    ],
                    tags: e.spec.tags.clone(),
                    json: stored_json(e),
                })
                .collect(),
        ),
        Kind::DataSource => (
            vec!["NAME", "TYPE", "LOCATION"],
            state
                .data_sources
                .iter()
                .map(|(name, s)| {
                    let location = match &s.spec.kind {
                        SourceKind::File(f) => f.path.clone(),
                        SourceKind::Postgres(p) => p
                            .table
                            .clone()
                            .or_else(|| p.query.clone())
                            .unwrap_or_default(),
                        SourceKind::Push(p) => format!("batch source {}", p.batch_source),
                        SourceKind::Request(r) => format!("{} fields", r.schema.len()),
                    };
                    Row {
                        name: name.to_string(),
                        cells: vec![
                            name.to_string(),
                            s.spec.kind.type_name().to_string(),
                            location,
                        ],
                        tags: s.spec.tags.clone(),
                        json: stored_json(s),
                    }
                })
                .collect(),
        ),
        Kind::FeatureView => (
            vec!["NAME", "ENTITIES", "FEATURES", "TTL", "SOURCE", "ONLINE"],
            state
                .feature_views
                .iter()
                .map(|(name, v)| {
                    let mut json = stored_json(v);
                    if let Value::Object(map) = &mut json {
                        let intervals = state.materializations.get(name);
                        map.insert("materialization_intervals".into(), json!(intervals));
                    }
                    let entities: Vec<&str> = v.spec.entities.iter().map(|e| e.as_str()).collect();
                    Row {
                        name: name.to_string(),
                        cells: vec![
                            name.to_string(),
                            entities.join(", "),
                            v.spec.features.len().to_string(),
                            v.spec.ttl.to_string(),
                            v.spec.source.to_string(),
                            v.spec.online.to_string(),
                        ],
                        tags: v.spec.tags.clone(),
                        json,
                    }
                })
                .collect(),
        ),
        Kind::OnDemandFeatureView => (
            vec!["NAME", "SOURCES", "FEATURES"],
            state
                .on_demand_feature_views
                .iter()
                .map(|(name, v)| {
                    let sources: Vec<&str> = v.spec.sources.iter().map(|s| s.as_str()).collect();
                    Row {
                        name: name.to_string(),
                        cells: vec![
                            name.to_string(),
                            sources.join(", "),
                            v.spec.features.len().to_string(),
                        ],
                        tags: v.spec.tags.clone(),
                        json: stored_json(v),
                    }
                })
                .collect(),
        ),
        Kind::FeatureService => (
            vec!["NAME", "FEATURES", "DESCRIPTION"],
            state
                .feature_services
                .iter()
                .map(|(name, s)| {
                    let refs: Vec<String> = s
                        .spec
                        .feature_refs()
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                    Row {
                        name: name.to_string(),
                        cells: vec![
                            name.to_string(),
                            refs.join(", "),
                            s.spec.description.clone(),
                        ],
                        tags: s.spec.tags.clone(),
                        json: stored_json(s),
                    }
                })
                .collect(),
        ),
    }
}

fn parse_tags(tags: &[String]) -> Result<BTreeMap<String, String>> {
    let mut wanted = BTreeMap::new();
    for tag in tags {
        let Some((k, v)) = tag.split_once(':') else {
            bail!("tag filter `{tag}` is not of the form `key:value`");
        };
        wanted.insert(k.to_string(), v.to_string());
    }
    Ok(wanted)
}

pub async fn run(
    open: &larder::OpenOptions,
    kind: Kind,
    command: ObjectCommand,
) -> Result<ExitCode> {
    let store = larder::FeatureStore::open(open)?;
    let (snapshot, project) = store.project_state().await?;
    let Some(state) = snapshot.project(&project) else {
        bail!("project `{project}` is not in the registry (run `larder apply` first)");
    };
    let (header, rows) = rows(kind, state);
    match command {
        ObjectCommand::List { tags, json } => {
            let wanted = parse_tags(&tags)?;
            let rows: Vec<Row> = rows
                .into_iter()
                .filter(|r| wanted.iter().all(|(k, v)| r.tags.get(k) == Some(v)))
                .collect();
            if json {
                let list: Vec<&Value> = rows.iter().map(|r| &r.json).collect();
                print(serde_json::to_string_pretty(&list)?)?;
            } else {
                let mut table = Table::new();
                table.load_preset(UTF8_FULL_CONDENSED).set_header(header);
                for row in rows {
                    table.add_row(row.cells);
                }
                print(table)?;
            }
        }
        ObjectCommand::Describe { name } => {
            let Some(row) = rows.iter().find(|r| r.name == name) else {
                let known: Vec<String> = rows.iter().map(|r| format!("`{}`", r.name)).collect();
                bail!(
                    "{} `{name}` not found in project `{project}` (known: {})",
                    kind.label(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                );
            };
            print(serde_json::to_string_pretty(&row.json)?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
