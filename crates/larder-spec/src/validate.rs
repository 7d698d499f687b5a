//! From YAML files to validated [`Definitions`]: names, references, types and source schemas.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use larder_types::{ObjectName, ScalarType, ValueType};

use crate::discover::{DiscoverOptions, definition_files};
use crate::error::{DefinitionError, DefinitionErrors};
use crate::expr::expression_identifiers;
use crate::model::{
    DataSource, Definitions, Entity, FeatureService, FeatureView, Field, FileFormat, FileSource,
    ObjectKind, OdfvField, OnDemandFeatureView, PostgresSource, ProjectSpec, Projection,
    PushSource, RequestSource, SourceKind, Ttl,
};
use crate::raw::{
    RawDataSource, RawDuration, RawFeatureService, RawFeatureView, RawField, RawFile,
    RawOnDemandFeatureView, S, Selection, line,
};
use crate::source_schema::read_file_schema;

/// What `load_definitions` needs besides the files.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub repo_dir: PathBuf,
    /// The config file in use (never read as definitions).
    pub config_file: Option<PathBuf>,
    /// `project` from `feature_store.yaml`.
    pub project: String,
    /// `project_description` from `feature_store.yaml`, used when no `project:` block says more.
    pub project_description: Option<String>,
    /// Read each local file source and check its columns (`--skip-source-validation` turns it off).
    pub validate_sources: bool,
}

/// Discovers, parses and validates every definition file of the repo.
pub fn load_definitions(options: &LoadOptions) -> Result<Definitions, DefinitionErrors> {
    let discover = DiscoverOptions {
        config_file: options.config_file.clone(),
    };
    let files =
        definition_files(&options.repo_dir, &discover).map_err(|e| DefinitionErrors(vec![e]))?;
    let mut texts = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        let relative = path
            .strip_prefix(&options.repo_dir)
            .unwrap_or(&path)
            .to_path_buf();
        match std::fs::read_to_string(&path) {
            Ok(text) => texts.push((relative, text)),
            Err(e) => errors.push(DefinitionError {
                file: relative,
                line: 0,
                object: String::new(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    match parse_definitions(&texts, options) {
        Ok(defs) if errors.is_empty() => Ok(defs),
        Ok(_) => Err(DefinitionErrors(errors)),
        Err(DefinitionErrors(more)) => {
            errors.extend(more);
            Err(DefinitionErrors(errors))
        }
    }
}

/// Parses and validates definition files given as `(path relative to the repo, text)`.
pub fn parse_definitions(
    files: &[(PathBuf, String)],
    options: &LoadOptions,
) -> Result<Definitions, DefinitionErrors> {
    let mut v = Validator {
        options,
        errors: Vec::new(),
        broken: BTreeSet::new(),
    };
    let mut parsed = Vec::new();
    for (file, text) in files {
        if let Some(raw) = v.parse_file(file, text) {
            parsed.push((file.as_path(), raw));
        }
    }
    let defs = v.build(&parsed);
    if v.errors.is_empty() {
        Ok(defs)
    } else {
        v.errors
            .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        Err(DefinitionErrors(v.errors))
    }
}

/// Where an object was defined, for messages.
#[derive(Clone, Copy)]
struct At<'a> {
    file: &'a Path,
    line: u64,
}

struct Validator<'o> {
    options: &'o LoadOptions,
    errors: Vec<DefinitionError>,
    /// Objects that are defined but invalid: references to them fail without a second
    /// message, so one mistake is reported once, not again at every use.
    broken: BTreeSet<String>,
}

fn has_content(text: &str) -> bool {
    text.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#') && t != "---"
    })
}

fn object(kind: ObjectKind, name: &str) -> String {
    format!("{kind} `{name}`")
}

fn known(names: impl Iterator<Item = impl AsRef<str>>) -> String {
    let list: Vec<String> = names.map(|n| format!("`{}`", n.as_ref())).collect();
    if list.is_empty() {
        "none are defined".to_string()
    } else {
        format!("known: {}", list.join(", "))
    }
}

