//! A YAML tree with source positions, and a serde `Deserializer` over it.
//!
//! The config is parsed once by `serde_saphyr` into [`Node`]s that remember the line and
//! column of every key and value. Typed settings are then read from that tree, which lets
//! the loader look at a block's `type` before choosing the struct to read it into, report
//! every unknown key of a block at once (with its line), and name the dotted path of a bad
//! value. serde's `deny_unknown_fields` stays on every config struct as a backstop.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use serde_saphyr::Spanned;

use crate::error::Issue;

/// 1-based line and column; line 0 means unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn of(location: &serde_saphyr::Location) -> Self {
        Self {
            line: usize::try_from(location.line()).unwrap_or(0),
            column: usize::try_from(location.column()).unwrap_or(0),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub pos: Pos,
    pub kind: Kind,
    /// Source text of a plain scalar that YAML typed as a boolean or number, so a string
    /// setting gets what was written (`password: 0123`, `name: n`), as saphyr's own typed
    /// deserialization does.
    pub raw: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

impl Node {
    /// Parses YAML text into a tree. Errors are saphyr's, with their location.
    pub fn parse(text: &str) -> Result<Node, serde_saphyr::Error> {
        let spanned: Spanned<RawNode> = serde_saphyr::from_str(text)?;
        Ok(spanned_node(spanned, text))
    }

    /// The entry for `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        match &self.kind {
            Kind::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    /// Short description for messages: "a string `x`", "a list", ...
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Null => "null".to_owned(),
            Kind::Bool(b) => format!("a boolean `{b}`"),
            Kind::Int(i) => format!("an integer `{i}`"),
            Kind::Float(f) => format!("a number `{f}`"),
            Kind::Str(s) => format!("a string `{s}`"),
            Kind::Seq(_) => "a list".to_owned(),
            Kind::Map(_) => "a mapping".to_owned(),
        }
    }
}

/// The tree as saphyr delivers it; positions come from `Spanned` wrappers one level up,
/// and raw scalar text is cut from the input afterwards.
struct RawNode(RawKind);

enum RawKind {
    Scalar(Kind),
    Seq(Vec<Spanned<RawNode>>),
    Map(Vec<(Spanned<String>, Spanned<RawNode>)>),
}

impl<'de> de::Deserialize<'de> for RawNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor).map(RawNode)
    }
}

