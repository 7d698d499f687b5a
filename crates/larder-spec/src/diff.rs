//! The plan: what `apply` would change, as data, computed by comparing serialized objects.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::model::{Definitions, InfraObject, ObjectKind};

/// What `apply` would do to one registry object.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", content = "fields", rename_all = "snake_case")]
pub enum ObjectAction {
    Create,
    Update(Vec<FieldChange>),
    Delete,
}

/// One changed field of an updated object; `None` means absent on that side.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldChange {
    /// Dotted path into the object; list items with a `name` are addressed as `features[conv_rate]`.
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ObjectChange {
    pub kind: ObjectKind,
    pub name: String,
    #[serde(flatten)]
    pub action: ObjectAction,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InfraAction {
    Create,
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InfraChange {
    pub action: InfraAction,
    #[serde(flatten)]
    pub object: InfraObject,
}

/// Everything `apply` would change for one project.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    pub project: String,
    pub objects: Vec<ObjectChange>,
    pub infra: Vec<InfraChange>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.infra.is_empty()
    }

    /// (create, update, delete) counts over objects and infrastructure.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for change in &self.objects {
            match change.action {
                ObjectAction::Create => counts.0 += 1,
                ObjectAction::Update(_) => counts.1 += 1,
                ObjectAction::Delete => counts.2 += 1,
            }
        }
        for change in &self.infra {
            match change.action {
                InfraAction::Create => counts.0 += 1,
                InfraAction::Delete => counts.2 += 1,
            }
        }
        counts
    }
}

/// Compares what the registry holds (`current`, None for a new project) with the repo.
pub fn diff(
    current: Option<&Definitions>,
    desired: &Definitions,
    current_infra: &BTreeSet<InfraObject>,
    desired_infra: &BTreeSet<InfraObject>,
) -> Plan {
    let mut objects = Vec::new();
    for kind in ObjectKind::ALL {
        let mut names: BTreeSet<&str> = desired.names(kind).into_iter().collect();
        if let Some(current) = current {
            names.extend(current.names(kind));
        }
        for name in names {
            let old = current.and_then(|c| c.object_json(kind, name));
            let new = desired.object_json(kind, name);
            let action = match (old, new) {
                (None, Some(_)) => ObjectAction::Create,
                (Some(_), None) => ObjectAction::Delete,
                (Some(old), Some(new)) => {
                    let mut fields = Vec::new();
                    field_changes("", &old, &new, &mut fields);
                    if fields.is_empty() {
                        continue;
                    }
                    ObjectAction::Update(fields)
                }
                (None, None) => continue,
            };
            objects.push(ObjectChange {
                kind,
                name: name.to_string(),
                action,
            });
        }
    }
    let mut infra: Vec<InfraChange> = desired_infra
        .difference(current_infra)
        .map(|o| InfraChange {
            action: InfraAction::Create,
            object: o.clone(),
        })
        .collect();
    infra.extend(
        current_infra
            .difference(desired_infra)
            .map(|o| InfraChange {
                action: InfraAction::Delete,
                object: o.clone(),
            }),
    );
    Plan {
        project: desired.project.name.clone(),
        objects,
        infra,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The `name` of every item, when every item of the list is an object with a string name.
fn item_names(items: &[Value]) -> Option<Vec<&str>> {
    items
        .iter()
        .map(|item| item.get("name").and_then(Value::as_str))
        .collect()
}

fn field_changes(path: &str, old: &Value, new: &Value, out: &mut Vec<FieldChange>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let child = join(path, key);
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => field_changes(&child, x, y, out),
                    (x, y) => out.push(FieldChange {
                        path: child,
                        old: x.cloned(),
                        new: y.cloned(),
                    }),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => match (item_names(a), item_names(b)) {
            (Some(names_a), Some(names_b)) if !a.is_empty() || !b.is_empty() => {
                let all: BTreeSet<&str> = names_a.iter().chain(&names_b).copied().collect();
                for name in all {
                    let child = format!("{path}[{name}]");
                    let x = a
                        .iter()
                        .find(|i| i.get("name").and_then(Value::as_str) == Some(name));
                    let y = b
                        .iter()
                        .find(|i| i.get("name").and_then(Value::as_str) == Some(name));
                    match (x, y) {
                        (Some(x), Some(y)) => field_changes(&child, x, y, out),
                        (x, y) => out.push(FieldChange {
                            path: child,
                            old: x.cloned(),
                            new: y.cloned(),
                        }),
                    }
                }
                let common_a: Vec<&str> = names_a
                    .iter()
                    .copied()
                    .filter(|n| names_b.contains(n))
                    .collect();
                let common_b: Vec<&str> = names_b
                    .iter()
                    .copied()
                    .filter(|n| names_a.contains(n))
                    .collect();
                if common_a != common_b {
                    out.push(FieldChange {
                        path: format!("{path} (order)"),
                        old: Some(Value::from(common_a)),
                        new: Some(Value::from(common_b)),
                    });
                }
            }
            _ => out.push(FieldChange {
                path: path.to_string(),
                old: Some(old.clone()),
                new: Some(new.clone()),
            }),
        },
        _ => out.push(FieldChange {
            path: path.to_string(),
            old: Some(old.clone()),
            new: Some(new.clone()),
        }),
    }
}

fn show(value: &Option<Value>) -> String {
    match value {
        None => "(absent)".to_string(),
        Some(v) => v.to_string(),
    }
}

impl fmt::Display for FieldChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.old, &self.new) {
            (None, new) => write!(f, "+ {}: {}", self.path, show(new)),
            (old, None) => write!(f, "- {}: {}", self.path, show(old)),
            (old, new) => write!(f, "~ {}: {} -> {}", self.path, show(old), show(new)),
        }
    }
}