impl Validator<'_> {
    fn error(&mut self, at: At<'_>, object: String, message: impl Into<String>) {
        self.errors.push(DefinitionError {
            file: at.file.to_path_buf(),
            line: at.line,
            object,
            message: message.into(),
        });
    }

    fn parse_file(&mut self, file: &Path, text: &str) -> Option<RawFile> {
        if !has_content(text) {
            return None;
        }
        match serde_saphyr::from_str::<RawFile>(text) {
            Ok(raw) => Some(raw),
            Err(e) => {
                let line = e.location().map(|l| l.line()).unwrap_or(0);
                let message = clean_yaml_message(&e.without_snippet().to_string());
                self.error(At { file, line }, String::new(), message);
                None
            }
        }
    }

    fn name(&mut self, at: At<'_>, kind: ObjectKind, raw: &S<String>) -> Option<ObjectName> {
        match ObjectName::new(raw.value.clone()) {
            Ok(name) => Some(name),
            Err(e) => {
                let at = At {
                    line: line(raw),
                    ..at
                };
                self.error(at, object(kind, &raw.value), format!("invalid {kind} {e}"));
                None
            }
        }
    }

    fn build(&mut self, files: &[(&Path, RawFile)]) -> Definitions {
        let project = self.project(files);
        let mut defs = Definitions::empty(project);
        // Lines where each object was defined, for later cross-object messages.
        let mut lines: HashMap<(ObjectKind, String), (PathBuf, u64)> = HashMap::new();

        fn check_unique_impl(
            v: &mut Validator<'_>,
            lines: &mut HashMap<(ObjectKind, String), (PathBuf, u64)>,
            kind: ObjectKind,
            name: &str,
            at: At<'_>,
        ) -> bool {
            // Feature views and on-demand views share one namespace: references say `view:feature`.
            let clash_kinds: &[ObjectKind] = match kind {
                ObjectKind::FeatureView | ObjectKind::OnDemandFeatureView => {
                    &[ObjectKind::FeatureView, ObjectKind::OnDemandFeatureView]
                }
                other => std::slice::from_ref(match other {
                    ObjectKind::Entity => &ObjectKind::Entity,
                    ObjectKind::DataSource => &ObjectKind::DataSource,
                    ObjectKind::FeatureService => &ObjectKind::FeatureService,
                    _ => &ObjectKind::Project,
                }),
            };
            for clash in clash_kinds {
                if let Some((file, l)) = lines.get(&(*clash, name.to_string())) {
                    let message = format!(
                        "the name is already used by the {clash} defined at {}:{l}",
                        file.display()
                    );
                    v.error(at, object(kind, name), message);
                    return false;
                }
            }
            lines.insert((kind, name.to_string()), (at.file.to_path_buf(), at.line));
            true
        }
        let check_unique = check_unique_impl;

        for (file, raw) in files {
            for e in raw.entities.iter().flatten() {
                let at = At {
                    file,
                    line: line(e),
                };
                let built = self.entity(at, e);
                if built.is_none() {
                    self.broken.insert(e.value.name.value.clone());
                }
                if let Some(entity) = built
                    && check_unique(
                        self,
                        &mut lines,
                        ObjectKind::Entity,
                        entity.name.as_str(),
                        at,
                    )
                {
                    defs.entities.insert(entity.name.clone(), entity);
                }
            }
            for s in raw.data_sources.iter().flatten() {
                let at = At {
                    file,
                    line: line(s),
                };
                let built = self.data_source(at, &s.value);
                if built.is_none() {
                    self.broken.insert(s.value.name.value.clone());
                }
                if let Some(source) = built
                    && check_unique(
                        self,
                        &mut lines,
                        ObjectKind::DataSource,
                        source.name.as_str(),
                        at,
                    )
                {
                    defs.data_sources.insert(source.name.clone(), source);
                }
            }
        }
        self.check_push_sources(&defs, &lines);

        let mut view_raws = Vec::new();
        for (file, raw) in files {
            for fv in raw.feature_views.iter().flatten() {
                let at = At {
                    file,
                    line: line(fv),
                };
                let built = self.feature_view(at, &fv.value, &defs);
                if built.is_none() {
                    self.broken.insert(fv.value.name.value.clone());
                }
                if let Some(view) = built
                    && check_unique(
                        self,
                        &mut lines,
                        ObjectKind::FeatureView,
                        view.name.as_str(),
                        at,
                    )
                {
                    view_raws.push((view.name.clone(), file.to_path_buf(), at.line));
                    defs.feature_views.insert(view.name.clone(), view);
                }
            }
        }
        for (file, raw) in files {
            for odfv in raw.on_demand_feature_views.iter().flatten() {
                let at = At {
                    file,
                    line: line(odfv),
                };
                let built = self.on_demand_view(at, &odfv.value, &defs);
                if built.is_none() {
                    self.broken.insert(odfv.value.name.value.clone());
                }
                if let Some(view) = built
                    && check_unique(
                        self,
                        &mut lines,
                        ObjectKind::OnDemandFeatureView,
                        view.name.as_str(),
                        at,
                    )
                {
                    defs.on_demand_feature_views.insert(view.name.clone(), view);
                }
            }
        }
        for (file, raw) in files {
            for fs in raw.feature_services.iter().flatten() {
                let at = At {
                    file,
                    line: line(fs),
                };
                let built = self.feature_service(at, &fs.value, &defs);
                if built.is_none() {
                    self.broken.insert(fs.value.name.value.clone());
                }
                if let Some(service) = built
                    && check_unique(
                        self,
                        &mut lines,
                        ObjectKind::FeatureService,
                        service.name.as_str(),
                        at,
                    )
                {
                    defs.feature_services.insert(service.name.clone(), service);
                }
            }
        }
        if self.options.validate_sources {
            self.check_source_schemas(&defs, &lines, &view_raws);
        }
        defs
    }

    fn project(&mut self, files: &[(&Path, RawFile)]) -> ProjectSpec {
        let mut spec = ProjectSpec {
            name: self.options.project.clone(),
            description: self.options.project_description.clone().unwrap_or_default(),
            tags: BTreeMap::new(),
            owner: String::new(),
        };
        let mut seen: Option<(PathBuf, u64)> = None;
        for (file, raw) in files {
            let Some(block) = &raw.project else { continue };
            let at = At {
                file,
                line: line(block),
            };
            let label = object(ObjectKind::Project, &spec.name);
            if let Some((first_file, first_line)) = &seen {
                let message = format!(
                    "only one `project` block is allowed; the first is at {}:{first_line}",
                    first_file.display()
                );
                self.error(at, label, message);
                continue;
            }
            seen = Some((file.to_path_buf(), at.line));
            let block = &block.value;
            if let Some(name) = &block.name
                && name.value != spec.name
            {
                let at = At {
                    line: line(name),
                    ..at
                };
                let message = format!(
                    "the project block names `{}` but feature_store.yaml says `{}`",
                    name.value, spec.name
                );
                self.error(at, label, message);
            }
            if let Some(d) = &block.description {
                spec.description = d.clone();
            }
            spec.tags = block.tags.clone().unwrap_or_default();
            spec.owner = block.owner.clone().unwrap_or_default();
        }
        spec
    }

    fn entity(&mut self, at: At<'_>, raw: &S<crate::raw::RawEntity>) -> Option<Entity> {
        let raw = &raw.value;
        let name = self.name(at, ObjectKind::Entity, &raw.name)?;
        let label = object(ObjectKind::Entity, name.as_str());
        let join_key = match &raw.join_keys {
            None => Some(name.clone()),
            Some(keys) if keys.value.len() == 1 => {
                let key = &keys.value[0];
                match ObjectName::new(key.value.clone()) {
                    Ok(k) => Some(k),
                    Err(e) => {
                        let at = At {
                            line: line(key),
                            ..at
                        };
                        self.error(at, label.clone(), format!("invalid join key {e}"));
                        None
                    }
                }
            }
            Some(keys) => {
                let at = At {
                    line: line(keys),
                    ..at
                };
                let message = format!(
                    "an entity has exactly one join key, found {}; define one entity per key",
                    keys.value.len()
                );
                self.error(at, label.clone(), message);
                None
            }
        };
        let value_type = match &raw.value_type {
            None => {
                self.error(
                    at,
                    label.clone(),
                    "`value_type` is required (e.g. `value_type: Int64`)",
                );
                None
            }
            Some(t) => {
                let at = At {
                    line: line(t),
                    ..at
                };
                match t.value.parse::<ValueType>() {
                    Ok(ValueType::Scalar(s)) if s.is_entity_key_type() => Some(s),
                    Ok(other) => {
                        let message = format!(
                            "`value_type` {other} cannot be a join key type (use Int32, Int64, \
                             String, Bytes or UnixTimestamp)"
                        );
                        self.error(at, label.clone(), message);
                        None
                    }
                    Err(e) => {
                        self.error(at, label.clone(), format!("`value_type`: {e}"));
                        None
                    }
                }
            }
        };
        Some(Entity {
            name,
            join_key: join_key?,
            value_type: value_type?,
            description: raw.description.clone().unwrap_or_default(),
            tags: raw.tags.clone().unwrap_or_default(),
            owner: raw.owner.clone().unwrap_or_default(),
        })
    }

    fn fields(
        &mut self,
        at: At<'_>,
        label: &str,
        raw: &[S<RawField>],
        allow_expression: bool,
    ) -> Vec<(Field, Option<S<String>>, u64)> {
        let mut out: Vec<(Field, Option<S<String>>, u64)> = Vec::new();
        for f in raw {
            let fat = At {
                line: line(f),
                ..at
            };
            let f = &f.value;
            let name = match ObjectName::new(f.name.value.clone()) {
                Ok(n) => n,
                Err(e) => {
                    self.error(fat, label.to_string(), format!("invalid field {e}"));
                    continue;
                }
            };
            if out.iter().any(|(o, _, _)| o.name == name) {
                self.error(
                    fat,
                    label.to_string(),
                    format!("field `{name}` is listed twice in `schema`"),
                );
                continue;
            }
            let dtype = match f.dtype.value.parse::<ValueType>() {
                Ok(t) => t,
                Err(e) => {
                    let at = At {
                        line: line(&f.dtype),
                        ..at
                    };
                    self.error(at, label.to_string(), format!("field `{name}`: {e}"));
                    continue;
                }
            };
            if let Some(expr) = &f.expression
                && !allow_expression
            {
                let at = At {
                    line: line(expr),
                    ..at
                };
                let message = format!(
                    "field `{name}` has an `expression`; only on-demand feature views compute fields"
                );
                self.error(at, label.to_string(), message);
            }
            out.push((
                Field {
                    name,
                    dtype,
                    description: f.description.clone().unwrap_or_default(),
                    tags: f.tags.clone().unwrap_or_default(),
                },
                f.expression.clone(),
                fat.line,
            ));
        }
        out
    }

    fn data_source(&mut self, at: At<'_>, raw: &RawDataSource) -> Option<DataSource> {
        let name = self.name(at, ObjectKind::DataSource, &raw.name)?;
        let label = object(ObjectKind::DataSource, name.as_str());
        let Some(kind_raw) = &raw.kind else {
            self.error(
                at,
                label,
                "`type` is required (one of file, postgres, push, request)",
            );
            return None;
        };
        let kind_at = At {
            line: line(kind_raw),
            ..at
        };
        let allowed: &[&str] = match kind_raw.value.as_str() {
            "file" => &[
                "path",
                "file_format",
                "s3_endpoint_override",
                "timestamp_field",
                "created_timestamp_column",
                "field_mapping",
            ],
            "postgres" => &[
                "table",
                "query",
                "timestamp_field",
                "created_timestamp_column",
                "field_mapping",
            ],
            "push" => &["batch_source"],
            "request" => &["schema"],
            other => {
                let message = format!(
                    "unknown type `{other}` (expected one of file, postgres, push, request)"
                );
                self.error(kind_at, label, message);
                return None;
            }
        };
        let kind_name = kind_raw.value.as_str();
        let mut ok = true;
        for (key, l) in raw.given_keys() {
            if !allowed.contains(&key) {
                let at = At { line: l, ..at };
                let message = format!(
                    "`{key}` does not apply to a {kind_name} source (allowed: {})",
                    allowed.join(", ")
                );
                self.error(at, label.clone(), message);
                ok = false;
            }
        }
        let required = |v: &mut Self, key: &str, value: &Option<S<String>>| -> Option<String> {
            match value {
                Some(s) if !s.value.trim().is_empty() => Some(s.value.clone()),
                _ => {
                    v.error(
                        at,
                        label.clone(),
                        format!("`{key}` is required for a {kind_name} source"),
                    );
                    None
                }
            }
        };
        let field_mapping = raw
            .field_mapping
            .as_ref()
            .map(|m| m.value.clone())
            .unwrap_or_default();
        let created = raw
            .created_timestamp_column
            .as_ref()
            .map(|s| s.value.clone());
        let kind = match kind_name {
            "file" => {
                let path = required(self, "path", &raw.path);
                let timestamp_field = required(self, "timestamp_field", &raw.timestamp_field);
                let format = match (&raw.file_format, &path) {
                    (Some(f), _) => match f.value.as_str() {
                        "parquet" => Some(FileFormat::Parquet),
                        "csv" => Some(FileFormat::Csv),
                        other => {
                            let at = At {
                                line: line(f),
                                ..at
                            };
                            let message = format!(
                                "unknown `file_format` `{other}` (expected parquet or csv)"
                            );
                            self.error(at, label.clone(), message);
                            None
                        }
                    },
                    (None, Some(p)) if p.to_ascii_lowercase().ends_with(".csv") => {
                        Some(FileFormat::Csv)
                    }
                    (None, _) => Some(FileFormat::Parquet),
                };
                SourceKind::File(FileSource {
                    path: path?,
                    file_format: format?,
                    timestamp_field: timestamp_field?,
                    created_timestamp_column: created,
                    field_mapping,
                    s3_endpoint_override: raw
                        .s3_endpoint_override
                        .as_ref()
                        .map(|s| s.value.clone()),
                })
            }
            "postgres" => {
                let timestamp_field = required(self, "timestamp_field", &raw.timestamp_field);
                let table = raw.table.as_ref().map(|s| s.value.clone());
                let query = raw.query.as_ref().map(|s| s.value.clone());
                if table.is_some() == query.is_some() {
                    self.error(
                        at,
                        label.clone(),
                        "give exactly one of `table` and `query` for a postgres source",
                    );
                    ok = false;
                }
                SourceKind::Postgres(PostgresSource {
                    table,
                    query,
                    timestamp_field: timestamp_field?,
                    created_timestamp_column: created,
                    field_mapping,
                })
            }
            "push" => {
                let batch = required(self, "batch_source", &raw.batch_source)?;
                let batch_at = At {
                    line: raw.batch_source.as_ref().map(line).unwrap_or(at.line),
                    ..at
                };
                match ObjectName::new(batch) {
                    Ok(batch_source) => SourceKind::Push(PushSource { batch_source }),
                    Err(e) => {
                        self.error(batch_at, label, format!("invalid `batch_source` {e}"));
                        return None;
                    }
                }
            }
            _ => {
                let Some(schema) = &raw.schema else {
                    self.error(at, label, "`schema` is required for a request source");
                    return None;
                };
                let fields = self.fields(at, &label, &schema.value, false);
                if fields.is_empty() && schema.value.is_empty() {
                    self.error(at, label.clone(), "`schema` of a request source is empty");
                    ok = false;
                }
                SourceKind::Request(RequestSource {
                    schema: fields.into_iter().map(|(f, _, _)| f).collect(),
                })
            }
        };
        ok.then(|| DataSource {
            name,
            kind,
            description: raw.description.clone().unwrap_or_default(),
            tags: raw.tags.clone().unwrap_or_default(),
            owner: raw.owner.clone().unwrap_or_default(),
        })
    }

    fn check_push_sources(
        &mut self,
        defs: &Definitions,
        lines: &HashMap<(ObjectKind, String), (PathBuf, u64)>,
    ) {
        for source in defs.data_sources.values() {
            let SourceKind::Push(push) = &source.kind else {
                continue;
            };
            let Some((file, l)) = lines.get(&(ObjectKind::DataSource, source.name.to_string()))
            else {
                continue;
            };
            let at = At { file, line: *l };
            let label = object(ObjectKind::DataSource, source.name.as_str());
            match defs
                .data_sources
                .get(push.batch_source.as_str())
                .map(|s| &s.kind)
            {
                Some(SourceKind::File(_) | SourceKind::Postgres(_)) => {}
                Some(other) => {
                    let message = format!(
                        "`batch_source` `{}` is a {} source; it must be a file or postgres source",
                        push.batch_source,
                        other.type_name()
                    );
                    self.error(at, label, message);
                }
                None if self.broken.contains(push.batch_source.as_str()) => {}
                None => {
                    let message = format!(
                        "`batch_source` `{}` is not a defined data source ({})",
                        push.batch_source,
                        known(defs.data_sources.keys())
                    );
                    self.error(at, label, message);
                }
            }
        }
    }

    fn feature_view(
        &mut self,
        at: At<'_>,
        raw: &RawFeatureView,
        defs: &Definitions,
    ) -> Option<FeatureView> {
        let name = self.name(at, ObjectKind::FeatureView, &raw.name)?;
        let label = object(ObjectKind::FeatureView, name.as_str());
        let mut ok = true;

        let (source, batch_source) = match &raw.source {
            None => {
                self.error(at, label.clone(), "`source` is required");
                (None, None)
            }
            Some(s) => {
                let sat = At {
                    line: line(s),
                    ..at
                };
                match defs.data_sources.get(s.value.as_str()) {
                    None if self.broken.contains(&s.value) => (None, None),
                    None => {
                        let message = format!(
                            "`source` `{}` is not a defined data source ({})",
                            s.value,
                            known(defs.data_sources.keys())
                        );
                        self.error(sat, label.clone(), message);
                        (None, None)
                    }
                    Some(ds) => match &ds.kind {
                        SourceKind::Push(p) => {
                            (Some(ds.name.clone()), Some(p.batch_source.clone()))
                        }
                        SourceKind::Request(_) => {
                            let message = format!(
                                "`source` `{}` is a request source; request data feeds on-demand \
                                 feature views only",
                                s.value
                            );
                            self.error(sat, label.clone(), message);
                            (None, None)
                        }
                        _ => (Some(ds.name.clone()), Some(ds.name.clone())),
                    },
                }
            }
        };

        let mut entity_columns: Vec<Field> = Vec::new();
        let mut entity_names = Vec::new();
        for e in raw.entities.iter().flat_map(|e| e.value.iter()) {
            let eat = At {
                line: line(e),
                ..at
            };
            let Some(entity) = defs.entities.get(e.value.as_str()) else {
                ok = false;
                if self.broken.contains(&e.value) {
                    continue;
                }
                let message = format!(
                    "entity `{}` is not defined ({})",
                    e.value,
                    known(defs.entities.keys())
                );
                self.error(eat, label.clone(), message);
                ok = false;
                continue;
            };
            if entity_names.contains(&entity.name) {
                self.error(
                    eat,
                    label.clone(),
                    format!("entity `{}` is listed twice", e.value),
                );
                ok = false;
                continue;
            }
            if let Some(other) = entity_columns.iter().find(|c| c.name == entity.join_key) {
                let message = format!(
                    "entities share the join key `{}`; each entity of a view needs its own key",
                    other.name
                );
                self.error(eat, label.clone(), message);
                ok = false;
                continue;
            }
            entity_names.push(entity.name.clone());
            entity_columns.push(Field {
                name: entity.join_key.clone(),
                dtype: ValueType::Scalar(entity.value_type),
                description: String::new(),
                tags: BTreeMap::new(),
            });
        }

        let mut features = Vec::new();
        match &raw.schema {
            None => {
                self.error(
                    at,
                    label.clone(),
                    "`schema` is required: list the view's features",
                );
                ok = false;
            }
            Some(schema) => {
                for (field, _, fline) in self.fields(at, &label, &schema.value, false) {
                    if let Some(column) = entity_columns.iter_mut().find(|c| c.name == field.name) {
                        if column.dtype != field.dtype {
                            let message = format!(
                                "field `{}` is the join key of an entity of type {} but is \
                                 declared {}",
                                field.name, column.dtype, field.dtype
                            );
                            self.error(At { line: fline, ..at }, label.clone(), message);
                            ok = false;
                        }
                        column.description = field.description;
                        column.tags = field.tags;
                    } else {
                        features.push(field);
                    }
                }
                if features.is_empty() && ok {
                    self.error(
                        At {
                            line: line(schema),
                            ..at
                        },
                        label.clone(),
                        "`schema` lists no features (only join keys)",
                    );
                    ok = false;
                }
            }
        }

        let ttl = match &raw.ttl {
            None => Some(Ttl::default()),
            Some(t) => {
                let tat = At {
                    line: line(t),
                    ..at
                };
                match parse_ttl(&t.value) {
                    Ok(d) => Some(Ttl(d)),
                    Err(message) => {
                        self.error(tat, label.clone(), message);
                        None
                    }
                }
            }
        };
        if !ok {
            return None;
        }
        Some(FeatureView {
            name,
            entities: entity_names,
            ttl: ttl?,
            source: source?,
            batch_source: batch_source?,
            online: raw.online.unwrap_or(true),
            offline: raw.offline.unwrap_or(false),
            entity_columns,
            features,
            description: raw.description.clone().unwrap_or_default(),
            tags: raw.tags.clone().unwrap_or_default(),
            owner: raw.owner.clone().unwrap_or_default(),
        })
    }

    fn on_demand_view(
        &mut self,
        at: At<'_>,
        raw: &RawOnDemandFeatureView,
        defs: &Definitions,
    ) -> Option<OnDemandFeatureView> {
        let name = self.name(at, ObjectKind::OnDemandFeatureView, &raw.name)?;
        let label = object(ObjectKind::OnDemandFeatureView, name.as_str());
        let mut ok = true;
        let mut sources = Vec::new();
        // Column names an expression may use: features by short and full name, request fields.
        let mut inputs: BTreeSet<String> = BTreeSet::new();
        match &raw.sources {
            None => {
                self.error(at, label.clone(), "`sources` is required");
                ok = false;
            }
            Some(list) => {
                for s in &list.value {
                    let sat = At {
                        line: line(s),
                        ..at
                    };
                    if let Some(view) = defs.feature_views.get(s.value.as_str()) {
                        for f in &view.features {
                            inputs.insert(f.name.to_string());
                            inputs.insert(format!("{}__{}", view.name, f.name));
                        }
                        sources.push(view.name.clone());
                    } else if let Some(SourceKind::Request(r)) =
                        defs.data_sources.get(s.value.as_str()).map(|d| &d.kind)
                    {
                        inputs.extend(r.schema.iter().map(|f| f.name.to_string()));
                        sources.push(ObjectName::new(s.value.clone()).ok()?);
                    } else if self.broken.contains(&s.value) {
                        ok = false;
                    } else {
                        let requests = defs
                            .data_sources
                            .values()
                            .filter(|d| matches!(d.kind, SourceKind::Request(_)))
                            .map(|d| &d.name);
                        let message = format!(
                            "source `{}` is neither a feature view nor a request source ({})",
                            s.value,
                            known(defs.feature_views.keys().chain(requests))
                        );
                        self.error(sat, label.clone(), message);
                        ok = false;
                    }
                }
            }
        }
        let mut features = Vec::new();
        match &raw.schema {
            None => {
                self.error(at, label.clone(), "`schema` is required");
                ok = false;
            }
            Some(schema) => {
                for (field, expression, fline) in self.fields(at, &label, &schema.value, true) {
                    let fat = At { line: fline, ..at };
                    let Some(expression) = expression else {
                        let message = format!(
                            "field `{}` needs an `expression` computing it from the sources",
                            field.name
                        );
                        self.error(fat, label.clone(), message);
                        ok = false;
                        continue;
                    };
                    let eat = At {
                        line: line(&expression),
                        ..at
                    };
                    match expression_identifiers(&expression.value) {
                        Err(problem) => {
                            let message = format!(
                                "field `{}`: expression `{}`: {problem}",
                                field.name, expression.value
                            );
                            self.error(eat, label.clone(), message);
                            ok = false;
                        }
                        Ok(idents) if ok => {
                            for ident in idents.iter().filter(|i| !inputs.contains(*i)) {
                                let message = format!(
                                    "field `{}`: expression uses `{ident}`, which no source \
                                     provides ({})",
                                    field.name,
                                    known(inputs.iter())
                                );
                                self.error(eat, label.clone(), message);
                                ok = false;
                            }
                        }
                        Ok(_) => {}
                    }
                    features.push(OdfvField {
                        name: field.name,
                        dtype: field.dtype,
                        expression: expression.value.clone(),
                        description: field.description,
                    });
                }
            }
        }
        ok.then(|| OnDemandFeatureView {
            name,
            sources,
            features,
            write_to_online_store: raw.write_to_online_store.unwrap_or(false),
            description: raw.description.clone().unwrap_or_default(),
            tags: raw.tags.clone().unwrap_or_default(),
            owner: raw.owner.clone().unwrap_or_default(),
        })
    }

    fn feature_service(
        &mut self,
        at: At<'_>,
        raw: &RawFeatureService,
        defs: &Definitions,
    ) -> Option<FeatureService> {
        let name = self.name(at, ObjectKind::FeatureService, &raw.name)?;
        let label = object(ObjectKind::FeatureService, name.as_str());
        let Some(list) = &raw.features else {
            self.error(at, label, "`features` is required");
            return None;
        };
        let mut ok = true;
        let mut projections: Vec<Projection> = Vec::new();
        for p in &list.value {
            let pat = At {
                line: line(p),
                ..at
            };
            let p = &p.value;
            let view_name = &p.feature_view.value;
            let (available, join_keys): (Vec<ObjectName>, Vec<ObjectName>) =
                if let Some(v) = defs.feature_views.get(view_name.as_str()) {
                    (
                        v.features.iter().map(|f| f.name.clone()).collect(),
                        v.join_keys().cloned().collect(),
                    )
                } else if let Some(v) = defs.on_demand_feature_views.get(view_name.as_str()) {
                    (
                        v.features.iter().map(|f| f.name.clone()).collect(),
                        Vec::new(),
                    )
                } else if self.broken.contains(view_name) {
                    ok = false;
                    continue;
                } else {
                    let message = format!(
                        "feature view `{view_name}` is not defined ({})",
                        known(
                            defs.feature_views
                                .keys()
                                .chain(defs.on_demand_feature_views.keys())
                        )
                    );
                    self.error(pat, label.clone(), message);
                    ok = false;
                    continue;
                };
            let features = match &p.features {
                Selection::All => available.clone(),
                Selection::Invalid(text) => {
                    let message = format!(
                        "the features of `{view_name}` are `{text}`; write \"*\" for all or a list of names"
                    );
                    self.error(pat, label.clone(), message);
                    ok = false;
                    Vec::new()
                }
                Selection::Some(names) => {
                    let mut chosen = Vec::new();
                    for n in names {
                        match available.iter().find(|a| a.as_str() == n) {
                            Some(a) if chosen.contains(a) => {
                                let message = format!("feature `{view_name}:{n}` is listed twice");
                                self.error(pat, label.clone(), message);
                                ok = false;
                            }
                            Some(a) => chosen.push(a.clone()),
                            None => {
                                let message = format!(
                                    "feature view `{view_name}` has no feature `{n}` ({})",
                                    known(available.iter())
                                );
                                self.error(pat, label.clone(), message);
                                ok = false;
                            }
                        }
                    }
                    if names.is_empty() {
                        let message = format!(
                            "the projection of `{view_name}` lists no features (use \"*\" for all)"
                        );
                        self.error(pat, label.clone(), message);
                        ok = false;
                    }
                    chosen
                }
            };
            let alias = match &p.alias {
                None => None,
                Some(a) => match ObjectName::new(a.value.clone()) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        let aat = At {
                            line: line(a),
                            ..at
                        };
                        self.error(aat, label.clone(), format!("invalid alias {e}"));
                        ok = false;
                        None
                    }
                },
            };
            for key in p.join_key_map.keys() {
                if !join_keys.iter().any(|k| k.as_str() == key) {
                    let message = format!(
                        "`join_key_map` maps `{key}`, which is not a join key of `{view_name}` ({})",
                        known(join_keys.iter())
                    );
                    self.error(pat, label.clone(), message);
                    ok = false;
                }
            }
            let Ok(feature_view) = ObjectName::new(view_name.clone()) else {
                continue;
            };
            let projection = Projection {
                feature_view,
                alias,
                features,
                join_key_map: p.join_key_map.clone(),
            };
            if projections
                .iter()
                .any(|q| q.name_to_use() == projection.name_to_use())
            {
                let message = format!(
                    "`{}` is projected twice; give one projection an `alias`",
                    projection.name_to_use()
                );
                self.error(pat, label.clone(), message);
                ok = false;
                continue;
            }
            projections.push(projection);
        }
        if list.value.is_empty() {
            self.error(at, label.clone(), "`features` is empty");
            ok = false;
        }
        ok.then(|| FeatureService {
            name,
            projections,
            description: raw.description.clone().unwrap_or_default(),
            tags: raw.tags.clone().unwrap_or_default(),
            owner: raw.owner.clone().unwrap_or_default(),
        })
    }

    /// Reads each local file source once and checks the columns its views need.
    fn check_source_schemas(
        &mut self,
        defs: &Definitions,
        lines: &HashMap<(ObjectKind, String), (PathBuf, u64)>,
        views: &[(ObjectName, PathBuf, u64)],
    ) {
        let mut schemas: HashMap<&str, Option<HashMap<String, arrow::datatypes::DataType>>> =
            HashMap::new();
        for source in defs.data_sources.values() {
            let SourceKind::File(file) = &source.kind else {
                continue;
            };
            let Some((src_file, src_line)) =
                lines.get(&(ObjectKind::DataSource, source.name.to_string()))
            else {
                continue;
            };
            let at = At {
                file: src_file,
                line: *src_line,
            };
            let label = object(ObjectKind::DataSource, source.name.as_str());
            if file.path.contains("://") {
                // Remote files are checked when read; listing buckets at apply time needs credentials.
                schemas.insert(source.name.as_str(), None);
                continue;
            }
            let path = self.options.repo_dir.join(&file.path);
            let schema = match read_file_schema(&path, file.file_format) {
                Ok(schema) => schema,
                Err(e) => {
                    let message = e
                        .to_string()
                        .replace(&path.display().to_string(), &file.path);
                    self.error(at, label, message);
                    schemas.insert(source.name.as_str(), None);
                    continue;
                }
            };
            let mut columns: HashMap<String, arrow::datatypes::DataType> = HashMap::new();
            for field in schema.fields() {
                let name = file
                    .field_mapping
                    .get(field.name())
                    .cloned()
                    .unwrap_or_else(|| field.name().clone());
                columns.insert(name, field.data_type().clone());
            }
            let mut timestamp_columns = vec![("timestamp_field", &file.timestamp_field)];
            if let Some(created) = &file.created_timestamp_column {
                timestamp_columns.push(("created_timestamp_column", created));
            }
            for (key, column) in timestamp_columns {
                match columns.get(column.as_str()) {
                    None => {
                        let message = format!(
                            "`{key}` `{column}` is not a column of `{}` (columns: {})",
                            file.path,
                            sorted_names(&columns)
                        );
                        self.error(at, label.clone(), message);
                    }
                    Some(dt)
                        if !ValueType::Scalar(ScalarType::UnixTimestamp).accepts_arrow(dt)
                            || matches!(dt, arrow::datatypes::DataType::Int64) =>
                    {
                        let message = format!(
                            "`{key}` `{column}` of `{}` is {dt}, not a timestamp",
                            file.path
                        );
                        self.error(at, label.clone(), message);
                    }
                    Some(_) => {}
                }
            }
            schemas.insert(source.name.as_str(), Some(columns));
        }
        for (name, file, l) in views {
            let Some(view) = defs.feature_views.get(name) else {
                continue;
            };
            let Some(Some(columns)) = schemas.get(view.batch_source.as_str()) else {
                continue;
            };
            let Some(SourceKind::File(source)) =
                defs.data_sources.get(&view.batch_source).map(|s| &s.kind)
            else {
                continue;
            };
            let at = At { file, line: *l };
            let label = object(ObjectKind::FeatureView, view.name.as_str());
            for (what, field) in view
                .entity_columns
                .iter()
                .map(|f| ("join key", f))
                .chain(view.features.iter().map(|f| ("feature", f)))
            {
                match columns.get(field.name.as_str()) {
                    None => {
                        let message = format!(
                            "{what} `{}` is not a column of `{}` (columns: {})",
                            field.name,
                            source.path,
                            sorted_names(columns)
                        );
                        self.error(at, label.clone(), message);
                    }
                    Some(dt) if !field.dtype.accepts_arrow(dt) => {
                        let message = format!(
                            "{what} `{}` is declared {} but column `{}` of `{}` is {dt}",
                            field.name, field.dtype, field.name, source.path
                        );
                        self.error(at, label.clone(), message);
                    }
                    Some(_) => {}
                }
            }
        }
    }
}

fn sorted_names(columns: &HashMap<String, arrow::datatypes::DataType>) -> String {
    let mut names: Vec<&str> = columns.keys().map(String::as_str).collect();
    names.sort_unstable();
    names.join(", ")
}

fn parse_ttl(raw: &RawDuration) -> Result<Duration, String> {
    match raw {
        RawDuration::Seconds(s) => Ok(Duration::from_secs(*s)),
        RawDuration::Text(text) => {
            let t = text.trim();
            if let Ok(seconds) = t.parse::<u64>() {
                return Ok(Duration::from_secs(seconds));
            }
            humantime::parse_duration(t).map_err(|e| {
                format!(
                    "`ttl` `{text}` is not a duration ({e}); write e.g. `1d`, `12h`, `90m` or `0`"
                )
            })
        }
    }
}

/// saphyr's messages end with their own location; the file and line are given separately.
fn clean_yaml_message(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message).trim();
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}