fn spanned_node(spanned: Spanned<RawNode>, text: &str) -> Node {
    let location = spanned.referenced;
    let kind = match spanned.value.0 {
        RawKind::Scalar(kind) => kind,
        RawKind::Seq(items) => Kind::Seq(
            items
                .into_iter()
                .map(|item| spanned_node(item, text))
                .collect(),
        ),
        RawKind::Map(entries) => Kind::Map(
            entries
                .into_iter()
                .map(|(key, value)| Entry {
                    key_pos: Pos::of(&key.referenced),
                    key: key.value,
                    value: spanned_node(value, text),
                })
                .collect(),
        ),
    };
    let raw = match kind {
        Kind::Bool(_) | Kind::Int(_) | Kind::Float(_) => {
            let span = location.span();
            let start = span.byte_offset().and_then(|o| usize::try_from(o).ok());
            let len = span.byte_len().and_then(|l| usize::try_from(l).ok());
            start
                .zip(len)
                .and_then(|(start, len)| text.get(start..start.checked_add(len)?))
                .map(str::to_owned)
        }
        _ => None,
    };
    Node {
        pos: Pos::of(&location),
        kind,
        raw,
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawKind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<RawKind, E> {
        Ok(RawKind::Scalar(Kind::Null))
    }
    fn visit_none<E>(self) -> Result<RawKind, E> {
        Ok(RawKind::Scalar(Kind::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawKind, D::Error> {
        d.deserialize_any(RawVisitor)
    }
    fn visit_bool<E>(self, v: bool) -> Result<RawKind, E> {
        Ok(RawKind::Scalar(Kind::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<RawKind, E> {
        Ok(RawKind::Scalar(Kind::Int(v.into())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<RawKind, E> {
        Ok(RawKind::Scalar(Kind::Int(v.into())))
    }
    fn visit_i128<E>(self, v: i128) -> Result<RawKind, E> {
        Ok(RawKind::Scalar(Kind::Int(v)))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawKind, E> {
        i128::try_from(v)
            .map(|v| RawKind::Scalar(Kind::Int(v)))
            .map_err(|_| E::custom("integer is too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<RawKind, E> {
        Ok(RawKind::Scalar(Kind::Float(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<RawKind, E> {
        Ok(RawKind::Scalar(Kind::Str(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<RawKind, E> {
        Ok(RawKind::Scalar(Kind::Str(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawKind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(RawKind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawKind, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(RawKind::Map(entries))
    }
}

/// Deserialization error over a [`Node`]: the problems found, positions attached on the
/// way out by the innermost node that knows them.
#[derive(Debug)]
pub(crate) struct NodeError(pub Vec<Issue>);

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let messages: Vec<&str> = self.0.iter().map(|i| i.message.as_str()).collect();
        f.write_str(&messages.join("; "))
    }
}

impl std::error::Error for NodeError {}

impl de::Error for NodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        NodeError(vec![Issue::new(msg.to_string())])
    }
    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!("expected {exp}, found {}", yaml_words(&unexp)))
    }
    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!("expected {exp}, found {}", yaml_words(&unexp)))
    }
    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(format_args!(
            "unknown value `{variant}` (expected one of {})",
            backticked(expected)
        ))
    }
    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(format_args!(
            "unknown key `{field}` (valid keys: {})",
            backticked(expected)
        ))
    }
    fn missing_field(field: &'static str) -> Self {
        Self::custom(format_args!("missing required key `{field}`"))
    }
}

/// serde's words for what was found, in YAML's terms where they differ.
fn yaml_words(unexp: &de::Unexpected<'_>) -> String {
    match unexp {
        de::Unexpected::Unit => "null".to_owned(),
        de::Unexpected::Seq => "a list".to_owned(),
        de::Unexpected::Map => "a mapping".to_owned(),
        other => other.to_string(),
    }
}

/// "`a`, `b`, `c`"
pub(crate) fn backticked(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    quoted.join(", ")
}

/// Reads typed values out of a [`Node`].
pub(crate) struct NodeDe<'a> {
    node: &'a Node,
    /// Dotted path of `node`, for messages (`online_store.port`).
    path: String,
    /// Keys of this mapping that belong to someone else (`type`, or fields read separately).
    skip: &'a [&'a str],
    /// The block's `type`, quoted in unknown-key messages of the block itself.
    kind: Option<&'a str>,
}

impl<'a> NodeDe<'a> {
    pub fn new(node: &'a Node, path: impl Into<String>) -> Self {
        Self {
            node,
            path: path.into(),
            skip: &[],
            kind: None,
        }
    }

    /// Skips the given keys of this mapping (and names `kind` in unknown-key messages).
    pub fn block(node: &'a Node, path: &str, kind: Option<&'a str>, skip: &'a [&'a str]) -> Self {
        Self {
            node,
            path: path.to_owned(),
            skip,
            kind,
        }
    }

    /// Gives issues raised below without a position this node's position and path.
    fn locate(&self, mut err: NodeError) -> NodeError {
        for issue in &mut err.0 {
            if issue.key.is_none() {
                issue.message = format!("invalid `{}`: {}", self.path, issue.message);
                issue.key = Some(self.path.clone());
                if issue.line.is_none() && self.node.pos.line > 0 {
                    issue.line = Some(self.node.pos.line);
                    issue.column = Some(self.node.pos.column);
                }
            }
        }
        err
    }

    fn child(&self, node: &'a Node, segment: &str) -> NodeDe<'a> {
        NodeDe::new(node, format!("{}.{segment}", self.path))
    }

    fn unknown_keys(&self, entries: &[Entry], fields: &[&str]) -> Vec<Issue> {
        let mut valid: Vec<&str> = self.skip.to_vec();
        valid.extend(fields.iter().copied().filter(|f| !self.skip.contains(f)));
        entries
            .iter()
            .filter(|e| !valid.contains(&e.key.as_str()))
            .map(|e| {
                let valid_for = match self.kind {
                    Some(kind) => format!("valid keys for type `{kind}`"),
                    None => "valid keys".to_owned(),
                };
                let message = format!(
                    "unknown key `{}` in `{}` ({valid_for}: {})",
                    e.key,
                    self.path,
                    backticked(&valid)
                );
                Issue::new(message)
                    .at(e.key_pos.line, e.key_pos.column)
                    .key(format!("{}.{}", self.path, e.key))
            })
            .collect()
    }

    /// The node's value as an integer when it is one, or a string holding one (pydantic
    /// accepts `port: "5432"`, and `port: "${PORT}"` is a common way to write it).
    fn integer(&self) -> Option<i128> {
        match &self.node.kind {
            Kind::Int(i) => Some(*i),
            Kind::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn visit_integer<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, NodeError> {
        let result = match self.integer() {
            Some(i) => match (i64::try_from(i), u64::try_from(i)) {
                (Ok(v), _) => visitor.visit_i64(v),
                (_, Ok(v)) => visitor.visit_u64(v),
                _ => visitor.visit_i128(i),
            },
            None => return self.deserialize_any(visitor),
        };
        result.map_err(|e| self.locate(e))
    }
}

macro_rules! integers {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, NodeError> {
            self.visit_integer(visitor)
        }
    )*};
}

impl<'a> Deserializer<'a> for NodeDe<'a> {
    type Error = NodeError;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, NodeError> {
        let result = match &self.node.kind {
            Kind::Null => visitor.visit_unit(),
            Kind::Bool(b) => visitor.visit_bool(*b),
            Kind::Int(i) => match (i64::try_from(*i), u64::try_from(*i)) {
                (Ok(v), _) => visitor.visit_i64(v),
                (_, Ok(v)) => visitor.visit_u64(v),
                _ => visitor.visit_i128(*i),
            },
            Kind::Float(f) => visitor.visit_f64(*f),
            Kind::Str(s) => visitor.visit_str(s),
            Kind::Seq(items) => visitor.visit_seq(SeqOfNodes {
                parent: &self,
                items: items.iter().enumerate(),
            }),
            Kind::Map(entries) => visitor.visit_map(MapOfNodes {
                parent: &self,
                entries: entries.iter(),
                value: None,
            }),
        };
        result.map_err(|e| self.locate(e))
    }

    integers! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
    }

    fn deserialize_bool<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, NodeError> {
        // Strings as pydantic reads them, so `"${FLAG}"` works.
        if let Kind::Str(s) = &self.node.kind {
            let parsed = match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Some(true),
                "false" | "no" | "off" | "0" => Some(false),
                _ => None,
            };
            if let Some(b) = parsed {
                return visitor.visit_bool(b).map_err(|e| self.locate(e));
            }
        }
        self.deserialize_any(visitor)
    }

    fn deserialize_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, NodeError> {
        match &self.node.raw {
            Some(raw) => visitor.visit_str(raw).map_err(|e| self.locate(e)),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, NodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, NodeError> {
        match self.node.kind {
            Kind::Null => visitor.visit_none().map_err(|e| self.locate(e)),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, NodeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, NodeError> {
        let entries: &[Entry] = match &self.node.kind {
            Kind::Map(entries) => entries,
            // An empty block (`materialization:`) means "all defaults".
            Kind::Null => &[],
            _ => {
                let message = format!("expected a mapping, found {}", self.node.describe());
                return Err(self.locate(NodeError(vec![Issue::new(message)])));
            }
        };
        let unknown = self.unknown_keys(entries, fields);
        if !unknown.is_empty() {
            return Err(NodeError(unknown));
        }
        let result = visitor.visit_map(MapOfNodes {
            parent: &self,
            entries: entries.iter(),
            value: None,
        });
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, NodeError> {
        let result = match &self.node.kind {
            Kind::Str(s) => {
                let name: de::value::StrDeserializer<'_, NodeError> =
                    s.as_str().into_deserializer();
                visitor.visit_enum(name)
            }
            _ => Err(NodeError(vec![Issue::new(format!(
                "expected one of {}, found {}",
                backticked(variants),
                self.node.describe()
            ))])),
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, NodeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        <W: Visitor<'a>>
        f32 f64 char bytes byte_buf unit unit_struct seq tuple tuple_struct map
        identifier
    }
}

struct SeqOfNodes<'p, 'a, I> {
    parent: &'p NodeDe<'a>,
    items: I,
}

impl<'a, I: Iterator<Item = (usize, &'a Node)>> SeqAccess<'a> for SeqOfNodes<'_, 'a, I> {
    type Error = NodeError;

    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, NodeError> {
        match self.items.next() {
            Some((index, node)) => {
                let de = NodeDe::new(node, format!("{}[{index}]", self.parent.path));
                seed.deserialize(de).map(Some)
            }
            None => Ok(None),
        }
    }
}

struct MapOfNodes<'p, 'a, I> {
    parent: &'p NodeDe<'a>,
    entries: I,
    value: Option<&'a Entry>,
}

impl<'a, I: Iterator<Item = &'a Entry>> MapAccess<'a> for MapOfNodes<'_, 'a, I> {
    type Error = NodeError;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, NodeError> {
        for entry in self.entries.by_ref() {
            if self.parent.skip.contains(&entry.key.as_str()) {
                continue;
            }
            self.value = Some(entry);
            let key: de::value::StrDeserializer<'_, NodeError> =
                entry.key.as_str().into_deserializer();
            return seed.deserialize(key).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<T: DeserializeSeed<'a>>(&mut self, seed: T) -> Result<T::Value, NodeError> {
        match self.value.take() {
            Some(entry) => seed.deserialize(self.parent.child(&entry.value, &entry.key)),
            None => Err(de::Error::custom("value requested before key")),
        }
    }
}

/// Reads a `T` from `node`, with `path` as its dotted name in messages.
pub(crate) fn read<'a, T: de::Deserialize<'a>>(
    node: &'a Node,
    path: &str,
) -> Result<T, Vec<Issue>> {
    T::deserialize(NodeDe::new(node, path)).map_err(|e| e.0)
}

/// Reads a `T` from a typed block, ignoring `skip` keys (read separately).
pub(crate) fn read_block<'a, T: de::Deserialize<'a>>(
    node: &'a Node,
    path: &str,
    kind: Option<&'a str>,
    skip: &'a [&'a str],
) -> Result<T, Vec<Issue>> {
    T::deserialize(NodeDe::block(node, path, kind, skip)).map_err(|e| e.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default)]
        flag: bool,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        port: u16,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        inner: Option<Inner>,
        #[serde(default)]
        list: Vec<String>,
    }

    fn sample(yaml: &str) -> Result<Sample, Vec<String>> {
        let node = Node::parse(yaml).map_err(|e| vec![e.to_string()])?;
        read::<Sample>(&node, "block").map_err(|issues| {
            issues
                .iter()
                .map(|i| format!("{}: {}", i.line.unwrap_or(0), i.message))
                .collect()
        })
    }

    #[test]
    fn reads_values_and_reports_positions() {
        let cases: &[(&str, Result<Sample, Vec<&str>>)] = &[
            (
                "port: 1\nname: n\ninner: {flag: true}\nlist: [a, b]",
                Ok(Sample {
                    port: 1,
                    name: Some("n".into()),
                    inner: Some(Inner { flag: true }),
                    list: vec!["a".into(), "b".into()],
                }),
            ),
            (
                "port: \"80\"\ninner:\n  flag: \"yes\"",
                Ok(Sample {
                    port: 80,
                    name: None,
                    inner: Some(Inner { flag: true }),
                    list: vec![],
                }),
            ),
            (
                "port: 1\ninner:\n",
                Ok(Sample {
                    port: 1,
                    name: None,
                    inner: None,
                    list: vec![],
                }),
            ),
            (
                "port: 2\nname: 0123\nlist: [n, yes, 1.50, true]",
                Ok(Sample {
                    port: 2,
                    name: Some("0123".into()),
                    inner: None,
                    list: vec!["n".into(), "yes".into(), "1.50".into(), "true".into()],
                }),
            ),
            (
                "port: 70000",
                Err(vec![
                    "1: invalid `block.port`: expected u16, found integer `70000`",
                ]),
            ),
            (
                "port: abc",
                Err(vec![
                    "1: invalid `block.port`: expected u16, found string \"abc\"",
                ]),
            ),
            (
                "port: ~",
                Err(vec!["1: invalid `block.port`: expected u16, found null"]),
            ),
            (
                "name: x",
                Err(vec!["1: invalid `block`: missing required key `port`"]),
            ),
            (
                "port: 1\nlist: [a, [b]]",
                Err(vec![
                    "2: invalid `block.list[1]`: expected a string, found a list",
                ]),
            ),
            (
                "port: 1\nbogus: 1\ninner:\n  flag: true\n  other: 2\n",
                Err(vec![
                    "2: unknown key `bogus` in `block` (valid keys: `port`, `name`, `inner`, `list`)",
                ]),
            ),
            (
                "port: 1\ninner:\n  flag: true\n  other: 2\n  more: 3\n",
                Err(vec![
                    "4: unknown key `other` in `block.inner` (valid keys: `flag`)",
                    "5: unknown key `more` in `block.inner` (valid keys: `flag`)",
                ]),
            ),
            (
                "port: 1\ninner: 5",
                Err(vec![
                    "2: invalid `block.inner`: expected a mapping, found an integer `5`",
                ]),
            ),
        ];
        for (yaml, expected) in cases {
            let got = sample(yaml);
            let got = got
                .as_ref()
                .map_err(|v| v.iter().map(String::as_str).collect::<Vec<_>>());
            let expected = expected.as_ref().map_err(Clone::clone);
            assert_eq!(got, expected, "yaml: {yaml:?}");
        }
    }

    #[test]
    fn tree_keeps_positions_through_merges() {
        let yaml = "# c\nbase: &b\n  x: 1\nderived:\n  <<: *b\n  y: 2\n";
        let node = Node::parse(yaml).map_err(|e| e.to_string());
        let derived = node.as_ref().ok().and_then(|n| n.get("derived"));
        let keys: Option<Vec<(&str, usize)>> = derived.and_then(|d| match &d.value.kind {
            Kind::Map(entries) => Some(
                entries
                    .iter()
                    .map(|e| (e.key.as_str(), e.key_pos.line))
                    .collect(),
            ),
            _ => None,
        });
        assert_eq!(keys, Some(vec![("y", 6), ("x", 5)]));
    }
}
