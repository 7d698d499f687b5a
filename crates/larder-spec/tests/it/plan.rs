//! Plan diffs between definition sets, as data.

use std::collections::BTreeSet;

use larder_spec::{InfraAction, ObjectAction, ObjectKind, diff};

use crate::definitions::{DEMO, parse};

fn summary(plan: &larder_spec::Plan) -> Vec<String> {
    plan.objects
        .iter()
        .map(|c| {
            let verb = match &c.action {
                ObjectAction::Create => "create".to_string(),
                ObjectAction::Delete => "delete".to_string(),
                ObjectAction::Update(fields) => format!(
                    "update [{}]",
                    fields
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            };
            format!("{verb} {} {}", c.kind, c.name)
        })
        .collect()
}

#[test]
fn first_apply_creates_everything() {
    let desired = parse(&[("f.yaml", DEMO)]).unwrap();
    let plan = diff(
        None,
        &desired,
        &BTreeSet::new(),
        &desired.infra_objects(Some("sqlite table")),
    );
    let s = summary(&plan);
    assert_eq!(s[0], "create project demo");
    assert_eq!(s.len(), 1 + 2 + 3 + 1 + 1 + 2);
    assert_eq!(plan.infra.len(), 1);
    assert_eq!(plan.infra[0].action, InfraAction::Create);
    assert_eq!(plan.infra[0].object.name, "demo_driver_hourly_stats");
    assert_eq!(plan.counts(), (11, 0, 0));
}

#[test]
fn no_changes_against_itself() {
    let desired = parse(&[("f.yaml", DEMO)]).unwrap();
    let infra = desired.infra_objects(Some("sqlite table"));
    let plan = diff(Some(&desired), &desired, &infra, &infra);
    assert!(plan.is_empty());
    assert_eq!(
        plan.to_string(),
        "No changes: the registry and infrastructure of project `demo` match the definitions."
    );
}

#[test]
fn edits_show_one_line_per_changed_field() {
    let current = parse(&[("f.yaml", DEMO)]).unwrap();
    let edited = DEMO
        .replace("ttl: 1d", "ttl: 2d")
        .replace("{team: drivers}", "{team: ops}")
        .replace("      - driver_hourly_stats: \"*\"\n", "")
        .replace(
            "  - name: driver_activity_aliased\n",
            "  - name: driver_activity_v2\n",
        );
    let desired = parse(&[("f.yaml", &edited)]).unwrap();
    let plan = diff(Some(&current), &desired, &BTreeSet::new(), &BTreeSet::new());
    assert_eq!(
        summary(&plan),
        [
            "update [~ tags.team: \"drivers\" -> \"ops\"; ~ ttl: \"1day\" -> \"2days\"] feature view driver_hourly_stats",
            "delete feature service driver_activity_aliased",
            "create feature service driver_activity_v2",
        ]
    );
    assert_eq!(plan.objects[0].kind, ObjectKind::FeatureView);
    let text = plan.to_string();
    assert!(text.contains("  ~ update feature view driver_hourly_stats\n      ~ tags.team: \"drivers\" -> \"ops\"\n      ~ ttl: \"1day\" -> \"2days\"\n"), "{text}");
    assert!(
        text.ends_with("Plan: 1 to create, 1 to update, 1 to delete."),
        "{text}"
    );
}

#[test]
fn dropping_a_view_deletes_its_table_and_dependents_fail_validation() {
    let current = parse(&[("f.yaml", DEMO)]).unwrap();
    let offline = DEMO.replace(
        "    tags: {team: drivers}",
        "    tags: {team: drivers}\n    online: false",
    );
    let desired = parse(&[("f.yaml", &offline)]).unwrap();
    let plan = diff(
        Some(&current),
        &desired,
        &current.infra_objects(Some("sqlite table")),
        &desired.infra_objects(Some("sqlite table")),
    );
    assert_eq!(plan.infra.len(), 1);
    assert_eq!(plan.infra[0].action, InfraAction::Delete);
    assert_eq!(
        summary(&plan),
        ["update [~ online: true -> false] feature view driver_hourly_stats"]
    );
}