impl fmt::Display for Plan {
    /// Terraform-style listing: `+` create, `~` update (one line per field), `-` delete.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(
                f,
                "No changes: the registry and infrastructure of project `{}` match the definitions.",
                self.project
            );
        }
        writeln!(f, "Changes to project `{}`:", self.project)?;
        if self.objects.is_empty() {
            writeln!(f, "  No changes to registry")?;
        }
        for change in &self.objects {
            let (sign, verb) = match change.action {
                ObjectAction::Create => ('+', "create"),
                ObjectAction::Update(_) => ('~', "update"),
                ObjectAction::Delete => ('-', "delete"),
            };
            writeln!(f, "  {sign} {verb} {} {}", change.kind, change.name)?;
            if let ObjectAction::Update(fields) = &change.action {
                for field in fields {
                    writeln!(f, "      {field}")?;
                }
            }
        }
        writeln!(f, "Infrastructure:")?;
        if self.infra.is_empty() {
            writeln!(f, "  No changes to infrastructure")?;
        }
        for change in &self.infra {
            let (sign, verb) = match change.action {
                InfraAction::Create => ('+', "create"),
                InfraAction::Delete => ('-', "delete"),
            };
            writeln!(
                f,
                "  {sign} {verb} {} {}",
                change.object.kind, change.object.name
            )?;
        }
        let (c, u, d) = self.counts();
        write!(f, "Plan: {c} to create, {u} to update, {d} to delete.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn changes(old: Value, new: Value) -> Vec<String> {
        let mut out = Vec::new();
        field_changes("", &old, &new, &mut out);
        out.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn field_level_changes_as_data() {
        let cases: Vec<(Value, Value, Vec<&str>)> = vec![
            (json!({"ttl": "1day"}), json!({"ttl": "1day"}), vec![]),
            (
                json!({"ttl": "1day"}),
                json!({"ttl": "2days"}),
                vec!["~ ttl: \"1day\" -> \"2days\""],
            ),
            (
                json!({"tags": {"team": "a"}}),
                json!({"tags": {"team": "b", "tier": "1"}}),
                vec!["~ tags.team: \"a\" -> \"b\"", "+ tags.tier: \"1\""],
            ),
            (
                json!({"description": "x"}),
                json!({}),
                vec!["- description: \"x\""],
            ),
            (
                json!({"features": [{"name": "a", "dtype": "Int64"}, {"name": "b", "dtype": "Float32"}]}),
                json!({"features": [{"name": "a", "dtype": "Float64"}, {"name": "c", "dtype": "Bool"}]}),
                vec![
                    "~ features[a].dtype: \"Int64\" -> \"Float64\"",
                    "- features[b]: {\"dtype\":\"Float32\",\"name\":\"b\"}",
                    "+ features[c]: {\"dtype\":\"Bool\",\"name\":\"c\"}",
                ],
            ),
            (
                json!({"features": [{"name": "a"}, {"name": "b"}]}),
                json!({"features": [{"name": "b"}, {"name": "a"}]}),
                vec!["~ features (order): [\"a\",\"b\"] -> [\"b\",\"a\"]"],
            ),
            (
                json!({"entities": ["driver"]}),
                json!({"entities": ["driver", "customer"]}),
                vec!["~ entities: [\"driver\"] -> [\"driver\",\"customer\"]"],
            ),
        ];
        for (old, new, expected) in cases {
            assert_eq!(
                changes(old.clone(), new.clone()),
                expected,
                "{old} -> {new}"
            );
        }
    }
}
